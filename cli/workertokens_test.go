package cli

import (
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// TestWorkersTokenCommands: `workers token create` prints the token alone
// on stdout's first line (so that TOKEN=$(ffrtmp workers token create)
// works), `list` shows it without its secret, and `revoke` revokes it; a
// tenant admin makes tokens of its own tenant only.
func TestWorkersTokenCommands(t *testing.T) {
	e := startAPINode(t)
	admin := e.addTenant("t-a", fsm.RoleTenantAdmin, 0)

	out, err := e.run(admin, nil, "workers", "token", "create", "--name", "rack-4")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	tok := strings.TrimSuffix(out, "\n")
	if !strings.HasPrefix(tok, "ffw_") || strings.Contains(tok, "\n") {
		t.Fatalf("create printed %q, want the token alone", out)
	}
	var list []server.WorkerTokenView
	e.mustJSON(admin, nil, &list, "workers", "token", "list", "-o", "json")
	if len(list) != 1 || list[0].TenantID != "t-a" || list[0].Name != "rack-4" || list[0].Revoked {
		t.Fatalf("list: %+v, want one token of t-a named rack-4", list)
	}
	text, _ := e.run(admin, nil, "workers", "token", "list")
	if strings.Contains(text, tok[len(tok)-20:]) {
		t.Errorf("list shows the secret: %s", text)
	}
	if _, err := e.run(admin, nil, "workers", "token", "create", "--tenant", "default"); err == nil || !strings.Contains(err.Error(), "permission_denied") {
		t.Errorf("tenant admin creates a token of another tenant: %v, want permission_denied", err)
	}

	var created server.CreatedWorkerToken
	e.mustJSON(e.admin, nil, &created, "workers", "token", "create", "-o", "json")
	if created.WorkerToken.TenantID != "" || !strings.HasPrefix(created.Token, "ffw_") || len(created.Join) != 1 {
		t.Errorf("super-admin's default token: %+v, want the shared pool with the join address", created)
	}
	var revoked server.WorkerTokenView
	e.mustJSON(admin, nil, &revoked, "workers", "token", "revoke", list[0].ID, "-o", "json")
	if !revoked.Revoked || revoked.ID != list[0].ID {
		t.Errorf("revoke: %+v", revoked)
	}
	if _, err := e.run(admin, nil, "workers", "token", "revoke", created.WorkerToken.ID); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Errorf("tenant admin revokes a shared-pool token: %v, want not_found", err)
	}
}
