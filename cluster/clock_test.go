package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
)

// startThree starts a three-node cluster with n1 leading.
func startThree(t *testing.T, opts clustertest.Options) []*clustertest.Node {
	t.Helper()
	opts.ID, opts.Bootstrap = "n1", true
	nodes := []*clustertest.Node{clustertest.Start(t, opts)}
	for _, id := range []string{"n2", "n3"} {
		o := opts
		o.ID, o.Bootstrap = id, false
		nodes = append(nodes, clustertest.Start(t, o))
	}
	addVoters(t, nodes)
	return nodes
}

// addVoters adds nodes[1:] as voters of the cluster nodes[0] bootstrapped
// and returns once nodes[0] leads and every node knows it. Each is added
// through whichever of the nodes before it leads: a new member that
// starts slowly (a loaded run with the race detector) can cost the
// leader its lease, and the two members elect again. If nodes[0] no
// longer leads at the end, leadership is handed back to it.
func addVoters(t *testing.T, nodes []*clustertest.Node) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	leader := func(among []*clustertest.Node) *clustertest.Node {
		for _, m := range among {
			if m.Node.IsLeader() {
				return m
			}
		}
		return nil
	}
	for i := 1; i < len(nodes); i++ {
		id, addr := raft.ServerID(nodes[i].ID), raft.ServerAddress(nodes[i].Node.AddrForTest())
		for {
			err := errors.New("no leader")
			if l := leader(nodes[:i]); l != nil {
				err = l.Node.RaftForTest().AddVoter(id, addr, 0, 10*time.Second).Error()
			}
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("add voter %s: %v", id, err)
			}
			time.Sleep(50 * time.Millisecond) // while the members elect
		}
	}
	first := nodes[0]
	for !first.Node.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatalf("%s does not lead after adding the voters", first.ID)
		}
		if l := leader(nodes); l != nil {
			l.Node.RaftForTest().LeadershipTransferToServer(raft.ServerID(first.ID), raft.ServerAddress(first.Node.AddrForTest())).Error()
		}
		time.Sleep(50 * time.Millisecond) // while leadership moves
	}
	for _, n := range nodes {
		for {
			if _, id := n.Node.Leader(); id == first.ID {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s does not know %s leads", n.ID, first.ID)
			}
			time.Sleep(20 * time.Millisecond) // until the leader's next AppendEntries
		}
	}
}

// TestFollowersApplyTheLeadersTime: a job submitted through a follower
// whose clock is 10 minutes behind gets the leader's time (Raft stamps
// AppendedAt on the leader and replicates it), identically on every node.
func TestFollowersApplyTheLeadersTime(t *testing.T) {
	t.Parallel()
	nodes := startThree(t, clustertest.Options{})
	nodes[0].Apply(createTenant("acme"))

	j := newJob(t, "acme", "720p30-h264", 0)
	j.SubmittedAt = time.Now().UTC().Add(-10 * time.Minute) // the follower's clock
	before := time.Now()
	resp, err := nodes[1].Node.Apply(context.Background(), &fsm.SubmitJob{Job: j})
	if err != nil {
		t.Fatalf("submit through follower n2: %v", err)
	}
	after := time.Now()
	got := resp.(*fsm.Job)
	if got.SubmittedAt.Before(before) || got.SubmittedAt.After(after) || !got.QueuedAt.Equal(got.SubmittedAt) {
		t.Fatalf("submitted_at %v queued_at %v; want the leader's time, between %v and %v", got.SubmittedAt, got.QueuedAt, before, after)
	}
	for _, n := range nodes {
		clustertest.WaitFor(t, n.FSM, 10*time.Second, n.ID+" to apply the job", func() bool {
			_, ok := n.FSM.ActiveJob(j.ID)
			return ok
		})
		a, _ := n.FSM.ActiveJob(j.ID)
		if !a.SubmittedAt.Equal(got.SubmittedAt) || !a.QueuedAt.Equal(got.QueuedAt) {
			t.Errorf("%s: submitted_at %v queued_at %v, want the leader's %v on every node", n.ID, a.SubmittedAt, a.QueuedAt, got.SubmittedAt)
		}
	}
}

