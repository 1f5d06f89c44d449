package fsm_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

var x264 = []string{"libx264"}

// drain runs the scheduler at now until it assigns nothing, applying every
// assignment and finishing each assigned job successfully before the next
// round. It returns the job IDs assigned in each round.
func drain(t *testing.T, n *node, fair *fsm.Fairness, now time.Time) [][]string {
	t.Helper()
	var rounds [][]string
	for range 1000 {
		d := n.f.Schedule(now, fair, 100)
		if len(d.Assign) == 0 {
			return rounds
		}
		var ids []string
		for _, a := range d.Assign {
			if a.At != now {
				t.Fatalf("assignment of %s at %v, want the scheduler's time %v", a.JobID, a.At, now)
			}
			n.job(a)
			ids = append(ids, a.JobID)
		}
		for _, a := range d.Assign {
			r := fsm.Report{JobID: a.JobID, WorkerID: a.WorkerID, Attempt: a.Attempt}
			n.job(&fsm.StartJob{Report: r, At: now})
			if j := n.job(&fsm.FinishJob{Report: r, At: now}); j.State != fsm.JobSucceeded {
				t.Fatalf("finish %s: state %s, want succeeded", a.JobID, j.State)
			}
		}
		rounds = append(rounds, ids)
	}
	t.Fatal("the scheduler never ran out of work")
	return nil
}

func flat(rounds [][]string) []string { return slices.Concat(rounds...) }

// report returns the fencing token of a job's current attempt.
func report(t *testing.T, j *fsm.Job) fsm.Report {
	t.Helper()
	if j.WorkerID == "" || j.Attempt == 0 {
		t.Fatalf("job %s (%s) has no current attempt", j.ID, j.State)
	}
	return fsm.Report{JobID: j.ID, WorkerID: j.WorkerID, Attempt: j.Attempt}
}

func TestScheduleClassOrder(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 1, Encoders: x264})

	// Submitted lowest class first, so submission order is the reverse of
	// dispatch order.
	var want []string
	k := 0
	for _, q := range slices.Backward(fsm.Queues) {
		for _, p := range slices.Backward(fsm.Priorities) {
			s := spec("720p30-h264")
			s.Queue, s.Priority = q, p
			id := fmt.Sprintf("j%d-%s-%s", k, q, p)
			n.submit(id, "t1", s, at(time.Duration(k)*time.Second))
			want = append([]string{id}, want...)
			k++
		}
	}
	rounds := drain(t, n, fsm.NewFairness(), at(time.Minute))
	for i, r := range rounds {
		if len(r) != 1 {
			t.Fatalf("round %d assigned %v, want exactly one job (one slot)", i, r)
		}
	}
	if got := flat(rounds); !slices.Equal(got, want) {
		t.Errorf("dispatch order:\ngot  %v\nwant %v", got, want)
	}

	// With enough slots one Schedule call lists the same order.
	n2 := newNode(t)
	n2.tenant("t1")
	n2.worker(fsm.Worker{ID: "w1", Slots: 20, Encoders: x264})
	k = 0
	for _, q := range slices.Backward(fsm.Queues) {
		for _, p := range slices.Backward(fsm.Priorities) {
			s := spec("720p30-h264")
			s.Queue, s.Priority = q, p
			n2.submit(fmt.Sprintf("j%d-%s-%s", k, q, p), "t1", s, at(time.Duration(k)*time.Second))
			k++
		}
	}
	var got []string
	for _, a := range n2.schedule(at(time.Minute)).Assign {
		got = append(got, a.JobID)
	}
	if !slices.Equal(got, want) {
		t.Errorf("one call:\ngot  %v\nwant %v", got, want)
	}
}

func TestScheduleFIFOWithinTenant(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 1, Encoders: x264})
	// IDs deliberately out of order: submission order is what counts.
	want := []string{"j-e", "j-a", "j-d", "j-b", "j-c"}
	for i, id := range want {
		n.submit(id, "t1", spec("720p30-h264"), at(time.Duration(i)*time.Second))
	}
	if got := flat(drain(t, n, fsm.NewFairness(), at(time.Minute))); !slices.Equal(got, want) {
		t.Errorf("dispatch order:\ngot  %v\nwant %v", got, want)
	}
}

// TestScheduleRequeuedJobKeepsItsPlace: a job put back after a failed
// attempt goes ahead of jobs submitted after it, once its backoff ends.
func TestScheduleRequeuedJobKeepsItsPlace(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 1, Encoders: x264})
	for i, id := range []string{"a", "b", "c"} {
		n.submit(id, "t1", spec("720p30-h264"), at(time.Duration(i)*time.Second))
	}
	fair := fsm.NewFairness()
	d := n.f.Schedule(at(10*time.Second), fair, 100)
	if len(d.Assign) != 1 || d.Assign[0].JobID != "a" {
		t.Fatalf("first assignment = %+v, want job a", d.Assign)
	}
	a := n.job(d.Assign[0])
	n.job(&fsm.StartJob{Report: report(t, a), At: at(10 * time.Second)})
	fail := at(20 * time.Second)
	a = n.job(&fsm.FinishJob{Report: report(t, a), At: fail, Error: &fsm.Error{Code: fsm.CodeFFmpeg, Message: "exit 1"}, Retryable: true})
	if a.State != fsm.JobQueued {
		t.Fatalf("after a retryable failure: state %s, want queued", a.State)
	}
	// During a's backoff, b runs and takes the only slot.
	d = n.f.Schedule(fail.Add(time.Second), fair, 100)
	if len(d.Assign) != 1 || d.Assign[0].JobID != "b" {
		t.Fatalf("during backoff: assignments %+v, want job b", d.Assign)
	}
	b := n.job(d.Assign[0])
	n.job(&fsm.FinishJob{Report: report(t, b), At: fail.Add(time.Second)})
	if got := flat(drain(t, n, fair, a.NotBefore)); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("after backoff: assigned %v, want [a c]", got)
	}
}

