package cli

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store"
	"github.com/ffrtmp/ffrtmp/store/bolt"
	"github.com/ffrtmp/ffrtmp/store/postgres"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

var mctx = context.Background()

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
	out, err := runCLI(t, nil, "migrate", "status", "--store", url)
	if err != nil || !strings.Contains(out, "pending") {
		t.Fatalf("status of a fresh schema: %v\n%s", err, out)
	}
	out, err = runCLI(t, map[string]string{"FFRTMP_STORE": url}, "migrate", "up")
	if err != nil || !strings.Contains(out, "applied 001_initial") {
		t.Fatalf("migrate up: %v\n%s", err, out)
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

// legacyFixture is a row of a legacy master.db fixture.
type legacyFixture struct {
	id, status, scenario, params, node, errMsg, reason, logs, queue, prio string
	seq, retries, maxRetries, progress                                    int
	created, started, completed                                           time.Time
}

// sqliteTime writes t as mattn/go-sqlite3 does for a DATETIME column.
func sqliteTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.Format("2006-01-02 15:04:05.999999999-07:00")
}

// writeLegacyDB creates an ffmpeg-rtmp master.db with the schema of
// testdata/legacy/schema_<version>.sql, two nodes and n jobs in every
// legacy status, the way the legacy master wrote them: UUIDv4 job IDs
// (and a few free-text ones), mattn-formatted times, JSON parameters.
// It returns the path and the jobs.
func writeLegacyDB(t *testing.T, version string, n int) (string, []legacyFixture) {
	t.Helper()
	schema, err := os.ReadFile(filepath.Join("..", "testdata", "legacy", "schema_"+version+".sql"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "master.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(string(schema)); err != nil {
		t.Fatalf("create legacy schema: %v", err)
	}
	base := time.Date(2024, 5, 2, 10, 4, 5, 123456789, time.FixedZone("CEST", 2*3600))
	nodes := []string{"6f1c1a52-3b5e-4c3e-9a43-1d2f3e4a5b6c", "b7e2d9f0-8c1a-4e5b-a6d7-0e9f8a7b6c5d"}
	for i, id := range nodes {
		if version == "v1" {
			_, err = db.Exec(`INSERT INTO nodes (id, address, type, cpu_threads, cpu_model, has_gpu, gpu_type, ram_bytes, labels, status, last_heartbeat, registered_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)`,
				id, fmt.Sprintf("http://10.1.0.%d:9000", i+1), "server", 16, "AMD EPYC 7302", i == 1, "", int64(32)<<30, `{"rack":"r1"}`, "available", sqliteTime(base), sqliteTime(base))
		} else {
			_, err = db.Exec(`INSERT INTO nodes (id, name, address, type, cpu_threads, cpu_model, has_gpu, gpu_type, gpu_capabilities, ram_total_bytes, labels, status, last_heartbeat, registered_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
				id, fmt.Sprintf("encoder-%d", i+1), fmt.Sprintf("http://10.1.0.%d:9000", i+1), "server", 16, "AMD EPYC 7302", i == 1, map[bool]string{true: "NVIDIA T4"}[i == 1],
				map[bool]string{true: `["nvenc_h264","nvenc_h265"]`, false: `[]`}[i == 1], int64(32)<<30, `{"rack":"r1"}`, "available", sqliteTime(base), sqliteTime(base))
		}
		if err != nil {
			t.Fatalf("insert node: %v", err)
		}
	}
	statuses := []string{"pending", "queued", "assigned", "processing", "running", "paused", "retrying", "completed", "failed", "timed_out", "canceled", "rejected"}
	scenarios := []string{"4K60-h264", "1080p30-h264", "720p30-h265", "480p30-h264", "1080p60-hevc", "weird-scenario"}
	r := rand.New(rand.NewPCG(9, 9))
	var jobs []legacyFixture
	for i := range n {
		id := uuid.Must(uuid.NewRandomFromReader(rand.NewChaCha8([32]byte{byte(i), byte(i >> 8)}))).String()
		switch i {
		case 3:
			id = "job-3" // a free-text ID
		case 4:
			id = uuid.Must(uuid.NewV7()).String()
		}
		j := legacyFixture{
			id: id, seq: i + 1, status: statuses[i%len(statuses)], scenario: scenarios[i%len(scenarios)],
			params:  fmt.Sprintf(`{"duration":%d,"bitrate":"5000k"}`, 5+i%20),
			created: base.Add(time.Duration(i) * time.Minute), retries: i % 3, maxRetries: 3,
			queue: []string{"live", "default", "batch"}[i%3], prio: []string{"high", "medium", "low"}[r.IntN(3)],
		}
		switch j.status {
		case "pending", "queued":
		default:
			j.node = nodes[i%2]
			j.started = j.created.Add(30 * time.Second)
			j.progress = 40
			j.logs = strings.Repeat(fmt.Sprintf("frame=%d fps=30 q=28.0 size=1024kB time=00:00:10.00 bitrate=800kbits/s speed=1.2x\n", i), 3)
		}
		switch j.status {
		case "completed", "failed", "timed_out", "canceled", "rejected":
			j.completed = j.started.Add(2 * time.Minute)
			if j.status == "rejected" {
				j.started, j.node, j.logs, j.progress = time.Time{}, "", "", 0
			}
		}
		switch j.status {
		case "failed":
			j.errMsg, j.reason, j.progress = "ffmpeg exited with status 1: Conversion failed!", "runtime_error", 73
		case "timed_out":
			j.errMsg, j.reason = "job exceeded timeout of 40s", "timeout"
		case "rejected":
			j.errMsg, j.reason = "no node with NVENC", "capability_mismatch"
		case "completed":
			j.progress = 100
		}
		if version == "v1" {
			_, err = db.Exec(`INSERT INTO jobs (id, scenario, confidence, parameters, status, node_id, created_at, started_at, completed_at, retry_count, error) VALUES (?,?,?,?,?,?,?,?,?,?,?)`,
				j.id, j.scenario, "auto", j.params, j.status, j.node, sqliteTime(j.created), sqliteTime(j.started), sqliteTime(j.completed), j.retries, j.errMsg)
		} else {
			_, err = db.Exec(`INSERT INTO jobs (id, sequence_number, scenario, confidence, engine, parameters, status, queue, priority, progress, node_id, created_at, started_at, last_activity_at, completed_at, retry_count, max_retries, error, failure_reason, logs, state_transitions) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
				j.id, j.seq, j.scenario, "auto", "ffmpeg", j.params, j.status, j.queue, j.prio, j.progress, j.node, sqliteTime(j.created), sqliteTime(j.started),
				sqliteTime(j.started), sqliteTime(j.completed), j.retries, j.maxRetries, j.errMsg, j.reason, j.logs, `[]`)
		}
		if err != nil {
			t.Fatalf("insert job: %v", err)
		}
		jobs = append(jobs, j)
	}
	return path, jobs
}

// tableRows returns every row of the import's tables as text, to check
// that a second run changes nothing.
func tableRows(t *testing.T, url string) string {
	t.Helper()
	conn := pgtest.Connect(t, url)
	var out strings.Builder
	for _, q := range []string{
		`SELECT 'state ' || applied_index FROM ffrtmp_state`,
		`SELECT id || ' ' || modify_index || ' ' || doc::text FROM tenants ORDER BY id`,
		`SELECT id || ' ' || modify_index || ' ' || doc::text FROM api_keys ORDER BY id`,
		`SELECT id || ' ' || modify_index || ' ' || doc::text FROM workers ORDER BY id`,
		`SELECT id || ' ' || state || ' ' || modify_index || ' ' || doc::text FROM jobs ORDER BY id`,
	} {
		rows, err := conn.Query(mctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out.WriteString(s + "\n")
		}
		rows.Close()
	}
	return out.String()
}

var importNow = time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC)

