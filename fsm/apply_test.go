package fsm_test

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestApplyEntryKinds: entries that are not commands and command types
// flagged skippable are skipped; an unknown or undecodable command stops
// the node rather than let it diverge.
func TestApplyEntryKinds(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	tenant, err := fsm.Encode(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "t1"}})
	if err != nil {
		t.Fatal(err)
	}
	resps := n.f.ApplyBatch([]*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogNoop},
		{Index: 2, Term: 1, Type: raft.LogConfiguration, Data: []byte{0xff}},
		{Index: 3, Term: 1, Type: raft.LogCommand, Data: append([]byte{byte(fsm.IgnoreUnknownTypeFlag | 77)}, `{"x":1}`...)},
		{Index: 4, Term: 1, Type: raft.LogCommand, Data: tenant},
	})
	for i, r := range resps[:3] {
		if r != nil {
			t.Errorf("entry %d: response %v, want nil (skipped)", i+1, r)
		}
	}
	if tn, ok := resps[3].(*fsm.Tenant); !ok || tn.ID != "t1" || tn.CreateIndex != 4 {
		t.Errorf("entry 4: response %+v, want tenant t1 created at 4", resps[3])
	}
	if got := n.f.Flush(); got != 4 {
		t.Errorf("Flush() = %d, want 4", got)
	}
	// Apply is ApplyBatch of one.
	if r := n.f.Apply(&raft.Log{Index: 4, Term: 1, Type: raft.LogCommand, Data: tenant}); r != nil {
		t.Errorf("Apply of an applied index: %v, want nil", r)
	}

	for name, data := range map[string][]byte{
		"unknown type":     append([]byte{77}, `{}`...),
		"undecodable body": append([]byte{byte(fsm.SubmitJobType)}, `{"job":`...),
		"empty entry":      nil,
	} {
		t.Run(name, func(t *testing.T) {
			n := newNode(t)
			defer func() {
				if recover() == nil {
					t.Errorf("applying an entry with %s did not panic", name)
				}
			}()
			n.f.ApplyBatch([]*raft.Log{{Index: 1, Term: 1, Type: raft.LogCommand, Data: data}})
		})
	}
}

func TestEncode(t *testing.T) {
	t.Parallel()
	for _, c := range []fsm.Command{&fsm.CreateTenant{}, &fsm.CreateAPIKey{}, &fsm.RevokeAPIKey{}, &fsm.RegisterWorker{},
		&fsm.SubmitJob{}, &fsm.AssignJob{}, &fsm.StartJob{}, &fsm.ProgressJob{}, &fsm.FinishJob{}, &fsm.CancelJob{},
		&fsm.PauseJob{}, &fsm.ResumeJob{}, &fsm.RequeueJob{}, &fsm.ExpireJob{}, &fsm.UpdateTenant{}, &fsm.DeleteTenant{},
		&fsm.AdoptOrphans{}} {
		b, err := fsm.Encode(c)
		if err != nil {
			t.Fatalf("Encode(%T): %v", c, err)
		}
		if got, want := fsm.MessageType(b[0]), c.MessageType(); got != want {
			t.Errorf("Encode(%T)[0] = %d, want %d", c, got, want)
		}
		if c.MessageType()&fsm.IgnoreUnknownTypeFlag != 0 {
			t.Errorf("%T has the skippable flag", c)
		}
	}
	// The enum is append-only: these values are in every existing log.
	for typ, want := range map[fsm.MessageType]uint8{fsm.CreateTenantType: 1, fsm.SubmitJobType: 5, fsm.AssignJobType: 6,
		fsm.FinishJobType: 9, fsm.ExpireJobType: 14, fsm.UpdateTenantType: 17, fsm.DeleteTenantType: 18, fsm.AdoptOrphansType: 19,
		fsm.IgnoreUnknownTypeFlag: 128} {
		if uint8(typ) != want {
			t.Errorf("message type %d, want %d", typ, want)
		}
	}
}

