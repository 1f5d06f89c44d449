package fsm_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
)

// t0 is the fixed base time of every test; commands carry explicit times
// derived from it, never time.Now.
var t0 = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

// testAuditKey keys every test FSM's audit chain.
var testAuditKey = []byte("test audit key, 32 bytes long...")

// at returns t0 plus d.
func at(d time.Duration) time.Time { return t0.Add(d) }

// openStore opens a bolt store in a fresh temporary directory and closes
// it when the test ends.
func openStore(t testing.TB) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return st
}

// newFSM returns an FSM loaded from st.
func newFSM(t testing.TB, st fsm.Store) *fsm.FSM {
	t.Helper()
	f, err := fsm.New(context.Background(), fsm.Config{Store: st, AuditKey: testAuditKey})
	if err != nil {
		t.Fatalf("new fsm: %v", err)
	}
	t.Cleanup(func() { f.Flush() }) // before the store closes
	return f
}

// entry encodes c as the command log entry at index.
func entry(t testing.TB, index uint64, c fsm.Command) *raft.Log {
	t.Helper()
	data, err := fsm.Encode(c)
	if err != nil {
		t.Fatalf("encode %T: %v", c, err)
	}
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

// node is one FSM on its own bolt store, fed one command per Raft index.
type node struct {
	t    testing.TB
	f    *fsm.FSM
	st   *bolt.Store
	last uint64 // last Raft index used
}

func newNode(t testing.TB) *node {
	t.Helper()
	st := openStore(t)
	return &node{t: t, f: newFSM(t, st), st: st}
}

// apply applies cmds as one batch, one Raft index each, and returns the
// responses.
func (n *node) apply(cmds ...fsm.Command) []any {
	n.t.Helper()
	logs := make([]*raft.Log, len(cmds))
	for i, c := range cmds {
		n.last++
		logs[i] = entry(n.t, n.last, c)
	}
	resps := n.f.ApplyBatch(logs)
	if got := n.f.Flush(); got != n.last {
		n.t.Fatalf("after applying up to %d: Flush() = %d", n.last, got)
	}
	return resps
}

// applyOK applies c and fails the test if it was refused.
func (n *node) applyOK(c fsm.Command) any {
	n.t.Helper()
	r := n.apply(c)[0]
	if err, ok := r.(error); ok {
		n.t.Fatalf("apply %T %+v: refused: %v", c, c, err)
	}
	return r
}

// job applies c, which must succeed, and returns the job it produced.
func (n *node) job(c fsm.Command) *fsm.Job {
	n.t.Helper()
	j, ok := n.applyOK(c).(*fsm.Job)
	if !ok {
		n.t.Fatalf("apply %T: response is not a *fsm.Job", c)
	}
	return j
}

// refused applies c and checks that it was refused with code want and
// that no job changed (compared through the store).
func (n *node) refused(c fsm.Command, want fsm.Code) {
	n.t.Helper()
	before := n.allJobsJSON()
	r := n.apply(c)[0]
	err, ok := r.(error)
	if !ok {
		n.t.Fatalf("apply %T %+v: got response %T, want refusal %s", c, c, r, want)
	}
	if got := fsm.ErrorCode(err); got != want {
		n.t.Fatalf("apply %T %+v: got code %q (%v), want %q", c, c, got, err, want)
	}
	if after := n.allJobsJSON(); after != before {
		n.t.Fatalf("refused %T changed jobs:\nbefore %s\nafter  %s", c, before, after)
	}
}

// get returns a job from the FSM (memory or store).
func (n *node) get(id string) *fsm.Job {
	n.t.Helper()
	j, err := n.f.GetJob(context.Background(), id)
	if err != nil {
		n.t.Fatalf("get job %s: %v", id, err)
	}
	return j
}

// allJobsJSON returns every job in the store as JSON, plus the active
// jobs in memory.
func (n *node) allJobsJSON() string {
	n.t.Helper()
	jobs := listAllJobs(n.t, n.f.Store(), "", 100)
	var active []*fsm.Job
	for _, j := range jobs {
		if a, ok := n.f.ActiveJob(j.ID); ok {
			active = append(active, a)
		}
	}
	return mustJSON(n.t, struct{ Store, Active []*fsm.Job }{jobs, active})
}

// schedule runs the scheduler at now with a fresh rotation.
func (n *node) schedule(now time.Time) *fsm.Decisions {
	return n.f.Schedule(now, fsm.NewFairness(), 100)
}

// listAllJobs pages through every job of a tenant ("" for all), limit jobs
// a page, and checks that pages are newest first with no repeats.
func listAllJobs(t testing.TB, st fsm.Store, tenant string, limit int) []*fsm.Job {
	t.Helper()
	var out []*fsm.Job
	seen := map[string]bool{}
	after := ""
	for range 100000 {
		p, err := st.ListJobs(context.Background(), &fsm.ListJobsParams{TenantID: tenant, Limit: limit, After: after})
		if err != nil {
			t.Fatalf("list jobs of %q after %q: %v", tenant, after, err)
		}
		for _, j := range p.Jobs {
			if seen[j.ID] {
				t.Fatalf("list jobs of %q: job %s listed twice", tenant, j.ID)
			}
			if len(out) > 0 && out[len(out)-1].ID <= j.ID {
				t.Fatalf("list jobs of %q: %s after %s, want newest (greatest ID) first", tenant, j.ID, out[len(out)-1].ID)
			}
			seen[j.ID] = true
			out = append(out, j)
		}
		if p.Next == "" {
			return out
		}
		after = p.Next
	}
	t.Fatalf("list jobs of %q: paging does not end", tenant)
	return nil
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %T: %v", v, err)
	}
	return string(b)
}

