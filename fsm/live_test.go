package fsm_test

import (
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestLiveJobMovesOnWorkerLoss: a live job whose worker is lost goes back
// to the queue at once and costs no retry, however often it happens; a
// default-queue job in the same situation runs out of retries.
func TestLiveJobMovesOnWorkerLoss(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	live := spec("720p30-h264")
	live.Queue = fsm.QueueLive
	live.MaxRetries = intp(1)
	batch := spec("720p30-h264")
	batch.MaxRetries = intp(1)
	n.submit("live", "t1", live, at(0))
	n.submit("batch", "t1", batch, at(0))
	for round := range 3 {
		w := fsm.Worker{ID: "w", Slots: 2, Encoders: []string{"libx264"}, Incarnation: string(rune('a' + round))}
		n.worker(w)
		now := at(time.Duration(round+1) * time.Hour)
		if j := n.get("live"); j.State == fsm.JobQueued {
			n.run("live", "w", now)
		}
		if j := n.get("batch"); j.State == fsm.JobQueued {
			n.run("batch", "w", now)
		}
		n.applyOK(&fsm.MarkWorkerDown{WorkerID: "w", Reason: "test", At: now.Add(time.Minute)})
		j := n.get("live")
		if j.State != fsm.JobQueued || j.Retries != 0 || !j.NotBefore.IsZero() || j.Attempt != round+1 {
			t.Fatalf("round %d: live job %s retries %d attempt %d not_before %v", round, j.State, j.Retries, j.Attempt, j.NotBefore)
		}
	}
	if j := n.get("batch"); j.State != fsm.JobFailed || j.Error.Code != fsm.CodeWorkerLost {
		t.Fatalf("batch job after repeated worker loss: %s %+v", j.State, j.Error)
	}
}