func TestScheduleRoundRobin(t *testing.T) {
	t.Parallel()
	tenants := []string{"ta", "tb", "tc"}
	setup := func(t *testing.T, slots int) *node {
		n := newNode(t)
		for _, tn := range tenants {
			n.tenant(tn)
		}
		n.worker(fsm.Worker{ID: "w1", Slots: slots, Encoders: x264})
		// All of ta's jobs first: strict FIFO would run ta five times.
		k := 0
		for _, tn := range tenants {
			for i := range 5 {
				n.submit(fmt.Sprintf("%s-%d", tn, i), tn, spec("720p30-h264"), at(time.Duration(k)*time.Second))
				k++
			}
		}
		return n
	}

	t.Run("one slot", func(t *testing.T) {
		t.Parallel()
		n := setup(t, 1)
		var want []string
		for i := range 5 {
			for _, tn := range tenants {
				want = append(want, fmt.Sprintf("%s-%d", tn, i))
			}
		}
		if got := flat(drain(t, n, fsm.NewFairness(), at(time.Minute))); !slices.Equal(got, want) {
			t.Errorf("dispatch order:\ngot  %v\nwant %v", got, want)
		}
	})
	t.Run("two slots", func(t *testing.T) {
		t.Parallel()
		n := setup(t, 2)
		rounds := drain(t, n, fsm.NewFairness(), at(time.Minute))
		want := [][]string{{"ta-0", "tb-0"}, {"tc-0", "ta-1"}, {"tb-1", "tc-1"}, {"ta-2", "tb-2"}}
		if len(rounds) < len(want) {
			t.Fatalf("got %d rounds %v, want at least %d", len(rounds), rounds, len(want))
		}
		for i, w := range want {
			if !slices.Equal(rounds[i], w) {
				t.Errorf("round %d: got %v, want %v", i, rounds[i], w)
			}
		}
		if got := len(flat(rounds)); got != 15 {
			t.Errorf("assigned %d jobs, want 15", got)
		}
	})
	t.Run("three slots", func(t *testing.T) {
		t.Parallel()
		n := setup(t, 3)
		d := n.schedule(at(time.Minute))
		var got []string
		for _, a := range d.Assign {
			got = append(got, a.JobID)
		}
		if want := []string{"ta-0", "tb-0", "tc-0"}; !slices.Equal(got, want) {
			t.Errorf("one call with three slots: got %v, want %v", got, want)
		}
		// The limit caps one call's placements.
		if d := n.f.Schedule(at(time.Minute), fsm.NewFairness(), 2); len(d.Assign) != 2 {
			t.Errorf("Schedule with limit 2 made %d assignments", len(d.Assign))
		}
	})
}

// TestScheduleNoHeadOfLineBlocking: a job no worker can run is passed over,
// and fails with no_capable_worker at its acquire timeout.
func TestScheduleNoHeadOfLineBlocking(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 1, Encoders: x264})
	av1 := spec("480p30-av1")
	av1.AcquireTimeout = fsm.Duration(time.Minute)
	n.submit("j1-av1", "t1", av1, at(0))
	n.submit("j2", "t1", spec("720p30-h264"), at(time.Second))
	n.submit("j3", "t1", spec("720p30-h264"), at(2*time.Second))
	deadline := at(time.Minute)

	fair := fsm.NewFairness()
	d := n.f.Schedule(at(10*time.Second), fair, 100)
	if len(d.Assign) != 1 || d.Assign[0].JobID != "j2" || d.Assign[0].WorkerID != "w1" || d.Assign[0].Attempt != 1 {
		t.Fatalf("assignments = %+v, want j2 to w1 as attempt 1", d.Assign)
	}
	if len(d.Expire) != 0 {
		t.Fatalf("expirations = %+v, want none before the acquire timeout", d.Expire)
	}
	if !d.Wake.Equal(deadline) {
		t.Errorf("wake = %v, want the acquire deadline %v", d.Wake, deadline)
	}
	j2 := n.job(d.Assign[0])
	n.job(&fsm.FinishJob{Report: report(t, j2), At: at(20 * time.Second)})
	if got := flat(drain(t, n, fair, at(30*time.Second))); !slices.Equal(got, []string{"j3"}) {
		t.Fatalf("next assignments = %v, want [j3]", got)
	}

	// Too early: Apply checks the deadline itself.
	n.refused(&fsm.ExpireJob{JobID: "j1-av1", Code: fsm.CodeNoCapableWorker, At: deadline.Add(-time.Nanosecond)}, fsm.CodeInvalidTransition)

	d = n.schedule(deadline)
	if len(d.Assign) != 0 {
		t.Errorf("assignments at the deadline = %+v, want none", d.Assign)
	}
	if len(d.Expire) != 1 {
		t.Fatalf("expirations = %+v, want j1-av1", d.Expire)
	}
	if e := d.Expire[0]; e.JobID != "j1-av1" || e.Code != fsm.CodeNoCapableWorker || !e.At.Equal(deadline) {
		t.Fatalf("expiration = %+v, want j1-av1 with %s at %v", e, fsm.CodeNoCapableWorker, deadline)
	}
	j := n.job(d.Expire[0])
	if j.State != fsm.JobFailed || j.Error == nil || j.Error.Code != fsm.CodeNoCapableWorker || !j.FinishedAt.Equal(deadline) {
		t.Fatalf("expired job = state %s error %+v finished %v, want failed with %s at %v", j.State, j.Error, j.FinishedAt, fsm.CodeNoCapableWorker, deadline)
	}
	if _, ok := n.f.ActiveJob("j1-av1"); ok {
		t.Error("expired job is still in memory")
	}
	if got := n.get("j1-av1"); got.State != fsm.JobFailed {
		t.Errorf("stored job state = %s, want failed", got.State)
	}
	if d := n.schedule(deadline.Add(time.Hour)); len(d.Expire)+len(d.Assign) != 0 || !d.Wake.IsZero() {
		t.Errorf("nothing left to do, got %+v", d)
	}
}

func TestScheduleAcquireTimeoutBusyWorker(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 1, Encoders: x264})
	n.submit("j1", "t1", spec("720p30-h264"), at(0))
	n.run("j1", "w1", at(time.Second))
	s := spec("720p30-h264")
	s.AcquireTimeout = fsm.Duration(time.Minute)
	n.submit("j2", "t1", s, at(2*time.Second))
	deadline := at(62 * time.Second)

	d := n.schedule(at(30 * time.Second))
	if len(d.Assign)+len(d.Expire) != 0 || !d.Wake.Equal(deadline) {
		t.Fatalf("while the worker is busy: %+v, want nothing until %v", d, deadline)
	}
	d = n.schedule(deadline)
	if len(d.Expire) != 1 || d.Expire[0].JobID != "j2" || d.Expire[0].Code != fsm.CodeAcquireTimeout {
		t.Fatalf("expirations = %+v, want j2 with %s", d.Expire, fsm.CodeAcquireTimeout)
	}
	j := n.job(d.Expire[0])
	if j.State != fsm.JobFailed || j.Error == nil || j.Error.Code != fsm.CodeAcquireTimeout {
		t.Errorf("expired job: state %s error %+v, want failed with %s", j.State, j.Error, fsm.CodeAcquireTimeout)
	}
	if got := n.get("j1"); got.State != fsm.JobRunning {
		t.Errorf("running job: state %s, want running", got.State)
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]time.Duration{1: 2 * time.Second, 2: 4 * time.Second, 3: 8 * time.Second,
		8: 256 * time.Second, 9: 5 * time.Minute, 20: 5 * time.Minute, 1000: 5 * time.Minute} {
		if got := fsm.Backoff(n); got != want {
			t.Errorf("Backoff(%d) = %v, want %v", n, got, want)
		}
	}
}