func runImport(t *testing.T, cfg ImportConfig) (*ImportReport, string) {
	t.Helper()
	var out bytes.Buffer
	cfg.Out, cfg.Now = &out, func() time.Time { return importNow }
	rep, err := RunImport(mctx, cfg)
	if err != nil {
		t.Fatalf("import %s: %v\n%s", cfg.From, err, out.String())
	}
	return rep, out.String()
}

func TestImportLegacy(t *testing.T) {
	t.Parallel()
	for _, version := range []string{"v1", "v2"} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			url := pgtest.URL(t)
			path, legacy := writeLegacyDB(t, version, 60)
			from := "sqlite://" + path

			// A dry run reads both sides and writes nothing, not even the
			// schema.
			rep, out := runImport(t, ImportConfig{From: from, To: url, Tenant: "acme", DryRun: true})
			if rep.Counts.Jobs.Total != len(legacy) || rep.Counts.Workers.Total != 2 || !strings.Contains(out, "would apply migrations 001_initial") {
				t.Errorf("dry run: %+v\n%s", rep.Counts, out)
			}
			var tables int
			if err := pgtest.Connect(t, url).QueryRow(mctx, `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()`).Scan(&tables); err != nil || tables != 0 {
				t.Errorf("the dry run created %d tables (%v)", tables, err)
			}

			rep, out = runImport(t, ImportConfig{From: from, To: url, Tenant: "acme"})
			want := postgres.Counts{Tenants: postgres.Count{Total: 1}, Workers: postgres.Count{Total: 2}, Jobs: postgres.Count{Total: len(legacy)}}
			if rep.Counts != want || !strings.Contains(out, "count check: ok") {
				t.Errorf("import counts = %+v, want %+v\n%s", rep.Counts, want, out)
			}
			before := tableRows(t, url)

			// A second run finds everything there and changes nothing.
			rep, out = runImport(t, ImportConfig{From: from, To: url, Tenant: "acme"})
			if rep.Counts.Jobs.Existing != len(legacy) || rep.Counts.Workers.Existing != 2 || rep.Counts.Tenants.Existing != 1 {
				t.Errorf("second import counts = %+v, want everything already there\n%s", rep.Counts, out)
			}
			if after := tableRows(t, url); after != before {
				t.Errorf("second import changed the tables")
			}

			st := pgtest.OpenURL(t, url, postgres.Options{})
			checkLegacyJobs(t, st, version, legacy)
		})
	}
}

