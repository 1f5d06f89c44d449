package server

import (
	"net/http"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// This file is invitations: a tenant admin invites an email with a role;
// whoever holds the one-time token becomes that user, with a first key.

// inviteTokens is the format of invitation tokens: the API key's format
// (package token: ID, secret, checksum) with the prefix "ffi_"; only the
// SHA-256 of the secret is stored.
var inviteTokens = tokenFormat{Prefix: "ffi_"}

// defaultInviteTTL is how long an invitation can be accepted by default.
const defaultInviteTTL = 72 * time.Hour

// InvitationView is an invitation as the API shows it: never its hash.
type InvitationView struct {
	ID         string     `json:"id"`
	TenantID   string     `json:"tenant_id"`
	Email      string     `json:"email"`
	Role       fsm.Role   `json:"role"`
	CreatedAt  time.Time  `json:"created_at"`
	CreatedBy  string     `json:"created_by,omitempty"`
	ExpiresAt  time.Time  `json:"expires_at"`
	AcceptedAt *time.Time `json:"accepted_at"`
	UserID     string     `json:"user_id,omitempty"`
	// State is pending, accepted, expired or revoked.
	State string `json:"state"`
}

func invitationView(inv *fsm.Invitation, now time.Time) InvitationView {
	v := InvitationView{ID: inv.ID, TenantID: inv.TenantID, Email: inv.Email, Role: inv.Role,
		CreatedAt: inv.CreatedAt.UTC(), CreatedBy: inv.CreatedBy, ExpiresAt: inv.ExpiresAt.UTC(),
		AcceptedAt: optTime(inv.AcceptedAt), UserID: inv.UserID, State: "pending"}
	switch {
	case inv.Revoked:
		v.State = "revoked"
	case !inv.AcceptedAt.IsZero():
		v.State = "accepted"
	case !now.Before(inv.ExpiresAt):
		v.State = "expired"
	}
	return v
}

// NewInvitation is an invitation just created: its token is shown once.
type NewInvitation struct {
	Invitation InvitationView `json:"invitation"`
	Token      string         `json:"token"`
}

// CreateInvitationRequest is the body of POST /v1/invitations. The
// invitation's tenant is the one the request acts on.
type CreateInvitationRequest struct {
	Email string `json:"email"`
	Role  string `json:"role"`
	// TTL is how long the token can be accepted (default 72h).
	TTL fsm.Duration `json:"ttl,omitempty"`
}

// maxInviteTTL bounds an invitation's lifetime.
const maxInviteTTL = 30 * 24 * time.Hour

// createInvitation answers POST /v1/invitations.
func (s *Server) createInvitation(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	var req CreateInvitationRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	ttl := time.Duration(req.TTL)
	if ttl == 0 {
		ttl = defaultInviteTTL
	}
	role, err := ParseRole(req.Role)
	switch {
	case err != nil:
	case ttl < time.Minute || ttl > maxInviteTTL:
		err = fsm.Errorf(fsm.CodeInvalidArgument, "ttl must be between 1m and %s", maxInviteTTL)
	default:
		if err = fsm.ValidEmail(req.Email); err == nil {
			err = authorizeGrant(p, PermUsersManage, namedTenant(r, p), role, nil)
		}
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	text, id, hash := inviteTokens.New()
	now := s.now()
	inv := fsm.Invitation{ID: id, TenantID: namedTenant(r, p), Email: req.Email, Role: role, Hash: hash,
		CreatedAt: now, CreatedBy: actorName(p), ExpiresAt: now.Add(ttl)}
	resp, err := s.raft.Apply(r.Context(), &fsm.CreateInvitation{Invitation: inv})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ni := resp.(*fsm.Invitation)
	setIndex(w, ni.ModifyIndex)
	writeJSON(w, http.StatusCreated, NewInvitation{Invitation: invitationView(ni, now), Token: text})
}

// listInvitations answers GET /v1/invitations.
func (s *Server) listInvitations(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	out := []InvitationView{}
	for _, inv := range s.fsm.Invitations(requestTenant(r, true)) {
		out = append(out, invitationView(inv, now))
	}
	setIndex(w, s.fsm.Index())
	writeJSON(w, http.StatusOK, map[string]any{"invitations": out})
}

// revokeInvitation answers DELETE /v1/invitations/{id}.
func (s *Server) revokeInvitation(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	id := r.PathValue("id")
	inv, ok, err := find(s, r.Context(), func() (*fsm.Invitation, bool) { return s.fsm.Invitation(id) })
	switch {
	case err != nil:
	case !ok || Authorize(p, PermUsersView, inv.TenantID) != nil:
		err = fsm.Errorf(fsm.CodeNotFound, "invitation %s not found", echo(id))
	default:
		err = authorizeGrant(p, PermUsersManage, inv.TenantID, inv.Role, nil)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	resp, err := s.raft.Apply(r.Context(), &fsm.RevokeInvitation{ID: id, At: s.now()})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ni := resp.(*fsm.Invitation)
	setIndex(w, ni.ModifyIndex)
	writeJSON(w, http.StatusOK, invitationView(ni, s.now()))
}

// AcceptInvitationRequest is the body of POST /v1/invitations/accept.
type AcceptInvitationRequest struct {
	Token string `json:"token"`
	// KeyName names the first key (default "first key").
	KeyName string `json:"key_name,omitempty"`
}

// Accepted is the answer to an accepted invitation: the new user and its
// first key, whose token is shown this once.
type Accepted struct {
	User   UserView `json:"user"`
	Key    KeyView  `json:"key"`
	APIKey string   `json:"api_key"`
}

// acceptInvitation answers POST /v1/invitations/accept. The token is the
// credential: no API key is needed. An unknown or wrong token is
// unauthenticated, as a wrong API key is; a used, expired or revoked one
// has its own code.
func (s *Server) acceptInvitation(w http.ResponseWriter, r *http.Request) {
	var req AcceptInvitationRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	id, secret, ok := inviteTokens.Parse(req.Token)
	if !ok {
		s.authFailed(r, authMalformed, "")
		s.writeError(w, r, fsm.Errorf(CodeUnauthenticated, "malformed invitation token: check that it was copied whole"))
		return
	}
	inv, found, err := find(s, r.Context(), func() (*fsm.Invitation, bool) { return s.fsm.Invitation(id) })
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !found || !tokenMatches(secret, inv.Hash) {
		s.authFailed(r, authUnknownKey, id)
		s.writeError(w, r, fsm.Errorf(CodeUnauthenticated, "invalid invitation token"))
		return
	}
	now := s.now()
	// Apply decides at the leader's time; refusing here first spares a
	// log entry and answers the same.
	switch {
	case inv.Revoked:
		err = fsm.Errorf(fsm.CodeInvitationRevoked, "the invitation was revoked")
	case !inv.AcceptedAt.IsZero():
		err = fsm.Errorf(fsm.CodeInvitationUsed, "the invitation was already used at %s", inv.AcceptedAt.UTC().Format(time.RFC3339))
	case !now.Before(inv.ExpiresAt):
		err = fsm.Errorf(fsm.CodeInvitationExpired, "the invitation expired at %s", inv.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	name := req.KeyName
	if name == "" {
		name = "first key"
	}
	uid := newID()
	keyText, key := NewAPIKey(inv.TenantID, inv.Email, inv.Role, now, 0)
	key.UserID, key.Name = uid, name
	// Apply decides used, revoked and expired at the leader's time.
	resp, err := s.raft.Apply(r.Context(), &fsm.AcceptInvitation{InvitationID: id,
		User: fsm.User{ID: uid, CreatedAt: now}, Key: key, At: now})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	u := resp.(*fsm.User)
	k := &key
	if stored, ok := s.fsm.APIKey(key.ID); ok {
		k = stored
	}
	setIndex(w, u.ModifyIndex)
	writeJSON(w, http.StatusCreated, Accepted{User: userView(u), Key: s.keyView(k, now), APIKey: keyText})
}
