package cli

import (
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// firstLine returns the first line of a command's stdout: where a secret
// shown once stands alone.
func firstLine(t *testing.T, out string) string {
	t.Helper()
	line, _, _ := strings.Cut(out, "\n")
	if line == "" || strings.ContainsAny(line, " \t") {
		t.Fatalf("first line of %q is not a secret alone", out)
	}
	return line
}

// TestCLIUpgradePathUsers runs the upgrade path's user commands verbatim
// with the super-admin key cluster init made: a tenant admin of
// "default", and a key for it printed alone on the first line, which then
// acts as that user.
func TestCLIUpgradePathUsers(t *testing.T) {
	e := startAPINode(t)
	out, err := e.run(e.admin, nil, "users", "create", "--email", "admin@example.com", "--role", "admin")
	if err != nil {
		t.Fatalf("users create: %v", err)
	}
	if !strings.Contains(out, "tenant_admin") || !strings.Contains(out, "default") {
		t.Errorf("users create printed %q, want a tenant_admin of default", out)
	}
	out, err = e.run(e.admin, nil, "users", "create-key", "--user", "admin@example.com")
	if err != nil {
		t.Fatalf("users create-key: %v", err)
	}
	key := firstLine(t, out)
	if !strings.HasPrefix(key, "ffk_") {
		t.Fatalf("create-key printed %q, want a key", key)
	}
	var w server.Whoami
	e.mustJSON(key, nil, &w, "whoami", "-o", "json")
	if w.Email != "admin@example.com" || w.Role != fsm.RoleTenantAdmin || w.Tenant.ID != "default" || len(w.Scopes) != 0 {
		t.Errorf("whoami with the new key = %+v", w)
	}
	// The same email again is refused; the role must be known.
	if _, err := e.run(e.admin, nil, "users", "create", "--email", "ADMIN@example.com", "--role", "viewer"); err == nil || !strings.Contains(err.Error(), "already_exists") {
		t.Errorf("second create of the same email (other case): %v, want already_exists", err)
	}
	if _, err := e.run(e.admin, nil, "users", "create", "--email", "x@example.com", "--role", "boss"); err == nil || !strings.Contains(err.Error(), "invalid_argument") {
		t.Errorf("unknown role: %v, want invalid_argument", err)
	}
	// The tenant admin cannot create a super-admin.
	if _, err := e.run(key, nil, "users", "create", "--email", "root@example.com", "--role", "superadmin"); err == nil || !strings.Contains(err.Error(), "permission_denied") {
		t.Errorf("tenant admin creates a super-admin: %v, want permission_denied", err)
	}
	var users []server.UserView
	e.mustJSON(e.admin, nil, &users, "users", "list", "-o", "json")
	emails := []string{}
	for _, u := range users {
		emails = append(emails, u.Email)
	}
	if strings.Join(emails, ",") != "admin@example.com,"+server.BootstrapEmail {
		t.Errorf("users list = %v", emails)
	}
}

// TestCLIInvitationAndKeys: an invitation accepted without an API key
// gives a working key once; keys are listed, scoped, rotated and
// revoked; a disabled user's keys stop.
func TestCLIInvitationAndKeys(t *testing.T) {
	e := startAPINode(t)
	out, err := e.run(e.admin, nil, "users", "invite", "--email", "olga@example.com", "--role", "operator", "--ttl", "1h")
	if err != nil {
		t.Fatalf("invite: %v", err)
	}
	token := firstLine(t, out)
	if !strings.HasPrefix(token, "ffi_") {
		t.Fatalf("invite printed %q, want a token", token)
	}
	out, err = e.run("", nil, "users", "accept-invite", token)
	if err != nil {
		t.Fatalf("accept-invite: %v", err)
	}
	olga := firstLine(t, out)
	var w server.Whoami
	e.mustJSON(olga, nil, &w, "whoami", "-o", "json")
	if w.Email != "olga@example.com" || w.Role != fsm.RoleOperator {
		t.Errorf("whoami of the invited user = %+v", w)
	}
	if _, err := e.run("", nil, "users", "accept-invite", token); err == nil || !strings.Contains(err.Error(), "invitation_used") {
		t.Errorf("second accept: %v, want invitation_used", err)
	}

	// Olga makes herself a narrower key; a wider one is refused.
	out, err = e.run(olga, nil, "users", "create-key", "--user", "olga@example.com", "--scopes", "jobs.view", "--name", "ro", "--expires", "720h")
	if err != nil {
		t.Fatalf("create-key with scopes: %v", err)
	}
	ro := firstLine(t, out)
	e.mustJSON(ro, nil, &w, "whoami", "-o", "json")
	if len(w.Scopes) != 1 || w.Scopes[0] != server.PermJobsView || w.ExpiresAt == nil {
		t.Errorf("whoami of the scoped key = %+v", w)
	}
	if _, err := e.run(ro, nil, append(submitArgs, "-o", "json")...); err == nil || !strings.Contains(err.Error(), "permission_denied") {
		t.Errorf("submit with a jobs.view key: %v, want permission_denied", err)
	}
	if _, err := e.run(olga, nil, "users", "create-key", "--user", "olga@example.com", "--scopes", "users.manage"); err == nil || !strings.Contains(err.Error(), "invalid_argument") {
		t.Errorf("scope above the role: %v, want invalid_argument", err)
	}
	if _, err := e.run(ro, nil, "users", "create-key", "--user", "olga@example.com"); err == nil || !strings.Contains(err.Error(), "permission_denied") {
		t.Errorf("a scoped key creates an unscoped one: %v, want permission_denied", err)
	}

	var keys []server.KeyView
	e.mustJSON(olga, nil, &keys, "keys", "list", "-o", "json")
	if len(keys) != 2 {
		t.Fatalf("olga lists %d keys, want her 2: %+v", len(keys), keys)
	}
	roID := keys[0].ID
	if keys[0].Name != "ro" {
		roID = keys[1].ID
	}
	out, err = e.run(olga, nil, "keys", "rotate", roID, "--grace", "0s")
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	rotated := firstLine(t, out)
	if _, err := e.run(ro, nil, "whoami"); err == nil || !strings.Contains(err.Error(), "unauthenticated") {
		t.Errorf("old key after a rotation without grace: %v, want unauthenticated", err)
	}
	if _, err := e.run(rotated, nil, "whoami"); err != nil {
		t.Errorf("rotated key: %v", err)
	}
	e.mustJSON(e.admin, nil, &keys, "keys", "list", "--user", "olga@example.com", "-o", "json")
	if len(keys) != 3 {
		t.Errorf("the admin lists %d keys of olga, want 3", len(keys))
	}
	for _, k := range keys {
		if k.Name == "first key" {
			if _, err := e.run(olga, nil, "keys", "revoke", k.ID); err != nil {
				t.Errorf("revoke: %v", err)
			}
		}
	}
	if _, err := e.run(olga, nil, "whoami"); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("revoked key: %v, want refused", err)
	}

	// Disabling the user stops every key at once; enabling restores them.
	if _, err := e.run(e.admin, nil, "users", "disable", "olga@example.com"); err != nil {
		t.Fatalf("disable: %v", err)
	}
	if _, err := e.run(rotated, nil, "whoami"); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("key of a disabled user: %v, want refused", err)
	}
	if _, err := e.run(e.admin, nil, "users", "enable", "olga@example.com"); err != nil {
		t.Fatalf("enable: %v", err)
	}
	if _, err := e.run(rotated, nil, "whoami"); err != nil {
		t.Errorf("key after enable: %v", err)
	}
}