// checkLegacyJobs checks each imported job against its legacy row.
func checkLegacyJobs(t *testing.T, st *postgres.Store, version string, legacy []legacyFixture) {
	t.Helper()
	state, err := st.Load(mctx)
	if err != nil {
		t.Fatal(err)
	}
	if state.Index != 0 {
		t.Errorf("applied index after the import = %d, want 0: the new cluster's log starts at 1", state.Index)
	}
	wantState := map[string]fsm.JobState{
		"pending": fsm.JobQueued, "queued": fsm.JobQueued, "assigned": fsm.JobQueued, "processing": fsm.JobQueued,
		"running": fsm.JobQueued, "paused": fsm.JobQueued, "retrying": fsm.JobQueued, "completed": fsm.JobSucceeded,
		"failed": fsm.JobFailed, "timed_out": fsm.JobFailed, "canceled": fsm.JobCanceled, "rejected": fsm.JobFailed,
	}
	for _, l := range legacy {
		id := l.id
		if u, err := uuid.Parse(id); err != nil || u.Version() != 7 {
			id = legacyJobID(l.id, l.created.UTC())
		}
		j, err := st.GetJob(mctx, id)
		if err != nil {
			t.Errorf("legacy job %s (%s): GetJob(%s): %v", l.id, l.status, id, err)
			continue
		}
		what := fmt.Sprintf("legacy job %s (%s, %s)", l.id, l.status, l.scenario)
		ws := wantState[l.status]
		unconvertible := l.scenario == "weird-scenario" && ws == fsm.JobQueued
		if unconvertible {
			ws = fsm.JobFailed
		}
		if j.State != ws {
			t.Errorf("%s: state %s, want %s", what, j.State, ws)
		}
		if j.CreateIndex != 0 || j.ModifyIndex != 0 || j.TenantID != "acme" {
			t.Errorf("%s: indexes %d/%d tenant %q, want 0/0 acme", what, j.CreateIndex, j.ModifyIndex, j.TenantID)
		}
		if !strings.Contains(j.Spec.Name, l.id) {
			t.Errorf("%s: name %q does not keep the legacy ID", what, j.Spec.Name)
		}
		if !j.SubmittedAt.Equal(l.created) || j.Retries != l.retries {
			t.Errorf("%s: submitted %s retries %d, want %s and %d", what, j.SubmittedAt, j.Retries, l.created, l.retries)
		}
		if ws == fsm.JobQueued {
			if j.WorkerID != "" || !j.QueuedAt.Equal(importNow) || j.Plan.Input.Kind != fsm.KindTestsrc {
				t.Errorf("%s: requeued on worker %q at %s with input %q; want no worker, the import time, a testsrc plan", what, j.WorkerID, j.QueuedAt, j.Plan.Input.Kind)
			}
			if _, active := slicesIndex(state.Jobs, j.ID); !active {
				t.Errorf("%s: queued but not loaded as active", what)
			}
			continue
		}
		if unconvertible {
			if fsm.ErrorCode(j.Error) != fsm.CodeInvalidArgument {
				t.Errorf("%s: error %v, want invalid_argument saying why it cannot run", what, j.Error)
			}
			continue
		}
		if !j.FinishedAt.Equal(l.completed) && !l.completed.IsZero() {
			t.Errorf("%s: finished %s, want %s", what, j.FinishedAt, l.completed)
		}
		if l.errMsg != "" && (j.Error == nil || j.Error.Message != l.errMsg) {
			t.Errorf("%s: error %v, want %q", what, j.Error, l.errMsg)
		}
		if version == "v2" && j.Log != l.logs {
			t.Errorf("%s: log %q, want %q", what, j.Log, l.logs)
		}
		if j.WorkerID != l.node {
			t.Errorf("%s: worker %q, want the legacy node %q", what, j.WorkerID, l.node)
		}
	}
	if version == "v2" {
		j, err := st.GetJob(mctx, legacyJobID(legacy[9].id, legacy[9].created.UTC())) // timed_out
		if err == nil && fsm.ErrorCode(j.Error) != fsm.CodeTimeout {
			t.Errorf("timed_out legacy job: error code %q, want timeout", fsm.ErrorCode(j.Error))
		}
	}
	if len(state.Workers) != 2 || state.Workers[0].State != fsm.WorkerDown || state.Workers[0].CPUs != 16 || state.Workers[0].MemoryMB != 32<<10 {
		t.Errorf("imported nodes = %+v, want 2 workers down with 16 CPUs and 32 GiB", state.Workers)
	}
}

