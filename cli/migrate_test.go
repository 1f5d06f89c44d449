package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store"
	"github.com/ffrtmp/ffrtmp/store/bolt"
	"github.com/ffrtmp/ffrtmp/store/importer"
	"github.com/ffrtmp/ffrtmp/store/importer/importertest"
	"github.com/ffrtmp/ffrtmp/store/postgres"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

var mctx = context.Background()

var migrateNow = time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC)

// runCLI runs ffrtmp with args in-process and returns its output.
func runCLI(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := Run(mctx, Env{Stdout: &out, Stderr: &out, Getenv: func(k string) string { return env[k] }}, args)
	return out.String(), err
}

func TestStoreURLFrom(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "dsn")
	if err := os.WriteFile(file, []byte("  postgres://ffrtmp:s3cret@db/ffrtmp\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	cases := []struct {
		name, flag, fileFlag string
		env                  map[string]string
		want                 string
		err                  bool
	}{
		{name: "None", want: ""},
		{name: "Flag", flag: "bolt:///x/state.db", env: map[string]string{"FFRTMP_STORE": "postgres://env"}, want: "bolt:///x/state.db"},
		{name: "FileFlag", fileFlag: file, want: "postgres://ffrtmp:s3cret@db/ffrtmp"},
		{name: "Env", env: map[string]string{"FFRTMP_STORE": "postgres://env", "FFRTMP_STORE_FILE": file}, want: "postgres://env"},
		{name: "EnvFile", env: map[string]string{"FFRTMP_STORE_FILE": file}, want: "postgres://ffrtmp:s3cret@db/ffrtmp"},
		{name: "Both", flag: "postgres://a", fileFlag: file, err: true},
		{name: "MissingFile", fileFlag: filepath.Join(dir, "nope"), err: true},
	}
	for _, c := range cases {
		env = c.env
		got, err := store.URLFrom(c.flag, c.fileFlag, getenv)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("%s: URLFrom = %q, %v; want %q, error %v", c.name, got, err, c.want, c.err)
		}
	}
	if got := store.Redact("postgres://ffrtmp:s3cret@db/ffrtmp"); strings.Contains(got, "s3cret") {
		t.Errorf("Redact kept the password: %s", got)
	}
	if got := store.Redact("host=db password=s3cret"); strings.Contains(got, "s3cret") {
		t.Errorf("Redact kept the password: %s", got)
	}
}

func TestStoreOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := store.Open(mctx, "bolt://"+path, store.Options{})
	if err != nil {
		t.Fatalf("Open(bolt://…): %v", err)
	}
	if _, ok := st.(*bolt.Store); !ok {
		t.Errorf("Open(bolt://…) = %T, want *bolt.Store", st)
	}
	st.Close()
	for _, u := range []string{"mysql://x", "/var/lib/state.db", "bolt://"} {
		if st, err := store.Open(mctx, u, store.Options{}); err == nil {
			st.Close()
			t.Errorf("Open(%q) succeeded, want an error", u)
		}
	}
	if os.Getenv(pgtest.EnvURL) == "" {
		return
	}
	st, err = store.Open(mctx, pgtest.URL(t), store.Options{MaxConns: 2})
	if err != nil {
		t.Fatalf("Open(postgres://…): %v", err)
	}
	defer st.Close()
	if _, ok := st.(*postgres.Store); !ok {
		t.Errorf("Open(postgres://…) = %T, want *postgres.Store", st)
	}
	if err := st.Ping(mctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func TestMigrateUpStatus(t *testing.T) {
	// Not parallel: Run parses into the package's global flags.
	url := pgtest.URL(t)
	// As docs/migration.md shows it, with the URL in a file.
	urlFile := filepath.Join(t.TempDir(), "store-url")
	if err := os.WriteFile(urlFile, []byte(url+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, nil, "migrate", "status", "--store-file", urlFile)
	if err != nil || !regexp.MustCompile(`^VERSION +NAME +APPLIED\n001 +initial +pending\n`).MatchString(out) ||
		!strings.Contains(out, " pending: run `ffrtmp migrate up` (nodes also apply them at start)\n") {
		t.Fatalf("status of a fresh schema: %v\n%s", err, out)
	}
	out, err = runCLI(t, nil, "migrate", "up", "--store-file", urlFile)
	if err != nil || !strings.HasPrefix(out, "applied 001_initial\n") {
		t.Fatalf("migrate up: %v\n%s", err, out)
	}
	out, err = runCLI(t, map[string]string{"FFRTMP_STORE": url}, "migrate", "up")
	if err != nil || !strings.Contains(out, "up to date") {
		t.Fatalf("migrate up with $FFRTMP_STORE: %v\n%s", err, out)
	}
	out, err = runCLI(t, nil, "migrate", "status", "--store", url)
	if err != nil || strings.Contains(out, "pending") || !strings.Contains(out, "001") {
		t.Fatalf("status after up: %v\n%s", err, out)
	}
	out, err = runCLI(t, nil, "migrate", "up", "--store", url)
	if err != nil || !strings.Contains(out, "up to date") {
		t.Fatalf("second migrate up: %v\n%s", err, out)
	}
	if _, err := runCLI(t, nil, "migrate", "up"); err == nil {
		t.Error("migrate up without a store succeeded")
	}
}

func TestImportBolt(t *testing.T) {
	// Not parallel: Run parses into the package's global flags.
	url := pgtest.URL(t)
	path := importertest.DevState(t)
	src, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var srcJobs []*fsm.Job
	page, err := src.ListJobs(mctx, &fsm.ListJobsParams{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	srcJobs = page.Jobs
	srcState, _ := src.Load(mctx)
	src.Close()

	out, err := runCLI(t, nil, "migrate", "--from", "bolt://"+path, "--to", url, "--dry-run")
	if err != nil || !strings.Contains(out, "dry run: nothing was written") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	out, err = runCLI(t, map[string]string{"FFRTMP_STORE": url}, "migrate", "--from", "bolt://"+path)
	if err != nil || !strings.Contains(out, "count check: ok") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	before := importertest.TableRows(t, url)
	out, err = runCLI(t, nil, "migrate", "--from", "bolt://"+path, "--to", url, "-o", "json")
	if err != nil || importertest.TableRows(t, url) != before {
		t.Fatalf("second import: %v (tables changed: %v)\n%s", err, importertest.TableRows(t, url) != before, out)
	}
	var rep importer.Report
	err = json.Unmarshal([]byte(out), &rep)
	i := slices.IndexFunc(rep.Tables, func(tr importer.TableCount) bool { return tr.Table == "jobs" })
	if err != nil || !rep.Checked || len(rep.Tables) != len(postgres.Tables) || i < 0 ||
		rep.Tables[i].Existing != len(srcJobs) || rep.Tables[i].Inserted != 0 {
		t.Errorf("second import, -o json: %v\n%s", err, out)
	}

	st := pgtest.OpenURL(t, url, postgres.Options{})
	for _, sj := range srcJobs {
		j, err := st.GetJob(mctx, sj.ID)
		if err != nil {
			t.Errorf("job %s (%s): %v", sj.ID, sj.State, err)
			continue
		}
		if j.ModifyIndex != 0 || j.CreateIndex != 0 {
			t.Errorf("job %s: indexes %d/%d, want 0", j.ID, j.CreateIndex, j.ModifyIndex)
		}
		switch sj.State {
		case fsm.JobAssigned, fsm.JobRunning, fsm.JobPaused:
			if j.State != fsm.JobQueued || j.WorkerID != "" || j.Attempt != sj.Attempt || j.Retries != sj.Retries {
				t.Errorf("job %s was %s: now %s on %q attempt %d retries %d; want queued on no worker, attempt %d, retries %d",
					j.ID, sj.State, j.State, j.WorkerID, j.Attempt, j.Retries, sj.Attempt, sj.Retries)
			}
		default:
			sj.Meta = fsm.Meta{}
			if got, want := mustJSON(j), mustJSON(sj); got != want {
				t.Errorf("job %s differs\ngot:  %s\nwant: %s", j.ID, got, want)
			}
		}
	}

	// A new cluster starts on the database: its log begins at index 1,
	// and nothing of it is skipped.
	f, err := fsm.New(mctx, fsm.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if f.Index() != 0 {
		t.Fatalf("new cluster's FSM starts at index %d, want 0", f.Index())
	}
	if k, ok := f.APIKey("k2"); !ok || k.Revoked {
		t.Errorf("imported key k2 = %+v, %v; want it loaded and valid", k, ok)
	}
	if k, ok := f.APIKey("k1"); !ok || !k.Revoked {
		t.Errorf("imported key k1 = %+v, %v; want it loaded and revoked", k, ok)
	}
	if w, ok := f.Worker("w1"); !ok || w.State != fsm.WorkerDown {
		t.Errorf("imported worker = %+v, want down", w)
	}
	if byState, _ := f.Counts(); byState[fsm.JobQueued] != len(srcState.Jobs) {
		t.Errorf("queued jobs in the new cluster = %d, want all %d active ones", byState[fsm.JobQueued], len(srcState.Jobs))
	}
	n := &importertest.Node{T: t, F: f}
	n.Apply(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "initech", Name: "initech", CreatedAt: migrateNow}})
	if _, ok := f.Tenant("initech"); !ok || f.Index() != 1 {
		t.Errorf("the new cluster's first entry was not applied (index %d)", f.Index())
	}
	// Another submission with an imported job's ID is refused (the same
	// submission again would answer with the job: submits are resent).
	other := importertest.DevSubmit(7, migrateNow)
	other.Job.Spec.Name = "another job"
	data, _ := fsm.Encode(other)
	if r := f.ApplyBatch([]*raft.Log{{Index: 2, Type: raft.LogCommand, Data: data}})[0]; fsm.ErrorCode(asError(r)) != fsm.CodeAlreadyExists {
		t.Errorf("another submission with an imported job ID = %v, want already_exists", r)
	}
	// The requeued job runs again once its worker registers, as attempt
	// 2: the imported attempt count goes on fencing the old one.
	n.Next = 2
	running := importertest.DevSubmit(3, migrateNow).Job.ID
	n.Apply(&fsm.RegisterWorker{At: migrateNow, Worker: fsm.Worker{ID: "w1", Name: "laptop", Incarnation: "i2", Slots: 4, Encoders: []string{"libx264"}, RegisteredAt: migrateNow}})
	n.Apply(&fsm.AssignJob{JobID: running, WorkerID: "w1", Attempt: 2, At: migrateNow})
	if j, _ := f.ActiveJob(running); j == nil || j.State != fsm.JobAssigned || j.Attempt != 2 {
		t.Errorf("requeued job after a new assignment = %+v, want assigned as attempt 2", j)
	}

	// Importing again into the running cluster adds nothing: fine. A new
	// object would be refused.
	if _, err := runCLI(t, nil, "migrate", "--from", "bolt://"+path, "--to", url); err != nil {
		t.Errorf("re-import into the running cluster's database: %v", err)
	}
	legacy, _ := importertest.LegacyDB(t, "v2", 3)
	if _, err := importer.Run(mctx, importer.Config{From: "sqlite://" + legacy, To: url, Tenant: "acme"}); !errors.Is(err, postgres.ErrLiveCluster) {
		t.Errorf("importing new objects into a running cluster's database = %v, want ErrLiveCluster", err)
	}
	// So does its dry run: the command fails, and so exits non-zero.
	if out, err := runCLI(t, nil, "migrate", "--from", "sqlite://"+legacy, "--to", url, "--tenant", "acme", "--dry-run"); !errors.Is(err, postgres.ErrLiveCluster) {
		t.Errorf("dry run of that import = %v, want ErrLiveCluster\n%s", err, out)
	}
}

func asError(r any) error {
	err, _ := r.(error)
	return err
}

func TestImportArguments(t *testing.T) {
	// Not parallel: Run parses into the package's global flags.
	for _, args := range [][]string{
		{"migrate", "--from", "sqlite:///x/master.db", "--to", "postgres://x/y"}, // no tenant
		{"migrate", "--from", "sqlite:///x/master.db", "--to", "postgres://x/y", "--tenant", "Bad Name"},
		{"migrate", "--from", "bolt:///x/state.db", "--to", "postgres://x/y", "--tenant", "acme"}, // tenant with bolt
		{"migrate", "--from", "mysql://x", "--to", "postgres://x/y"},
		{"migrate", "--from", "bolt://" + importertest.DevState(t), "--to", "bolt:///y"},
		{"migrate", "frobnicate"},
		{"migrate", "--from", "bolt://" + filepath.Join(t.TempDir(), "typo.db"), "--to", "postgres://x/y"},
		{"migrate", "--from", "sqlite://" + filepath.Join(t.TempDir(), "typo.db"), "--to", "postgres://x/y", "--tenant", "acme"},
	} {
		if out, err := runCLI(t, nil, args...); err == nil {
			t.Errorf("%v succeeded, want an error\n%s", args, out)
		}
	}
}

func mustJSON(v any) string {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		panic(err)
	}
	return string(b)
}