// TestScheduleRetryBackoff: a retryable failure puts the job back with a
// growing backoff until its retry budget is spent.
func TestScheduleRetryBackoff(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 1, Encoders: x264})
	n.submit("j1", "t1", spec("720p30-h264"), at(0)) // max_retries 2
	fair := fsm.NewFairness()
	now := at(time.Second)
	for attempt := 1; attempt <= 3; attempt++ {
		d := n.f.Schedule(now, fair, 100)
		if len(d.Assign) != 1 || d.Assign[0].JobID != "j1" || d.Assign[0].Attempt != attempt {
			t.Fatalf("attempt %d: assignments %+v, want j1 as attempt %d", attempt, d.Assign, attempt)
		}
		j := n.job(d.Assign[0])
		n.job(&fsm.StartJob{Report: report(t, j), At: now})
		now = now.Add(10 * time.Second)
		j = n.job(&fsm.FinishJob{Report: report(t, j), At: now, Error: &fsm.Error{Code: fsm.CodeFFmpeg, Message: "exit 1"}, Retryable: true, Log: fmt.Sprintf("log %d", attempt)})
		if j.Error == nil || j.Error.Code != fsm.CodeFFmpeg || j.Log != fmt.Sprintf("log %d", attempt) {
			t.Errorf("attempt %d: error %+v log %q, want the attempt's error and log", attempt, j.Error, j.Log)
		}
		if attempt == 3 {
			if j.State != fsm.JobFailed || j.Retries != 2 || !j.FinishedAt.Equal(now) {
				t.Fatalf("after the last attempt: state %s retries %d finished %v, want failed, 2, %v", j.State, j.Retries, j.FinishedAt, now)
			}
			break
		}
		wantNB := now.Add(fsm.Backoff(attempt))
		if j.State != fsm.JobQueued || j.Retries != attempt || j.WorkerID != "" || j.Attempt != attempt || !j.NotBefore.Equal(wantNB) || !j.QueuedAt.Equal(now) {
			t.Fatalf("attempt %d: got state %s retries %d worker %q attempt %d not_before %v queued_at %v; want queued, %d, no worker, %d, %v, %v",
				attempt, j.State, j.Retries, j.WorkerID, j.Attempt, j.NotBefore, j.QueuedAt, attempt, attempt, wantNB, now)
		}
		// Not before the backoff ends, however free the worker is.
		for _, early := range []time.Time{now, wantNB.Add(-time.Millisecond)} {
			d := n.f.Schedule(early, fair, 100)
			if len(d.Assign) != 0 {
				t.Fatalf("attempt %d: assigned at %v, before not_before %v", attempt, early, wantNB)
			}
			if !d.Wake.Equal(wantNB) {
				t.Errorf("attempt %d: wake = %v, want not_before %v", attempt, d.Wake, wantNB)
			}
		}
		now = wantNB
	}
	if _, ok := n.f.ActiveJob("j1"); ok {
		t.Error("failed job is still in memory")
	}
}

func TestScheduleTenantDedicatedWorkers(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("ta")
	n.tenant("tb")
	n.worker(fsm.Worker{ID: "wa", TenantID: "ta", Slots: 4, Encoders: x264})
	n.refused(&fsm.RegisterWorker{Worker: fsm.Worker{ID: "wx", TenantID: "nope", Slots: 1, Encoders: x264, Incarnation: "i"}, At: t0}, fsm.CodeNotFound)
	n.submit("b1", "tb", spec("720p30-h264"), at(0))
	n.submit("a1", "ta", spec("720p30-h264"), at(time.Second))

	d := n.schedule(at(time.Minute))
	if len(d.Assign) != 1 || d.Assign[0].JobID != "a1" || d.Assign[0].WorkerID != "wa" {
		t.Fatalf("assignments = %+v, want only a1 to wa", d.Assign)
	}
	n.refused(&fsm.AssignJob{JobID: "b1", WorkerID: "wa", Attempt: 1, At: at(time.Minute)}, fsm.CodeInvalidTransition)

	n.worker(fsm.Worker{ID: "ws", Slots: 1, Encoders: x264})
	d = n.schedule(at(time.Minute))
	var got []string
	for _, a := range d.Assign {
		got = append(got, a.JobID+"→"+a.WorkerID)
	}
	if want := []string{"a1→wa", "b1→ws"}; !slices.Equal(got, want) {
		t.Errorf("assignments = %v, want %v", got, want)
	}

	ids := func(ws []*fsm.Worker) []string {
		var out []string
		for _, w := range ws {
			out = append(out, w.ID)
		}
		return out
	}
	for tenant, want := range map[string][]string{"": {"wa", "ws"}, "ta": {"wa", "ws"}, "tb": {"ws"}} {
		if got := ids(n.f.Workers(tenant)); !slices.Equal(got, want) {
			t.Errorf("Workers(%q) = %v, want %v", tenant, got, want)
		}
	}
}

