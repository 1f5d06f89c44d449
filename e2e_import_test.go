package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/importer/importertest"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

// TestLegacyImportKeepsIDs imports a legacy ffmpeg-rtmp master.db into
// PostgreSQL with `ffrtmp migrate` (the commands of docs/migration.md:
// a dry run, then the import), starts a server on that database, and
// gets imported jobs by the IDs they had in ffmpeg-rtmp, a UUIDv4 and a
// free-text one, through `ffrtmp jobs get`.
func TestLegacyImportKeepsIDs(t *testing.T) {
	dbURL := pgtest.URL(t)
	master, legacy := importertest.LegacyDB(t, "v2", 12)
	c := newTestCluster(t, 1)

	out := c.mustCLI("migrate", "--from", "sqlite://"+master, "--to", dbURL, "--tenant", "acme", "--dry-run")
	if !strings.Contains(out, "dry run: nothing was written") {
		t.Fatalf("dry run:\n%s", out)
	}
	out = c.mustCLI("migrate", "--from", "sqlite://"+master, "--to", dbURL, "--tenant", "acme")
	if !strings.Contains(out, "count check: ok") || !strings.Contains(out, "jobs keep their ffmpeg-rtmp IDs") {
		t.Fatalf("import:\n%s", out)
	}

	s := c.nodes[0]
	s.args = append(s.args, "--store", dbURL)
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", c.addrs(s), "--cluster-key-file", c.keyFile)
	// The upgrade path's first step works on the imported store, and
	// again: the imported jobs have their tenant, so nothing moves.
	for range 2 {
		out := c.mustCLI("--addr", c.addrs(s), "tenants", "create", "--name", "default", "--migrate-existing", "-o", "json")
		if !strings.Contains(out, `"id": "default"`) {
			t.Fatalf("tenants create --name default --migrate-existing printed %s", out)
		}
	}

	for _, l := range []importertest.LegacyJob{legacy[7], legacy[3]} { // completed, UUIDv4 ID; processing, "job-3"
		var j fsm.Job
		out := c.mustCLI("--addr", c.addrs(s), "jobs", "get", l.ID, "-o", "json")
		if err := json.Unmarshal([]byte(out), &j); err != nil {
			t.Fatalf("jobs get %s: %v\n%s", l.ID, err, out)
		}
		if j.ID != l.ID || j.TenantID != "acme" || !strings.Contains(j.Spec.Name, l.ID) {
			t.Errorf("jobs get %s = job %s of tenant %s named %q; want the legacy job", l.ID, j.ID, j.TenantID, j.Spec.Name)
		}
		want := map[string]fsm.JobState{"completed": fsm.JobSucceeded, "processing": fsm.JobQueued}[l.Status]
		if j.State != want {
			t.Errorf("jobs get %s: state %s, want %s (legacy %s)", l.ID, j.State, want, l.Status)
		}
	}
	if _, err := c.cli("--addr", c.addrs(s), "jobs", "get", "job 3"); err == nil || !strings.Contains(err.Error(), "malformed job id") {
		t.Errorf("jobs get of a malformed ID = %v, want it refused as malformed", err)
	}
}

// TestUpgradePath runs the upgrade path of docs/migration.md verbatim: a
// legacy master.db imported into PostgreSQL with no --tenant (its jobs go
// to tenant default), three servers started on the database, cluster
// init, then `tenants create --name default --migrate-existing` (twice:
// it is idempotent), `users create --email admin@example.com --role
// admin` and `users create-key --user admin@example.com`, each through
// another node. The new tenant admin's key then lists every imported job.
func TestUpgradePath(t *testing.T) {
	dbURL := pgtest.URL(t)
	master, legacy := importertest.LegacyDB(t, "v2", 12)
	c := newTestCluster(t, 3)
	c.mustCLI("migrate", "--from", "sqlite://"+master, "--to", dbURL)
	for _, s := range c.nodes {
		s.args = append(s.args, "--store", dbURL)
	}
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", c.addrs(c.nodes[0]), "--cluster-key-file", c.keyFile)

	via := func(i int, args ...string) string {
		t.Helper()
		out, err := c.cliEnv([]string{"FFRTMP_ADDR=" + c.addrs(c.nodes[i%3])}, args...)
		if err != nil {
			t.Fatalf("ffrtmp %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	for i := range 2 {
		via(i, "tenants", "create", "--name", "default", "--migrate-existing")
	}
	out := via(1, "users", "create", "--email", "admin@example.com", "--role", "admin")
	if !strings.Contains(out, "tenant_admin") || !strings.Contains(out, "default") {
		t.Fatalf("users create printed %q", out)
	}
	key := secretLine(t, via(2, "users", "create-key", "--user", "admin@example.com"), "ffk_")

	var page struct {
		Jobs []struct {
			ID       string `json:"id"`
			TenantID string `json:"tenant_id"`
		} `json:"jobs"`
	}
	out, err := c.cliEnv([]string{"FFRTMP_ADDR=" + c.addrs(c.nodes[2]), "FFRTMP_API_KEY=" + key}, "jobs", "list", "--limit", "100", "-o", "json")
	if err != nil {
		t.Fatalf("jobs list with the new admin's key: %v", err)
	}
	if err := json.Unmarshal([]byte(out), &page); err != nil {
		t.Fatalf("jobs list: %v\n%s", err, out)
	}
	got := map[string]bool{}
	for _, j := range page.Jobs {
		if j.TenantID != "default" {
			t.Errorf("job %s of tenant %q, want default", j.ID, j.TenantID)
		}
		got[j.ID] = true
	}
	for _, l := range legacy {
		if !got[l.ID] {
			t.Errorf("the new admin does not see imported job %s", l.ID)
		}
	}
}
