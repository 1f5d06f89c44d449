package cluster_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestRetentionPurgesOnEveryNode: the leader's retention loop purges the
// finished jobs past their tenant's retention, in bounded batches, and
// they disappear on every node; newer finished jobs, active ones and
// those of tenants that keep theirs longer (or forever) stay. The loop's
// clock is the test's; Apply judges with the entry's time.
func TestRetentionPurgesOnEveryNode(t *testing.T) {
	t.Parallel()
	var clock atomic.Pointer[time.Time]
	clock.Store(new(time.Unix(0, 0))) // nothing is old yet
	wake := make(chan struct{})
	nodes := startThree(t, clustertest.Options{LeaderLoop: func(f *fsm.FSM) func(context.Context, *cluster.Node) {
		r := &cluster.Retention{FSM: f, Logger: clustertest.Logger(t), Default: time.Nanosecond, BatchSize: 2,
			Interval: time.Hour, Pause: time.Millisecond, Now: func() time.Time { return *clock.Load() }, Wake: wake}
		return r.Run
	}})
	l := nodes[0]
	for _, id := range []string{"acme", "forever", "long"} {
		l.Apply(createTenant(id))
	}
	l.Apply(&fsm.UpdateTenant{ID: "forever", Retention: new(fsm.Duration(0)), At: t0})
	l.Apply(&fsm.UpdateTenant{ID: "long", Retention: new(fsm.Duration(24 * time.Hour)), At: t0})
	l.Apply(&fsm.RegisterWorker{Worker: fsm.Worker{ID: "w", Slots: 100, Encoders: []string{"libx264"}, Incarnation: "1"}})
	finish := func(tenant string) string {
		t.Helper()
		j := newJob(t, tenant, "720p30-h264", 0)
		l.Apply(&fsm.SubmitJob{Job: j})
		r := fsm.Report{JobID: j.ID, WorkerID: "w", Attempt: 1}
		l.Apply(&fsm.AssignJob{JobID: j.ID, WorkerID: "w", Attempt: 1, At: t0})
		l.Apply(&fsm.StartJob{Report: r, At: t0})
		l.Apply(&fsm.FinishJob{Report: r, At: t0})
		return j.ID
	}
	var old []string
	for range 5 { // three batches of at most two
		old = append(old, finish("acme"))
	}
	canceled := newJob(t, "acme", "720p30-h264", 0)
	l.Apply(&fsm.SubmitJob{Job: canceled})
	l.Apply(&fsm.CancelJob{JobID: canceled.ID, At: t0})
	old = append(old, canceled.ID)
	kept := []string{finish("forever"), finish("long")}

	// Everything above finished before cutoff; what follows after it.
	cutoff := time.Now().UTC()
	kept = append(kept, finish("acme"))
	active := newJob(t, "acme", "720p30-h264", 0)
	l.Apply(&fsm.SubmitJob{Job: active})
	kept = append(kept, active.ID)

	clock.Store(&cutoff)
	wake <- struct{}{}
	ctx := context.Background()
	for _, n := range nodes {
		clustertest.WaitFor(t, n.FSM, 20*time.Second, n.ID+" to purge the old jobs", func() bool {
			for _, id := range old {
				if _, err := n.FSM.GetJob(ctx, id); !errors.Is(err, fsm.ErrNotFound) {
					return false
				}
			}
			return true
		})
		for _, id := range kept {
			if _, err := n.FSM.GetJob(ctx, id); err != nil {
				t.Errorf("%s: GetJob(%s), which is not past its retention: %v", n.ID, id, err)
			}
		}
		n.FSM.Flush() // the store has what memory has
		ids, err := n.FSM.Store().FinishedJobs(ctx, &fsm.FinishedJobsParams{TenantID: "acme", Before: time.Now().Add(time.Hour), Limit: 10})
		if err != nil || len(ids) != 1 || ids[0] != kept[2] {
			t.Errorf("%s: acme's finished jobs = %v, %v; want only the newer one", n.ID, ids, err)
		}
	}
	// A purged ID is not reused, whichever node is asked.
	_, err := nodes[2].Node.Apply(ctx, &fsm.SubmitJob{Job: fsm.Job{ID: old[0], TenantID: "acme", Spec: canceled.Spec, Plan: canceled.Plan}})
	wantCode(t, "submit of a purged job's ID", err, fsm.CodeAlreadyExists)
}
