package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/jackc/pgx/v5"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
	"github.com/ffrtmp/ffrtmp/store/postgres"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

// The benchmarks run against the database of FFRTMP_TEST_POSTGRES_URL, in
// a schema of their own, and beside a bolt store in a temporary directory
// for the baseline. docs/BENCHMARKS.md has the method and results.

// benchStores are the stores compared, by name.
func benchStores(b *testing.B) []struct {
	name string
	open func(b *testing.B) fsm.Store
} {
	return []struct {
		name string
		open func(b *testing.B) fsm.Store
	}{
		{"bolt", func(b *testing.B) fsm.Store {
			st, err := bolt.Open(filepath.Join(b.TempDir(), "state.db"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			return st
		}},
		{"postgres", func(b *testing.B) fsm.Store { return pgtest.Open(b, postgres.Options{}) }},
	}
}

// submitLogs returns SubmitJob entries for jobs first..first+n-1 of
// tenant "t", from index.
func submitLogs(b testing.TB, first, n int, index uint64) []*raft.Log {
	logs := make([]*raft.Log, 0, n)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		data, err := fsm.Encode(submitJob(first+i, "t", at))
		if err != nil {
			b.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: index + uint64(i), Term: 1, Type: raft.LogCommand, Data: data})
	}
	return logs
}

// benchFSM returns an FSM on st with tenant "t", at index 1.
func benchFSM(b testing.TB, st fsm.Store) *fsm.FSM {
	f, err := fsm.New(ctx, fsm.Config{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Flush() }) // before the store closes
	data, _ := fsm.Encode(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "t", CreatedAt: t0}})
	f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: data}})
	return f
}

// BenchmarkApplySubmit measures FSM apply throughput of SubmitJob entries
// on bolt and on PostgreSQL in the same run, one entry per batch and in
// batches as Raft delivers them under load.
func BenchmarkApplySubmit(b *testing.B) {
	pgtest.BaseURL(b)
	for _, s := range benchStores(b) {
		for _, batch := range []int{1, 16, 64, 256} {
			b.Run(fmt.Sprintf("store=%s/batch=%d", s.name, batch), func(b *testing.B) {
				f := benchFSM(b, s.open(b))
				logs := submitLogs(b, 1, b.N, 2)
				b.ResetTimer()
				for i := 0; i < len(logs); i += batch {
					resps := f.ApplyBatch(logs[i:min(i+batch, len(logs))])
					if _, ok := resps[0].(*fsm.Job); !ok {
						b.Fatalf("apply: %v", resps[0])
					}
				}
				f.Flush()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
			})
		}
	}
}

// BenchmarkCommit measures the PostgreSQL Commit of a batch of new jobs:
// one multi-row unnest statement per table in one round trip (what
// Commit does), against the same statements in a transaction of four
// round trips (tx, what Commit did before), and one single-row INSERT
// per job sent in a pipelined batch (rows).
func BenchmarkCommit(b *testing.B) {
	pgtest.BaseURL(b)
	for _, how := range []string{"unnest", "tx", "rows"} {
		for _, size := range []int{1, 16, 128, 512} {
			b.Run(fmt.Sprintf("statement=%s/batch=%d", how, size), func(b *testing.B) {
				st := pgtest.Open(b, postgres.Options{})
				commit := st.Commit
				switch how {
				case "tx":
					commit = st.CommitTx
				case "rows":
					commit = st.CommitPerRow
				}
				if err := st.Commit(ctx, &fsm.Batch{Index: 1, Tenants: []*fsm.Tenant{tenant("t", 1)}}); err != nil {
					b.Fatal(err)
				}
				at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
				batches := make([]*fsm.Batch, b.N)
				for i := range batches {
					bt := &fsm.Batch{Index: uint64(i + 2)}
					for k := range size {
						j := submitJob(i*size+k+1, "t", at).Job
						j.State, j.QueuedAt = fsm.JobQueued, at
						j.Meta = fsm.Meta{CreateIndex: bt.Index, ModifyIndex: bt.Index}
						bt.Jobs = append(bt.Jobs, &j)
					}
					batches[i] = bt
				}
				b.ResetTimer()
				for _, bt := range batches {
					if err := commit(ctx, bt); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "jobs/s")
			})
		}
	}
}

