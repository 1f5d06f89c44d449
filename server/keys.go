package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// This file is the API key lifecycle: who a key acts as, the keys routes
// (list, create, revoke, rotate) and the batched last-used times.

// KeyView is an API key as the API shows it: never its hash.
type KeyView struct {
	ID string `json:"id"`
	// UserID is the key's user; "" for a key made before keys had users.
	UserID string `json:"user_id,omitempty"`
	// User is the user's email (or, for a key without a user, its name).
	User     string   `json:"user"`
	TenantID string   `json:"tenant_id"`
	Role     fsm.Role `json:"role"`
	Name     string   `json:"name,omitempty"`
	// Scopes, if not empty, are the only permissions the key has.
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	// State is active, expired or revoked.
	State       string `json:"state"`
	RotatedFrom string `json:"rotated_from,omitempty"`
	RotatedTo   string `json:"rotated_to,omitempty"`
}

// NewKey is a key just created or rotated: its token is shown this once.
type NewKey struct {
	Key    KeyView `json:"key"`
	APIKey string  `json:"api_key"`
	// Previous is the key a rotation replaced, with its new expiry.
	Previous *KeyView `json:"previous,omitempty"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// keyView returns the API view of k at now; the role is its user's
// current one.
func (s *Server) keyView(k *fsm.APIKey, now time.Time) KeyView {
	v := KeyView{
		ID: k.ID, UserID: k.UserID, User: k.User, TenantID: k.TenantID, Role: k.Role, Name: k.Name,
		Scopes: append([]string{}, k.Scopes...), CreatedAt: k.CreatedAt.UTC(), ExpiresAt: optTime(k.ExpiresAt),
		LastUsedAt: optTime(k.LastUsedAt), State: "active", RotatedFrom: k.RotatedFrom, RotatedTo: k.RotatedTo,
	}
	if u, ok := s.fsm.User(k.UserID); ok {
		v.User, v.TenantID, v.Role = u.Email, u.TenantID, u.Role
	}
	switch {
	case k.Revoked:
		v.State = "revoked"
	case !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt):
		v.State = "expired"
	}
	return v
}

// keyPrincipal returns who key k acts as. A key of a user acts with the
// user's current tenant and role, so a role change or a disabled user
// takes effect at once; a key whose user is missing or disabled is
// refused. A key made before keys had users (UserID "": the first key of
// an installation initialized by an older ffrtmp) acts with its own
// tenant and role, as it always did.
func (s *Server) keyPrincipal(k *fsm.APIKey) (*Principal, authReason, error) {
	p := &Principal{KeyID: k.ID, User: k.User, TenantID: k.TenantID, Role: k.Role, ExpiresAt: k.ExpiresAt}
	for _, sc := range k.Scopes {
		p.Scopes = append(p.Scopes, Permission(sc))
	}
	if k.UserID == "" {
		return p, "", nil
	}
	u, ok := s.fsm.User(k.UserID)
	if !ok {
		return nil, authNoUser, fsm.Errorf(CodeUnauthenticated, "the API key's user no longer exists")
	}
	if u.Disabled {
		return nil, authDisabled, fsm.Errorf(CodeUnauthenticated, "user %s is disabled", u.Email)
	}
	p.UserID, p.Email, p.User, p.TenantID, p.Role = u.ID, u.Email, u.Email, u.TenantID, u.Role
	return p, "", nil
}

// catchUp waits until this node has applied what the leader had
// committed, so that an object created through another node a moment ago
// can be found. A read whose barrier has passed (readFresh) has done so.
func (s *Server) catchUp(ctx context.Context) error {
	if readFresh(ctx) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.raft.ReadIndex(ctx); err != nil {
		return fmt.Errorf("%w: %w", cluster.ErrNoLeader, err)
	}
	return nil
}

// find returns what get finds, catching up with the leader once if it
// finds nothing.
func find[T any](s *Server, ctx context.Context, get func() (T, bool)) (T, bool, error) {
	if v, ok := get(); ok {
		return v, true, nil
	}
	if err := s.catchUp(ctx); err != nil {
		var zero T
		return zero, false, err
	}
	v, ok := get()
	return v, ok, nil
}

// lookupKey returns the key the path names.
func (s *Server) lookupKey(r *http.Request) (*fsm.APIKey, error) {
	id := r.PathValue("id")
	k, ok, err := find(s, r.Context(), func() (*fsm.APIKey, bool) { return s.fsm.APIKey(id) })
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fsm.Errorf(fsm.CodeNotFound, "API key %s not found", echo(id))
	}
	return k, nil
}

// authorizeKey decides whether p may revoke or rotate key k: its own keys
// with keys.self; another's with keys.manage on the owner, if the owner's
// role is one p could grant. A key p may not even see is not_found.
func (s *Server) authorizeKey(p *Principal, k *fsm.APIKey) error {
	if k.ID == p.KeyID || p.UserID != "" && k.UserID == p.UserID {
		return Authorize(p, PermKeysSelf, k.TenantID)
	}
	if Authorize(p, PermUsersView, k.TenantID) != nil {
		return fsm.Errorf(fsm.CodeNotFound, "API key %s not found", echo(k.ID))
	}
	role := k.Role
	if u, ok := s.fsm.User(k.UserID); ok {
		role = u.Role
	}
	return authorizeGrant(p, PermKeysManage, k.TenantID, role, nil)
}

// listKeys answers GET /v1/keys: the keys of the tenant the request acts
// on for a principal with keys.manage, else the principal's own keys.
// ?user= (an ID or an email) keeps one user's.
func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	tenant := requestTenant(r, true)
	userID := ""
	if ref := r.URL.Query().Get("user"); ref != "" {
		u, err := s.lookupUser(r, ref)
		if err == nil {
			err = authorizeUser(p, PermKeysSelf, u)
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		userID, tenant = u.ID, u.TenantID
	}
	own := userID == "" && Authorize(p, PermKeysManage, tenant) != nil
	now := s.now()
	out := []KeyView{}
	for _, k := range s.fsm.APIKeys(tenant, userID) {
		if own && k.ID != p.KeyID && (p.UserID == "" || k.UserID != p.UserID) {
			continue
		}
		out = append(out, s.keyView(k, now))
	}
	setIndex(w, s.fsm.Index())
	writeJSON(w, http.StatusOK, map[string]any{"keys": out})
}

// listUserKeys answers GET /v1/users/{id}/keys.
func (s *Server) listUserKeys(w http.ResponseWriter, r *http.Request) {
	u, err := s.lookupUser(r, r.PathValue("id"))
	if err == nil {
		err = authorizeUser(principalOf(r), PermKeysSelf, u)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	now := s.now()
	out := []KeyView{}
	for _, k := range s.fsm.APIKeys(u.TenantID, u.ID) {
		out = append(out, s.keyView(k, now))
	}
	setIndex(w, s.fsm.Index())
	writeJSON(w, http.StatusOK, map[string]any{"keys": out})
}

// CreateKeyRequest is the body of POST /v1/users/{id}/keys.
type CreateKeyRequest struct {
	Name string `json:"name,omitempty"`
	// Scopes narrow the user's role; none means all of it.
	Scopes []string `json:"scopes,omitempty"`
	// Expires is the key's lifetime ("720h"); none means it never expires.
	Expires fsm.Duration `json:"expires,omitempty"`
}

// createUserKey answers POST /v1/users/{id}/keys: a new key for the user,
// its token shown once.
func (s *Server) createUserKey(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	var req CreateKeyRequest
	u, err := s.userRequest(w, r, &req)
	if err == nil {
		err = authorizeUser(p, PermKeysSelf, u)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	scopes, err := parseScopes(req.Scopes, u.Role)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	perm := PermKeysManage
	if u.ID == p.UserID {
		perm = PermKeysSelf
	}
	if err := authorizeGrant(p, perm, u.TenantID, u.Role, scopes); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Expires < 0 {
		s.writeError(w, r, fsm.Errorf(fsm.CodeInvalidArgument, "expires must be a positive duration such as 720h"))
		return
	}
	now := s.now()
	token, key := NewAPIKey(u.TenantID, u.Email, u.Role, now, time.Duration(req.Expires))
	key.UserID, key.Name = u.ID, req.Name
	for _, sc := range scopes {
		key.Scopes = append(key.Scopes, string(sc))
	}
	resp, err := s.raft.Apply(r.Context(), &fsm.CreateAPIKey{Key: key})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	k := resp.(*fsm.APIKey)
	setIndex(w, k.ModifyIndex)
	writeJSON(w, http.StatusCreated, NewKey{Key: s.keyView(k, now), APIKey: token})
}

// pathKey returns the key the path names, if the principal may revoke
// or rotate it.
func (s *Server) pathKey(r *http.Request) (*fsm.APIKey, error) {
	k, err := s.lookupKey(r)
	if err != nil {
		return nil, err
	}
	return k, s.authorizeKey(principalOf(r), k)
}

// revokeKey answers DELETE /v1/keys/{id}.
func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	k, err := s.pathKey(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	resp, err := s.raft.Apply(r.Context(), &fsm.RevokeAPIKey{ID: k.ID, At: s.now()})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	k = resp.(*fsm.APIKey)
	setIndex(w, k.ModifyIndex)
	writeJSON(w, http.StatusOK, s.keyView(k, s.now()))
}

// RotateKeyRequest is the body of POST /v1/keys/{id}/rotate.
type RotateKeyRequest struct {
	// Grace is how long the old key keeps working (default 24h; "0s"
	// ends it now).
	Grace *fsm.Duration `json:"grace,omitempty"`
}

// defaultGrace is how long a rotated key keeps working by default.
const defaultGrace = 24 * time.Hour

// rotateKey answers POST /v1/keys/{id}/rotate: a successor with the same
// user, scopes, name and lifetime, its token shown once; the old key
// works until the grace ends.
func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request) {
	var req RotateKeyRequest
	if r.ContentLength != 0 {
		if err := decodeBody(w, r, &req); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	grace := fsm.Duration(defaultGrace)
	if req.Grace != nil {
		grace = *req.Grace
	}
	k, err := s.pathKey(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	now := s.now()
	var ttl time.Duration
	if !k.ExpiresAt.IsZero() {
		ttl = k.ExpiresAt.Sub(k.CreatedAt)
	}
	token, key := NewAPIKey(k.TenantID, k.User, k.Role, now, ttl)
	key.UserID = k.UserID
	resp, err := s.raft.Apply(r.Context(), &fsm.RotateAPIKey{ID: k.ID, Key: key, Grace: grace, At: now})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	nk := resp.(*fsm.APIKey)
	out := NewKey{Key: s.keyView(nk, now), APIKey: token}
	if old, ok := s.fsm.APIKey(k.ID); ok {
		v := s.keyView(old, now)
		out.Previous = &v
	}
	setIndex(w, nk.ModifyIndex)
	writeJSON(w, http.StatusCreated, out)
}

// keyUseInterval is the least time between two recorded uses of a key.
const keyUseInterval = time.Minute

// keyUse batches last-used times: a node remembers the keys it saw used
// and proposes them in one TouchAPIKeys, at most once per keyUseInterval
// per key (a key whose stored time is recent is not proposed again), from
// one goroutine at a time, so that authentication never waits on Raft.
// Uses that could not be proposed (no leader) stay pending until the
// next request starts another attempt.
type keyUse struct {
	mu       sync.Mutex
	pending  map[string]time.Time // seen, not yet applied
	sent     map[string]bool      // in the proposal in flight
	flushing bool
}

// seen records that key k was used now.
func (u *keyUse) seen(s *Server, k *fsm.APIKey) {
	now := s.now()
	if now.Sub(k.LastUsedAt) < keyUseInterval {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pending == nil {
		u.pending, u.sent = map[string]time.Time{}, map[string]bool{}
	}
	// A use seen while an older one is being proposed replaces it in
	// pending, so that flush can tell whether it was recorded.
	if _, ok := u.pending[k.ID]; !ok || u.sent[k.ID] {
		u.pending[k.ID] = now
	}
	if !u.flushing {
		u.flushing = true
		go u.flush(s)
	}
}

// propose proposes uses, retrying with backoff for up to keyUseInterval
// (an election, a slow leader): a use that could not be recorded by then
// stays pending for the next request.
func (u *keyUse) propose(s *Server, uses []fsm.KeyUse) error {
	ctx, cancel := context.WithTimeout(context.Background(), keyUseInterval)
	defer cancel()
	delay := 100 * time.Millisecond
	for {
		_, err := s.raft.Apply(ctx, &fsm.TouchAPIKeys{Keys: uses})
		if err == nil || fsm.ErrorCode(err) != "" || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// flush proposes the pending uses until none is left.
func (u *keyUse) flush(s *Server) {
	for {
		u.mu.Lock()
		var uses []fsm.KeyUse
		for id, at := range u.pending {
			if !u.sent[id] && len(uses) < fsm.MaxTouches {
				uses = append(uses, fsm.KeyUse{ID: id, At: at})
				u.sent[id] = true
			}
		}
		if len(uses) == 0 {
			u.flushing = false
			u.mu.Unlock()
			return
		}
		u.mu.Unlock()
		slices.SortFunc(uses, func(a, b fsm.KeyUse) int { return strings.Compare(a.ID, b.ID) })
		err := u.propose(s, uses)
		u.mu.Lock()
		for _, use := range uses {
			delete(u.sent, use.ID)
			// Recorded, unless a use a minute or more later came in
			// meanwhile: that one stays pending for the next round.
			if err == nil && u.pending[use.ID].Sub(use.At) < keyUseInterval {
				delete(u.pending, use.ID)
			}
		}
		if err != nil {
			// Kept pending: the next authenticated request tries again.
			u.flushing = false
			u.mu.Unlock()
			s.log.Warn("could not record API key use; will retry", "keys", len(uses), "error", err)
			return
		}
		u.mu.Unlock()
	}
}
