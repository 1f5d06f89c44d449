package postgres_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/jackc/pgx/v5"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
	"github.com/ffrtmp/ffrtmp/store/postgres"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

// This file tests what sharing one database between nodes relies on: the
// nodes' FSMs apply the same log, in batches of their own sizes and at
// their own pace, and the database and every node's memory must end up as
// one FSM alone would have them.

// script is a Raft log and what a lone FSM on a bolt store made of it.
type script struct {
	logs []*raft.Log
	ids  ids
	ref  *fsm.FSM // the reference: applied one entry per batch
}

// ids are the IDs of every object the script may create.
type ids struct{ tenants, keys, workers, jobs []string }

func jobID(n int) string { return fmt.Sprintf("01956a3c-%04x-7000-8000-%012x", n>>16&0xffff, n) }

func submitJob(n int, tenant string, at time.Time) *fsm.SubmitJob {
	spec := fsm.JobSpec{
		Name: fmt.Sprintf("job-%d", n), Scenario: "720p30-h264",
		Input:   fsm.Input{URL: "testsrc://?duration=2"},
		Outputs: []fsm.Output{{URL: fmt.Sprintf("file:///out/%d.mp4", n)}},
	}
	plan, err := spec.Compile(fsm.Policy{})
	if err != nil {
		panic(err)
	}
	return &fsm.SubmitJob{Job: fsm.Job{ID: jobID(n), TenantID: tenant, Spec: spec, Plan: *plan, SubmittedAt: at}}
}

func worker(id, incarnation string, at time.Time) *fsm.RegisterWorker {
	return &fsm.RegisterWorker{At: at, Worker: fsm.Worker{
		ID: id, Name: "host-" + id, Incarnation: incarnation, Slots: 3, CPUs: 8, MemoryMB: 16384,
		Encoders: []string{"libx264"}, RegisteredAt: at,
	}}
}

