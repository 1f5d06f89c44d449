package fsm_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestWatchWorker: a worker's watch wakes when its list changes as it
// acts on it (a job assigned, paused, canceled, or requeued after a
// retryable failure), and not for another worker's jobs, a queued job, or
// what it reported itself (its job's start, progress, exit, success or
// final failure); a node loaded from the store counts every worker as
// changed at the loaded index.
func TestWatchWorker(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 2, Encoders: x264})
	n.worker(fsm.Worker{ID: "w2", Slots: 2, Encoders: x264})
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	// expect applies c and checks whether w1's watch woke, and that its
	// index then names c's entry.
	expect := func(c fsm.Command, wake bool) {
		t.Helper()
		before, ch := n.f.WatchWorker("w1")
		n.applyOK(c)
		if closed(ch) != wake {
			t.Fatalf("%T: w1's watch woke = %v, want %v", c, closed(ch), wake)
		}
		after, _ := n.f.WatchWorker("w1")
		if wake && after != n.last || !wake && after != before {
			t.Fatalf("%T: w1's index %d -> %d (entry %d), wake %v", c, before, after, n.last, wake)
		}
	}
	now := at(time.Minute)
	expect(&fsm.SubmitJob{Job: newJob(t, "j1", "t1", spec("720p30-h264"), at(0))}, false)
	n.submit("j2", "t1", spec("720p30-h264"), at(0))
	expect(&fsm.AssignJob{JobID: "j2", WorkerID: "w2", Attempt: 1, At: now}, false)
	expect(&fsm.AssignJob{JobID: "j1", WorkerID: "w1", Attempt: 1, At: now}, true)
	r := fsm.Report{JobID: "j1", WorkerID: "w1", Attempt: 1}
	expect(&fsm.StartJob{Report: r, At: now}, false)
	expect(&fsm.ProgressJob{Report: r, Progress: fsm.Progress{Percent: 10}}, false)
	expect(&fsm.PauseJob{JobID: "j1", At: now}, true)
	expect(&fsm.ResumeJob{JobID: "j1", At: now}, true)
	expect(&fsm.ExitJob{Report: r, At: now}, false)
	expect(&fsm.CancelJob{JobID: "j2", At: now}, false)
	expect(&fsm.CancelJob{JobID: "j1", At: now}, true)

	// Finishes, each of an attempt the worker started: success and a
	// final failure are its own news; a retryable failure puts the job
	// back in the queue, which is the cluster's.
	for i, fin := range []struct {
		err       *fsm.Error
		retryable bool
		wake      bool
	}{{nil, false, false}, {&fsm.Error{Code: "ffmpeg_failed", Message: "exit 1"}, false, false}, {&fsm.Error{Code: "ffmpeg_failed", Message: "exit 1"}, true, true}} {
		id := fmt.Sprintf("f%d", i)
		n.submit(id, "t1", spec("720p30-h264"), at(0))
		expect(&fsm.AssignJob{JobID: id, WorkerID: "w1", Attempt: 1, At: now}, true)
		r := fsm.Report{JobID: id, WorkerID: "w1", Attempt: 1}
		expect(&fsm.StartJob{Report: r, At: now}, false)
		expect(&fsm.FinishJob{Report: r, At: now, Error: fin.err, Retryable: fin.retryable}, fin.wake)
	}

	// A fresh FSM on the same store knows no history: every worker's
	// index is the loaded one.
	f2 := newFSM(t, n.st)
	if got, _ := f2.WatchWorker("w2"); got != n.last {
		t.Errorf("after a load: w2's index %d, want the loaded index %d", got, n.last)
	}
}