// waitPast waits until d has passed since t0 (wall time the scenario
// needs to elapse, such as an outage longer than an acquire timeout).
func waitPast(t *testing.T, t0 time.Time, d time.Duration) {
	t.Helper()
	timer := time.NewTimer(time.Until(t0.Add(d)))
	defer timer.Stop()
	<-timer.C
}

// TestLeaderlessTimeDoesNotCount: a job queued before the cluster lost
// its leader for longer than the job's acquire timeout is placed, not
// failed, when a leader and a worker come back.
func TestLeaderlessTimeDoesNotCount(t *testing.T) {
	t.Parallel()
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true, Scheduler: true})
	n.Apply(createTenant("acme"))
	queued := n.Apply(&fsm.SubmitJob{Job: newJob(t, "acme", "720p30-h264", time.Second)}).(*fsm.Job)

	n.Stop() // no leader
	waitPast(t, queued.QueuedAt, 2*time.Second)
	n.Restart()
	n.WaitLeader()
	w := registerWorker(n, "w1", "", "libx264")

	clustertest.WaitFor(t, n.FSM, 10*time.Second, "the job to leave the queue", func() bool {
		return job(t, n.FSM, queued.ID).State != fsm.JobQueued
	})
	if got := job(t, n.FSM, queued.ID); got.State != fsm.JobAssigned || got.WorkerID != w.ID {
		t.Fatalf("job queued before a 2s leaderless period: %s on %q, error %+v; want assigned to %s", got.State, got.WorkerID, got.Error, w.ID)
	}
}

// TestNoWorkerTimeDoesNotCount: a queued job with no worker up does not
// expire, however long it waits; once a worker is up it counts, and a job
// that worker cannot run fails with no_capable_worker one acquire timeout
// after the worker came up.
func TestNoWorkerTimeDoesNotCount(t *testing.T) {
	t.Parallel()
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true, Scheduler: true})
	n.Apply(createTenant("acme"))
	queued := n.Apply(&fsm.SubmitJob{Job: newJob(t, "acme", "720p30-h264", time.Second)}).(*fsm.Job)

	waitPast(t, queued.QueuedAt, 3*time.Second)
	// The scheduler has run since (a state change wakes it).
	n.Apply(createTenant("globex"))
	if err := n.Node.ReadIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := job(t, n.FSM, queued.ID); got.State != fsm.JobQueued {
		t.Fatalf("job with no worker up, 3s past its 1s acquire timeout: %s %+v; want queued", got.State, got.Error)
	}

	w := registerWorker(n, "w-x265", "", "libx265")
	clustertest.WaitFor(t, n.FSM, 10*time.Second, "the job to expire", func() bool {
		return job(t, n.FSM, queued.ID).State.Terminal()
	})
	got := job(t, n.FSM, queued.ID)
	if got.State != fsm.JobFailed || got.Error == nil || got.Error.Code != fsm.CodeNoCapableWorker {
		t.Fatalf("job no worker can run: %s %+v; want failed with no_capable_worker", got.State, got.Error)
	}
	if waited := got.FinishedAt.Sub(w.RegisteredAt); waited < time.Second {
		t.Errorf("job failed %v after the first worker came up, before its 1s acquire timeout", waited)
	}
}

// failingStore fails every write, and every batch read unless
// commitsOnly, while down is set, as an unreachable database does.
type failingStore struct {
	fsm.Store
	down        *atomic.Bool
	commitsOnly bool
}

var errUnreachable = errors.New("dial tcp 127.0.0.1:5432: connection refused")

func (s failingStore) Commit(ctx context.Context, b *fsm.Batch) error {
	if s.down.Load() {
		return errUnreachable
	}
	return s.Store.Commit(ctx, b)
}

func (s failingStore) JobsExist(ctx context.Context, ids []string) (map[string]uint64, error) {
	if s.down.Load() && !s.commitsOnly {
		return nil, errUnreachable
	}
	return s.Store.JobsExist(ctx, ids)
}