// newScript generates n log entries from seed: tenants, a key, workers,
// and jobs driven through every transition, including refused commands
// (a resubmitted finished or purged job, stale reports), a worker restart
// that requeues its jobs, and purges of finished jobs. Each command is chosen by looking at the reference
// FSM, so most of them apply.
func newScript(t testing.TB, seed uint64, n int) *script {
	t.Helper()
	bs, err := bolt.Open(filepath.Join(t.TempDir(), "ref.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	ref, err := fsm.New(ctx, fsm.Config{Store: bs})
	if err != nil {
		t.Fatal(err)
	}
	s := &script{ref: ref, ids: ids{tenants: []string{"acme", "globex"}, keys: []string{"k1"}, workers: []string{"w1", "w2"}}}
	add := func(c fsm.Command) {
		data, err := fsm.Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		l := &raft.Log{Index: uint64(len(s.logs) + 1), Term: 1, Type: raft.LogCommand, Data: data}
		s.logs = append(s.logs, l)
		ref.ApplyBatch([]*raft.Log{l})
	}
	r := rand.New(rand.NewPCG(seed, 7))
	at := func() time.Time { return t0.Add(time.Duration(len(s.logs)) * time.Second) }
	add(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "acme", Name: "acme", CreatedAt: at()}})
	add(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "globex", Name: "globex", CreatedAt: at()}})
	add(&fsm.CreateAPIKey{Key: fsm.APIKey{ID: "k1", TenantID: "acme", User: "ops@acme", Role: fsm.RoleOperator, Hash: []byte("0123456789abcdef"), CreatedAt: at()}})
	add(worker("w1", "i1", at()))
	add(worker("w2", "i1", at()))
	incarnation := 1
	for len(s.logs) < n {
		active := func(states ...fsm.JobState) *fsm.Job {
			var c []*fsm.Job
			for _, id := range s.ids.jobs {
				if j, ok := ref.ActiveJob(id); ok && slices.Contains(states, j.State) {
					c = append(c, j)
				}
			}
			if len(c) == 0 {
				return nil
			}
			return c[r.IntN(len(c))]
		}
		rep := func(j *fsm.Job) fsm.Report { return fsm.Report{JobID: j.ID, WorkerID: j.WorkerID, Attempt: j.Attempt} }
		switch k := r.IntN(22); {
		case k < 6:
			num := len(s.ids.jobs) + 1
			s.ids.jobs = append(s.ids.jobs, jobID(num))
			add(submitJob(num, s.ids.tenants[num%2], at()))
		case k < 9:
			if j := active(fsm.JobQueued); j != nil {
				add(&fsm.AssignJob{JobID: j.ID, WorkerID: s.ids.workers[r.IntN(2)], Attempt: j.Attempt + 1, At: at()})
			}
		case k < 11:
			if j := active(fsm.JobAssigned); j != nil {
				add(&fsm.StartJob{Report: rep(j), At: at()})
			}
		case k < 12:
			if j := active(fsm.JobRunning); j != nil {
				add(&fsm.ProgressJob{Report: rep(j), Progress: fsm.Progress{Percent: float64(r.IntN(100)), Frame: int64(r.IntN(900)), UpdatedAt: at()}})
			}
		case k < 15:
			if j := active(fsm.JobRunning, fsm.JobPaused); j != nil {
				f := &fsm.FinishJob{Report: rep(j), At: at(), Log: "frame=60 fps=30\n"}
				if r.IntN(3) == 0 {
					f.Error, f.Retryable = &fsm.Error{Code: fsm.CodeFFmpeg, Message: "exit status 1"}, r.IntN(2) == 0
				} else {
					f.Result = &fsm.Result{Outputs: []fsm.OutputResult{{URL: "file:///out/x.mp4", Codec: "h264"}}}
				}
				add(f)
			}
		case k < 16:
			if j := active(fsm.JobQueued, fsm.JobAssigned, fsm.JobRunning); j != nil {
				add(&fsm.CancelJob{JobID: j.ID, At: at()})
			}
		case k < 17:
			if j := active(fsm.JobRunning); j != nil {
				add(&fsm.PauseJob{JobID: j.ID, At: at()})
			} else if j := active(fsm.JobPaused); j != nil {
				add(&fsm.ResumeJob{JobID: j.ID, At: at()})
			}
		case k < 18 && len(s.ids.jobs) > 0:
			// A resubmitted ID (refused unless that job was never
			// created), or a report for a stale attempt.
			num := 1 + r.IntN(len(s.ids.jobs))
			if r.IntN(2) == 0 {
				add(submitJob(num, "acme", at()))
			} else {
				add(&fsm.StartJob{Report: fsm.Report{JobID: jobID(num), WorkerID: "w1", Attempt: 99}, At: at()})
			}
		case k < 19:
			incarnation++
			add(worker(s.ids.workers[r.IntN(2)], fmt.Sprintf("i%d", incarnation), at()))
		case k < 20:
			add(&fsm.RevokeAPIKey{ID: "k1", At: at()})
		default:
			// The leader's retention: the jobs a tenant finished more
			// than a minute ago, and maybe one that is active.
			tenant := s.ids.tenants[r.IntN(2)]
			ids, err := bs.FinishedJobs(ctx, &fsm.FinishedJobsParams{TenantID: tenant, Before: at().Add(-time.Minute), Limit: 1 + r.IntN(5)})
			if err != nil {
				t.Fatal(err)
			}
			if j := active(fsm.JobQueued, fsm.JobRunning); j != nil {
				ids = append(ids, j.ID)
			}
			if len(ids) > 0 {
				add(&fsm.PurgeJobs{TenantID: tenant, IDs: ids, Retention: fsm.Duration(time.Minute), At: at()})
			}
		}
	}
	return s
}