// TestCLIInvitationRevokeAndRole lists invitations, revokes one so that
// accepting it fails, and changes a user's role.
func TestCLIInvitationRevokeAndRole(t *testing.T) {
	e := startAPINode(t)
	out, err := e.run(e.admin, nil, "users", "invite", "--email", "pia@example.com", "--role", "viewer")
	if err != nil {
		t.Fatalf("invite: %v", err)
	}
	token := firstLine(t, out)
	var invs []server.InvitationView
	e.mustJSON(e.admin, nil, &invs, "users", "invitations", "-o", "json")
	if len(invs) != 1 || invs[0].Email != "pia@example.com" || invs[0].State != "pending" {
		t.Fatalf("invitations = %+v, want pia's, pending", invs)
	}
	if _, err := e.run(e.admin, nil, "users", "revoke-invite", invs[0].ID); err != nil {
		t.Fatalf("revoke-invite: %v", err)
	}
	e.mustJSON(e.admin, nil, &invs, "users", "invitations", "-o", "json")
	if len(invs) != 1 || invs[0].State != "revoked" {
		t.Errorf("after revoke-invite: %+v, want revoked", invs)
	}
	if _, err := e.run("", nil, "users", "accept-invite", token); err == nil || !strings.Contains(err.Error(), "invitation_revoked") {
		t.Errorf("accepting a revoked invitation: %v, want invitation_revoked", err)
	}

	if _, err := e.run(e.admin, nil, "users", "create", "--email", "raj@example.com", "--role", "viewer"); err != nil {
		t.Fatal(err)
	}
	var u server.UserView
	e.mustJSON(e.admin, nil, &u, "users", "set-role", "raj@example.com", "operator", "-o", "json")
	if u.Role != fsm.RoleOperator {
		t.Errorf("set-role: role %s, want operator", u.Role)
	}
	if _, err := e.run(e.admin, nil, "users", "set-role", "raj@example.com", "emperor"); err == nil || !strings.Contains(err.Error(), "invalid_argument") {
		t.Errorf("set-role to an unknown role: %v, want invalid_argument", err)
	}
}