func TestScheduleResources(t *testing.T) {
	t.Parallel()
	withRes := func(cpu float64, mem int) fsm.JobSpec {
		s := spec("720p30-h264")
		s.Resources = fsm.Resources{CPU: cpu, MemoryMB: mem}
		s.AcquireTimeout = fsm.Duration(time.Hour)
		return s
	}
	assigned := func(d *fsm.Decisions) []string {
		var out []string
		for _, a := range d.Assign {
			out = append(out, a.JobID)
		}
		return out
	}

	t.Run("cpu", func(t *testing.T) {
		t.Parallel()
		n := newNode(t)
		n.tenant("t1")
		n.worker(fsm.Worker{ID: "w1", Slots: 8, CPUs: 4, MemoryMB: 4096, Encoders: x264})
		for i, id := range []string{"c1", "c2", "c3"} {
			n.submit(id, "t1", withRes(2, 0), at(time.Duration(i)*time.Second))
		}
		d := n.schedule(at(time.Minute))
		if got, want := assigned(d), []string{"c1", "c2"}; !slices.Equal(got, want) {
			t.Fatalf("assigned %v, want %v (4 CPUs)", got, want)
		}
		for _, a := range d.Assign {
			n.job(a)
		}
		n.refused(&fsm.AssignJob{JobID: "c3", WorkerID: "w1", Attempt: 1, At: at(time.Minute)}, fsm.CodeInvalidTransition)
		n.job(&fsm.FinishJob{Report: report(t, n.get("c1")), At: at(2 * time.Minute)})
		if got, want := assigned(n.schedule(at(2*time.Minute))), []string{"c3"}; !slices.Equal(got, want) {
			t.Errorf("after c1 finished: assigned %v, want %v", got, want)
		}
	})
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		n := newNode(t)
		n.tenant("t1")
		n.worker(fsm.Worker{ID: "w1", Slots: 8, CPUs: 4, MemoryMB: 4096, Encoders: x264})
		n.submit("m1", "t1", withRes(0, 3000), at(0))
		n.submit("m2", "t1", withRes(0, 3000), at(time.Second))
		n.submit("m3", "t1", withRes(0, 1000), at(2*time.Second))
		d := n.schedule(at(time.Minute))
		if got, want := assigned(d), []string{"m1", "m3"}; !slices.Equal(got, want) {
			t.Fatalf("assigned %v, want %v (4096 MB)", got, want)
		}
		for _, a := range d.Assign {
			n.job(a)
		}
		n.refused(&fsm.AssignJob{JobID: "m2", WorkerID: "w1", Attempt: 1, At: at(time.Minute)}, fsm.CodeInvalidTransition)
	})
	t.Run("larger than any worker", func(t *testing.T) {
		t.Parallel()
		n := newNode(t)
		n.tenant("t1")
		n.worker(fsm.Worker{ID: "w1", Slots: 8, CPUs: 4, MemoryMB: 4096, Encoders: x264})
		big := withRes(8, 0)
		big.AcquireTimeout = fsm.Duration(time.Minute)
		n.submit("big", "t1", big, at(0))
		n.submit("small", "t1", withRes(1, 0), at(time.Second))
		if got, want := assigned(n.schedule(at(time.Second))), []string{"small"}; !slices.Equal(got, want) {
			t.Fatalf("assigned %v, want %v", got, want)
		}
		d := n.schedule(at(time.Minute))
		if len(d.Expire) != 1 || d.Expire[0].JobID != "big" || d.Expire[0].Code != fsm.CodeNoCapableWorker {
			t.Errorf("expirations = %+v, want big with %s", d.Expire, fsm.CodeNoCapableWorker)
		}
	})
	t.Run("zero means unlimited", func(t *testing.T) {
		t.Parallel()
		n := newNode(t)
		n.tenant("t1")
		n.worker(fsm.Worker{ID: "w1", Slots: 2, Encoders: x264})
		n.submit("r1", "t1", withRes(64, 65536), at(0))
		n.submit("r2", "t1", withRes(64, 65536), at(time.Second))
		if got, want := assigned(n.schedule(at(time.Minute))), []string{"r1", "r2"}; !slices.Equal(got, want) {
			t.Errorf("assigned %v, want %v", got, want)
		}
	})
}

func TestApplyAssignRefusals(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 1, Encoders: x264})
	n.worker(fsm.Worker{ID: "w-av1", Slots: 1, Encoders: []string{"libsvtav1"}})
	n.submit("j1", "t1", spec("720p30-h264"), at(0))
	n.submit("j2", "t1", spec("720p30-h264"), at(time.Second))
	now := at(time.Minute)

	n.refused(&fsm.AssignJob{JobID: "j1", WorkerID: "w1", Attempt: 0, At: now}, fsm.CodeStaleAttempt)
	n.refused(&fsm.AssignJob{JobID: "j1", WorkerID: "w1", Attempt: 2, At: now}, fsm.CodeStaleAttempt)
	n.refused(&fsm.AssignJob{JobID: "j1", WorkerID: "nope", Attempt: 1, At: now}, fsm.CodeNotFound)
	n.refused(&fsm.AssignJob{JobID: "nope", WorkerID: "w1", Attempt: 1, At: now}, fsm.CodeInvalidTransition)
	n.refused(&fsm.AssignJob{JobID: "j1", WorkerID: "w-av1", Attempt: 1, At: now}, fsm.CodeInvalidTransition)

	j := n.job(&fsm.AssignJob{JobID: "j1", WorkerID: "w1", Attempt: 1, At: now})
	if j.State != fsm.JobAssigned || j.WorkerID != "w1" || j.Attempt != 1 || !j.AssignedAt.Equal(now) {
		t.Fatalf("assigned job = %+v", j)
	}
	if got := n.f.WorkerLoad("w1"); got != 1 {
		t.Errorf("WorkerLoad(w1) = %d, want 1", got)
	}
	// The worker is full.
	n.refused(&fsm.AssignJob{JobID: "j2", WorkerID: "w1", Attempt: 1, At: now}, fsm.CodeInvalidTransition)
	// The job is no longer queued.
	n.refused(&fsm.AssignJob{JobID: "j1", WorkerID: "w1", Attempt: 2, At: now}, fsm.CodeInvalidTransition)
	if d := n.schedule(now); len(d.Assign) != 0 {
		t.Errorf("scheduler assigned %+v to a full worker", d.Assign)
	}
}

