// Package importertest builds the sources that the importer tests read:
// legacy ffmpeg-rtmp master.db files and dev nodes' bolt state files.
package importertest

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "modernc.org/sqlite" // database/sql driver "sqlite", pure Go

	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

// repoRoot is the module's root directory, which holds testdata/.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// LegacyJob is a row of a legacy master.db fixture.
type LegacyJob struct {
	ID, Status, Scenario, Params, Node, ErrMsg, Reason, Logs, Queue, Prio string
	Seq, Retries, MaxRetries, Progress                                    int
	Created, Started, Completed                                           time.Time
}

// sqliteTime writes t as mattn/go-sqlite3 does for a DATETIME column.
func sqliteTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.Format("2006-01-02 15:04:05.999999999-07:00")
}

// LegacyDB creates an ffmpeg-rtmp master.db with the schema of
// testdata/legacy/schema_<version>.sql, two nodes and n jobs in every
// legacy status, the way the legacy master wrote them: UUIDv4 job IDs
// (and a few free-text ones), mattn-formatted times, JSON parameters.
// It returns the path and the jobs.
func LegacyDB(t testing.TB, version string, n int) (string, []LegacyJob) {
	t.Helper()
	schema, err := os.ReadFile(filepath.Join(repoRoot(), "testdata", "legacy", "schema_"+version+".sql"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "master.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The legacy master ran SQLite in WAL mode, which the file records.
	if _, err := db.Exec(`PRAGMA journal_mode=WAL`); err != nil {
		t.Fatal(err)
	}
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
				map[bool]string{true: `["nvenc_h264","h264_nvenc","nvenc_hevc","cuda"]`, false: `[]`}[i == 1], int64(32)<<30, `{"rack":"r1"}`, "available", sqliteTime(base), sqliteTime(base))
		}
		if err != nil {
			t.Fatalf("insert node: %v", err)
		}
	}
	statuses := []string{"pending", "queued", "assigned", "processing", "running", "paused", "retrying", "completed", "failed", "timed_out", "canceled", "rejected"}
	scenarios := []string{"4K60-h264", "test-4K60-h264", "1080p30-h264", "720p30-h265", "test-720p", "480p30-h264", "1080p60-hevc", "weird-scenario"}
	r := rand.New(rand.NewPCG(9, 9))
	var jobs []LegacyJob
	for i := range n {
		id := uuid.Must(uuid.NewRandomFromReader(rand.NewChaCha8([32]byte{byte(i), byte(i >> 8)}))).String()
		switch i {
		case 3:
			id = "job-3" // a free-text ID
		case 4:
			id = uuid.Must(uuid.NewV7()).String()
		}
		j := LegacyJob{
			ID: id, Seq: i + 1, Status: statuses[i%len(statuses)], Scenario: scenarios[i%len(scenarios)],
			Params:  fmt.Sprintf(`{"duration":%d,"bitrate":"5000k"}`, 5+i%20),
			Created: base.Add(time.Duration(i) * time.Minute), Retries: i % 3, MaxRetries: 3,
			Queue: []string{"live", "default", "batch"}[i%3], Prio: []string{"high", "medium", "low"}[r.IntN(3)],
		}
		switch j.Status {
		case "pending", "queued":
		default:
			j.Node = nodes[i%2]
			j.Started = j.Created.Add(30 * time.Second)
			j.Progress = 40
			j.Logs = strings.Repeat(fmt.Sprintf("frame=%d fps=30 q=28.0 size=1024kB time=00:00:10.00 bitrate=800kbits/s speed=1.2x\n", i), 3)
		}
		switch j.Status {
		case "completed", "failed", "timed_out", "canceled", "rejected":
			j.Completed = j.Started.Add(2 * time.Minute)
			if j.Status == "rejected" {
				j.Started, j.Node, j.Logs, j.Progress = time.Time{}, "", "", 0
			}
		}
		switch j.Status {
		case "failed":
			j.ErrMsg, j.Reason, j.Progress = "ffmpeg exited with status 1: Conversion failed!", "runtime_error", 73
		case "timed_out":
			j.ErrMsg, j.Reason = "job exceeded timeout of 40s", "timeout"
		case "rejected":
			j.ErrMsg, j.Reason = "no node with NVENC", "capability_mismatch"
		case "completed":
			j.Progress = 100
		}
		if version == "v1" {
			_, err = db.Exec(`INSERT INTO jobs (id, scenario, confidence, parameters, status, node_id, created_at, started_at, completed_at, retry_count, error) VALUES (?,?,?,?,?,?,?,?,?,?,?)`,
				j.ID, j.Scenario, "auto", j.Params, j.Status, j.Node, sqliteTime(j.Created), sqliteTime(j.Started), sqliteTime(j.Completed), j.Retries, j.ErrMsg)
		} else {
			_, err = db.Exec(`INSERT INTO jobs (id, sequence_number, scenario, confidence, engine, parameters, status, queue, priority, progress, node_id, created_at, started_at, last_activity_at, completed_at, retry_count, max_retries, error, failure_reason, logs, state_transitions) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
				j.ID, j.Seq, j.Scenario, "auto", "ffmpeg", j.Params, j.Status, j.Queue, j.Prio, j.Progress, j.Node, sqliteTime(j.Created), sqliteTime(j.Started),
				sqliteTime(j.Started), sqliteTime(j.Completed), j.Retries, j.MaxRetries, j.ErrMsg, j.Reason, j.Logs, `[]`)
		}
		if err != nil {
			t.Fatalf("insert job: %v", err)
		}
		jobs = append(jobs, j)
	}
	return path, jobs
}

// TableRows returns every row of the import's tables as text, to check
// that a second run changes nothing.
func TableRows(t testing.TB, url string) string {
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
		rows, err := conn.Query(context.Background(), q)
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

// Exec runs a statement on the master.db at path, to add a row the
// fixture lacks.
func Exec(t testing.TB, path, query string, args ...any) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// Node is one FSM fed commands one index each, as a dev node's Raft would.
type Node struct {
	T    testing.TB
	F    *fsm.FSM
	Next uint64
}

// Apply applies c at the next index and fails the test on a refusal.
func (n *Node) Apply(c fsm.Command) any {
	n.T.Helper()
	data, err := fsm.Encode(c)
	if err != nil {
		n.T.Fatal(err)
	}
	n.Next++
	r := n.F.ApplyBatch([]*raft.Log{{Index: n.Next, Type: raft.LogCommand, Data: data}})[0]
	n.F.Flush() // the store has it, as in Raft once the next entry is applied
	if err, ok := r.(error); ok {
		n.T.Fatalf("apply %T: %v", c, err)
	}
	return r
}

// DevSubmit is the nth job DevState submits.
func DevSubmit(n int, at time.Time) *fsm.SubmitJob {
	spec := fsm.JobSpec{Scenario: "720p30-h264", Input: fsm.Input{URL: "testsrc://?duration=2"}, Outputs: []fsm.Output{{URL: fmt.Sprintf("file:///out/%d.mp4", n)}}}
	plan, err := spec.Compile(fsm.Policy{})
	if err != nil {
		panic(err)
	}
	return &fsm.SubmitJob{Job: fsm.Job{ID: fmt.Sprintf("01956a3c-0000-7000-8000-%012x", n), TenantID: "acme", Spec: spec, Plan: *plan, SubmittedAt: at}}
}

// DevState runs a dev node's FSM on a bolt file: a tenant, keys, a user
// with a key, an invitation, a worker and jobs in every state. It returns the path, closed.
func DevState(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	bs, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsm.New(context.Background(), fsm.Config{Store: bs})
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{T: t, F: f}
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	n.Apply(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "acme", Name: "acme", CreatedAt: at}})
	n.Apply(&fsm.CreateAPIKey{Key: fsm.APIKey{ID: "k1", TenantID: "acme", User: "admin", Role: fsm.RoleSuperAdmin, Hash: []byte("0123456789abcdef0123456789abcdef"), CreatedAt: at}})
	n.Apply(&fsm.RegisterWorker{At: at, Worker: fsm.Worker{ID: "w1", Name: "laptop", Incarnation: "i1", Slots: 4, CPUs: 8, MemoryMB: 8192, Encoders: []string{"libx264"}, RegisteredAt: at}})
	for i := 1; i <= 12; i++ {
		n.Apply(DevSubmit(i, at.Add(time.Duration(i)*time.Second)))
	}
	rep := func(i, attempt int) fsm.Report {
		return fsm.Report{JobID: DevSubmit(i, at).Job.ID, WorkerID: "w1", Attempt: attempt}
	}
	for i := 1; i <= 4; i++ { // 1, 2 succeed; 3 runs; 4 is paused
		n.Apply(&fsm.AssignJob{JobID: rep(i, 1).JobID, WorkerID: "w1", Attempt: 1, At: at.Add(time.Minute)})
		n.Apply(&fsm.StartJob{Report: rep(i, 1), At: at.Add(2 * time.Minute)})
	}
	n.Apply(&fsm.FinishJob{Report: rep(1, 1), At: at.Add(3 * time.Minute), Log: "done\n"})
	n.Apply(&fsm.FinishJob{Report: rep(2, 1), At: at.Add(3 * time.Minute), Error: &fsm.Error{Code: fsm.CodeFFmpeg, Message: "exit 1"}})
	n.Apply(&fsm.PauseJob{JobID: rep(4, 1).JobID, At: at.Add(4 * time.Minute)})
	n.Apply(&fsm.AssignJob{JobID: rep(5, 1).JobID, WorkerID: "w1", Attempt: 1, At: at.Add(time.Minute)}) // assigned
	n.Apply(&fsm.CancelJob{JobID: rep(6, 1).JobID, At: at.Add(5 * time.Minute)})
	n.Apply(&fsm.RevokeAPIKey{ID: "k1", At: at.Add(6 * time.Minute)})
	n.Apply(&fsm.CreateAPIKey{Key: fsm.APIKey{ID: "k2", TenantID: "acme", User: "admin", Role: fsm.RoleSuperAdmin, Hash: []byte("fedcba9876543210fedcba9876543210"), CreatedAt: at}})
	// A user with a key, and an invitation.
	n.Apply(&fsm.CreateUser{User: fsm.User{ID: "u1", Email: "Olga@acme.example", TenantID: "acme", Role: fsm.RoleOperator, CreatedAt: at},
		Key: &fsm.APIKey{ID: "k3", UserID: "u1", TenantID: "acme", Role: fsm.RoleOperator, Scopes: []string{"jobs.view"}, Hash: []byte("00112233445566778899aabbccddeeff"), CreatedAt: at}})
	n.Apply(&fsm.CreateInvitation{Invitation: fsm.Invitation{ID: "i1", TenantID: "acme", Email: "rita@acme.example", Role: fsm.RoleViewer,
		Hash: []byte("ffeeddccbbaa99887766554433221100"), CreatedAt: at, ExpiresAt: at.Add(72 * time.Hour)}})
	if err := bs.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}
