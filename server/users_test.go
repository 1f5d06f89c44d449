package server_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// testClock is the server's injectable clock: it starts at the real time
// (the FSM stamps entries with the leader's real clock) and moves only
// when a test advances it.
type testClock struct {
	base time.Time
	off  atomic.Int64
}

func newTestClock() *testClock { return &testClock{base: time.Now().UTC()} }

func (c *testClock) Now() time.Time          { return c.base.Add(time.Duration(c.off.Load())) }
func (c *testClock) Advance(d time.Duration) { c.off.Add(int64(d)) }
func (c *testClock) Set(since time.Duration) { c.off.Store(int64(since)) }

// mkUser creates a user through the API with key, in tenant ("" for the
// key's own), and fails the test unless it is created.
func (e *env) mkUser(key, tenant, email string, role fsm.Role) server.UserView {
	e.t.Helper()
	path := "/v1/users"
	if tenant != "" {
		path += "?tenant=" + tenant
	}
	var u server.UserView
	if resp := e.doKey(key, "POST", path, map[string]string{"email": email, "role": string(role)}, &u); resp.StatusCode != http.StatusCreated {
		e.t.Fatalf("create user %s: status %d", email, resp.StatusCode)
	}
	return u
}

// mkKey creates a key for user through the API with key.
func (e *env) mkKey(key, user string, req server.CreateKeyRequest) server.NewKey {
	e.t.Helper()
	var nk server.NewKey
	if resp := e.doKey(key, "POST", "/v1/users/"+user+"/keys", req, &nk); resp.StatusCode != http.StatusCreated {
		e.t.Fatalf("create key for %s: status %d", user, resp.StatusCode)
	}
	return nk
}

// wantStatus sends a request and fails the test unless it gets status
// (and, for an error, code).
func (e *env) wantStatus(key, method, path string, body any, status int, code string) {
	e.t.Helper()
	var ae apiError
	resp := e.doKey(key, method, path, body, &ae)
	if resp.StatusCode != status || (code != "" && ae.Error.Code != code) {
		e.t.Errorf("%s %s: %d %s %q, want %d %s", method, path, resp.StatusCode, ae.Error.Code, ae.Error.Message, status, code)
	}
}

// TestKeyExpiryRotationRevocation: a key works until its expiry; a
// rotated key works with its successor until the grace ends and fails
// after; a revoked key fails at once. The server's clock moves; nothing
// sleeps.
func TestKeyExpiryRotationRevocation(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	e := setup(t, envOpts{now: clock.Now})
	u := e.mkUser(e.token, "", "olga@example.com", fsm.RoleOperator)

	short := e.mkKey(e.token, u.ID, server.CreateKeyRequest{Expires: fsm.Duration(time.Hour)})
	e.wantStatus(short.APIKey, "GET", "/v1/jobs", nil, 200, "")
	clock.Set(time.Hour)
	e.wantStatus(short.APIKey, "GET", "/v1/jobs", nil, 401, "unauthenticated")
	clock.Set(0)

	old := e.mkKey(e.token, u.ID, server.CreateKeyRequest{Name: "ci", Scopes: []string{"jobs.view", "keys.self"}})
	var rot server.NewKey
	if resp := e.doKey(old.APIKey, "POST", "/v1/keys/"+old.Key.ID+"/rotate", map[string]string{"grace": "24h"}, &rot); resp.StatusCode != 201 {
		t.Fatalf("rotate: %d", resp.StatusCode)
	}
	if rot.Key.RotatedFrom != old.Key.ID || rot.Key.Name != "ci" || len(rot.Key.Scopes) != 2 || rot.Previous == nil || rot.Previous.RotatedTo != rot.Key.ID {
		t.Errorf("rotation answer %+v", rot)
	}
	for _, at := range []time.Duration{0, 23 * time.Hour} {
		clock.Set(at)
		e.wantStatus(old.APIKey, "GET", "/v1/jobs", nil, 200, "")
		e.wantStatus(rot.APIKey, "GET", "/v1/jobs", nil, 200, "")
	}
	clock.Set(25 * time.Hour)
	e.wantStatus(old.APIKey, "GET", "/v1/jobs", nil, 401, "unauthenticated")
	e.wantStatus(rot.APIKey, "GET", "/v1/jobs", nil, 200, "")
	// A key is rotated once; its successor keeps the scopes.
	e.wantStatus(e.token, "POST", "/v1/keys/"+old.Key.ID+"/rotate", nil, 409, "invalid_transition")
	e.wantStatus(rot.APIKey, "POST", "/v1/jobs", queuedSpec, 403, "permission_denied")

	e.wantStatus(rot.APIKey, "DELETE", "/v1/keys/"+rot.Key.ID, nil, 200, "")
	e.wantStatus(rot.APIKey, "GET", "/v1/jobs", nil, 401, "unauthenticated")
	e.wantStatus(e.token, "POST", "/v1/keys/"+rot.Key.ID+"/rotate", nil, 409, "invalid_transition")
}