// BenchmarkSubmit10k applies 10,000 SubmitJob entries one per batch (each
// its own store transaction, the slowest case) and reports the throughput
// of the first and the last thousand: a store that slows down as the
// tables grow shows it in the ratio. Run it with -benchtime 1x.
func BenchmarkSubmit10k(b *testing.B) {
	pgtest.BaseURL(b)
	const n, window = 10000, 1000
	for _, s := range benchStores(b) {
		for _, batch := range []int{1, 64} {
			b.Run(fmt.Sprintf("store=%s/batch=%d", s.name, batch), func(b *testing.B) {
				for range b.N {
					f := benchFSM(b, s.open(b))
					logs := submitLogs(b, 1, n, 2)
					b.ResetTimer()
					// Rates over the first batches that reach 1,000 jobs and
					// the last batches that cover at least 1,000.
					var firstRate, lastRate float64
					var lastFrom time.Time
					lastDone := 0
					start := time.Now()
					for i := 0; i < n; i += batch {
						if i <= n-window {
							lastFrom, lastDone = time.Now(), i
						}
						f.ApplyBatch(logs[i:min(i+batch, n)])
						f.Flush() // the store's cost is what this measures
						if done := min(i+batch, n); firstRate == 0 && done >= window {
							firstRate = float64(done) / time.Since(start).Seconds()
						}
					}
					lastRate = float64(n-lastDone) / time.Since(lastFrom).Seconds()
					b.ReportMetric(firstRate, "first1k_jobs/s")
					b.ReportMetric(lastRate, "last1k_jobs/s")
					b.ReportMetric(n/time.Since(start).Seconds(), "jobs/s")
				}
			})
		}
	}
}

// historySize is how many finished jobs BenchmarkListJobs lists: 100,000
// by default, FFRTMP_BENCH_HISTORY to change it (1000000 for the
// documented results).
func historySize(b *testing.B) int {
	n := 100_000
	if v := os.Getenv("FFRTMP_BENCH_HISTORY"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1000 {
			b.Fatalf("FFRTMP_BENCH_HISTORY=%q: want a number of jobs, at least 1000", v)
		}
	}
	return n
}

// BenchmarkListJobs pages through a history of finished jobs of 10
// tenants (85% succeeded, 10% failed, 5% canceled), written with COPY:
// the first page and a page 90% deep (by cursor) of one tenant, with and
// without a state filter, and of all tenants.
func BenchmarkListJobs(b *testing.B) {
	pgtest.BaseURL(b)
	n := historySize(b)
	url := pgtest.URL(b)
	st := pgtest.OpenURL(b, url, postgres.Options{})
	start := time.Now()
	deep := loadHistory(b, url, n)
	b.Logf("wrote %d jobs with COPY in %s", n, time.Since(start).Round(time.Millisecond))

	cases := []struct {
		name string
		p    fsm.ListJobsParams
	}{
		{"tenant/first", fsm.ListJobsParams{TenantID: "tenant-3"}},
		{"tenant/deep", fsm.ListJobsParams{TenantID: "tenant-3", After: deep}},
		{"tenant+failed/first", fsm.ListJobsParams{TenantID: "tenant-3", States: []fsm.JobState{fsm.JobFailed}}},
		{"tenant+failed/deep", fsm.ListJobsParams{TenantID: "tenant-3", States: []fsm.JobState{fsm.JobFailed}, After: deep}},
		{"tenant+failed,canceled/first", fsm.ListJobsParams{TenantID: "tenant-3", States: []fsm.JobState{fsm.JobFailed, fsm.JobCanceled}}},
		{"tenant+failed,canceled/deep", fsm.ListJobsParams{TenantID: "tenant-3", States: []fsm.JobState{fsm.JobFailed, fsm.JobCanceled}, After: deep}},
		{"all/first", fsm.ListJobsParams{}},
		{"all+failed/deep", fsm.ListJobsParams{States: []fsm.JobState{fsm.JobFailed}, After: deep}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			p := c.p
			p.Limit = 50
			for b.Loop() {
				page, err := st.ListJobs(ctx, &p)
				if err != nil {
					b.Fatal(err)
				}
				if len(page.Jobs) != p.Limit {
					b.Fatalf("page of %d jobs, want %d", len(page.Jobs), p.Limit)
				}
			}
		})
	}
}