// spec returns a minimal valid spec for a scenario.
func spec(scenario string) fsm.JobSpec {
	return fsm.JobSpec{
		Scenario: scenario,
		Input:    fsm.Input{URL: "testsrc://?duration=1"},
		Outputs:  []fsm.Output{{URL: "file:///out.mp4"}},
	}
}

// newJob compiles s and returns a job ready for SubmitJob.
func newJob(t testing.TB, id, tenant string, s fsm.JobSpec, submitted time.Time) fsm.Job {
	t.Helper()
	plan, err := s.Compile(fsm.Policy{})
	if err != nil {
		t.Fatalf("compile spec of %s: %v", id, err)
	}
	return fsm.Job{ID: id, TenantID: tenant, Spec: s, Plan: *plan, SubmittedAt: submitted}
}

// submit submits a job built from s and returns the queued job.
func (n *node) submit(id, tenant string, s fsm.JobSpec, submitted time.Time) *fsm.Job {
	n.t.Helper()
	return n.job(&fsm.SubmitJob{Job: newJob(n.t, id, tenant, s, submitted)})
}

func (n *node) tenant(id string) {
	n.t.Helper()
	n.applyOK(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: id, Name: id, CreatedAt: t0}})
}

// worker registers a shared-pool worker.
func (n *node) worker(w fsm.Worker) *fsm.Worker {
	n.t.Helper()
	if w.Incarnation == "" {
		w.Incarnation = "i1"
	}
	if w.Name == "" {
		w.Name = w.ID
	}
	r, ok := n.applyOK(&fsm.RegisterWorker{Worker: w, At: t0}).(*fsm.Worker)
	if !ok {
		n.t.Fatalf("register worker %s: response is not a *fsm.Worker", w.ID)
	}
	return r
}

// run assigns a job to a worker as its next attempt and starts it.
func (n *node) run(jobID, workerID string, now time.Time) *fsm.Job {
	n.t.Helper()
	j, ok := n.f.ActiveJob(jobID)
	if !ok {
		n.t.Fatalf("job %s is not active", jobID)
	}
	a := j.Attempt + 1
	n.job(&fsm.AssignJob{JobID: jobID, WorkerID: workerID, Attempt: a, At: now})
	return n.job(&fsm.StartJob{Report: fsm.Report{JobID: jobID, WorkerID: workerID, Attempt: a}, At: now})
}

// wantCode checks that err carries code want.
func wantCode(t testing.TB, err error, want fsm.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want code %q", want)
	}
	if got := fsm.ErrorCode(err); got != want {
		t.Fatalf("got code %q (%v), want %q", got, err, want)
	}
	var e *fsm.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not an *fsm.Error", err)
	}
}

func intp(v int) *int { return &v }
