package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// startCluster starts n nodes that find each other with bootstrap-expect,
// as `ffrtmp server --join … --bootstrap-expect n` does.
func startCluster(t *testing.T, n int, opts clustertest.Options) []*clustertest.Node {
	t.Helper()
	var nodes []*clustertest.Node
	for i := 1; i <= n; i++ {
		o := opts
		o.ID = fmt.Sprintf("n%d", i)
		nodes = append(nodes, clustertest.Start(t, o))
	}
	for _, nd := range nodes {
		var join []string
		for _, other := range nodes {
			if other != nd {
				join = append(join, other.Node.Addr())
			}
		}
		if err := nd.Node.Start(context.Background(), cluster.StartOptions{Join: join, BootstrapExpect: n}); err != nil {
			t.Fatal(err)
		}
	}
	waitMembers(t, nodes[0], n)
	return nodes
}

// waitMembers waits until nd sees a leader and want voters.
func waitMembers(t *testing.T, nd *clustertest.Node, want int) []cluster.Member {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ms, err := nd.Node.Members(context.Background(), false)
		if addr, _ := nd.Node.Leader(); err == nil && addr != "" && len(ms) == want {
			return ms
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: want %d members with a leader, have %+v (%v)", nd.ID, want, ms, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func leaderOf(t *testing.T, nodes []*clustertest.Node) *clustertest.Node {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, nd := range nodes {
			if nd.Node.IsLeader() {
				return nd
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBootstrapExpectJoinAndForward(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, clustertest.Options{})
	ms := waitMembers(t, nodes[2], 3)
	leaders := 0
	for _, m := range ms {
		if !m.Voter {
			t.Errorf("member %s is not a voter", m.ID)
		}
		if m.Leader {
			leaders++
		}
	}
	if leaders != 1 {
		t.Fatalf("%d leaders in %+v", leaders, ms)
	}

	// A write through every node lands once (followers forward it), and
	// after a read barrier the node that took it has applied it.
	ctx := context.Background()
	for _, nd := range nodes {
		v, err := nd.Node.Apply(ctx, createTenant("via-"+nd.ID))
		if err != nil {
			t.Fatalf("apply via %s: %v", nd.ID, err)
		}
		if err := nd.Node.ReadIndex(ctx); err != nil {
			t.Fatalf("read index on %s: %v", nd.ID, err)
		}
		if got, ok := nd.FSM.Tenant("via-" + nd.ID); !ok || got.CreateIndex != v.(*fsm.Tenant).CreateIndex {
			t.Errorf("%s: own write %v not applied after a read barrier", nd.ID, v)
		}
	}
	// A consistent read on a follower sees everything committed before.
	l := leaderOf(t, nodes)
	l.Apply(createTenant("latest"))
	for _, nd := range nodes {
		if err := nd.Node.ReadIndex(ctx); err != nil {
			t.Fatalf("read index on %s: %v", nd.ID, err)
		}
		if _, ok := nd.FSM.Tenant("latest"); !ok {
			t.Errorf("%s: read index returned before the latest write was applied", nd.ID)
		}
	}

	// A fourth node joins through any member (a follower forwards the join
	// to the leader); joining again is a no-op.
	n4 := clustertest.Start(t, clustertest.Options{ID: "n4"})
	var follower *clustertest.Node
	for _, nd := range nodes {
		if !nd.Node.IsLeader() {
			follower = nd
		}
	}
	if err := n4.Node.Join(ctx, []string{follower.Node.Addr()}); err != nil {
		t.Fatalf("join via follower: %v", err)
	}
	waitMembers(t, nodes[0], 4)
	if err := n4.Node.Join(ctx, []string{nodes[0].Node.Addr()}); err != nil {
		t.Fatalf("join again: %v", err)
	}
	clustertest.WaitFor(t, n4.FSM, 10*time.Second, "n4 to catch up", func() bool {
		_, ok := n4.FSM.Tenant("latest")
		return ok
	})
	if err := nodes[0].Node.Remove(ctx, "n4"); err != nil {
		t.Fatalf("remove n4: %v", err)
	}
	waitMembers(t, nodes[0], 3)
}

func TestWrongClusterKeyCannotJoin(t *testing.T) {
	t.Parallel()
	good := clustertest.Start(t, clustertest.Options{ID: "good", Bootstrap: true})
	bad := clustertest.Start(t, clustertest.Options{ID: "bad", ClusterKey: bytes.Repeat([]byte{9}, cluster.KeySize)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bad.Node.Join(ctx, []string{good.Node.Addr()}); err == nil {
		t.Fatal("a node with another cluster key joined")
	}
	ms, err := good.Node.Members(context.Background(), false)
	if err != nil || len(ms) != 1 {
		t.Fatalf("members after a refused join: %+v %v", ms, err)
	}
}

func TestRejoinWithChangedAddressReplacesEntry(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, clustertest.Options{})
	l := leaderOf(t, nodes)
	var moved *clustertest.Node
	for _, nd := range nodes {
		if nd != l {
			moved = nd
		}
	}
	old := moved.Node.Addr()
	moved.Stop()
	// Same ID and data, new port.
	moved2 := clustertest.Start(t, clustertest.Options{ID: moved.ID, Dir: moved.Dir})
	if moved2.Node.Addr() == old {
		t.Fatal("the restarted node got the same address")
	}
	if err := moved2.Node.Start(context.Background(), cluster.StartOptions{Join: []string{l.Node.Addr()}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ms, _ := l.Node.Members(context.Background(), false)
		i := slices.IndexFunc(ms, func(m cluster.Member) bool { return m.ID == moved.ID })
		if len(ms) == 3 && i >= 0 && ms[i].Addr == moved2.Node.Addr() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members after rejoin with a new address: %+v", ms)
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.Apply(createTenant("after-move"))
	clustertest.WaitFor(t, moved2.FSM, 10*time.Second, "the moved node to replicate", func() bool {
		_, ok := moved2.FSM.Tenant("after-move")
		return ok
	})
}

func TestDeadServerRemovedWhenQuorumSafe(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, clustertest.Options{DeadServerTimeout: 2 * time.Second})
	l := leaderOf(t, nodes)
	var dead *clustertest.Node
	for _, nd := range nodes {
		if nd != l {
			dead = nd
			break
		}
	}
	dead.Stop()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ms, _ := l.Node.Members(context.Background(), false)
		if len(ms) == 2 && !slices.ContainsFunc(ms, func(m cluster.Member) bool { return m.ID == dead.ID }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead server not removed: %+v", ms)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// With two voters left, a second failure would cost quorum: the
	// leader must keep the configuration as it is.
	var other *clustertest.Node
	for _, nd := range nodes {
		if nd != l && nd != dead {
			other = nd
		}
	}
	other.Stop()
	time.Sleep(4 * time.Second) // longer than the dead-server timeout
	ms, _ := l.Node.Members(context.Background(), false)
	if len(ms) != 2 {
		t.Fatalf("leader removed a server without quorum: %+v", ms)
	}
}

// TestNoDoubleDispatch moves leadership around while jobs are submitted
// and assigned, then reads the Raft log: no (job, attempt) assignment was
// ever proposed twice, so two leaders never dispatched at once.
func TestNoDoubleDispatch(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, clustertest.Options{Scheduler: true})
	ctx := context.Background()
	l := leaderOf(t, nodes)
	l.Apply(createTenant("t"))
	l.Apply(&fsm.RegisterWorker{Worker: fsm.Worker{ID: "w", Slots: 1000, Encoders: []string{"libx264"}, Incarnation: "1"}})
	const jobs = 60
	for i := range jobs {
		nd := nodes[i%len(nodes)]
		if _, err := nd.Node.Apply(ctx, &fsm.SubmitJob{Job: newJob(t, "t", "240p30-h264", 0)}); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		if i%15 == 14 {
			if err := leaderOf(t, nodes).Node.TransferLeadership(ctx, ""); err != nil {
				t.Logf("transfer: %v", err)
			}
		}
	}
	l = leaderOf(t, nodes)
	clustertest.WaitFor(t, l.FSM, 20*time.Second, "every job assigned", func() bool {
		return l.FSM.WorkerLoad("w") == jobs
	})
	seen := map[string]int{}
	for i := uint64(1); ; i++ {
		e, err := l.Node.LogForTest(i)
		if err != nil {
			break
		}
		if len(e.Data) == 0 || fsm.MessageType(e.Data[0]) != fsm.AssignJobType {
			continue
		}
		var a fsm.AssignJob
		if err := json.Unmarshal(e.Data[1:], &a); err != nil {
			t.Fatal(err)
		}
		seen[fmt.Sprintf("%s/%d", a.JobID, a.Attempt)]++
	}
	if len(seen) != jobs {
		t.Fatalf("%d assignments in the log, want %d", len(seen), jobs)
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("assignment %s proposed %d times", k, n)
		}
	}
}