// TestApplyFencing: reports about an old attempt are refused and change
// nothing, so a partitioned worker cannot overwrite a newer attempt.
func TestApplyFencing(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 1, Encoders: x264})
	n.worker(fsm.Worker{ID: "w2", Slots: 1, Encoders: x264})
	n.submit("j1", "t1", spec("720p30-h264"), at(0))
	j := n.run("j1", "w1", at(time.Second))
	old := report(t, j)
	n.job(&fsm.ProgressJob{Report: old, Progress: fsm.Progress{Percent: 10, Frame: 30, UpdatedAt: at(2 * time.Second)}})

	j = n.job(&fsm.RequeueJob{Report: old, Reason: fsm.Error{Code: fsm.CodeWorkerLost, Message: "gone"}, At: at(3 * time.Second)})
	if j.State != fsm.JobQueued || j.Retries != 1 || j.Progress != nil || j.Error == nil || j.Error.Code != fsm.CodeWorkerLost {
		t.Fatalf("requeued job = state %s retries %d progress %v error %+v", j.State, j.Retries, j.Progress, j.Error)
	}

	stale := func(r fsm.Report) {
		t.Helper()
		n.refused(&fsm.StartJob{Report: r, At: at(4 * time.Second)}, fsm.CodeStaleAttempt)
		n.refused(&fsm.ProgressJob{Report: r, Progress: fsm.Progress{Percent: 50}}, fsm.CodeStaleAttempt)
		n.refused(&fsm.FinishJob{Report: r, At: at(5 * time.Second), Result: &fsm.Result{}}, fsm.CodeStaleAttempt)
		n.refused(&fsm.FinishJob{Report: r, At: at(5 * time.Second), Error: &fsm.Error{Code: fsm.CodeFFmpeg}}, fsm.CodeStaleAttempt)
		n.refused(&fsm.FinishJob{Report: r, At: at(5 * time.Second), Error: &fsm.Error{Code: fsm.CodeFFmpeg}, Retryable: true}, fsm.CodeStaleAttempt)
		n.refused(&fsm.RequeueJob{Report: r, Reason: fsm.Error{Code: fsm.CodeWorkerLost}, At: at(5 * time.Second)}, fsm.CodeStaleAttempt)
	}
	// While queued, the old attempt's reports are stale.
	stale(old)

	j = n.job(&fsm.AssignJob{JobID: "j1", WorkerID: "w2", Attempt: 2, At: j.NotBefore})
	cur := report(t, j)
	stale(old)
	stale(fsm.Report{JobID: "j1", WorkerID: "w1", Attempt: 2}) // right attempt, wrong worker
	stale(fsm.Report{JobID: "j1", WorkerID: "w2", Attempt: 1}) // right worker, old attempt
	stale(fsm.Report{JobID: "j1", WorkerID: "w2", Attempt: 3}) // the future

	n.job(&fsm.StartJob{Report: cur, At: at(10 * time.Second)})
	stale(old)
	n.job(&fsm.ProgressJob{Report: cur, Progress: fsm.Progress{Percent: 40, UpdatedAt: at(11 * time.Second)}})
	res := &fsm.Result{Outputs: []fsm.OutputResult{{URL: "file:///out.mp4", Codec: "h264", Width: 1280, Height: 720}}}
	j = n.job(&fsm.FinishJob{Report: cur, At: at(12 * time.Second), Result: res, Log: "done"})
	if j.State != fsm.JobSucceeded || j.Result == nil || len(j.Result.Outputs) != 1 || j.Error != nil || j.Progress == nil || j.Progress.Percent != 100 || j.Log != "done" {
		t.Fatalf("finished job = %+v", j)
	}
	// After the end, every report is stale, the current attempt's too.
	stale(old)
	stale(cur)
	if got := n.get("j1"); got.State != fsm.JobSucceeded || got.Attempt != 2 {
		t.Errorf("stored job: state %s attempt %d, want succeeded 2", got.State, got.Attempt)
	}
}

func TestApplyCanceledStaysCanceled(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 1, Encoders: x264})
	n.submit("run", "t1", spec("720p30-h264"), at(0))
	n.submit("wait", "t1", spec("720p30-h264"), at(time.Second))
	r := report(t, n.run("run", "w1", at(2*time.Second)))

	j := n.job(&fsm.CancelJob{JobID: "run", At: at(3 * time.Second)})
	if j.State != fsm.JobCanceled || !j.FinishedAt.Equal(at(3*time.Second)) {
		t.Fatalf("canceled job = state %s finished %v", j.State, j.FinishedAt)
	}
	if got := n.f.WorkerLoad("w1"); got != 0 {
		t.Errorf("WorkerLoad(w1) = %d after cancel, want 0", got)
	}
	j = n.job(&fsm.CancelJob{JobID: "wait", At: at(4 * time.Second)})
	if j.State != fsm.JobCanceled {
		t.Fatalf("canceled queued job: state %s", j.State)
	}
	if d := n.schedule(at(time.Hour)); len(d.Assign)+len(d.Expire) != 0 {
		t.Errorf("scheduler still sees canceled jobs: %+v", d)
	}

	for _, id := range []string{"run", "wait"} {
		n.refused(&fsm.CancelJob{JobID: id, At: at(5 * time.Second)}, fsm.CodeInvalidTransition)
		n.refused(&fsm.PauseJob{JobID: id, At: at(5 * time.Second)}, fsm.CodeInvalidTransition)
		n.refused(&fsm.ResumeJob{JobID: id, At: at(5 * time.Second)}, fsm.CodeInvalidTransition)
		n.refused(&fsm.AssignJob{JobID: id, WorkerID: "w1", Attempt: 2, At: at(5 * time.Second)}, fsm.CodeInvalidTransition)
		n.refused(&fsm.ExpireJob{JobID: id, Code: fsm.CodeAcquireTimeout, At: at(24 * time.Hour)}, fsm.CodeInvalidTransition)
	}
	n.refused(&fsm.FinishJob{Report: r, At: at(6 * time.Second), Result: &fsm.Result{}}, fsm.CodeStaleAttempt)
	n.refused(&fsm.FinishJob{Report: r, At: at(6 * time.Second), Error: &fsm.Error{Code: fsm.CodeFFmpeg}, Retryable: true}, fsm.CodeStaleAttempt)
	n.refused(&fsm.StartJob{Report: r, At: at(6 * time.Second)}, fsm.CodeStaleAttempt)
	n.refused(&fsm.ProgressJob{Report: r}, fsm.CodeStaleAttempt)
	n.refused(&fsm.RequeueJob{Report: r, Reason: fsm.Error{Code: fsm.CodeWorkerLost}, At: at(6 * time.Second)}, fsm.CodeStaleAttempt)
	// A new incarnation of the worker does not bring it back either.
	n.worker(fsm.Worker{ID: "w1", Slots: 1, Encoders: x264, Incarnation: "i2"})
	for _, id := range []string{"run", "wait"} {
		if got := n.get(id); got.State != fsm.JobCanceled {
			t.Errorf("job %s: state %s, want canceled", id, got.State)
		}
		if _, ok := n.f.ActiveJob(id); ok {
			t.Errorf("job %s: still in memory", id)
		}
	}
}

