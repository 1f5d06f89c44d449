package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// nodeEnv is one real in-process node (Raft over TCP on loopback, bolt)
// behind its HTTP API, with the super-admin key its bootstrap made.
type nodeEnv struct {
	t     *testing.T
	node  *clustertest.Node
	url   string
	admin string
}

// startAPINode starts a single-node cluster and its API.
func startAPINode(t *testing.T) *nodeEnv {
	t.Helper()
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true})
	srv, err := server.New(server.Config{
		FSM: n.FSM, Raft: n.Node, Logger: clustertest.Logger(t),
		Policy: fsm.Policy{AllowedHosts: []string{"127.0.0.1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Bootstrap needs the leader loop's barrier: retry until it is up.
	var token string
	for {
		if token, err = srv.Bootstrap(ctx); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("bootstrap: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if token == "" {
		t.Fatal("bootstrap made no super-admin key")
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return &nodeEnv{t: t, node: n, url: hs.URL, admin: token}
}

// run runs one CLI command with key (and extra environment) and returns
// its stdout.
func (e *nodeEnv) run(key string, vars map[string]string, args ...string) (string, error) {
	e.t.Helper()
	env := map[string]string{"HOME": e.t.TempDir(), "FFRTMP_ADDR": e.url, "FFRTMP_API_KEY": key}
	for k, v := range vars {
		env[k] = v
	}
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := Run(ctx, Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Getenv: func(k string) string { return env[k] }}, args)
	return out.String(), err
}

// mustJSON runs a command that must succeed and decodes its JSON output.
func (e *nodeEnv) mustJSON(key string, vars map[string]string, out any, args ...string) {
	e.t.Helper()
	text, err := e.run(key, vars, args...)
	if err != nil {
		e.t.Fatalf("ffrtmp %s: %v", strings.Join(args, " "), err)
	}
	if err := json.Unmarshal([]byte(text), out); err != nil {
		e.t.Fatalf("ffrtmp %s: decode %q: %v", strings.Join(args, " "), text, err)
	}
}

// addTenant creates a tenant with a dedicated worker and a key of role,
// through the FSM's commands, and returns the key.
func (e *nodeEnv) addTenant(id string, role fsm.Role, ttl time.Duration) string {
	e.t.Helper()
	now := time.Now().UTC()
	e.node.Apply(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: id, Name: id, CreatedAt: now}})
	tok, key := server.NewAPIKey(id, string(role)+"@"+id, role, now, ttl)
	e.node.Apply(&fsm.CreateAPIKey{Key: key})
	w := fsm.Worker{ID: "w-" + id, TenantID: id, Name: "w-" + id, State: fsm.WorkerUp, Incarnation: "1"}
	e.node.Apply(&fsm.RegisterWorker{Worker: w, At: now})
	return tok
}

var submitArgs = []string{"jobs", "submit", "--scenario", "240p30-h264", "--input", "testsrc://?duration=1", "--output", "file:///t.mp4"}

// TestCLITenantFlag checks that a super-admin acts on another tenant with
// --tenant or FFRTMP_TENANT, wherever the flag stands, on job and worker
// commands, and that anyone else naming another tenant is refused.
//
// Tests that call Run are not parallel: urfave/cli writes into its global
// help flag whenever it parses, so two Runs at once race.
func TestCLITenantFlag(t *testing.T) {
	e := startAPINode(t)
	opA := e.addTenant("t-a", fsm.RoleOperator, 0)
	e.addTenant("t-b", fsm.RoleViewer, 0)

	// A super-admin submits into its own tenant, then into B: the job is
	// B's.
	defID, err := e.run(e.admin, nil, submitArgs...)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	defID = strings.TrimSpace(defID)
	id, err := e.run(e.admin, nil, append(append([]string{}, submitArgs...), "--tenant", "t-b")...)
	if err != nil {
		t.Fatalf("submit --tenant t-b: %v", err)
	}
	id = strings.TrimSpace(id)
	var j fsm.Job
	e.mustJSON(e.admin, nil, &j, "--tenant", "t-b", "jobs", "get", id, "-o", "json")
	if j.TenantID != "t-b" {
		t.Fatalf("job %s submitted with --tenant t-b is in tenant %q", id, j.TenantID)
	}
	// Lists: --tenant before or after the command, or the environment.
	for _, tc := range []struct {
		args []string
		vars map[string]string
	}{
		{[]string{"jobs", "list", "--tenant", "t-b", "-o", "json"}, nil},
		{[]string{"--tenant=t-b", "jobs", "list", "-o", "json"}, nil},
		{[]string{"jobs", "list", "-o", "json"}, map[string]string{"FFRTMP_TENANT": "t-b"}},
	} {
		var page fsm.JobPage
		e.mustJSON(e.admin, tc.vars, &page, tc.args...)
		if len(page.Jobs) != 1 || page.Jobs[0].ID != id {
			t.Errorf("ffrtmp %v (env %v): %d jobs, want only %s", tc.args, tc.vars, len(page.Jobs), id)
		}
	}
	var own, all fsm.JobPage
	e.mustJSON(e.admin, nil, &own, "jobs", "list", "--tenant", "default", "-o", "json")
	if len(own.Jobs) != 1 || own.Jobs[0].ID != defID {
		t.Errorf("tenant default lists %d jobs, want only %s", len(own.Jobs), defID)
	}
	e.mustJSON(e.admin, nil, &all, "jobs", "list", "-o", "json")
	if len(all.Jobs) != 2 {
		t.Errorf("a super-admin naming no tenant lists %d jobs, want both tenants' 2", len(all.Jobs))
	}
	var ws []server.Worker
	e.mustJSON(e.admin, nil, &ws, "workers", "list", "--tenant", "t-b", "-o", "json")
	if len(ws) != 1 || ws[0].ID != "w-t-b" {
		t.Errorf("workers list --tenant t-b: %+v, want only w-t-b", ws)
	}
	var wk server.Worker
	e.mustJSON(e.admin, nil, &wk, "workers", "drain", "w-t-b", "--tenant", "t-b", "-o", "json")
	if !wk.Draining {
		t.Errorf("workers drain --tenant t-b: %+v, want draining", wk)
	}

	// An operator of A may not name B, whatever the command.
	for _, args := range [][]string{
		{"jobs", "list", "--tenant", "t-b"},
		{"jobs", "get", id, "--tenant", "t-b"},
		{"workers", "list", "--tenant", "t-b"},
		append(append([]string{}, submitArgs...), "--tenant", "t-b"),
	} {
		_, err := e.run(opA, nil, args...)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Code != server.CodePermissionDenied || ae.Status != http.StatusForbidden {
			t.Errorf("operator of t-a: ffrtmp %s: %v, want 403 permission_denied", strings.Join(args, " "), err)
		}
	}
	if _, err := e.run(opA, map[string]string{"FFRTMP_TENANT": "t-b"}, "jobs", "list"); err == nil {
		t.Error("operator of t-a with FFRTMP_TENANT=t-b listed jobs")
	}
	var page fsm.JobPage
	e.mustJSON(e.admin, nil, &page, "jobs", "list", "--tenant", "t-b", "-o", "json")
	if len(page.Jobs) != 1 {
		t.Errorf("tenant t-b has %d jobs after the refused submit, want 1", len(page.Jobs))
	}
	// Its own tenant, named or not, works.
	if _, err := e.run(opA, nil, "jobs", "list", "--tenant", "t-a"); err != nil {
		t.Errorf("operator of t-a naming t-a: %v", err)
	}
}

// TestCLIWhoami checks `ffrtmp whoami` in both formats, for a key that
// never expires and one that does.
func TestCLIWhoami(t *testing.T) {
	e := startAPINode(t)
	var admin server.Whoami
	e.mustJSON(e.admin, nil, &admin, "whoami", "-o", "json")
	if admin.Role != fsm.RoleSuperAdmin || admin.Tenant.ID != "default" || admin.ExpiresAt != nil || len(admin.Permissions) != len(server.AllPermissions()) {
		t.Errorf("super-admin whoami: %+v", admin)
	}
	table, err := e.run(e.admin, nil, "whoami")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"superadmin", "never", "cluster.manage", admin.KeyID, "(default)"} {
		if !strings.Contains(table, want) {
			t.Errorf("whoami table lacks %q:\n%s", want, table)
		}
	}

	op := e.addTenant("t-a", fsm.RoleOperator, 72*time.Hour)
	var me server.Whoami
	e.mustJSON(op, nil, &me, "whoami", "-o", "json", "--tenant", "t-a")
	if me.Role != fsm.RoleOperator || me.User != "operator@t-a" || me.Tenant != (server.WhoamiTenant{ID: "t-a", Name: "t-a"}) || me.ExpiresAt == nil {
		t.Fatalf("operator whoami: %+v", me)
	}
	table, err = e.run(op, nil, "whoami")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"operator@t-a", "t-a", "jobs.create", me.ExpiresAt.Local().Format(time.RFC3339)} {
		if !strings.Contains(table, want) {
			t.Errorf("whoami table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "cluster.manage") {
		t.Errorf("an operator's whoami lists cluster.manage:\n%s", table)
	}
	if _, err := e.run("", nil, "whoami"); err == nil {
		t.Error("whoami without a key succeeded")
	}
}