// TestShutdownWhileStoreDown: a node whose store stops answering still
// stops. Past the store's stop wait its FSM gives up the batch the store
// did not take, and the next start applies it again from the Raft log.
func TestShutdownWhileStoreDown(t *testing.T) {
	cluster.SetStoreStopWaitForTest(t, 200*time.Millisecond)
	var down atomic.Bool
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true,
		WrapStore: func(st fsm.Store) fsm.Store { return failingStore{st, &down, false} }})
	n.Apply(createTenant("acme"))
	n.FSM.Flush()
	down.Store(true)
	globex := n.Apply(createTenant("globex")).(*fsm.Tenant) // answered before its commit, which fails
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		n.Stop()
	}()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("the node did not stop while its store was down")
	}
	st, err := bolt.Open(n.StatePath())
	if err != nil {
		t.Fatal(err)
	}
	state, err := st.Load(context.Background())
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if state.Index >= globex.CreateIndex {
		t.Fatalf("the store holds index %d, past globex's %d, whose commit failed", state.Index, globex.CreateIndex)
	}
	down.Store(false)
	n.Restart()
	clustertest.WaitFor(t, n.FSM, 10*time.Second, "globex applied again after the restart", func() bool {
		_, ok := n.FSM.Tenant("globex")
		return ok
	})
	if got := n.FSM.Flush(); got < globex.CreateIndex {
		t.Errorf("the store holds index %d after the restart, want at least globex's %d", got, globex.CreateIndex)
	}
	if _, ok := n.FSM.Tenant("acme"); !ok {
		t.Error("acme lost after the restart")
	}
}

// TestStoreOutageTimeDoesNotCount: while the leader's store is down
// nothing can be placed, so a job's acquire timeout does not run out
// during the outage: it counts afresh from when the store is back. The
// scheduler sees the outage in a pass, or, when the outage begins with
// the commit of the very submit (answered before its commit, which then
// fails) and nothing wakes the scheduler until the store is back, learns
// of it afterwards.
func TestStoreOutageTimeDoesNotCount(t *testing.T) {
	t.Parallel()
	for _, unseen := range []bool{false, true} {
		t.Run(fmt.Sprintf("unseen=%v", unseen), func(t *testing.T) {
			t.Parallel()
			var down atomic.Bool
			n := clustertest.Start(t, clustertest.Options{Bootstrap: true, Scheduler: true,
				WrapStore: func(st fsm.Store) fsm.Store { return failingStore{st, &down, unseen} }})
			n.Apply(createTenant("acme"))
			registerWorker(n, "w-x265", "", "libx265") // cannot run H.264
			const acquire = 3 * time.Second
			submit := &fsm.SubmitJob{Job: newJob(t, "acme", "720p30-h264", acquire)}
			applied := make(chan error, 1)
			var queued *fsm.Job
			if unseen {
				n.FSM.Flush() // only the submit's commit fails
				down.Store(true)
				queued = n.Apply(submit).(*fsm.Job)
				applied <- nil
			} else {
				queued = n.Apply(submit).(*fsm.Job)
				down.Store(true)
				go func() {
					_, err := n.Node.Apply(context.Background(), createTenant("during-outage"))
					applied <- err
				}()
			}
			deadline := time.Now().Add(10 * time.Second)
			for !n.FSM.StoreDown() {
				if time.Now().After(deadline) {
					t.Fatal("the FSM does not report the store down")
				}
				time.Sleep(10 * time.Millisecond) // poll interval
			}
			waitPast(t, queued.QueuedAt, acquire+2*time.Second) // the outage outlasts the timeout
			restored := time.Now()
			down.Store(false)
			if err := <-applied; err != nil {
				t.Fatalf("apply during the outage: %v", err)
			}

			clustertest.WaitFor(t, n.FSM, 20*time.Second, "the job to expire", func() bool {
				return job(t, n.FSM, queued.ID).State.Terminal()
			})
			got := job(t, n.FSM, queued.ID)
			if got.State != fsm.JobFailed || got.Error == nil || got.Error.Code != fsm.CodeNoCapableWorker {
				t.Fatalf("job: %s %+v; want failed with no_capable_worker", got.State, got.Error)
			}
			if counted := got.FinishedAt.Sub(restored); counted < acquire {
				t.Errorf("job failed %v after the store came back, before its %v acquire timeout", counted, acquire)
			}
		})
	}
}