// TestWaitIndex: readers waiting for an index wake when a batch reaches it.
func TestWaitIndex(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idx, ch := n.f.Watch()
	done := make(chan error, 1)
	go func() { done <- n.f.WaitIndex(ctx, 2) }()
	n.tenant("t1")
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatal("watch channel not closed after a batch")
	}
	if idx != 0 {
		t.Errorf("Watch() index = %d before any batch, want 0", idx)
	}
	n.tenant("t2")
	if err := <-done; err != nil {
		t.Errorf("WaitIndex(2): %v", err)
	}
	short, cancelShort := context.WithCancel(context.Background())
	cancelShort()
	if err := n.f.WaitIndex(short, 3); err == nil {
		t.Error("WaitIndex past the applied index with a canceled context: got nil, want an error")
	}
}

type recObserver struct {
	mu       sync.Mutex
	started  []time.Duration
	finished []string
	totals   []time.Duration
}

func (o *recObserver) JobStarted(wait time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.started = append(o.started, wait)
}

func (o *recObserver) JobFinished(j *fsm.Job) {
	s, total := j.State, j.FinishedAt.Sub(j.SubmittedAt)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.finished = append(o.finished, string(s))
	o.totals = append(o.totals, total)
}

func TestObserver(t *testing.T) {
	t.Parallel()
	obs := &recObserver{}
	st := openStore(t)
	f, err := fsm.New(context.Background(), fsm.Config{Store: st, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, f: f, st: st}
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 2, Encoders: x264})
	n.submit("j1", "t1", spec("720p30-h264"), at(0))
	n.submit("j2", "t1", spec("720p30-h264"), at(0))
	j := n.run("j1", "w1", at(3*time.Second))
	n.job(&fsm.StartJob{Report: report(t, j), At: at(4 * time.Second)}) // repeated: not a new start
	n.job(&fsm.FinishJob{Report: report(t, j), At: at(10 * time.Second)})
	n.job(&fsm.CancelJob{JobID: "j2", At: at(20 * time.Second)})

	if want := []time.Duration{3 * time.Second}; len(obs.started) != 1 || obs.started[0] != want[0] {
		t.Errorf("JobStarted waits = %v, want %v", obs.started, want)
	}
	if len(obs.finished) != 2 || obs.finished[0] != "succeeded" || obs.finished[1] != "canceled" ||
		obs.totals[0] != 10*time.Second || obs.totals[1] != 20*time.Second {
		t.Errorf("JobFinished = %v %v, want [succeeded canceled] [10s 20s]", obs.finished, obs.totals)
	}
}

// TestRestartKeepsState: an FSM started on an existing store loads its
// state, including the scheduling indexes, and skips applied entries.
func TestRestartKeepsState(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 1, Encoders: x264})
	n.submit("j1", "t1", spec("720p30-h264"), at(0))
	n.submit("j2", "t1", spec("720p30-h264"), at(time.Second))
	n.submit("j3", "t1", spec("720p30-h264"), at(2*time.Second))
	n.run("j1", "w1", at(3*time.Second))
	n.job(&fsm.CancelJob{JobID: "j2", At: at(4 * time.Second)})

	before := n.allJobsJSON()
	d1 := mustJSON(t, n.schedule(at(time.Minute)))
	f2 := newFSM(t, n.st)
	if got := f2.Index(); got != n.last {
		t.Fatalf("restarted Index() = %d, want %d", got, n.last)
	}
	n2 := &node{t: t, f: f2, st: n.st, last: n.last}
	if after := n2.allJobsJSON(); after != before {
		t.Errorf("jobs after restart:\ngot  %s\nwant %s", after, before)
	}
	if d2 := mustJSON(t, n2.schedule(at(time.Minute))); d2 != d1 {
		t.Errorf("scheduler after restart:\ngot  %s\nwant %s", d2, d1)
	}
	if got := f2.WorkerLoad("w1"); got != 1 {
		t.Errorf("WorkerLoad(w1) after restart = %d, want 1", got)
	}
	// Raft may hand the restarted FSM entries it already applied.
	r := f2.ApplyBatch([]*raft.Log{entry(t, 1, &fsm.CreateTenant{Tenant: fsm.Tenant{ID: "t1"}}), entry(t, n.last, &fsm.CancelJob{JobID: "j3"})})
	if r[0] != nil || r[1] != nil {
		t.Errorf("responses to applied entries = %v, want nil", r)
	}
	if after := n2.allJobsJSON(); after != before {
		t.Errorf("re-applying old entries changed jobs")
	}
}

