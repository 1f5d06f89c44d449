package server

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// This file is the users routes: list, create, get, and update (role,
// disable, enable).

// UserView is a user as the API shows it.
type UserView struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	TenantID  string    `json:"tenant_id"`
	Role      fsm.Role  `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
	Disabled  bool      `json:"disabled"`
}

func userView(u *fsm.User) UserView {
	return UserView{ID: u.ID, Email: u.Email, TenantID: u.TenantID, Role: u.Role,
		CreatedAt: u.CreatedAt.UTC(), CreatedBy: u.CreatedBy, Disabled: u.Disabled}
}

// newID returns a random 16-hex-digit ID, as keys have.
func newID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ParseRole parses a role as the API and the CLI take it: a role's name,
// or "admin" for tenant_admin.
func ParseRole(s string) (fsm.Role, error) {
	r := fsm.Role(strings.ToLower(strings.TrimSpace(s)))
	if r == "admin" {
		r = fsm.RoleTenantAdmin
	}
	if !r.Valid() {
		return "", fsm.Errorf(fsm.CodeInvalidArgument, "role %s is not one of superadmin, tenant_admin (admin), operator, viewer", echo(s))
	}
	return r, nil
}

// actorName is how p is named in created_by.
func actorName(p *Principal) string {
	if p.Email != "" {
		return p.Email
	}
	return p.User
}

// lookupUser returns the user ref names: an ID, or an email (it holds
// "@"). A user the principal may not see is the authorizer's to hide.
func (s *Server) lookupUser(r *http.Request, ref string) (*fsm.User, error) {
	get := func() (*fsm.User, bool) { return s.fsm.User(ref) }
	if strings.Contains(ref, "@") {
		get = func() (*fsm.User, bool) { return s.fsm.UserByEmail(ref) }
	}
	u, ok, err := find(s, r.Context(), get)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fsm.Errorf(fsm.CodeNotFound, "user %s not found", echo(ref))
	}
	return u, nil
}

// userRequest decodes a request's body into req and returns the user its
// path names.
func (s *Server) userRequest(w http.ResponseWriter, r *http.Request, req any) (*fsm.User, error) {
	if err := decodeBody(w, r, req); err != nil {
		return nil, err
	}
	return s.lookupUser(r, r.PathValue("id"))
}

// listUsers answers GET /v1/users: the users of the tenant the request
// acts on (every tenant's for a super-admin who names none).
func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) {
	out := []UserView{}
	for _, u := range s.fsm.Users(requestTenant(r, true)) {
		out = append(out, userView(u))
	}
	setIndex(w, s.fsm.Index())
	writeJSON(w, http.StatusOK, map[string]any{"users": out})
}

// CreateUserRequest is the body of POST /v1/users. The user's tenant is
// the one the request acts on (?tenant=, a super-admin's right).
type CreateUserRequest struct {
	Email string `json:"email"`
	// Role is superadmin, tenant_admin (or admin), operator or viewer.
	Role string `json:"role"`
}

// createUser answers POST /v1/users.
func (s *Server) createUser(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	var req CreateUserRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	role, err := ParseRole(req.Role)
	if err == nil {
		err = fsm.ValidEmail(req.Email)
	}
	tenant := namedTenant(r, p)
	if err == nil {
		err = authorizeGrant(p, PermUsersManage, tenant, role, nil)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	u := fsm.User{ID: newID(), Email: req.Email, TenantID: tenant, Role: role, CreatedAt: s.now(), CreatedBy: actorName(p)}
	resp, err := s.raft.Apply(r.Context(), &fsm.CreateUser{User: u})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	nu := resp.(*fsm.User)
	w.Header().Set("Location", "/v1/users/"+nu.ID)
	setIndex(w, nu.ModifyIndex)
	writeJSON(w, http.StatusCreated, userView(nu))
}

// getUser answers GET /v1/users/{id}; {id} may be an email.
func (s *Server) getUser(w http.ResponseWriter, r *http.Request) {
	u, err := s.lookupUser(r, r.PathValue("id"))
	if err == nil {
		err = authorizeUser(principalOf(r), PermUsersView, u)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	setIndex(w, u.ModifyIndex)
	writeJSON(w, http.StatusOK, userView(u))
}

// UpdateUserRequest is the body of PATCH /v1/users/{id}; a field left
// out is unchanged.
type UpdateUserRequest struct {
	Role     string `json:"role,omitempty"`
	Disabled *bool  `json:"disabled,omitempty"`
}

// updateUser answers PATCH /v1/users/{id}: a role change within the
// caller's own role, or disable/enable. Nobody changes their own role or
// disables themselves, so that an installation cannot lose its last
// administrator by a slip.
func (s *Server) updateUser(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	var req UpdateUserRequest
	u, err := s.userRequest(w, r, &req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	err = authorizeUser(p, PermUsersManage, u)
	c := &fsm.UpdateUser{ID: u.ID, Disabled: req.Disabled, At: s.now()}
	if err == nil && req.Role != "" {
		c.Role, err = ParseRole(req.Role)
		if err == nil {
			err = authorizeGrant(p, PermUsersManage, u.TenantID, c.Role, nil)
		}
	}
	switch {
	case err != nil:
	case req.Role == "" && req.Disabled == nil:
		err = fsm.Errorf(fsm.CodeInvalidArgument, "nothing to update: give role or disabled")
	case u.ID == p.UserID:
		err = fsm.Errorf(fsm.CodeInvalidArgument, "you cannot change your own role or disable yourself; ask another administrator")
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	resp, err := s.raft.Apply(r.Context(), c)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	nu := resp.(*fsm.User)
	setIndex(w, nu.ModifyIndex)
	writeJSON(w, http.StatusOK, userView(nu))
}