func slicesIndex(js []*fsm.Job, id string) (int, bool) {
	for i, j := range js {
		if j.ID == id {
			return i, true
		}
	}
	return -1, false
}

func TestLegacyJobID(t *testing.T) {
	created := time.Date(2024, 5, 2, 10, 0, 0, 0, time.UTC)
	a, b := legacyJobID("6f1c1a52-3b5e-4c3e-9a43-1d2f3e4a5b6c", created), legacyJobID("6f1c1a52-3b5e-4c3e-9a43-1d2f3e4a5b6c", created)
	if a != b {
		t.Errorf("legacyJobID is not deterministic: %s, %s", a, b)
	}
	u, err := uuid.Parse(a)
	if err != nil || u.Version() != 7 || u.Variant() != uuid.RFC4122 {
		t.Errorf("legacyJobID = %s (%v): want a UUIDv7", a, err)
	}
	if sec, _ := u.Time().UnixTime(); sec != created.Unix() {
		t.Errorf("legacyJobID time = %d, want the creation time %d", sec, created.Unix())
	}
	later := legacyJobID("job-2", created.Add(time.Millisecond))
	if later <= a {
		t.Errorf("a later job's ID %s does not sort after %s", later, a)
	}
	v7 := uuid.Must(uuid.NewV7()).String()
	if got := legacyJobID(v7, created); got != v7 {
		t.Errorf("a UUIDv7 legacy ID became %s, want it kept", got)
	}
	for in, want := range map[string]string{"4K60-h264": "2160p60-h264", "1080p30-h264": "1080p30-h264", "720p-hevc": "720p30-h265", "1080p60-HEVC": "1080p60-h265", "weird": "", "8K30-h264": ""} {
		if got := legacyScenario(in); got != want {
			t.Errorf("legacyScenario(%q) = %q, want %q", in, got, want)
		}
	}
}