func TestApplyPauseResume(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 1, Encoders: x264})
	n.submit("j1", "t1", spec("720p30-h264"), at(0))
	n.submit("j2", "t1", spec("720p30-h264"), at(time.Second))
	n.refused(&fsm.PauseJob{JobID: "j1", At: at(2 * time.Second)}, fsm.CodeInvalidTransition) // queued
	n.job(&fsm.AssignJob{JobID: "j1", WorkerID: "w1", Attempt: 1, At: at(2 * time.Second)})
	n.refused(&fsm.PauseJob{JobID: "j1", At: at(2 * time.Second)}, fsm.CodeInvalidTransition) // assigned
	r := report(t, n.job(&fsm.StartJob{Report: fsm.Report{JobID: "j1", WorkerID: "w1", Attempt: 1}, At: at(3 * time.Second)}))
	n.refused(&fsm.ResumeJob{JobID: "j1", At: at(4 * time.Second)}, fsm.CodeInvalidTransition) // running

	if j := n.job(&fsm.PauseJob{JobID: "j1", At: at(4 * time.Second)}); j.State != fsm.JobPaused {
		t.Fatalf("paused job: state %s", j.State)
	}
	n.refused(&fsm.PauseJob{JobID: "j1", At: at(5 * time.Second)}, fsm.CodeInvalidTransition)
	// A paused job keeps its slot.
	if d := n.schedule(at(5 * time.Second)); len(d.Assign) != 0 {
		t.Errorf("assigned %+v while the only slot is held by a paused job", d.Assign)
	}
	if j := n.job(&fsm.ProgressJob{Report: r, Progress: fsm.Progress{Percent: 30}}); j.State != fsm.JobPaused || j.Progress.Percent != 30 {
		t.Errorf("progress while paused: state %s progress %+v", j.State, j.Progress)
	}
	if j := n.job(&fsm.StartJob{Report: r, At: at(6 * time.Second)}); j.State != fsm.JobPaused || !j.StartedAt.Equal(at(3*time.Second)) {
		t.Errorf("repeated start while paused: state %s started %v, want paused, %v", j.State, j.StartedAt, at(3*time.Second))
	}
	if j := n.job(&fsm.ResumeJob{JobID: "j1", At: at(7 * time.Second)}); j.State != fsm.JobRunning {
		t.Fatalf("resumed job: state %s", j.State)
	}
	n.job(&fsm.PauseJob{JobID: "j1", At: at(8 * time.Second)})
	if j := n.job(&fsm.FinishJob{Report: r, At: at(9 * time.Second)}); j.State != fsm.JobSucceeded {
		t.Errorf("finished while paused: state %s, want succeeded", j.State)
	}
}

// TestWorkerReRegistration: a new incarnation means the old process and
// its attempts are gone.
func TestWorkerReRegistration(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	w := n.worker(fsm.Worker{ID: "w1", Slots: 4, Encoders: x264, Incarnation: "i1"})
	n.worker(fsm.Worker{ID: "w2", Slots: 1, Encoders: x264, Incarnation: "i1"})
	n.submit("run", "t1", spec("720p30-h264"), at(0))
	n.submit("asg", "t1", spec("720p30-h264"), at(time.Second))
	last := spec("720p30-h264")
	last.MaxRetries = intp(0)
	n.submit("last", "t1", last, at(2*time.Second))
	n.submit("other", "t1", spec("720p30-h264"), at(3*time.Second))
	oldRun := report(t, n.run("run", "w1", at(4*time.Second)))
	n.job(&fsm.AssignJob{JobID: "asg", WorkerID: "w1", Attempt: 1, At: at(4 * time.Second)})
	n.run("last", "w1", at(4*time.Second))
	n.run("other", "w2", at(4*time.Second))

	// The same incarnation again (a heartbeat-style refresh) changes no job.
	before := n.allJobsJSON()
	w2 := n.worker(fsm.Worker{ID: "w1", Slots: 4, Encoders: x264, Incarnation: "i1"})
	if after := n.allJobsJSON(); after != before {
		t.Fatalf("re-registering the same incarnation changed jobs")
	}
	if w2.CreateIndex != w.CreateIndex || w2.ModifyIndex <= w.ModifyIndex {
		t.Errorf("re-registered worker meta %+v, want create %d and a newer modify index than %d", w2.Meta, w.CreateIndex, w.ModifyIndex)
	}

	restart := at(time.Minute)
	resp := n.applyOK(&fsm.RegisterWorker{Worker: fsm.Worker{ID: "w1", Name: "w1", Slots: 4, Encoders: x264, Incarnation: "i2"}, At: restart})
	if rw, ok := resp.(*fsm.Worker); !ok || rw.Incarnation != "i2" || rw.State != fsm.WorkerUp {
		t.Fatalf("re-registration response = %+v", resp)
	}
	for _, id := range []string{"run", "asg"} {
		j := n.get(id)
		if j.State != fsm.JobQueued || j.Retries != 1 || j.WorkerID != "" || j.Error == nil || j.Error.Code != fsm.CodeWorkerLost ||
			!j.QueuedAt.Equal(restart) || !j.NotBefore.Equal(restart.Add(fsm.Backoff(1))) {
			t.Errorf("job %s after its worker restarted: state %s retries %d worker %q error %+v queued %v not_before %v; want queued, 1, none, %s, %v, %v",
				id, j.State, j.Retries, j.WorkerID, j.Error, j.QueuedAt, j.NotBefore, fsm.CodeWorkerLost, restart, restart.Add(fsm.Backoff(1)))
		}
		if _, ok := n.f.ActiveJob(id); !ok {
			t.Errorf("job %s is not in memory", id)
		}
	}
	j := n.get("last")
	if j.State != fsm.JobFailed || j.Error == nil || j.Error.Code != fsm.CodeWorkerLost || !j.FinishedAt.Equal(restart) {
		t.Errorf("job without retries left: state %s error %+v finished %v, want failed with %s at %v", j.State, j.Error, j.FinishedAt, fsm.CodeWorkerLost, restart)
	}
	if _, ok := n.f.ActiveJob("last"); ok {
		t.Error("failed job is still in memory")
	}
	if got := n.get("other"); got.State != fsm.JobRunning || got.WorkerID != "w2" {
		t.Errorf("job on another worker: state %s worker %q, want running on w2", got.State, got.WorkerID)
	}
	if got := n.f.WorkerLoad("w1"); got != 0 {
		t.Errorf("WorkerLoad(w1) = %d, want 0", got)
	}
	// The lost process's late reports are stale.
	n.refused(&fsm.FinishJob{Report: oldRun, At: restart.Add(time.Second), Result: &fsm.Result{}}, fsm.CodeStaleAttempt)
	// The new process gets the jobs back as new attempts after the backoff.
	d := n.schedule(restart.Add(fsm.Backoff(1)))
	var got []string
	for _, a := range d.Assign {
		got = append(got, fmt.Sprintf("%s→%s#%d", a.JobID, a.WorkerID, a.Attempt))
	}
	if want := []string{"run→w1#2", "asg→w1#2"}; !slices.Equal(got, want) {
		t.Errorf("assignments after the restart = %v, want %v", got, want)
	}
}