// apply feeds logs[from:to] to f in batches of random sizes up to max.
func apply(f *fsm.FSM, logs []*raft.Log, r *rand.Rand, max int) {
	for i := 0; i < len(logs); {
		n := min(1+r.IntN(max), len(logs)-i)
		f.ApplyBatch(logs[i : i+n])
		i += n
	}
	f.Flush()
}

// memory is what an FSM holds for the objects of a script, as JSON.
func memory(f *fsm.FSM, ids ids) string {
	type dump struct {
		Index   uint64
		Tenants []*fsm.Tenant
		Keys    []*fsm.APIKey
		Workers []*fsm.Worker
		Jobs    []*fsm.Job
		ByState map[fsm.JobState]int
		ByQueue map[fsm.Queue]int
	}
	d := dump{Index: f.Flush(), Workers: f.Workers("")}
	for _, id := range ids.tenants {
		if x, ok := f.Tenant(id); ok {
			d.Tenants = append(d.Tenants, x)
		}
	}
	for _, id := range ids.keys {
		if x, ok := f.APIKey(id); ok {
			d.Keys = append(d.Keys, x)
		}
	}
	for _, id := range ids.jobs {
		if x, ok := f.ActiveJob(id); ok {
			d.Jobs = append(d.Jobs, x)
		}
	}
	d.ByState, d.ByQueue = f.Counts()
	b, _ := json.MarshalIndent(d, "", " ")
	return string(b)
}

// contents is everything a store holds, read through the fsm.Store
// interface, as JSON: so a PostgreSQL store compares with a bolt one.
func contents(t testing.TB, st fsm.Store) string {
	t.Helper()
	s, err := st.Load(ctx)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	var all []*fsm.Job
	p := &fsm.ListJobsParams{Limit: 1000}
	for {
		page, err := st.ListJobs(ctx, p)
		if err != nil {
			t.Fatalf("ListJobs: %v", err)
		}
		all = append(all, page.Jobs...)
		if page.Next == "" {
			break
		}
		p.After = page.Next
	}
	for _, x := range s.Tenants {
		x.CreatedAt = x.CreatedAt.UTC()
	}
	b, _ := json.MarshalIndent(struct {
		*fsm.State
		All []*fsm.Job
	}{s, all}, "", " ")
	return string(b)
}

