package fsm_test

import (
	"crypto/sha256"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

func hash(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func testUser(id, email, tenant string, role fsm.Role) fsm.User {
	return fsm.User{ID: id, Email: email, TenantID: tenant, Role: role, CreatedAt: t0}
}

func testKey(id string) fsm.APIKey {
	return fsm.APIKey{ID: id, TenantID: "t1", User: "x", Role: fsm.RoleViewer, Hash: hash(id), CreatedAt: t0}
}

// wantRefused applies c on n and checks its refusal code.
func (n *node) wantRefused(c fsm.Command, want fsm.Code) {
	n.t.Helper()
	r := n.apply(c)[0]
	err, _ := r.(error)
	wantCode(n.t, err, want)
}

// TestUsersAndKeys: emails are unique whatever their case; a key of a
// user takes the user's tenant and role; a disabled or missing user gets
// no key; the first-key rule holds for a user with its key.
func TestUsersAndKeys(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	first := testKey("k0")
	u0 := testUser("u0", "admin@localhost", "t1", fsm.RoleSuperAdmin)
	first.UserID = "u0"
	n.applyOK(&fsm.CreateUser{User: u0, Key: &first, First: true})
	again := testKey("k00")
	again.UserID = "u00"
	n.wantRefused(&fsm.CreateUser{User: testUser("u00", "other@localhost", "t1", fsm.RoleSuperAdmin), Key: &again, First: true}, fsm.CodeAlreadyExists)

	n.applyOK(&fsm.CreateUser{User: testUser("u1", "Olga@Example.com", "t1", fsm.RoleOperator)})
	n.wantRefused(&fsm.CreateUser{User: testUser("u2", "olga@example.COM", "t1", fsm.RoleViewer)}, fsm.CodeAlreadyExists)
	n.wantRefused(&fsm.CreateUser{User: testUser("u3", "x@example.com", "t9", fsm.RoleViewer)}, fsm.CodeNotFound)
	if u, ok := n.f.UserByEmail("OLGA@example.com"); !ok || u.ID != "u1" {
		t.Errorf("UserByEmail = %v %v, want u1", u, ok)
	}

	k := testKey("k1")
	k.UserID, k.Role, k.Scopes = "u1", fsm.RoleSuperAdmin, []string{"jobs.view"}
	got := n.applyOK(&fsm.CreateAPIKey{Key: k}).(*fsm.APIKey)
	if got.Role != fsm.RoleOperator || got.TenantID != "t1" || got.UserID != "u1" {
		t.Errorf("key of u1 = %+v, want the user's role and tenant", got)
	}
	missing := testKey("k2")
	missing.UserID = "nobody"
	n.wantRefused(&fsm.CreateAPIKey{Key: missing}, fsm.CodeNotFound)

	off := true
	n.applyOK(&fsm.UpdateUser{ID: "u1", Disabled: &off, At: t0})
	k3 := testKey("k3")
	k3.UserID = "u1"
	n.wantRefused(&fsm.CreateAPIKey{Key: k3}, fsm.CodeInvalidTransition)
	u := n.applyOK(&fsm.UpdateUser{ID: "u1", Role: fsm.RoleViewer, At: t0}).(*fsm.User)
	if !u.Disabled || u.Role != fsm.RoleViewer {
		t.Errorf("after updates: %+v", u)
	}
	n.wantRefused(&fsm.UpdateUser{ID: "nobody", Role: fsm.RoleViewer}, fsm.CodeNotFound)
	if got := len(n.f.APIKeys("t1", "u1")); got != 1 {
		t.Errorf("u1 has %d keys, want 1", got)
	}
	// After a restart from the store, the email index is rebuilt.
	f2 := newFSM(t, n.st)
	if _, ok := f2.UserByEmail("olga@EXAMPLE.com"); !ok {
		t.Error("email index lost across a restart")
	}
}

// TestInvitations: an invitation is accepted once, at the entry's time,
// before its expiry; the user gets the invitation's email, tenant and
// role whatever the command says.
func TestInvitations(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.tenant("t2")
	inv := func(id, email string) fsm.Invitation {
		return fsm.Invitation{ID: id, TenantID: "t1", Email: email, Role: fsm.RoleOperator, Hash: hash(id), CreatedAt: t0, ExpiresAt: t0.Add(72 * time.Hour)}
	}
	accept := func(invID, uid, kid string, when time.Time) *fsm.AcceptInvitation {
		k := testKey(kid)
		k.UserID = uid
		return &fsm.AcceptInvitation{InvitationID: invID, User: fsm.User{ID: uid, Email: "evil@x.com", TenantID: "t2", Role: fsm.RoleSuperAdmin}, Key: k, At: when}
	}
	n.applyOK(&fsm.CreateInvitation{Invitation: inv("i1", "olga@example.com")})
	n.wantRefused(&fsm.CreateInvitation{Invitation: inv("i1", "olga@example.com")}, fsm.CodeAlreadyExists)
	u := n.applyOK(accept("i1", "u1", "k1", at(time.Hour))).(*fsm.User)
	if u.Email != "olga@example.com" || u.TenantID != "t1" || u.Role != fsm.RoleOperator || !u.CreatedAt.Equal(at(time.Hour)) {
		t.Errorf("accepted user %+v, want the invitation's email, tenant and role", u)
	}
	if k, ok := n.f.APIKey("k1"); !ok || k.UserID != "u1" || k.TenantID != "t1" || k.Role != fsm.RoleOperator {
		t.Errorf("first key %+v", k)
	}
	if i, _ := n.f.Invitation("i1"); i.UserID != "u1" || !i.AcceptedAt.Equal(at(time.Hour)) {
		t.Errorf("invitation after accept %+v", i)
	}
	n.wantRefused(accept("i1", "u2", "k2", at(2*time.Hour)), fsm.CodeInvitationUsed)
	n.wantRefused(&fsm.CreateInvitation{Invitation: inv("i2", "OLGA@example.com")}, fsm.CodeAlreadyExists)

	n.applyOK(&fsm.CreateInvitation{Invitation: inv("i3", "ed@example.com")})
	n.wantRefused(accept("i3", "u3", "k3", at(72*time.Hour)), fsm.CodeInvitationExpired)
	n.applyOK(&fsm.CreateInvitation{Invitation: inv("i4", "rita@example.com")})
	n.applyOK(&fsm.RevokeInvitation{ID: "i4", At: t0})
	n.wantRefused(accept("i4", "u4", "k4", at(time.Minute)), fsm.CodeInvitationRevoked)
	n.wantRefused(&fsm.RevokeInvitation{ID: "i1", At: t0}, fsm.CodeInvalidTransition)
	n.wantRefused(accept("i-none", "u5", "k5", t0), fsm.CodeNotFound)
	if got := len(n.f.Users("")); got != 1 {
		t.Errorf("%d users, want 1", got)
	}
	if got := len(n.f.Invitations("t1")); got != 3 {
		t.Errorf("%d invitations of t1, want 3", got)
	}
}

// TestRotateAndTouchKeys: a rotation creates the successor and ends the
// old key at the entry's time plus the grace (or its own expiry, if
// sooner), once; a touch never moves a last use backwards.
func TestRotateAndTouchKeys(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.applyOK(&fsm.CreateUser{User: testUser("u1", "olga@example.com", "t1", fsm.RoleOperator)})
	old := testKey("k1")
	old.UserID, old.Name, old.Scopes = "u1", "ci", []string{"jobs.view"}
	n.applyOK(&fsm.CreateAPIKey{Key: old})
	next := testKey("k2")
	next.Role = fsm.RoleSuperAdmin // ignored: the successor inherits
	nk := n.applyOK(&fsm.RotateAPIKey{ID: "k1", Key: next, Grace: fsm.Duration(24 * time.Hour), At: at(time.Hour)}).(*fsm.APIKey)
	if nk.UserID != "u1" || nk.Role != fsm.RoleOperator || nk.Name != "ci" || len(nk.Scopes) != 1 || nk.RotatedFrom != "k1" {
		t.Errorf("successor %+v", nk)
	}
	if k, _ := n.f.APIKey("k1"); !k.ExpiresAt.Equal(at(25*time.Hour)) || k.RotatedTo != "k2" {
		t.Errorf("old key after rotation: expires %s, rotated to %q", k.ExpiresAt, k.RotatedTo)
	}
	n.wantRefused(&fsm.RotateAPIKey{ID: "k1", Key: testKey("k3"), At: at(2 * time.Hour)}, fsm.CodeInvalidTransition)
	n.wantRefused(&fsm.RotateAPIKey{ID: "k-none", Key: testKey("k3"), At: at(2 * time.Hour)}, fsm.CodeNotFound)

	short := testKey("k4")
	short.ExpiresAt = at(2 * time.Hour)
	n.applyOK(&fsm.CreateAPIKey{Key: short})
	n.applyOK(&fsm.RotateAPIKey{ID: "k4", Key: testKey("k5"), Grace: fsm.Duration(24 * time.Hour), At: at(time.Hour)})
	if k, _ := n.f.APIKey("k4"); !k.ExpiresAt.Equal(at(2 * time.Hour)) {
		t.Errorf("a grace past the key's own expiry extended it to %s", k.ExpiresAt)
	}
	n.wantRefused(&fsm.RotateAPIKey{ID: "k5", Key: testKey("k2"), At: at(3 * time.Hour)}, fsm.CodeAlreadyExists)
	expired := testKey("k7")
	expired.ExpiresAt = at(2 * time.Hour)
	n.applyOK(&fsm.CreateAPIKey{Key: expired})
	n.wantRefused(&fsm.RotateAPIKey{ID: "k7", Key: testKey("k8"), At: at(2 * time.Hour)}, fsm.CodeInvalidTransition)

	n.apply(&fsm.TouchAPIKeys{Keys: []fsm.KeyUse{{ID: "k2", At: at(3 * time.Hour)}, {ID: "k-none", At: t0}}})
	n.apply(&fsm.TouchAPIKeys{Keys: []fsm.KeyUse{{ID: "k2", At: at(2 * time.Hour)}}})
	if k, _ := n.f.APIKey("k2"); !k.LastUsedAt.Equal(at(3 * time.Hour)) {
		t.Errorf("last use %s, want the later one", k.LastUsedAt)
	}
}

// TestValidateUserCommands: what each new command refuses before the log.
func TestValidateUserCommands(t *testing.T) {
	t.Parallel()
	okUser := testUser("u1", "olga@example.com", "t1", fsm.RoleOperator)
	okKey := testKey("k1")
	okKey.UserID = "u1"
	okInv := fsm.Invitation{ID: "i1", TenantID: "t1", Email: "a@b.example", Role: fsm.RoleViewer, Hash: hash("i"), CreatedAt: t0, ExpiresAt: at(time.Hour)}
	bad := func(edit func(*fsm.User)) *fsm.CreateUser { u := okUser; edit(&u); return &fsm.CreateUser{User: u} }
	yes := true
	cases := []struct {
		name string
		c    fsm.Validator
		ok   bool
	}{
		{"user", &fsm.CreateUser{User: okUser}, true},
		{"user with key", &fsm.CreateUser{User: okUser, Key: &okKey}, true},
		{"user with another's key", &fsm.CreateUser{User: testUser("u2", "x@y.example", "t1", fsm.RoleViewer), Key: &okKey}, false},
		{"no email", bad(func(u *fsm.User) { u.Email = "" }), false},
		{"email without domain", bad(func(u *fsm.User) { u.Email = "olga@" }), false},
		{"email with space", bad(func(u *fsm.User) { u.Email = "ol ga@example.com" }), false},
		{"email with two @", bad(func(u *fsm.User) { u.Email = "a@b@example.com" }), false},
		{"email not ASCII", bad(func(u *fsm.User) { u.Email = "olgä@example.com" }), false},
		{"email domain label", bad(func(u *fsm.User) { u.Email = "olga@-x.example" }), false},
		{"unknown role", bad(func(u *fsm.User) { u.Role = "admin" }), false},
		{"no tenant", bad(func(u *fsm.User) { u.TenantID = "" }), false},
		{"update", &fsm.UpdateUser{ID: "u1", Disabled: &yes}, true},
		{"empty update", &fsm.UpdateUser{ID: "u1"}, false},
		{"update to unknown role", &fsm.UpdateUser{ID: "u1", Role: "root"}, false},
		{"invitation", &fsm.CreateInvitation{Invitation: okInv}, true},
		{"invitation without hash", &fsm.CreateInvitation{Invitation: func() fsm.Invitation { i := okInv; i.Hash = nil; return i }()}, false},
		{"invitation expiring at creation", &fsm.CreateInvitation{Invitation: func() fsm.Invitation { i := okInv; i.ExpiresAt = t0; return i }()}, false},
		{"invitation already used", &fsm.CreateInvitation{Invitation: func() fsm.Invitation { i := okInv; i.UserID = "u1"; return i }()}, false},
		{"accept", &fsm.AcceptInvitation{InvitationID: "i1", User: fsm.User{ID: "u1"}, Key: okKey}, true},
		{"accept with another's key", &fsm.AcceptInvitation{InvitationID: "i1", User: fsm.User{ID: "u2"}, Key: okKey}, false},
		{"revoke invitation", &fsm.RevokeInvitation{ID: "i1"}, true},
		{"rotate", &fsm.RotateAPIKey{ID: "k0", Key: okKey, Grace: fsm.Duration(time.Hour)}, true},
		{"rotate to itself", &fsm.RotateAPIKey{ID: "k1", Key: okKey}, false},
		{"rotate with negative grace", &fsm.RotateAPIKey{ID: "k0", Key: okKey, Grace: -1}, false},
		{"rotate with a year's grace", &fsm.RotateAPIKey{ID: "k0", Key: okKey, Grace: fsm.Duration(365 * 24 * time.Hour)}, false},
		{"repeated scope", &fsm.CreateAPIKey{Key: func() fsm.APIKey { k := okKey; k.Scopes = []string{"a", "a"}; return k }()}, false},
		{"touch", &fsm.TouchAPIKeys{Keys: []fsm.KeyUse{{ID: "k1", At: t0}}}, true},
		{"empty touch", &fsm.TouchAPIKeys{}, false},
		{"touch without id", &fsm.TouchAPIKeys{Keys: []fsm.KeyUse{{At: t0}}}, false},
	}
	for _, c := range cases {
		err := c.c.Validate()
		if (err == nil) != c.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", c.name, err, c.ok)
		}
		if err != nil {
			wantCode(t, err, fsm.CodeInvalidArgument)
		}
		// What Validate accepts, DecodeCommand accepts from the log.
		if _, derr := fsm.DecodeCommand(mustEncode(t, c.c)); (derr == nil) != c.ok {
			t.Errorf("%s: DecodeCommand = %v", c.name, derr)
		}
	}
}