// TestRetryBudgetOfOldJobs checks that a job stored before the leader
// validated every entry, with no max_retries, fails on a retryable error
// instead of stopping Apply.
func TestRetryBudgetOfOldJobs(t *testing.T) {
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 1, CPUs: 4, MemoryMB: 4096, Encoders: []string{"libx264"}})
	j := newJob(t, "0195a1c2-0000-7000-8000-000000000001", "t1", spec("720p30-h264"), t0)
	j.Spec.MaxRetries = nil
	n.job(&fsm.SubmitJob{Job: j})
	n.run(j.ID, "w1", at(time.Second))
	got := n.job(&fsm.FinishJob{Report: fsm.Report{JobID: j.ID, WorkerID: "w1", Attempt: 1}, At: at(2 * time.Second),
		Error: &fsm.Error{Code: fsm.CodeFFmpeg, Message: "exit status 1"}, Retryable: true})
	if got.State != fsm.JobFailed || got.Retries != 0 {
		t.Fatalf("job is %s after %d retries, want failed after 0", got.State, got.Retries)
	}
}

// TestJobSummary: JobSummary counts one tenant's active jobs (or every
// tenant's) by state, the queued ones by queue and priority, with each
// queue's oldest queued time; finished jobs are not counted.
func TestJobSummary(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.tenant("t2")
	n.worker(fsm.Worker{ID: "w1", State: fsm.WorkerUp, Slots: 4, CPUs: 8, MemoryMB: 8192, Encoders: []string{"libx264"}})
	batch := spec("720p30-h264")
	batch.Queue, batch.Priority = fsm.QueueBatch, fsm.PriorityHigh
	n.submit("j1", "t1", batch, at(time.Second))
	n.submit("j2", "t1", batch, at(0))
	n.submit("j3", "t1", spec("720p30-h264"), at(2*time.Second))
	n.submit("j4", "t1", spec("720p30-h264"), at(3*time.Second))
	n.submit("j5", "t2", spec("720p30-h264"), at(-time.Hour))
	n.run("j3", "w1", at(4*time.Second))
	n.job(&fsm.CancelJob{JobID: "j4", At: at(5 * time.Second)})

	s := n.f.JobSummary("t1")
	if want := map[fsm.JobState]int{fsm.JobQueued: 2, fsm.JobAssigned: 0, fsm.JobRunning: 1, fsm.JobPaused: 0}; !maps.Equal(s.States, want) {
		t.Errorf("states = %v, want %v", s.States, want)
	}
	if got := s.Queued[fsm.QueueBatch][fsm.PriorityHigh]; got != 2 {
		t.Errorf("batch/high = %d, want 2", got)
	}
	if got := s.Queued[fsm.QueueDefault][fsm.PriorityMedium]; got != 0 {
		t.Errorf("default/medium = %d, want 0 (j3 runs, j4 is canceled)", got)
	}
	if got, ok := s.OldestQueued[fsm.QueueBatch]; !ok || !got.Equal(at(0)) {
		t.Errorf("oldest in batch = %v, want %v", got, at(0))
	}
	if _, ok := s.OldestQueued[fsm.QueueDefault]; ok {
		t.Errorf("default has an oldest queued time with nothing queued")
	}
	if s.Index != n.f.Index() {
		t.Errorf("index = %d, want %d", s.Index, n.f.Index())
	}
	all := n.f.JobSummary("")
	if all.States[fsm.JobQueued] != 3 || !all.OldestQueued[fsm.QueueDefault].Equal(at(-time.Hour)) {
		t.Errorf("every tenant: %+v, want 3 queued, t2's job oldest in default", all)
	}
}
