package worker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// simControl is a fake node for Sim: it hands out the assignment lists
// the test pushes, one per long poll, and records the reports.
type simControl struct {
	lists chan []*fsm.Job
	index uint64

	mu       sync.Mutex
	starts   []fsm.Report
	finishes []*fsm.FinishJob
	progress int
	changed  chan struct{} // a report arrived
}

func newSimControl() *simControl {
	return &simControl{lists: make(chan []*fsm.Job), changed: make(chan struct{}, 100)}
}

func (c *simControl) Register(_ context.Context, w *fsm.Worker) (*fsm.Worker, error) { return w, nil }

func (c *simControl) Assignments(ctx context.Context, _ string, _ uint64) ([]*fsm.Job, uint64, error) {
	select {
	case l := <-c.lists:
		c.index++
		return l, c.index, nil
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
}

func (c *simControl) note(fn func()) error {
	c.mu.Lock()
	fn()
	c.mu.Unlock()
	c.changed <- struct{}{}
	return nil
}

func (c *simControl) Start(_ context.Context, r fsm.Report) error {
	return c.note(func() { c.starts = append(c.starts, r) })
}

func (c *simControl) Exit(context.Context, fsm.Report) error { return nil }

func (c *simControl) Progress(context.Context, fsm.Report, fsm.Progress) error {
	return c.note(func() { c.progress++ })
}

func (c *simControl) Finish(_ context.Context, f *fsm.FinishJob) error {
	return c.note(func() { c.finishes = append(c.finishes, f) })
}

func (c *simControl) Heartbeat(context.Context, string) (time.Duration, error) {
	return 15 * time.Second, nil
}

// wait waits until cond holds on the recorded reports.
func (c *simControl) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-c.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func simJob(attempt int, state fsm.JobState) *fsm.Job {
	return &fsm.Job{ID: "j1", Attempt: attempt, State: state, Plan: fsm.Plan{
		Input:   fsm.PlanInput{Kind: fsm.KindTestsrc, DurationSec: 0.05},
		Outputs: []fsm.Rendition{{URL: "file:///out.mp4", Video: fsm.VideoParams{Codec: "h264", Width: 426, Height: 240, FPS: 30}}},
	}}
}

// TestSimRunsAssignedJob: an assigned job is started, runs for its
// testsrc duration and finishes with a result for each planned output,
// each report carrying the attempt.
func TestSimRunsAssignedJob(t *testing.T) {
	t.Parallel()
	c := newSimControl()
	stats := &SimStats{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewSim(SimConfig{ID: "sim-1", Slots: 1, Control: c, Stats: stats}).Run(ctx) }()
	c.lists <- []*fsm.Job{simJob(1, fsm.JobAssigned)}
	c.wait(t, "a finish report", func() bool { return len(c.finishes) == 1 })
	f := c.finishes[0]
	if len(c.starts) != 1 || c.starts[0].Attempt != 1 || f.Attempt != 1 || f.WorkerID != "sim-1" || f.Error != nil {
		t.Errorf("starts %+v, finish %+v; want attempt 1 started and finished by sim-1 without error", c.starts, f)
	}
	if f.Result == nil || len(f.Result.Outputs) != 1 || f.Result.Outputs[0].URL != "file:///out.mp4" || f.Result.Outputs[0].Height != 240 {
		t.Errorf("result %+v, want the planned output", f.Result)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	// Run waits for its attempts, so the counters are final only now:
	// the finish report is recorded before the attempt counts it.
	if stats.Registered.Load() != 1 || stats.Succeeded.Load() != 1 || stats.Running.Load() != 0 {
		t.Errorf("stats registered %d succeeded %d running %d, want 1, 1, 0", stats.Registered.Load(), stats.Succeeded.Load(), stats.Running.Load())
	}
}

// TestSimFollowsReassignment: an attempt that is no longer assigned
// stops without a finish report, the new attempt runs, and an attempt
// the cluster thinks runs here but does not is reported lost.
func TestSimFollowsReassignment(t *testing.T) {
	t.Parallel()
	c := newSimControl()
	stats := &SimStats{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go NewSim(SimConfig{ID: "sim-1", Slots: 1, Control: c, Stats: stats, JobDuration: time.Hour}).Run(ctx)
	c.lists <- []*fsm.Job{simJob(1, fsm.JobAssigned)}
	c.wait(t, "attempt 1 started", func() bool { return len(c.starts) == 1 })
	c.lists <- []*fsm.Job{simJob(2, fsm.JobAssigned)}
	c.wait(t, "attempt 2 started", func() bool { return len(c.starts) == 2 })
	if c.starts[1].Attempt != 2 {
		t.Errorf("second start %+v, want attempt 2", c.starts[1])
	}
	c.lists <- []*fsm.Job{simJob(3, fsm.JobRunning)}
	c.wait(t, "attempt 3 reported lost", func() bool { return len(c.finishes) == 1 })
	f := c.finishes[0]
	if f.Attempt != 3 || f.Error == nil || f.Error.Code != fsm.CodeWorkerLost || !f.Retryable {
		t.Errorf("finish %+v, want attempt 3 lost and retryable (attempts 1 and 2 stopped without a report)", f)
	}
}