// loadHistory writes n finished jobs with COPY and returns the ID 90% of
// the way from the newest to the oldest.
func loadHistory(b *testing.B, url string, n int) string {
	conn := pgtest.Connect(b, url)
	bctx := context.Background()
	var tenants [][]any
	for i := range 10 {
		t := tenant(fmt.Sprintf("tenant-%d", i), 1)
		d, _ := json.Marshal(t)
		tenants = append(tenants, []any{t.ID, t.Name, t.CreatedAt, int64(1), int64(1), d})
	}
	if _, err := conn.CopyFrom(bctx, pgx.Identifier{"tenants"}, []string{"id", "name", "created_at", "create_index", "modify_index", "doc"}, pgx.CopyFromRows(tenants)); err != nil {
		b.Fatal(err)
	}
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tmpl := submitJob(0, "", at).Job
	i := 0
	rows := pgx.CopyFromFunc(func() ([]any, error) {
		if i == n {
			return nil, nil
		}
		i++
		j := tmpl
		j.ID, j.TenantID = jobID(i), fmt.Sprintf("tenant-%d", i%10)
		j.SubmittedAt = at.Add(time.Duration(i) * time.Second)
		j.QueuedAt, j.AssignedAt, j.StartedAt = j.SubmittedAt, j.SubmittedAt.Add(time.Second), j.SubmittedAt.Add(2*time.Second)
		j.FinishedAt = j.SubmittedAt.Add(time.Minute)
		j.Attempt, j.WorkerID, j.Error, j.Result = 1, "w1", nil, nil
		switch r := (i / 10) % 20; {
		case r < 17:
			j.State = fsm.JobSucceeded
			j.Result = &fsm.Result{Outputs: []fsm.OutputResult{{URL: "file:///out/a.mp4", Codec: "h264", Width: 1280, Height: 720, FPS: 30, DurationSec: 2, SizeBytes: 1 << 20}}}
		case r < 19:
			j.State = fsm.JobFailed
			j.Error = &fsm.Error{Code: fsm.CodeFFmpeg, Message: "ffmpeg exited with status 1"}
			j.Log = "Conversion failed!\n"
		default:
			j.State = fsm.JobCanceled
		}
		j.Meta = fsm.Meta{CreateIndex: uint64(2 * i), ModifyIndex: uint64(2*i + 1)}
		d, err := json.Marshal(&j)
		return []any{j.ID, j.TenantID, string(j.State), string(j.Spec.Queue), string(j.Spec.Priority), int32(j.Attempt), int32(j.Retries),
			j.WorkerID, j.SubmittedAt, j.FinishedAt, int64(j.CreateIndex), int64(j.ModifyIndex), d}, err
	})
	cols := []string{"id", "tenant_id", "state", "queue", "priority", "attempt", "retries", "worker_id", "submitted_at", "finished_at", "create_index", "modify_index", "doc"}
	if _, err := conn.CopyFrom(bctx, pgx.Identifier{"jobs"}, cols, rows); err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(bctx, fmt.Sprintf(`UPDATE ffrtmp_state SET applied_index = %d; ANALYZE`, 2*n+1)); err != nil {
		b.Fatal(err)
	}
	return jobID(n / 10)
}

// submitBatchLogs returns entries of SubmitJobs commands of items jobs of
// tenant "t" each (jobs first, first+1, ...), every item with an actor
// (so an audit record), from index on.
func submitBatchLogs(b testing.TB, first, entries, items int, index uint64) []*raft.Log {
	logs := make([]*raft.Log, 0, entries)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	actor := &fsm.Actor{User: "ann", KeyID: "k1", Role: fsm.RoleOperator, TenantID: "t", Action: "submitJob"}
	for e := range entries {
		c := &fsm.SubmitJobs{}
		for i := range items {
			c.Items = append(c.Items, fsm.SubmitItem{Job: submitJob(first+e*items+i, "t", at).Job, Actor: actor})
		}
		data, err := fsm.Encode(c)
		if err != nil {
			b.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: index + uint64(e), Term: 1, Type: raft.LogCommand, Data: data})
	}
	return logs
}

// BenchmarkNodesApply applies SubmitJobs entries (each job with its audit
// record) on three FSMs that share one schema, as the nodes of a cluster
// do: the leader applies each entry first, then the two followers apply
// the same entry. Each node reaches the database through a proxy that
// counts its round trips and statements, reported per entry; jobs/s is
// over the whole run, all three nodes' applies included.
func BenchmarkNodesApply(b *testing.B) {
	pgtest.BaseURL(b)
	for _, items := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("items=%d", items), func(b *testing.B) {
			dbURL := pgtest.URL(b)
			var nodes []*fsm.FSM
			var counters []*wireCounter
			for range 3 {
				w, u := newWireCounter(b, dbURL)
				counters = append(counters, w)
				nodes = append(nodes, benchFSM(b, pgtest.OpenURL(b, u, postgres.Options{})))
			}
			// Warm up: every node's connection has prepared its statements.
			warm := submitBatchLogs(b, 1, 2, items, 2)
			for i := range warm {
				for _, f := range nodes {
					f.ApplyBatch(warm[i : i+1])
				}
			}
			logs := submitBatchLogs(b, 2*items+1, b.N, items, 4)
			for _, w := range counters {
				w.take()
			}
			b.ResetTimer()
			for i := range logs {
				for _, f := range nodes {
					resps := f.ApplyBatch(logs[i : i+1])
					if _, ok := resps[0].(*fsm.SubmitJobsResult); !ok {
						b.Fatalf("apply: %v", resps[0])
					}
				}
			}
			for _, f := range nodes {
				f.Flush()
			}
			b.StopTimer()
			leader, f1, f2 := counters[0].take(), counters[1].take(), counters[2].take()
			n := float64(b.N)
			b.ReportMetric(float64(leader.RoundTrips)/n, "leader_rt/entry")
			b.ReportMetric(float64(leader.Statements)/n, "leader_stmts/entry")
			b.ReportMetric(float64(f1.RoundTrips+f2.RoundTrips)/2/n, "follower_rt/entry")
			b.ReportMetric(float64(f1.Statements+f2.Statements)/2/n, "follower_stmts/entry")
			b.ReportMetric(float64(leader.Prepares+f1.Prepares+f2.Prepares)/n, "prepares/entry")
			b.ReportMetric(n*float64(items)/b.Elapsed().Seconds(), "jobs/s")
		})
	}
}
