package fsm_test

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// applyAppended applies c as the next entry, stamped by the leader at
// appended (raft.Log.AppendedAt), and returns the response.
func (n *node) applyAppended(appended time.Time, c fsm.Command) any {
	n.t.Helper()
	n.last++
	l := entry(n.t, n.last, c)
	l.AppendedAt = appended
	r := n.f.ApplyBatch([]*raft.Log{l})[0]
	if err, ok := r.(error); ok {
		n.t.Fatalf("apply %T: refused: %v", c, err)
	}
	return r
}

// TestLeaderTimeDecides: the times that decide a job's fate are the
// leader's (the entry's AppendedAt), whatever the clock of the node that
// received the request. A node 10 minutes behind does not make its jobs
// expire at once; a node 10 minutes ahead does not stall a retry's
// backoff.
func TestLeaderTimeDecides(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 1, Encoders: x264})
	leader := at(time.Hour)

	behind := newJob(t, "j1", "t1", spec("720p30-h264"), leader.Add(-10*time.Minute))
	j := n.applyAppended(leader, &fsm.SubmitJob{Job: behind}).(*fsm.Job)
	if !j.SubmittedAt.Equal(leader) || !j.QueuedAt.Equal(leader) {
		t.Fatalf("job submitted through a node 10m behind: submitted_at %v queued_at %v, want the leader's %v", j.SubmittedAt, j.QueuedAt, leader)
	}
	d := n.f.Schedule(leader.Add(time.Second), fsm.NewFairness(), 10)
	if len(d.Expire) != 0 || len(d.Assign) != 1 {
		t.Fatalf("first pass: expire %+v assign %+v; want j1 assigned, nothing expired", d.Expire, d.Assign)
	}
	n.applyAppended(leader.Add(time.Second), d.Assign[0])
	r := fsm.Report{JobID: "j1", WorkerID: "w1", Attempt: 1}
	n.applyAppended(leader.Add(time.Second), &fsm.StartJob{Report: r, At: leader.Add(10 * time.Minute)})

	// A retryable failure reported through a node 10 minutes ahead.
	fail := &fsm.FinishJob{Report: r, At: leader.Add(10 * time.Minute), Retryable: true, Error: &fsm.Error{Code: fsm.CodeInternal, Message: "exit 1"}}
	j = n.applyAppended(leader.Add(2*time.Second), fail).(*fsm.Job)
	if want := leader.Add(2*time.Second + fsm.Backoff(1)); !j.NotBefore.Equal(want) {
		t.Fatalf("retry not_before = %v, want the leader's time plus the backoff, %v", j.NotBefore, want)
	}
	d = n.f.Schedule(leader.Add(5*time.Second), fsm.NewFairness(), 10)
	if len(d.Assign) != 1 || d.Assign[0].JobID != "j1" || d.Assign[0].Attempt != 2 {
		t.Fatalf("pass after the backoff: assign %+v, want j1 as attempt 2", d.Assign)
	}
}

// TestCommandTimeWithoutAppendedAt: an entry written before Raft stamped
// entries (AppendedAt zero) keeps the time its proposer put in the
// command, so replaying an old log gives the same state as before.
func TestCommandTimeWithoutAppendedAt(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	j := n.submit("j1", "t1", spec("720p30-h264"), at(time.Minute))
	if !j.SubmittedAt.Equal(at(time.Minute)) || !j.QueuedAt.Equal(at(time.Minute)) {
		t.Errorf("submitted_at %v queued_at %v, want the command's %v", j.SubmittedAt, j.QueuedAt, at(time.Minute))
	}
}

// TestAcquireTimeoutCountsPlaceableTime: with CountFrom, an acquire
// timeout counts only time when the job could have been placed: not
// before the leader took over, not while the job's pool had no worker up.
func TestAcquireTimeoutCountsPlaceableTime(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.tenant("t2")
	av1 := spec("480p30-av1") // no worker below encodes AV1
	av1.AcquireTimeout = fsm.Duration(time.Minute)
	h264 := spec("720p30-h264")
	h264.AcquireTimeout = fsm.Duration(time.Minute)
	n.submit("j1-av1", "t1", av1, at(0))
	n.submit("j2-t2", "t2", h264, at(0))

	// A leader that took over after the jobs' timeouts had passed, with
	// no worker up: nothing counts.
	fair := fsm.NewFairness()
	fair.CountFrom(at(5 * time.Minute))
	if d := n.f.Schedule(at(10*time.Minute), fair, 10); len(d.Expire) != 0 {
		t.Fatalf("expirations with no worker up = %+v, want none", d.Expire)
	}

	// t1's dedicated worker comes up: it cannot run AV1. t2's pool (the
	// shared one and t2's own) still has no worker.
	up := at(20 * time.Minute)
	n.applyAppended(up, &fsm.RegisterWorker{Worker: fsm.Worker{ID: "w1", TenantID: "t1", Incarnation: "i1", Slots: 1, Encoders: x264}, At: up})
	d := n.f.Schedule(up, fair, 10)
	if len(d.Expire) != 0 {
		t.Fatalf("expirations when the worker came up = %+v, want none", d.Expire)
	}
	if want := up.Add(time.Minute); !d.Wake.Equal(want) {
		t.Errorf("wake = %v, want a minute after the worker came up, %v", d.Wake, want)
	}
	deadline := up.Add(time.Minute)
	d = n.f.Schedule(deadline, fair, 10)
	if len(d.Expire) != 1 {
		t.Fatalf("expirations a minute after the worker came up = %+v, want j1-av1", d.Expire)
	}
	e := d.Expire[0]
	if e.JobID != "j1-av1" || e.Code != fsm.CodeNoCapableWorker || !e.CountFrom.Equal(up) {
		t.Fatalf("expiration = %+v, want j1-av1, no_capable_worker, counted from %v", e, up)
	}

	// Apply checks the count itself: too early is refused.
	early := *e
	early.At = deadline.Add(-time.Second)
	n.last++
	l := entry(t, n.last, &early)
	l.AppendedAt = early.At
	if err, _ := n.f.ApplyBatch([]*raft.Log{l})[0].(error); fsm.ErrorCode(err) != fsm.CodeInvalidTransition {
		t.Fatalf("expiration before CountFrom plus the timeout: %v, want invalid_transition", err)
	}
	j := n.applyAppended(deadline, e).(*fsm.Job)
	if j.State != fsm.JobFailed || j.Error == nil || j.Error.Code != fsm.CodeNoCapableWorker {
		t.Fatalf("expired job = %s %+v, want failed with no_capable_worker", j.State, j.Error)
	}
	if j, ok := n.f.ActiveJob("j2-t2"); !ok || j.State != fsm.JobQueued {
		t.Errorf("t2's job, whose pool never had a worker: %+v, %v; want still queued", j, ok)
	}

	// Without CountFrom (the pre-existing rule) both had long expired.
	if d := n.f.Schedule(deadline, fsm.NewFairness(), 10); len(d.Expire) != 1 || d.Expire[0].JobID != "j2-t2" {
		t.Errorf("expirations counted from queued times = %+v, want j2-t2", d.Expire)
	}
}