func TestApplyTenantsKeysAndSubmit(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.refused(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "t1", Name: "t1", Plan: "again"}}, fsm.CodeAlreadyExists)
	if tn, ok := n.f.Tenant("t1"); !ok || tn.Plan != "" {
		t.Errorf("Tenant(t1) = %+v, %v; want the first version", tn, ok)
	}
	key := fsm.APIKey{ID: "k1", TenantID: "t1", User: "ann", Role: fsm.RoleOperator, Hash: []byte{1, 2, 3}, CreatedAt: t0}
	n.refused(&fsm.CreateAPIKey{Key: fsm.APIKey{ID: "k0", TenantID: "nope", Role: fsm.RoleViewer}}, fsm.CodeNotFound)
	k := n.applyOK(&fsm.CreateAPIKey{Key: key}).(*fsm.APIKey)
	if k.Revoked || k.CreateIndex != n.last || k.ModifyIndex != n.last {
		t.Errorf("created key = %+v", k)
	}
	n.refused(&fsm.CreateAPIKey{Key: key}, fsm.CodeAlreadyExists)
	k = n.applyOK(&fsm.RevokeAPIKey{ID: "k1", At: at(time.Second)}).(*fsm.APIKey)
	if !k.Revoked || k.ModifyIndex != n.last || k.CreateIndex == n.last {
		t.Errorf("revoked key = %+v", k)
	}
	k2 := n.applyOK(&fsm.RevokeAPIKey{ID: "k1", At: at(2 * time.Second)}).(*fsm.APIKey)
	if !k2.Revoked || k2.ModifyIndex != k.ModifyIndex {
		t.Errorf("revoking twice: key %+v, want it unchanged", k2)
	}
	n.refused(&fsm.RevokeAPIKey{ID: "nope"}, fsm.CodeNotFound)
	if got := n.f.KeyCount(); got != 1 {
		t.Errorf("KeyCount() = %d, want 1", got)
	}

	n.refused(&fsm.SubmitJob{Job: newJob(t, "j1", "nope", spec("720p30-h264"), at(0))}, fsm.CodeNotFound)
	j := n.submit("j1", "t1", spec("720p30-h264"), at(0))
	if j.State != fsm.JobQueued || !j.QueuedAt.Equal(at(0)) || j.CreateIndex != n.last || j.Attempt != 0 {
		t.Errorf("submitted job = %+v", j)
	}
	n.refused(&fsm.SubmitJob{Job: newJob(t, "j1", "t1", spec("1080p30-h264"), at(time.Second))}, fsm.CodeAlreadyExists)
}

// TestSubmitSameSubmissionTwice: a SubmitJob applied again (a follower
// resends it to a new leader when the first try's outcome was lost)
// answers with the job the first created and changes nothing; the same ID
// with another spec or tenant is another submission: already_exists.
func TestSubmitSameSubmissionTwice(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.tenant("t2")
	first := n.submit("j1", "t1", spec("720p30-h264"), at(0))
	again := n.applyOK(&fsm.SubmitJob{Job: newJob(t, "j1", "t1", spec("720p30-h264"), at(time.Second))}).(*fsm.Job)
	if again.CreateIndex != first.CreateIndex || again.ModifyIndex != first.ModifyIndex || !again.SubmittedAt.Equal(first.SubmittedAt) {
		t.Errorf("second apply = %+v, want the first job %+v unchanged", again, first)
	}
	if byState, _ := n.f.Counts(); byState[fsm.JobQueued] != 1 {
		t.Errorf("queued jobs = %d, want 1", byState[fsm.JobQueued])
	}
	n.refused(&fsm.SubmitJob{Job: newJob(t, "j1", "t1", spec("1080p30-h264"), at(time.Second))}, fsm.CodeAlreadyExists)
	n.refused(&fsm.SubmitJob{Job: newJob(t, "j1", "t2", spec("720p30-h264"), at(time.Second))}, fsm.CodeAlreadyExists)
}

// TestSubmitJobReusingFinishedID: terminal states never change, so a job ID
// that already finished must not be queued again.
func TestSubmitJobReusingFinishedID(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.submit("j1", "t1", spec("720p30-h264"), at(0))
	n.job(&fsm.CancelJob{JobID: "j1", At: at(time.Second)})
	n.refused(&fsm.SubmitJob{Job: newJob(t, "j1", "t1", spec("720p30-h264"), at(2*time.Second))}, fsm.CodeAlreadyExists)
}

// TestApplyIsOrderIndependent: Apply must not depend on map order. A
// worker's reserved CPU is a sum over a map of its jobs; summed as floats
// in a different order it differs in the last bit, and whether a job fits
// could then differ between nodes applying the same log.
func TestApplyIsOrderIndependent(t *testing.T) {
	t.Parallel()
	// Three jobs of 0.1, 0.8 and 0.9 CPU on a 2-CPU worker; a fourth of
	// 0.2 fits exactly, or not, depending on the order of the sum.
	var cmds []fsm.Command
	cmds = append(cmds, &fsm.CreateTenant{Tenant: fsm.Tenant{ID: "t1"}},
		&fsm.RegisterWorker{Worker: fsm.Worker{ID: "w1", Slots: 8, CPUs: 2, Encoders: x264, Incarnation: "i1"}, At: t0})
	for i, cpu := range []float64{0.1, 0.8, 0.9, 0.2} {
		s := spec("720p30-h264")
		s.Resources.CPU = cpu
		id := fmt.Sprintf("j%d", i)
		cmds = append(cmds, &fsm.SubmitJob{Job: newJob(t, id, "t1", s, at(0))},
			&fsm.AssignJob{JobID: id, WorkerID: "w1", Attempt: 1, At: at(0)})
	}
	resps := map[string]int{}
	for range 100 {
		r := newNode(t).apply(cmds...)
		last := r[len(r)-1]
		resps[fmt.Sprintf("%T %v", last, fsm.ErrorCode(asError(last)))]++
	}
	if len(resps) != 1 {
		t.Errorf("the same log applied 100 times gave different responses to the last AssignJob: %v", resps)
	}
}

func asError(v any) error {
	err, _ := v.(error)
	return err
}

