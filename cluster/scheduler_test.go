package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// newJob compiles a job for tenant as the API would: a new UUIDv7, a
// testsrc input and a file output, submitted now. acquire 0 keeps the
// default acquire timeout.
func newJob(t testing.TB, tenant, scenario string, acquire time.Duration) fsm.Job {
	t.Helper()
	id := uuid.Must(uuid.NewV7()).String()
	spec := fsm.JobSpec{
		Name:           "test " + scenario,
		Scenario:       scenario,
		Input:          fsm.Input{URL: "testsrc://?duration=1&size=320x180&rate=30"},
		Outputs:        []fsm.Output{{URL: "file:///out/" + id + ".mp4"}},
		AcquireTimeout: fsm.Duration(acquire),
	}
	plan, err := spec.Compile(fsm.Policy{})
	if err != nil {
		t.Fatalf("compile %s: %v", scenario, err)
	}
	return fsm.Job{ID: id, TenantID: tenant, Spec: spec, Plan: *plan, SubmittedAt: time.Now().UTC()}
}

func registerWorker(n *clustertest.Node, id, tenant string, encoders ...string) *fsm.Worker {
	return n.Apply(&fsm.RegisterWorker{
		Worker: fsm.Worker{ID: id, TenantID: tenant, Name: id, Incarnation: "inc-1", Slots: 1, CPUs: 4, MemoryMB: 4096, Encoders: encoders},
		At:     time.Now().UTC(),
	}).(*fsm.Worker)
}

// job returns a job as the FSM sees it now, active or finished.
func job(t *testing.T, f *fsm.FSM, id string) *fsm.Job {
	t.Helper()
	j, err := f.GetJob(context.Background(), id)
	if err != nil {
		t.Fatalf("GetJob(%s): %v", id, err)
	}
	return j
}

func TestSchedulerAssignsToCapableWorker(t *testing.T) {
	t.Parallel()
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true, Scheduler: true})
	n.Apply(createTenant("acme"))
	w := registerWorker(n, "w1", "", "libx264")
	first := n.Apply(&fsm.SubmitJob{Job: newJob(t, "acme", "720p30-h264", 0)}).(*fsm.Job)
	second := n.Apply(&fsm.SubmitJob{Job: newJob(t, "acme", "720p30-h264", 0)}).(*fsm.Job)

	// The worker has one slot: the first job (submitted first) gets it and
	// the second waits.
	clustertest.WaitFor(t, n.FSM, 10*time.Second, "the first job to be assigned", func() bool {
		if load := n.FSM.WorkerLoad(w.ID); load > 1 {
			t.Fatalf("worker %s holds %d jobs with 1 slot", w.ID, load)
		}
		return job(t, n.FSM, first.ID).State == fsm.JobAssigned
	})
	got := job(t, n.FSM, first.ID)
	if got.WorkerID != w.ID || got.Attempt != 1 || got.AssignedAt.IsZero() {
		t.Errorf("assigned job: worker %q attempt %d assigned at %v; want w1, attempt 1, a time", got.WorkerID, got.Attempt, got.AssignedAt)
	}
	if s := job(t, n.FSM, second.ID).State; s != fsm.JobQueued {
		t.Errorf("second job is %s while the only slot is taken, want queued", s)
	}

	// The worker runs and finishes the first job; its slot goes to the
	// second.
	r := fsm.Report{JobID: first.ID, WorkerID: w.ID, Attempt: 1}
	n.Apply(&fsm.StartJob{Report: r, At: time.Now().UTC()})
	n.Apply(&fsm.FinishJob{Report: r, At: time.Now().UTC(), Result: &fsm.Result{}})
	clustertest.WaitFor(t, n.FSM, 10*time.Second, "the second job to be assigned", func() bool {
		if load := n.FSM.WorkerLoad(w.ID); load > 1 {
			t.Fatalf("worker %s holds %d jobs with 1 slot", w.ID, load)
		}
		return job(t, n.FSM, second.ID).State == fsm.JobAssigned
	})
	if got := job(t, n.FSM, second.ID); got.WorkerID != w.ID || got.Attempt != 1 {
		t.Errorf("second job: worker %q attempt %d; want w1, attempt 1", got.WorkerID, got.Attempt)
	}
	if s := job(t, n.FSM, first.ID).State; s != fsm.JobSucceeded {
		t.Errorf("first job is %s, want succeeded", s)
	}
}

func TestSchedulerExpiresUnplaceableJobs(t *testing.T) {
	t.Parallel()
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true, Scheduler: true})
	n.Apply(createTenant("acme"))
	n.Apply(createTenant("busy"))
	// busy's dedicated H.264 worker, and a shared worker without H.264.
	registerWorker(n, "w-busy", "busy", "libx264")
	registerWorker(n, "w-shared", "", "libx265")

	// busy's worker is taken by a long-waiting job...
	holder := n.Apply(&fsm.SubmitJob{Job: newJob(t, "busy", "720p30-h264", 0)}).(*fsm.Job)
	clustertest.WaitFor(t, n.FSM, 10*time.Second, "busy's first job to be assigned", func() bool {
		return job(t, n.FSM, holder.ID).State == fsm.JobAssigned
	})
	// ...so busy's next job can run somewhere but not in time, and acme's
	// job can run nowhere: w-busy is not acme's, w-shared has no H.264.
	waiting := n.Apply(&fsm.SubmitJob{Job: newJob(t, "busy", "720p30-h264", time.Second)}).(*fsm.Job)
	orphan := n.Apply(&fsm.SubmitJob{Job: newJob(t, "acme", "720p30-h264", time.Second)}).(*fsm.Job)

	clustertest.WaitFor(t, n.FSM, 10*time.Second, "both 1s jobs to expire", func() bool {
		return job(t, n.FSM, waiting.ID).State.Terminal() && job(t, n.FSM, orphan.ID).State.Terminal()
	})
	for _, c := range []struct {
		j    *fsm.Job
		code fsm.Code
	}{{waiting, fsm.CodeAcquireTimeout}, {orphan, fsm.CodeNoCapableWorker}} {
		got := job(t, n.FSM, c.j.ID)
		if got.State != fsm.JobFailed || got.Error == nil || got.Error.Code != c.code {
			t.Errorf("job of %s: state %s error %+v; want failed with %s", got.TenantID, got.State, got.Error, c.code)
		}
		if waited := got.FinishedAt.Sub(got.QueuedAt); waited < time.Second {
			t.Errorf("job of %s expired after %v, before its 1s acquire timeout", got.TenantID, waited)
		}
	}
	if got := job(t, n.FSM, holder.ID); got.State != fsm.JobAssigned {
		t.Errorf("the assigned job is %s, want still assigned (acquire timeouts apply only to queued jobs)", got.State)
	}
}