// TestScopesNarrowNeverWiden: a scoped key may do only its scopes (and
// identify itself); a scope outside the user's role, or unknown, is
// refused; nobody creates a key wider than their own.
func TestScopesNarrowNeverWiden(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	u := e.mkUser(e.token, "", "olga@example.com", fsm.RoleOperator)
	ro := e.mkKey(e.token, u.ID, server.CreateKeyRequest{Scopes: []string{"jobs.view"}})
	e.wantStatus(ro.APIKey, "GET", "/v1/jobs", nil, 200, "")
	e.wantStatus(ro.APIKey, "POST", "/v1/jobs", queuedSpec, 403, "permission_denied")
	var w server.Whoami
	if resp := e.doKey(ro.APIKey, "GET", "/v1/whoami", nil, &w); resp.StatusCode != 200 || len(w.Scopes) != 1 ||
		strings.Join(permStrings(w.Permissions), ",") != "self.view,jobs.view" {
		t.Errorf("whoami of a scoped key: %d %+v", resp.StatusCode, w)
	}
	e.wantStatus(e.token, "POST", "/v1/users/"+u.ID+"/keys", server.CreateKeyRequest{Scopes: []string{"users.manage"}}, 400, "invalid_argument")
	e.wantStatus(e.token, "POST", "/v1/users/"+u.ID+"/keys", server.CreateKeyRequest{Scopes: []string{"jobs.everything"}}, 400, "invalid_argument")
	// The scoped key may not make itself a wider key, scoped or not.
	e.wantStatus(ro.APIKey, "POST", "/v1/users/"+u.ID+"/keys", server.CreateKeyRequest{}, 403, "permission_denied")
	e.wantStatus(ro.APIKey, "POST", "/v1/users/"+u.ID+"/keys", server.CreateKeyRequest{Scopes: []string{"jobs.view", "jobs.create"}}, 403, "permission_denied")
	// Its user, with an unscoped key, may.
	full := e.mkKey(e.token, u.ID, server.CreateKeyRequest{})
	e.mkKey(full.APIKey, u.ID, server.CreateKeyRequest{Scopes: []string{"jobs.create"}})
}

func permStrings(ps []server.Permission) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = string(p)
	}
	return out
}

// TestDisabledUserKeysStop: disabling a user stops all of its keys at
// once, enabling restores them, and nobody disables themselves.
func TestDisabledUserKeysStop(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	u := e.mkUser(e.token, "", "olga@example.com", fsm.RoleTenantAdmin)
	k1 := e.mkKey(e.token, u.ID, server.CreateKeyRequest{})
	k2 := e.mkKey(e.token, u.ID, server.CreateKeyRequest{})
	e.wantStatus(k1.APIKey, "PATCH", "/v1/users/"+u.ID, map[string]bool{"disabled": true}, 400, "invalid_argument")
	e.wantStatus(e.token, "PATCH", "/v1/users/olga@example.com", map[string]bool{"disabled": true}, 200, "")
	for _, k := range []string{k1.APIKey, k2.APIKey} {
		e.wantStatus(k, "GET", "/v1/whoami", nil, 401, "unauthenticated")
	}
	e.wantStatus(e.token, "POST", "/v1/users/"+u.ID+"/keys", server.CreateKeyRequest{}, 409, "invalid_transition")
	e.wantStatus(e.token, "PATCH", "/v1/users/"+u.ID, map[string]bool{"disabled": false}, 200, "")
	e.wantStatus(k2.APIKey, "GET", "/v1/whoami", nil, 200, "")
}

