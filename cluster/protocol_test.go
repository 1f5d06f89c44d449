package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestExitJobNeedsEveryServersProtocol: on three real nodes, a worker's
// ExitJob (protocol 2) is applied everywhere while every server speaks
// protocol 2, and frees the slot; once one server reports protocol 1 (as
// a binary from before ExitJob would, which could not apply it), the
// leader refuses it before the log with unknown_command, from any node,
// and the job is unchanged; when that server speaks 2 again, it is
// accepted again.
func TestExitJobNeedsEveryServersProtocol(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	nodes := startThree(t, clustertest.Options{})
	n1 := nodes[0]
	n1.Apply(createTenant("acme"))
	n1.Apply(&fsm.RegisterWorker{Worker: fsm.Worker{ID: "w", Slots: 1, Encoders: []string{"libx264", "aac"}, Incarnation: "1"}, At: t0})
	run := func(id string) fsm.Report {
		t.Helper()
		n1.Apply(submitCmd(t, id))
		n1.Apply(&fsm.AssignJob{JobID: id, WorkerID: "w", Attempt: 1, At: t0})
		r := fsm.Report{JobID: id, WorkerID: "w", Attempt: 1}
		n1.Apply(&fsm.StartJob{Report: r, At: t0})
		return r
	}
	// exit sends the exit report through a follower, as a worker's node
	// would, until the leader has asked the servers (it does so when it
	// takes the lead and again when told to).
	exit := func(r fsm.Report) (*fsm.Job, error) {
		n1.Node.RecheckProtocolForTest()
		deadline := time.Now().Add(10 * time.Second)
		for {
			v, err := nodes[1].Node.Apply(ctx, &fsm.ExitJob{Report: r, At: t0.Add(time.Second)})
			if err == nil || fsm.ErrorCode(err) != fsm.CodeUnknownCommand || time.Now().After(deadline) {
				j, _ := v.(*fsm.Job)
				return j, err
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	r1 := run("j1")
	j, err := exit(r1)
	if err != nil || j.ExitedAt.IsZero() {
		t.Fatalf("exit report with every server at protocol 2: %v, job %+v", err, j)
	}
	exited := n1.FSM.Flush()
	for _, n := range nodes {
		if err := n.FSM.WaitIndex(ctx, exited); err != nil {
			t.Fatal(err)
		}
		if j, _ := n.FSM.ActiveJob("j1"); j == nil || j.ExitedAt.IsZero() {
			t.Errorf("node %s: j1 = %+v, want exited", n.ID, j)
		}
	}
	// The slot is free: the next job can be assigned to the one-slot worker.
	r2 := run("j2")

	nodes[2].Node.SpeakProtocolForTest(1)
	last := n1.Node.RaftForTest().LastIndex()
	n1.Node.RecheckProtocolForTest()
	var refused error
	deadline := time.Now().Add(10 * time.Second)
	for refused == nil && time.Now().Before(deadline) {
		// The recheck runs in the background; until it ends the level may
		// still be the old one, and an accepted exit changes the test.
		time.Sleep(50 * time.Millisecond)
		_, refused = nodes[1].Node.Apply(ctx, &fsm.ExitJob{Report: fsm.Report{JobID: "nope", WorkerID: "w", Attempt: 1}, At: t0})
		if fsm.ErrorCode(refused) == fsm.CodeStaleAttempt {
			refused = nil // applied: the level is still 2
			last = n1.Node.RaftForTest().LastIndex()
		}
	}
	wantCode(t, "exit report with a server at protocol 1", refused, fsm.CodeUnknownCommand)
	_, err = n1.Node.Apply(ctx, &fsm.ExitJob{Report: r2, At: t0})
	wantCode(t, "exit report on the leader with a server at protocol 1", err, fsm.CodeUnknownCommand)
	if got := n1.Node.RaftForTest().LastIndex(); got != last {
		t.Errorf("the leader's log grew from %d to %d with refused exit reports", last, got)
	}
	if j, _ := n1.FSM.ActiveJob("j2"); j == nil || !j.ExitedAt.IsZero() {
		t.Errorf("j2 = %+v, want running without exited_at", j)
	}

	nodes[2].Node.SpeakProtocolForTest(2)
	if j, err := exit(r2); err != nil || j.ExitedAt.IsZero() {
		t.Fatalf("exit report once every server speaks protocol 2 again: %v, job %+v", err, j)
	}
}
