package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// secretLine returns the first line of a command's output, where a
// secret shown once stands alone.
func secretLine(t *testing.T, out, prefix string) string {
	t.Helper()
	line, _, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(line, prefix) || strings.ContainsAny(line, " \t") {
		t.Fatalf("first line of %q is not a %s... secret alone", out, prefix)
	}
	return line
}

// TestUsersAcrossNodes runs the upgrade path's user commands verbatim
// and an invitation through the real binary against three real server
// processes, each step through another node, and checks that the keys
// they print work, rotate and stop on the other nodes.
func TestUsersAcrossNodes(t *testing.T) {
	c := newTestCluster(t, 3)
	c.startAll()
	n1, n2, n3 := "http://"+c.nodes[0].httpAddr, "http://"+c.nodes[1].httpAddr, "http://"+c.nodes[2].httpAddr
	c.mustCLI("cluster", "init", "--addr", n1, "--cluster-key-file", c.keyFile)
	// The first user and its key are made once, whichever node is asked.
	if _, err := c.cli("cluster", "init", "--addr", n3, "--cluster-key-file", c.keyFile); err == nil || !strings.Contains(err.Error(), "already_exists") {
		t.Fatalf("second init: %v, want already_exists", err)
	}

	// The upgrade path, verbatim (the cluster's config holds the
	// super-admin key cluster init printed).
	out := c.mustCLI("--addr", n1, "users", "create", "--email", "admin@example.com", "--role", "admin")
	if !strings.Contains(out, "tenant_admin") || !strings.Contains(out, "default") {
		t.Fatalf("users create printed %q", out)
	}
	admin := secretLine(t, c.mustCLI("--addr", n2, "users", "create-key", "--user", "admin@example.com"), "ffk_")
	whoami := func(addr, key string) (server.Whoami, error) {
		var w server.Whoami
		out, err := c.cliEnv([]string{"FFRTMP_API_KEY=" + key}, "--addr", addr, "whoami", "-o", "json")
		if err == nil {
			err = json.Unmarshal([]byte(out), &w)
		}
		return w, err
	}
	w, err := whoami(n3, admin)
	if err != nil || w.Email != "admin@example.com" || w.Role != fsm.RoleTenantAdmin || w.Tenant.ID != "default" {
		t.Fatalf("whoami of the new admin through another node: %+v %v", w, err)
	}

	// The tenant admin invites an operator; the invitee, holding no API
	// key at all, accepts through another node.
	token := secretLine(t, c.mustCLI("--addr", n1, "--api-key", admin, "users", "invite", "--email", "olga@example.com", "--role", "operator"), "ffi_")
	noKey := []string{"XDG_CONFIG_HOME=" + filepath.Join(t.TempDir(), "none")}
	out, err = c.cliEnv(noKey, "--addr", n2, "users", "accept-invite", token)
	if err != nil {
		t.Fatalf("accept-invite: %v", err)
	}
	olga := secretLine(t, out, "ffk_")
	if w, err := whoami(n3, olga); err != nil || w.Email != "olga@example.com" || w.Role != fsm.RoleOperator {
		t.Fatalf("whoami of the invited user: %+v %v", w, err)
	}
	if _, err := c.cliEnv(noKey, "--addr", n3, "users", "accept-invite", token); err == nil || !strings.Contains(err.Error(), "invitation_used") {
		t.Errorf("second accept through a third node: %v, want invitation_used", err)
	}

	// Olga rotates her key with no grace through one node; the old key
	// stops, and the new one works, on the others.
	var keys []server.KeyView
	if err := json.Unmarshal([]byte(c.mustCLI("--addr", n3, "--api-key", olga, "keys", "list", "-o", "json")), &keys); err != nil || len(keys) != 1 {
		t.Fatalf("olga's keys: %v %v", keys, err)
	}
	rotated := secretLine(t, c.mustCLI("--addr", n1, "--api-key", olga, "keys", "rotate", keys[0].ID, "--grace", "0s"), "ffk_")
	waitForCond(t, 10*time.Second, "the rotated key stops on node 2", func() bool {
		_, err := whoami(n2, olga)
		return err != nil && strings.Contains(err.Error(), "expired")
	})
	if _, err := whoami(n3, rotated); err != nil {
		t.Errorf("rotated key on node 3: %v", err)
	}

	// The tenant admin sees her keys, and disabling her stops them on
	// every node.
	if err := json.Unmarshal([]byte(c.mustCLI("--addr", n2, "--api-key", admin, "keys", "list", "--user", "olga@example.com", "-o", "json")), &keys); err != nil || len(keys) != 2 {
		t.Errorf("the admin lists olga's keys: %v %v", keys, err)
	}
	c.mustCLI("--addr", n3, "--api-key", admin, "users", "disable", "olga@example.com")
	for _, addr := range []string{n1, n2, n3} {
		waitForCond(t, 10*time.Second, "the disabled user's key stops on "+addr, func() bool {
			_, err := whoami(addr, rotated)
			return err != nil && strings.Contains(err.Error(), "disabled")
		})
	}
}