// TestNoEscalation checks each rule: nobody grants a role or permission
// above their own, nobody acts in another tenant unless a super-admin,
// and nobody manages a user above them.
func TestNoEscalation(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	if _, err := e.node.Apply(context.Background(), &fsm.CreateTenant{Tenant: fsm.Tenant{ID: "other", Name: "other", CreatedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	ta := e.mkUser(e.token, "", "ta@example.com", fsm.RoleTenantAdmin)
	op := e.mkUser(e.token, "", "op@example.com", fsm.RoleOperator)
	root := e.mkUser(e.token, "", "root@example.com", fsm.RoleSuperAdmin)
	stranger := e.mkUser(e.token, "other", "stranger@other.example", fsm.RoleViewer)
	taKey := e.mkKey(e.token, ta.ID, server.CreateKeyRequest{}).APIKey
	opKey := e.mkKey(e.token, op.ID, server.CreateKeyRequest{}).APIKey
	taNarrow := e.mkKey(e.token, ta.ID, server.CreateKeyRequest{Scopes: []string{"users.view", "users.manage", "keys.manage"}}).APIKey

	cases := []struct {
		name         string
		key          string
		method, path string
		body         any
		status       int
		code         string
	}{
		{"tenant admin creates a super-admin", taKey, "POST", "/v1/users", map[string]string{"email": "x1@example.com", "role": "superadmin"}, 403, "permission_denied"},
		{"tenant admin creates a user in another tenant", taKey, "POST", "/v1/users?tenant=other", map[string]string{"email": "x2@example.com", "role": "viewer"}, 403, "permission_denied"},
		{"tenant admin invites a super-admin", taKey, "POST", "/v1/invitations", map[string]string{"email": "x3@example.com", "role": "superadmin"}, 403, "permission_denied"},
		{"tenant admin invites into another tenant", taKey, "POST", "/v1/invitations?tenant=other", map[string]string{"email": "x4@example.com", "role": "viewer"}, 403, "permission_denied"},
		{"tenant admin makes an operator a super-admin", taKey, "PATCH", "/v1/users/" + op.ID, map[string]string{"role": "superadmin"}, 403, "permission_denied"},
		{"tenant admin disables a super-admin of its tenant", taKey, "PATCH", "/v1/users/" + root.ID, map[string]bool{"disabled": true}, 403, "permission_denied"},
		{"tenant admin makes a key for a super-admin", taKey, "POST", "/v1/users/" + root.ID + "/keys", server.CreateKeyRequest{}, 403, "permission_denied"},
		{"tenant admin sees a user of another tenant", taKey, "GET", "/v1/users/" + stranger.ID, nil, 404, "not_found"},
		{"tenant admin makes a key for another tenant's user", taKey, "POST", "/v1/users/" + stranger.ID + "/keys", server.CreateKeyRequest{}, 404, "not_found"},
		{"operator creates a user", opKey, "POST", "/v1/users", map[string]string{"email": "x5@example.com", "role": "viewer"}, 403, "permission_denied"},
		{"operator invites", opKey, "POST", "/v1/invitations", map[string]string{"email": "x6@example.com", "role": "viewer"}, 403, "permission_denied"},
		{"operator makes a key for another user", opKey, "POST", "/v1/users/" + ta.ID + "/keys", server.CreateKeyRequest{}, 404, "not_found"},
		{"operator lists another user's keys", opKey, "GET", "/v1/keys?user=" + ta.ID, nil, 404, "not_found"},
		{"a narrow key creates an operator, whose rights it lacks", taNarrow, "POST", "/v1/users", map[string]string{"email": "x7@example.com", "role": "operator"}, 403, "permission_denied"},
		{"a narrow key makes a full key for an operator", taNarrow, "POST", "/v1/users/" + op.ID + "/keys", server.CreateKeyRequest{}, 403, "permission_denied"},
	}
	for _, c := range cases {
		var ae apiError
		resp := e.doKey(c.key, c.method, c.path, c.body, &ae)
		if resp.StatusCode != c.status || ae.Error.Code != c.code {
			t.Errorf("%s: %d %s %q, want %d %s", c.name, resp.StatusCode, ae.Error.Code, ae.Error.Message, c.status, c.code)
		}
	}
	// Nothing of it happened.
	var list struct{ Users []server.UserView }
	e.do("GET", "/v1/users", nil, &list)
	if len(list.Users) != 5 {
		t.Errorf("%d users after the refusals, want 5", len(list.Users))
	}
	// What the rules allow: a tenant admin's own tenant, roles up to its
	// own; an operator's own keys.
	e.mkUser(taKey, "", "newop@example.com", fsm.RoleOperator)
	e.wantStatus(taKey, "PATCH", "/v1/users/"+op.ID, map[string]string{"role": "viewer"}, 200, "")
	e.mkKey(opKey, op.ID, server.CreateKeyRequest{})
	e.mkKey(taKey, op.ID, server.CreateKeyRequest{Scopes: []string{"jobs.view"}})
}

// TestInvitationOnce: an invitation makes one user with one key; used
// twice, revoked, expired or with a wrong secret it is refused with its
// own code and creates nothing.
func TestInvitationOnce(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	e := setup(t, envOpts{now: clock.Now})
	invite := func(email, ttl string) server.NewInvitation {
		t.Helper()
		var ni server.NewInvitation
		body := map[string]string{"email": email, "role": "operator"}
		if ttl != "" {
			body["ttl"] = ttl
		}
		if resp := e.do("POST", "/v1/invitations", body, &ni); resp.StatusCode != 201 {
			t.Fatalf("invite %s: %d", email, resp.StatusCode)
		}
		return ni
	}
	ni := invite("olga@example.com", "")
	if got := ni.Invitation.ExpiresAt.Sub(ni.Invitation.CreatedAt); got != 72*time.Hour {
		t.Errorf("default lifetime %s, want 72h", got)
	}
	var a server.Accepted
	if resp := e.doKey("", "POST", "/v1/invitations/accept", map[string]string{"token": ni.Token}, &a); resp.StatusCode != 201 {
		t.Fatalf("accept: %d", resp.StatusCode)
	}
	if a.User.Email != "olga@example.com" || a.User.Role != fsm.RoleOperator || a.Key.UserID != a.User.ID {
		t.Errorf("accepted %+v", a)
	}
	e.wantStatus(a.APIKey, "GET", "/v1/whoami", nil, 200, "")
	e.wantStatus("", "POST", "/v1/invitations/accept", map[string]string{"token": ni.Token}, 409, "invitation_used")
	e.wantStatus(e.token, "DELETE", "/v1/invitations/"+ni.Invitation.ID, nil, 409, "invalid_transition")

	rv := invite("rita@example.com", "")
	e.wantStatus(e.token, "DELETE", "/v1/invitations/"+rv.Invitation.ID, nil, 200, "")
	e.wantStatus("", "POST", "/v1/invitations/accept", map[string]string{"token": rv.Token}, 409, "invitation_revoked")

	ex := invite("ed@example.com", "1h")
	// (The leader stamped the invitation with its real time, a little
	// after the clock's start.)
	clock.Advance(2 * time.Hour)
	e.wantStatus("", "POST", "/v1/invitations/accept", map[string]string{"token": ex.Token}, 410, "invitation_expired")

	wrong := ex.Token[:len(ex.Token)-12] + strings.Repeat("A", 6) + ex.Token[len(ex.Token)-6:]
	e.wantStatus("", "POST", "/v1/invitations/accept", map[string]string{"token": wrong}, 401, "unauthenticated")
	e.wantStatus("", "POST", "/v1/invitations/accept", map[string]string{"token": "ffi_nonsense"}, 401, "unauthenticated")

	var list struct{ Users []server.UserView }
	e.do("GET", "/v1/users", nil, &list)
	if len(list.Users) != 2 {
		t.Errorf("%d users, want the admin and olga", len(list.Users))
	}
	var invs struct{ Invitations []server.InvitationView }
	e.do("GET", "/v1/invitations", nil, &invs)
	states := map[string]string{}
	for _, v := range invs.Invitations {
		states[v.Email] = v.State
	}
	if states["olga@example.com"] != "accepted" || states["rita@example.com"] != "revoked" || states["ed@example.com"] != "expired" {
		t.Errorf("invitation states %v", states)
	}
}

// TestKeyLastUsed: a key's use is recorded through Raft, and again only
// once a minute has passed.
func TestKeyLastUsed(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	e := setup(t, envOpts{now: clock.Now})
	u := e.mkUser(e.token, "", "olga@example.com", fsm.RoleViewer)
	nk := e.mkKey(e.token, u.ID, server.CreateKeyRequest{})
	used := func() time.Time {
		k, _ := e.fsm.APIKey(nk.Key.ID)
		return k.LastUsedAt
	}
	e.waitFor(func() bool {
		e.wantStatus(nk.APIKey, "GET", "/v1/whoami", nil, 200, "")
		return used().Equal(clock.Now())
	}, "first use recorded")
	first := used()
	clock.Advance(30 * time.Second)
	e.wantStatus(nk.APIKey, "GET", "/v1/whoami", nil, 200, "")
	clock.Advance(31 * time.Second)
	e.wantStatus(nk.APIKey, "GET", "/v1/whoami", nil, 200, "")
	e.waitFor(func() bool { return used().After(first) }, "later use recorded")
	if got := used().Sub(first); got != 61*time.Second {
		t.Errorf("last use moved by %s, want 61s (the use after a minute, not the one within it)", got)
	}
	var keys struct{ Keys []server.KeyView }
	e.doKey(nk.APIKey, "GET", "/v1/keys", nil, &keys)
	if len(keys.Keys) != 1 || keys.Keys[0].LastUsedAt == nil {
		t.Errorf("keys list of a viewer: %+v", keys.Keys)
	}
}