// rows is the raw table contents of a schema, as psql would show them.
func rows(t testing.TB, url string) string {
	t.Helper()
	conn := pgtest.Connect(t, url)
	var out []string
	for _, q := range []string{
		`SELECT 'state', applied_index::text FROM ffrtmp_state`,
		`SELECT id, concat_ws(' ', create_index, modify_index, doc::text) FROM tenants ORDER BY id`,
		`SELECT id, concat_ws(' ', tenant_id, revoked, modify_index, doc::text) FROM api_keys ORDER BY id`,
		`SELECT id, concat_ws(' ', tenant_id, state, modify_index, doc::text) FROM workers ORDER BY id`,
		`SELECT id, concat_ws(' ', tenant_id, state, queue, priority, attempt, retries, worker_id, submitted_at, finished_at, create_index, modify_index, doc::text) FROM jobs ORDER BY id`,
		`SELECT kind || ' ' || id, concat_ws(' ', create_index, delete_index) FROM tombstones ORDER BY kind, id`,
	} {
		rs, err := conn.Query(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		var a, b string
		_, err = pgx.ForEachRow(rs, []any{&a, &b}, func() error {
			out = append(out, a+" "+b)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	b, _ := json.MarshalIndent(out, "", " ")
	return string(b)
}

func newFSM(t testing.TB, st fsm.Store) *fsm.FSM {
	t.Helper()
	f, err := fsm.New(ctx, fsm.Config{Store: st})
	if err != nil {
		t.Fatalf("fsm.New: %v", err)
	}
	t.Cleanup(func() { f.Flush() }) // before the store closes
	return f
}

func assertEqual(t testing.TB, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s differs\ngot:  %s\nwant: %s", what, got, want)
	}
}

// purged counts the jobs of the script that its reference purged: held
// as a tombstone, not as a job.
func purged(t testing.TB, s *script) int {
	t.Helper()
	exist, err := s.ref.Store().JobsExist(ctx, s.ids.jobs)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for id := range exist {
		if _, err := s.ref.Store().GetJob(ctx, id); errors.Is(err, fsm.ErrNotFound) {
			n++
		}
	}
	return n
}

func TestTwoNodesOneDatabase(t *testing.T) {
	t.Parallel()
	pgtest.BaseURL(t)
	s := newScript(t, 1, 400)
	if n := purged(t, s); n == 0 {
		t.Fatal("the script purges no job")
	} else {
		t.Logf("the script purges %d jobs", n)
	}
	want := memory(s.ref, s.ids)
	wantStore := contents(t, s.ref.Store())
	var refRows string
	interleavings := []struct {
		name string
		run  func(a, b *fsm.FSM, r *rand.Rand)
	}{
		{"AThenB", func(a, b *fsm.FSM, r *rand.Rand) {
			apply(a, s.logs, r, 40)
			apply(b, s.logs, r, 7)
		}},
		{"BThenA", func(a, b *fsm.FSM, r *rand.Rand) {
			apply(b, s.logs, r, 3)
			apply(a, s.logs, r, 64)
		}},
		{"Leapfrog", func(a, b *fsm.FSM, r *rand.Rand) {
			// Each node in turn runs ahead of the other by a stretch.
			var ia, ib int
			for ia < len(s.logs) || ib < len(s.logs) {
				for _, x := range []struct {
					f *fsm.FSM
					i *int
				}{{a, &ia}, {b, &ib}} {
					end := min(len(s.logs), max(ia, ib)+1+r.IntN(30))
					if *x.i < end {
						apply(x.f, s.logs[*x.i:end], r, 9)
						*x.i = end
					}
				}
			}
		}},
		{"Concurrent", func(a, b *fsm.FSM, r *rand.Rand) {
			var wg sync.WaitGroup
			for i, f := range []*fsm.FSM{a, b} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					apply(f, s.logs, rand.New(rand.NewPCG(uint64(i), 3)), 1+10*i)
				}()
			}
			wg.Wait()
		}},
	}
	for _, il := range interleavings {
		t.Run(il.name, func(t *testing.T) {
			url := pgtest.URL(t)
			a := newFSM(t, pgtest.OpenURL(t, url, postgres.Options{}))
			b := newFSM(t, pgtest.OpenURL(t, url, postgres.Options{}))
			il.run(a, b, rand.New(rand.NewPCG(42, 42)))
			assertEqual(t, "node A's memory vs one FSM alone", memory(a, s.ids), want)
			assertEqual(t, "node B's memory vs one FSM alone", memory(b, s.ids), want)
			assertEqual(t, "database contents vs a bolt store fed one entry at a time", contents(t, a.Store()), wantStore)
			got := rows(t, url)
			if refRows == "" {
				refRows = got
			} else {
				assertEqual(t, "table rows vs the first interleaving", got, refRows)
			}
		})
	}
}

func TestRestartLoadsNewerState(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	s := newScript(t, 2, 300)
	r := rand.New(rand.NewPCG(5, 5))
	a := newFSM(t, pgtest.OpenURL(t, url, postgres.Options{}))
	b := newFSM(t, pgtest.OpenURL(t, url, postgres.Options{}))
	apply(b, s.logs[:100], r, 10)
	apply(a, s.logs[:200], r, 10)
	before := rows(t, url)

	// B restarts: a new store and FSM. It loads the state A committed,
	// ahead of its own last batch.
	b2 := newFSM(t, pgtest.OpenURL(t, url, postgres.Options{}))
	if b2.Index() != 200 {
		t.Fatalf("restarted node's index = %d, want 200 (what the other node committed)", b2.Index())
	}
	assertEqual(t, "restarted node's memory vs the node that committed", memory(b2, s.ids), memory(a, s.ids))

	// Raft replays B's log from its last snapshot: entries the database
	// has are skipped and change nothing.
	for _, resp := range b2.ApplyBatch(s.logs[50:200]) {
		if resp != nil {
			t.Fatalf("replayed entry got response %v, want nil (skipped)", resp)
		}
	}
	assertEqual(t, "tables after the replay", rows(t, url), before)

	apply(b2, s.logs[200:], r, 10)
	apply(a, s.logs[200:], r, 25)
	want := memory(s.ref, s.ids)
	assertEqual(t, "node A at the end", memory(a, s.ids), want)
	assertEqual(t, "node B at the end", memory(b2, s.ids), want)
	assertEqual(t, "database at the end", contents(t, a.Store()), contents(t, s.ref.Store()))
}

// TestCommitFoundCommitted checks that a node's Commit of a batch another
// node has committed writes nothing, whether the node has just committed
// a batch of its own on the same connection (its next Commit sends its
// writes at once) or has just found one committed (it reads the applied
// index first), and that a batch reaching past the applied index is
// written whole.
func TestCommitFoundCommitted(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	// One connection each, so that B's transactions follow each other on
	// the same session.
	a := pgtest.OpenURL(t, url, postgres.Options{MaxConns: 1})
	b := pgtest.OpenURL(t, url, postgres.Options{MaxConns: 1})
	job := func(n int, index uint64, node string) *fsm.Job {
		j := submitJob(n, "acme", t0).Job
		j.State, j.QueuedAt, j.Log = fsm.JobQueued, t0, "written by "+node
		j.Meta = fsm.Meta{CreateIndex: index, ModifyIndex: index}
		return &j
	}
	writer := func(n int) string {
		t.Helper()
		j, err := a.GetJob(ctx, jobID(n))
		if errors.Is(err, fsm.ErrNotFound) {
			return "nobody"
		}
		if err != nil {
			t.Fatal(err)
		}
		return j.Log
	}
	commit(t, a, &fsm.Batch{Index: 1, Tenants: []*fsm.Tenant{tenant("acme", 1)}})
	commit(t, b, &fsm.Batch{Index: 2, Jobs: []*fsm.Job{job(2, 2, "B")}})
	commit(t, a, &fsm.Batch{Index: 3, Jobs: []*fsm.Job{job(3, 3, "A")}})
	// B committed its last batch: it sends this one at once, and the
	// database refuses it.
	commit(t, b, &fsm.Batch{Index: 3, Jobs: []*fsm.Job{job(3, 3, "B"), job(103, 3, "B")}})
	commit(t, a, &fsm.Batch{Index: 4, Jobs: []*fsm.Job{job(4, 4, "A")}})
	// B found its last batch committed: it reads the applied index first.
	commit(t, b, &fsm.Batch{Index: 4, Jobs: []*fsm.Job{job(4, 4, "B"), job(104, 4, "B")}})
	// B runs ahead: (4, 6] is past the applied index, so all of it is
	// written, and A then finds its (4, 5] committed.
	commit(t, b, &fsm.Batch{Index: 6, Jobs: []*fsm.Job{job(5, 5, "B"), job(6, 6, "B")}})
	commit(t, a, &fsm.Batch{Index: 5, Jobs: []*fsm.Job{job(5, 5, "A"), job(105, 5, "A")}})
	for n, want := range map[int]string{
		2: "written by B", 3: "written by A", 103: "nobody", 4: "written by A", 104: "nobody",
		5: "written by B", 6: "written by B", 105: "nobody",
	} {
		if got := writer(n); got != want {
			t.Errorf("job %d: %s, want %s", n, got, want)
		}
	}
	var applied int64
	if err := pgtest.Connect(t, url).QueryRow(ctx, `SELECT applied_index FROM ffrtmp_state`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if applied != 6 {
		t.Errorf("applied index %d, want 6", applied)
	}
}
