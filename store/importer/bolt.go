package importer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
)

// readBolt reads a stopped node's state file, opened read-only: a file
// that is not a state file is refused, not initialized. Every object loses its Raft
// indexes (the new cluster's log starts again at 1). Workers are imported
// down: they join the new cluster by registering again. Jobs that were
// assigned, running or paused go back to the queue on no worker, as the
// FSM requeues the jobs of a lost worker, keeping their attempt count as
// the fencing token; their retry budget is not charged.
func readBolt(ctx context.Context, path string, now time.Time) (*source, error) {
	bs, err := bolt.OpenReadOnly(path)
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("%w (is a node still running on it? stop it first)", err)
	}
	if err != nil {
		return nil, err
	}
	defer bs.Close()
	st, err := bs.Load(ctx)
	if err != nil {
		return nil, err
	}
	// Every object of every kind Load returns whole; jobs, of which it
	// returns only the active ones, are read page by page below.
	first := &fsm.Batch{}
	for _, k := range fsm.Kinds {
		if k.Partial() {
			continue
		}
		for _, o := range k.Loaded(st) {
			o.SetObjectMeta(fsm.Meta{})
			k.Add(first, o)
		}
	}
	for _, w := range first.Workers {
		w.State = fsm.WorkerDown
	}
	src := &source{requeued: map[string]int{}}
	var jobs []*fsm.Job
	p := &fsm.ListJobsParams{Limit: 1000}
	for {
		page, err := bs.ListJobs(ctx, p)
		if err != nil {
			return nil, err
		}
		for _, j := range page.Jobs {
			j.Meta = fsm.Meta{}
			switch j.State {
			case fsm.JobAssigned, fsm.JobRunning, fsm.JobPaused:
				src.requeued[string(j.State)]++
				requeue(j, now, fmt.Sprintf("requeued by ffrtmp migrate: the job was %s on worker %s when the node stopped", j.State, j.WorkerID))
			}
			jobs = append(jobs, j)
		}
		if page.Next == "" {
			break
		}
		p.After = page.Next
	}
	slices.Reverse(jobs) // oldest first, as they were created
	src.batches = chunk(first, jobs)
	src.desc = fmt.Sprintf("bolt state file %s at Raft index %d: %d tenants, %d users, %d API keys, %d invitations, %d workers, %d jobs",
		path, st.Index, len(first.Tenants), len(first.Users), len(first.Keys), len(first.Invitations), len(first.Workers), len(jobs))
	if n := len(src.requeued); n > 0 {
		src.notes = append(src.notes, fmt.Sprintf("active jobs put back in the queue: %v", src.requeued))
	}
	src.notes = append(src.notes, "workers are imported down; each joins the new cluster when it registers again")
	return src, nil
}

// requeue puts an active job back in the queue on no worker, as the FSM
// does when a worker is lost.
func requeue(j *fsm.Job, now time.Time, why string) {
	j.State = fsm.JobQueued
	j.WorkerID = ""
	j.QueuedAt = now
	j.NotBefore = time.Time{}
	j.Progress = nil
	j.Error = &fsm.Error{Code: fsm.CodeWorkerLost, Message: why}
}
