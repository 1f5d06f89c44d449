package cluster_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestForwardedWritesSurviveLeaderChanges submits jobs continuously
// through the two followers of a three-node cluster while the leader is
// stopped and leadership is then transferred twice: writes are in flight
// to the leader each time. Every submit must succeed (the follower sends
// a write whose outcome it lost to the new leader), and every
// acknowledged job must exist exactly once.
func TestForwardedWritesSurviveLeaderChanges(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, clustertest.Options{})
	l := leaderOf(t, nodes)
	l.Apply(createTenant("t"))
	var via []*clustertest.Node
	for _, nd := range nodes {
		if nd != l {
			via = append(via, nd)
		}
	}

	type result struct {
		id  string
		err error
	}
	results := make(chan result, 1024)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nd := via[i%len(via)]
			for {
				select {
				case <-stop:
					return
				default:
				}
				j := newJob(t, "t", "240p30-h264", 0)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := nd.Node.Apply(ctx, &fsm.SubmitJob{Job: j})
				cancel()
				results <- result{j.ID, err}
			}
		}()
	}
	acked := map[string]bool{}
	var failed []result
	// collect takes n more results, failing the test if they do not come.
	collect := func(n int) {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for range n {
			select {
			case r := <-results:
				if r.err != nil {
					failed = append(failed, r)
				} else {
					acked[r.id] = true
				}
			case <-deadline:
				t.Fatalf("submits stalled: %d acknowledged, %d failed", len(acked), len(failed))
			}
		}
	}
	collect(40)
	l.Stop() // the leader goes away with writes in flight
	collect(40)
	for range 2 {
		nl := leaderOf(t, via)
		if err := nl.Node.TransferLeadership(context.Background(), ""); err != nil {
			t.Logf("transfer leadership from %s: %v", nl.ID, err)
		}
		collect(40)
	}
	close(stop)
	go func() { wg.Wait(); close(results) }()
	for r := range results {
		if r.err != nil {
			failed = append(failed, r)
		} else {
			acked[r.id] = true
		}
	}
	for _, r := range failed {
		t.Errorf("submit %s failed: %v", r.id, r.err)
	}

	for _, nd := range via {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := nd.Node.ReadIndex(ctx); err != nil {
			t.Fatalf("%s: read index: %v", nd.ID, err)
		}
		cancel()
		for id := range acked {
			if _, ok := nd.FSM.ActiveJob(id); !ok {
				t.Errorf("%s: acknowledged job %s does not exist", nd.ID, id)
			}
		}
		if byState, _ := nd.FSM.Counts(); byState[fsm.JobQueued] != len(acked) {
			t.Errorf("%s: %d queued jobs, want the %d acknowledged", nd.ID, byState[fsm.JobQueued], len(acked))
		}
	}
}

// TestResendableCommandsAnswerTwiceAlike applies each resendable command
// twice, as separate entries (what a resend after a lost outcome does when
// the first try was applied): the second answer must be the object the
// first made, not an error, and a command that is not resendable is
// reported so.
func TestResendableCommandsAnswerTwiceAlike(t *testing.T) {
	t.Parallel()
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true})
	n.Apply(createTenant("t"))
	n.Apply(&fsm.CreateAPIKey{Key: fsm.APIKey{ID: "k1", TenantID: "t", User: "ann", Role: fsm.RoleOperator, Hash: []byte{1}, CreatedAt: t0}})
	n.Apply(&fsm.RegisterWorker{Worker: fsm.Worker{ID: "w", Slots: 1, Encoders: []string{"libx264"}, Incarnation: "1"}, At: t0})
	plan := "gold"
	maxJobs := 7
	for _, c := range []fsm.Command{
		&fsm.SubmitJob{Job: newJob(t, "t", "240p30-h264", 0)},
		&fsm.RevokeAPIKey{ID: "k1", At: t0},
		&fsm.DrainWorker{WorkerID: "w", Drain: true, At: t0},
		&fsm.UpdateTenant{ID: "t", Plan: &plan, MaxJobs: &maxJobs},
		&fsm.RegisterWorker{Worker: fsm.Worker{ID: "w2", Slots: 1, Encoders: []string{"libx264"}, Incarnation: "1"}, At: t0},
		&fsm.MarkWorkerDown{WorkerID: "w", Reason: "test", At: t0},
	} {
		data, err := fsm.Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		if !cluster.Resendable(data) {
			t.Errorf("%T: Resendable = false, want true", c)
		}
		first, err1 := n.Node.Apply(context.Background(), c)
		second, err2 := n.Node.Apply(context.Background(), c)
		if err1 != nil || err2 != nil {
			t.Errorf("%T applied twice: errors %v, %v; want none", c, err1, err2)
			continue
		}
		a, _ := first.(fsm.Object)
		b, _ := second.(fsm.Object)
		if a == nil || b == nil || a.ObjectID() != b.ObjectID() {
			t.Errorf("%T applied twice: %v then %v; want the same object", c, first, second)
		}
	}
	for _, c := range []fsm.Command{createTenant("u"), &fsm.CancelJob{JobID: "j", At: t0}} {
		data, err := fsm.EncodeAs(c, &fsm.Actor{KeyID: "k1"})
		if err != nil {
			t.Fatal(err)
		}
		if cluster.Resendable(data) {
			t.Errorf("%T: Resendable = true, want false", c)
		}
	}
}
