package server

import (
	"net/http"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Whoami is the answer of GET /v1/whoami: the principal the request's API
// key authenticates as. It is built from the key, never the key's record
// itself, so its hash cannot appear.
type Whoami struct {
	// User is the user's email, or a key's name for a key made before
	// keys had users.
	User string `json:"user"`
	// UserID and Email are "" for a key made before keys had users.
	UserID string       `json:"user_id,omitempty"`
	Email  string       `json:"email,omitempty"`
	KeyID  string       `json:"key_id"`
	Tenant WhoamiTenant `json:"tenant"`
	Role   fsm.Role     `json:"role"`
	// Scopes are the key's scopes; empty: all of the role.
	Scopes []Permission `json:"scopes"`
	// Permissions is everything the key may do: its role's permissions
	// from the authorizer's roles table, narrowed by its scopes.
	Permissions []Permission `json:"permissions"`
	// ExpiresAt is when the key stops working; null for never.
	ExpiresAt *time.Time `json:"expires_at"`
}

// WhoamiTenant names the principal's tenant.
type WhoamiTenant struct {
	ID string `json:"id"`
	// Name is the tenant's name, "" when this node knows no such tenant.
	Name string `json:"name"`
}

// whoami answers the caller's own principal. It ignores ?tenant=: a
// super-admin acting on another tenant is still itself.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	out := Whoami{
		User: p.User, UserID: p.UserID, Email: p.Email, KeyID: p.KeyID, Role: p.Role,
		Tenant:      WhoamiTenant{ID: p.TenantID},
		Scopes:      append([]Permission{}, p.Scopes...),
		Permissions: EffectivePermissions(p),
	}
	if t, ok := s.fsm.Tenant(p.TenantID); ok {
		out.Tenant.Name = t.Name
	}
	if !p.ExpiresAt.IsZero() {
		at := p.ExpiresAt.UTC()
		out.ExpiresAt = &at
	}
	writeJSON(w, http.StatusOK, out)
}