// boltNode is a single FSM on a bolt store, fed commands one index each,
// as a dev node's Raft would.
type boltNode struct {
	t    *testing.T
	f    *fsm.FSM
	next uint64
}

func (n *boltNode) apply(c fsm.Command) any {
	n.t.Helper()
	data, err := fsm.Encode(c)
	if err != nil {
		n.t.Fatal(err)
	}
	n.next++
	r := n.f.ApplyBatch([]*raft.Log{{Index: n.next, Type: raft.LogCommand, Data: data}})[0]
	if err, ok := r.(error); ok {
		n.t.Fatalf("apply %T: %v", c, err)
	}
	return r
}

func devSubmit(n int, at time.Time) *fsm.SubmitJob {
	spec := fsm.JobSpec{Scenario: "720p30-h264", Input: fsm.Input{URL: "testsrc://?duration=2"}, Outputs: []fsm.Output{{URL: fmt.Sprintf("file:///out/%d.mp4", n)}}}
	plan, err := spec.Compile(fsm.Policy{})
	if err != nil {
		panic(err)
	}
	return &fsm.SubmitJob{Job: fsm.Job{ID: fmt.Sprintf("01956a3c-0000-7000-8000-%012x", n), TenantID: "acme", Spec: spec, Plan: *plan, SubmittedAt: at}}
}

