package server

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// Worker tokens are remote workers' credentials (fsm.WorkerToken). This
// file holds their API (create, list, revoke) and their check on the
// worker protocol. A worker token allows the worker protocol only, for
// the one worker bound to it, in its token's tenant or the shared pool.

// workerTokens is the format of worker tokens: "ffw_", an ID, the secret
// and a checksum (see package token).
var workerTokens = tokenFormat{Prefix: "ffw_"}

// NewWorkerToken creates a worker token for tenantID ("" for the shared
// pool): the secret text to give to the worker once, and the record to
// store (hash only).
func NewWorkerToken(tenantID, name, createdBy string, now time.Time) (text string, t fsm.WorkerToken) {
	text, id, hash := workerTokens.New()
	return text, fsm.WorkerToken{ID: id, TenantID: tenantID, Name: name, Hash: hash, CreatedAt: now, CreatedBy: createdBy}
}

// WorkerTokenView is a worker token as the API shows it: never its secret
// nor its hash.
type WorkerTokenView struct {
	ID string `json:"id"`
	// TenantID is the tenant whose dedicated worker the token makes; ""
	// for the shared pool.
	TenantID  string    `json:"tenant_id"`
	Name      string    `json:"name,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
	Revoked   bool      `json:"revoked"`
	// WorkerID is the worker that registered with the token, "" if none
	// has yet.
	WorkerID string `json:"worker_id,omitempty"`
	// index is the token's modify index, for the response header.
	index uint64
}

func workerTokenView(t *fsm.WorkerToken) WorkerTokenView {
	return WorkerTokenView{ID: t.ID, TenantID: t.TenantID, Name: t.Name, CreatedAt: t.CreatedAt,
		CreatedBy: t.CreatedBy, Revoked: t.Revoked, WorkerID: t.WorkerID, index: t.ModifyIndex}
}

// CreateWorkerTokenRequest is the body of POST /v1/worker-tokens.
type CreateWorkerTokenRequest struct {
	// TenantID is the tenant of the worker; "" means the caller's own
	// tenant for a tenant admin, the shared pool for a super-admin.
	TenantID string `json:"tenant_id,omitempty"`
	Name     string `json:"name,omitempty"`
}

// CreatedWorkerToken is the answer to POST /v1/worker-tokens: the token,
// shown this once, and what a worker needs besides it.
type CreatedWorkerToken struct {
	Token       string          `json:"token"`
	WorkerToken WorkerTokenView `json:"worker_token"`
	// CAHash pins the cluster CA: the worker checks the servers by it
	// (ffrtmp worker --ca-hash).
	CAHash string `json:"ca_hash"`
	// Join lists the servers' node addresses (ffrtmp worker --join).
	Join []string `json:"join"`
}

// tokenTenant returns the tenant a new worker token is for: the one the
// body or ?tenant= names, else the caller's own, or the shared pool ("")
// for a super-admin.
func tokenTenant(r *http.Request, p *Principal, body string) string {
	switch {
	case body != "":
		return body
	case r.URL.Query().Get("tenant") != "":
		return r.URL.Query().Get("tenant")
	case p.Role == fsm.RoleSuperAdmin:
		return ""
	}
	return p.TenantID
}

func (s *Server) createWorkerToken(w http.ResponseWriter, r *http.Request) {
	var req CreateWorkerTokenRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	p := principalOf(r)
	tenant := tokenTenant(r, p, req.TenantID)
	// The shared pool ("") is installation-wide: a super-admin's.
	if err := Authorize(p, PermWorkersManage, tenant); err != nil {
		s.writeError(w, r, err)
		return
	}
	created, err := s.CreateWorkerToken(r.Context(), tenant, req.Name, p.KeyID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	setIndex(w, created.WorkerToken.index)
	writeJSON(w, http.StatusCreated, created)
}

// CreateWorkerToken creates a worker token for tenantID ("" for the
// shared pool), named name, on behalf of createdBy (a key ID, or a word
// for the node itself), and returns it with what a worker needs besides.
// The caller has authorized it.
func (s *Server) CreateWorkerToken(ctx context.Context, tenantID, name, createdBy string) (*CreatedWorkerToken, error) {
	text, t := NewWorkerToken(tenantID, name, createdBy, s.now())
	resp, err := s.raft.Apply(ctx, &fsm.CreateWorkerToken{Token: t})
	if err != nil {
		return nil, err
	}
	out := &CreatedWorkerToken{Token: text, WorkerToken: workerTokenView(resp.(*fsm.WorkerToken)), CAHash: s.caHash, Join: []string{}}
	if ms, err := s.raft.Members(ctx, false); err == nil {
		for _, m := range ms {
			out.Join = append(out.Join, m.Addr)
		}
	}
	return out, nil
}

// listWorkerTokens lists the tokens of the tenant the request acts on, or
// every token for a super-admin who names none.
func (s *Server) listWorkerTokens(w http.ResponseWriter, r *http.Request) {
	tenant := requestTenant(r, true)
	index := s.fsm.Index()
	out := []WorkerTokenView{}
	for _, t := range s.fsm.WorkerTokens(tenant, tenant == "") {
		out = append(out, workerTokenView(t))
	}
	setIndex(w, index)
	writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

func (s *Server) revokeWorkerToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	t, ok := s.fsm.WorkerToken(id)
	// A token the caller may not manage is one it may not see.
	if !ok || Authorize(principalOf(r), PermWorkersManage, t.TenantID) != nil {
		s.writeError(w, r, fsm.Errorf(fsm.CodeNotFound, "worker token %s not found", echo(id)))
		return
	}
	resp, err := s.raft.Apply(r.Context(), &fsm.RevokeWorkerToken{ID: id, At: s.now()})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	t = resp.(*fsm.WorkerToken)
	setIndex(w, t.ModifyIndex)
	writeJSON(w, http.StatusOK, workerTokenView(t))
}

// authenticateWorker resolves a worker protocol request's bearer token to
// its worker token, as authenticate does for API keys; failures are
// counted and logged the same way and never reach Raft.
func (s *Server) authenticateWorker(r *http.Request) (*fsm.WorkerToken, error) {
	bearer, ok := bearerOf(r)
	if !ok {
		s.authFailed(r, authMissing, "")
		return nil, fsm.Errorf(CodeUnauthenticated, "a worker token is required: Authorization: Bearer <token>")
	}
	id, secret, ok := workerTokens.Parse(bearer)
	if !ok {
		s.authFailed(r, authMalformed, "")
		return nil, fsm.Errorf(CodeUnauthenticated, "malformed worker token: check that it was copied whole")
	}
	t, found := s.fsm.WorkerToken(id)
	if !found {
		if err := s.catchUp(r.Context()); err != nil {
			return nil, fmt.Errorf("%w: verify worker token: %w", cluster.ErrNoLeader, err)
		}
		t, found = s.fsm.WorkerToken(id)
	}
	switch {
	case !found:
		s.authFailed(r, authUnknownKey, id)
		return nil, fsm.Errorf(CodeUnauthenticated, "invalid worker token")
	case !tokenMatches(secret, t.Hash):
		s.authFailed(r, authWrongSecret, id)
		return nil, fsm.Errorf(CodeUnauthenticated, "invalid worker token")
	case t.Revoked:
		s.authFailed(r, authRevoked, id)
		return nil, fsm.Errorf(CodeUnauthenticated, "worker token %s has been revoked", t.ID)
	}
	return t, nil
}

// ownWorker checks that t speaks for workerID: the worker bound to it
// when it registered.
func (s *Server) ownWorker(ctx context.Context, t *fsm.WorkerToken, workerID string) error {
	if t.WorkerID != workerID {
		// The binding may be newer than this node's state.
		if err := s.catchUp(ctx); err == nil {
			if fresh, ok := s.fsm.WorkerToken(t.ID); ok {
				t = fresh
			}
		}
	}
	if t.WorkerID == "" || t.WorkerID != workerID {
		return fsm.Errorf(CodePermissionDenied, "worker token %s does not speak for worker %s", t.ID, echo(workerID))
	}
	return nil
}