// TestScheduleBackoffDoesNotExpire: a job waiting out its retry backoff
// cannot be taken by any worker, so its acquire timeout should run from
// the end of the backoff, not fail it while an idle worker waits for it.
func TestScheduleBackoffDoesNotExpire(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 1, Encoders: x264})
	s := spec("720p30-h264")
	s.AcquireTimeout = fsm.Duration(time.Second)
	n.submit("j1", "t1", s, at(0))
	j := n.run("j1", "w1", at(0))
	j = n.job(&fsm.FinishJob{Report: report(t, j), At: at(10 * time.Second), Error: &fsm.Error{Code: fsm.CodeFFmpeg}, Retryable: true})
	d := n.schedule(j.NotBefore)
	if len(d.Expire) != 0 || len(d.Assign) != 1 {
		t.Errorf("when the backoff ends with the worker idle: expire %+v assign %+v, want the job assigned", d.Expire, d.Assign)
	}
}

// TestStaleReportNamesNoOtherWorker: a report on a job the worker does
// not hold is refused alike whether the job exists or not, and the
// refusal names neither the holder nor the job's state, so that a worker
// cannot probe another tenant's jobs.
func TestStaleReportNamesNoOtherWorker(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 1, Encoders: x264})
	n.worker(fsm.Worker{ID: "w2", Slots: 1, Encoders: x264})
	n.submit("j1", "t1", spec("720p30-h264"), at(0))
	n.run("j1", "w1", at(time.Second))
	message := func(id string) string {
		t.Helper()
		r := n.apply(&fsm.FinishJob{Report: fsm.Report{JobID: id, WorkerID: "w2", Attempt: 1}, At: at(2 * time.Second), Result: &fsm.Result{}})[0]
		err, ok := r.(error)
		if !ok || fsm.ErrorCode(err) != fsm.CodeStaleAttempt {
			t.Fatalf("finish of %s by w2: %v, want stale_attempt", id, r)
		}
		return strings.ReplaceAll(err.Error(), id, "ID")
	}
	held, unknown := message("j1"), message("j-none")
	if held != unknown {
		t.Errorf("refusals differ for a job w1 holds (%q) and no job (%q)", held, unknown)
	}
	if strings.Contains(held, "w1") || strings.Contains(held, "running") {
		t.Errorf("refusal %q names the holder or the job's state", held)
	}
}

// TestApplyExitJob: an attempt whose ffmpeg exited (ExitJob) stays running
// until its finish but no longer takes its worker's slot, so the scheduler
// and Apply's capacity check let the next job in; reports about other
// attempts or states are refused, an exited job cannot be paused, and a
// requeue clears the mark.
func TestApplyExitJob(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 1, Encoders: x264})
	n.submit("j1", "t1", spec("720p30-h264"), at(0))
	n.submit("j2", "t1", spec("720p30-h264"), at(time.Second))
	n.submit("j3", "t1", spec("720p30-h264"), at(2*time.Second))
	now := at(time.Minute)

	n.job(&fsm.AssignJob{JobID: "j1", WorkerID: "w1", Attempt: 1, At: now})
	rep := fsm.Report{JobID: "j1", WorkerID: "w1", Attempt: 1}
	n.refused(&fsm.ExitJob{Report: rep, At: now}, fsm.CodeInvalidTransition) // assigned, not started
	n.job(&fsm.StartJob{Report: rep, At: now})
	if d := n.schedule(now); len(d.Assign) != 0 {
		t.Fatalf("scheduler assigned %+v to a full worker", d.Assign)
	}
	n.refused(&fsm.ExitJob{Report: fsm.Report{JobID: "j1", WorkerID: "w1", Attempt: 2}, At: now}, fsm.CodeStaleAttempt)
	n.refused(&fsm.ExitJob{Report: fsm.Report{JobID: "j1", WorkerID: "w2", Attempt: 1}, At: now}, fsm.CodeStaleAttempt)

	exitAt := now.Add(2 * time.Second)
	j := n.job(&fsm.ExitJob{Report: rep, At: exitAt})
	if j.State != fsm.JobRunning || !j.ExitedAt.Equal(exitAt) {
		t.Fatalf("exited job = state %s, exited_at %v; want running, %v", j.State, j.ExitedAt, exitAt)
	}
	if again := n.job(&fsm.ExitJob{Report: rep, At: exitAt.Add(time.Second)}); !again.ExitedAt.Equal(exitAt) {
		t.Errorf("a repeated exit report moved exited_at to %v", again.ExitedAt)
	}
	n.refused(&fsm.PauseJob{JobID: "j1", At: exitAt}, fsm.CodeInvalidTransition)

	d := n.schedule(exitAt)
	if len(d.Assign) != 1 || d.Assign[0].JobID != "j2" || d.Assign[0].WorkerID != "w1" {
		t.Fatalf("after the exit the scheduler assigned %+v, want j2 to w1", d.Assign)
	}
	n.job(&fsm.AssignJob{JobID: "j2", WorkerID: "w1", Attempt: 1, At: exitAt})
	// j2 holds the slot now: j3 waits.
	n.refused(&fsm.AssignJob{JobID: "j3", WorkerID: "w1", Attempt: 1, At: exitAt}, fsm.CodeInvalidTransition)
	if got := n.f.WorkerLoad("w1"); got != 2 {
		t.Errorf("WorkerLoad(w1) = %d, want 2 (the exited job until its finish, and j2)", got)
	}

	done := n.job(&fsm.FinishJob{Report: rep, At: exitAt.Add(time.Second),
		Result: &fsm.Result{Outputs: []fsm.OutputResult{{URL: "file:///out.mp4"}}}})
	if done.State != fsm.JobSucceeded || !done.ExitedAt.Equal(exitAt) {
		t.Errorf("finished job = state %s, exited_at %v", done.State, done.ExitedAt)
	}

	// A requeued attempt starts over without the mark.
	rep2 := fsm.Report{JobID: "j2", WorkerID: "w1", Attempt: 1}
	n.job(&fsm.StartJob{Report: rep2, At: exitAt})
	n.job(&fsm.ExitJob{Report: rep2, At: exitAt})
	j2 := n.job(&fsm.RequeueJob{Report: rep2, Reason: fsm.Error{Code: fsm.CodeWorkerLost, Message: "gone"}, At: exitAt})
	if j2.State != fsm.JobQueued || !j2.ExitedAt.IsZero() {
		t.Errorf("requeued job = state %s, exited_at %v; want queued without exited_at", j2.State, j2.ExitedAt)
	}
}