// writeDevState runs a dev node's FSM on a bolt file: a tenant, a key, a
// worker and jobs in every state. It returns the path, closed.
func writeDevState(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	bs, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsm.New(mctx, fsm.Config{Store: bs})
	if err != nil {
		t.Fatal(err)
	}
	n := &boltNode{t: t, f: f}
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	n.apply(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "acme", Name: "Acme", CreatedAt: at}})
	n.apply(&fsm.CreateAPIKey{Key: fsm.APIKey{ID: "k1", TenantID: "acme", User: "admin", Role: fsm.RoleSuperAdmin, Hash: []byte("0123456789abcdef0123456789abcdef"), CreatedAt: at}})
	n.apply(&fsm.RegisterWorker{At: at, Worker: fsm.Worker{ID: "w1", Name: "laptop", Incarnation: "i1", Slots: 4, CPUs: 8, MemoryMB: 8192, Encoders: []string{"libx264"}, RegisteredAt: at}})
	for i := 1; i <= 12; i++ {
		n.apply(devSubmit(i, at.Add(time.Duration(i)*time.Second)))
	}
	rep := func(i, attempt int) fsm.Report {
		return fsm.Report{JobID: devSubmit(i, at).Job.ID, WorkerID: "w1", Attempt: attempt}
	}
	for i := 1; i <= 4; i++ { // 1, 2 succeed; 3 runs; 4 is paused
		n.apply(&fsm.AssignJob{JobID: rep(i, 1).JobID, WorkerID: "w1", Attempt: 1, At: at.Add(time.Minute)})
		n.apply(&fsm.StartJob{Report: rep(i, 1), At: at.Add(2 * time.Minute)})
	}
	n.apply(&fsm.FinishJob{Report: rep(1, 1), At: at.Add(3 * time.Minute), Log: "done\n"})
	n.apply(&fsm.FinishJob{Report: rep(2, 1), At: at.Add(3 * time.Minute), Error: &fsm.Error{Code: fsm.CodeFFmpeg, Message: "exit 1"}})
	n.apply(&fsm.PauseJob{JobID: rep(4, 1).JobID, At: at.Add(4 * time.Minute)})
	n.apply(&fsm.AssignJob{JobID: rep(5, 1).JobID, WorkerID: "w1", Attempt: 1, At: at.Add(time.Minute)}) // assigned
	n.apply(&fsm.CancelJob{JobID: rep(6, 1).JobID, At: at.Add(5 * time.Minute)})
	n.apply(&fsm.RevokeAPIKey{ID: "k1", At: at.Add(6 * time.Minute)})
	n.apply(&fsm.CreateAPIKey{Key: fsm.APIKey{ID: "k2", TenantID: "acme", User: "admin", Role: fsm.RoleSuperAdmin, Hash: []byte("fedcba9876543210fedcba9876543210"), CreatedAt: at}})
	if err := bs.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestImportBolt(t *testing.T) {
	// Not parallel: Run parses into the package's global flags.
	url := pgtest.URL(t)
	path := writeDevState(t)
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
	before := tableRows(t, url)
	out, err = runCLI(t, nil, "migrate", "--from", "bolt://"+path, "--to", url)
	if err != nil || tableRows(t, url) != before {
		t.Fatalf("second import: %v (tables changed: %v)\n%s", err, tableRows(t, url) != before, out)
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
	n := &boltNode{t: t, f: f}
	n.apply(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "initech", Name: "Initech", CreatedAt: importNow}})
	if _, ok := f.Tenant("initech"); !ok || f.Index() != 1 {
		t.Errorf("the new cluster's first entry was not applied (index %d)", f.Index())
	}
	data, _ := fsm.Encode(devSubmit(7, importNow))
	if r := f.ApplyBatch([]*raft.Log{{Index: 2, Type: raft.LogCommand, Data: data}})[0]; fsm.ErrorCode(asError(r)) != fsm.CodeAlreadyExists {
		t.Errorf("resubmitting an imported job ID = %v, want already_exists", r)
	}
	// The requeued job runs again once its worker registers, as attempt
	// 2: the imported attempt count goes on fencing the old one.
	n.next = 2
	running := devSubmit(3, importNow).Job.ID
	n.apply(&fsm.RegisterWorker{At: importNow, Worker: fsm.Worker{ID: "w1", Name: "laptop", Incarnation: "i2", Slots: 4, Encoders: []string{"libx264"}, RegisteredAt: importNow}})
	n.apply(&fsm.AssignJob{JobID: running, WorkerID: "w1", Attempt: 2, At: importNow})
	if j, _ := f.ActiveJob(running); j == nil || j.State != fsm.JobAssigned || j.Attempt != 2 {
		t.Errorf("requeued job after a new assignment = %+v, want assigned as attempt 2", j)
	}

	// Importing again into the running cluster adds nothing: fine. A new
	// object would be refused.
	if _, err := runCLI(t, nil, "migrate", "--from", "bolt://"+path, "--to", url); err != nil {
		t.Errorf("re-import into the running cluster's database: %v", err)
	}
	legacy, _ := writeLegacyDB(t, "v2", 3)
	if _, err := RunImport(mctx, ImportConfig{From: "sqlite://" + legacy, To: url, Tenant: "acme", Out: &bytes.Buffer{}}); !errors.Is(err, postgres.ErrLiveCluster) {
		t.Errorf("importing new objects into a running cluster's database = %v, want ErrLiveCluster", err)
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
		{"migrate", "--from", "bolt://" + writeDevState(t), "--to", "bolt:///y"},
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
