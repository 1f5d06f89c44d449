package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestJoinCluster joins a node without a cluster to a running one, and
// checks each wrong use: a member asked to join a new node, a member asked
// to join another cluster, a node with another cluster key, an address
// that does not answer, and an address with no cluster behind it. A
// refused join changes no configuration.
func TestJoinCluster(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := clustertest.Start(t, clustertest.Options{ID: "a1", Bootstrap: true})
	b := clustertest.Start(t, clustertest.Options{ID: "b1", Bootstrap: true})
	fresh := clustertest.Start(t, clustertest.Options{ID: "f1"})
	lone := clustertest.Start(t, clustertest.Options{ID: "f2"})
	stranger := clustertest.Start(t, clustertest.Options{ID: "g1", ClusterKey: bytes.Repeat([]byte{9}, cluster.KeySize)})
	a.Apply(createTenant("acme"))
	if a.Node.ClusterID() == "" || a.Node.ClusterID() == b.Node.ClusterID() {
		t.Fatalf("cluster IDs %q and %q: want two distinct IDs", a.Node.ClusterID(), b.Node.ClusterID())
	}
	if _, waiting := fresh.Node.Waiting(); !waiting {
		t.Fatal("a node without Raft state does not report waiting")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silent := ln.Addr().String()
	ln.Close()

	for _, tc := range []struct {
		name  string
		node  *clustertest.Node
		addrs []string
		want  error
	}{
		{"member asked to join a new node", a, []string{fresh.Node.Addr()}, cluster.ErrJoinDirection},
		{"member asked to join another cluster", a, []string{b.Node.Addr()}, cluster.ErrOtherCluster},
		{"another cluster key", stranger, []string{a.Node.Addr()}, cluster.ErrWrongClusterKey},
		{"cluster key the target does not share", fresh, []string{stranger.Node.Addr()}, cluster.ErrWrongClusterKey},
		{"address that does not answer", fresh, []string{silent}, cluster.ErrUnreachable},
		{"node without a cluster", fresh, []string{lone.Node.Addr()}, cluster.ErrNoCluster},
		{"own address", fresh, []string{fresh.Node.Addr()}, cluster.ErrNoCluster},
	} {
		err := tc.node.Node.JoinCluster(ctx, tc.addrs)
		var je *cluster.JoinError
		if !errors.Is(err, tc.want) || !errors.As(err, &je) {
			t.Errorf("%s: %v; want a JoinError %v", tc.name, err, tc.want)
		}
	}
	// The leader refuses to add a voter it cannot reach.
	if err := fresh.Node.CallRPC(ctx, a.Node.Addr(), "POST", "/rpc/join", cluster.Peer{ID: "ghost", Addr: silent}, nil); err == nil {
		t.Error("the leader added a node it cannot reach")
	}
	for _, n := range []*clustertest.Node{a, b} {
		if ms, _ := n.Node.Members(ctx, false); len(ms) != 1 {
			t.Errorf("%s has %d members after refused joins, want 1", n.ID, len(ms))
		}
	}

	// The real join, through a follower-or-leader address, twice.
	for range 2 {
		if err := fresh.Node.JoinCluster(ctx, []string{silent, a.Node.Addr()}); err != nil {
			t.Fatalf("join: %v", err)
		}
		ms, err := fresh.Node.Members(ctx, false)
		if err != nil || len(ms) != 2 || !ms[1].Voter || ms[1].ID != "f1" {
			t.Fatalf("members after join: %+v, %v; want a1 and f1 as voters", ms, err)
		}
	}
	if _, waiting := fresh.Node.Waiting(); waiting {
		t.Error("a joined node still reports waiting")
	}
	if fresh.Node.ClusterID() != a.Node.ClusterID() {
		t.Errorf("joined node's cluster ID %q, want %q", fresh.Node.ClusterID(), a.Node.ClusterID())
	}
	if _, ok := fresh.FSM.Tenant("acme"); !ok {
		t.Error("the joined node has not applied the cluster's state")
	}
	// A member of another cluster that asks the leader directly is refused.
	if err := b.Node.Join(ctx, []string{a.Node.Addr()}); err == nil {
		t.Error("the leader added a member of another cluster")
	}
	// The ID survives a restart.
	id := fresh.Node.ClusterID()
	fresh.Restart()
	if fresh.Node.ClusterID() != id {
		t.Errorf("cluster ID after restart %q, want %q", fresh.Node.ClusterID(), id)
	}
}

// TestBootstrapExpectClusterID checks that nodes forming a cluster
// together agree on its ID.
func TestBootstrapExpectClusterID(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, clustertest.Options{})
	id := nodes[0].Node.ClusterID()
	for _, n := range nodes {
		if got := n.Node.ClusterID(); got == "" || got != id {
			t.Errorf("%s: cluster ID %q, want %q (the same on every founding node)", n.ID, got, id)
		}
	}
}

// TestJoinCatchesUpBySnapshot joins a node to a cluster whose leader has
// compacted its log: the new node gets the state by snapshot, then new
// writes by log, and serves them. The leader's snapshot is a reference to
// its state file, which has moved past it when the new node joins: the
// install streams the live state, and the new node skips the entries it
// already holds.
func TestJoinCatchesUpBySnapshot(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := clustertest.Start(t, clustertest.Options{ID: "a1", Bootstrap: true})
	r := a.Node.RaftForTest()
	rc := r.ReloadableConfig()
	rc.TrailingLogs = 1
	if err := r.ReloadConfig(rc); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"t1", "t2", "t3", "t4", "t5"} {
		a.Apply(createTenant(id))
	}
	if err := a.Node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Node.LogForTest(1); err == nil {
		t.Fatal("the leader's log still holds entry 1 after the snapshot; the test would not exercise a snapshot install")
	}
	after := a.Apply(createTenant("t-after")).(*fsm.Tenant) // past the snapshot, in the log
	fresh := clustertest.Start(t, clustertest.Options{ID: "f1"})
	if err := fresh.Node.JoinCluster(ctx, []string{a.Node.Addr()}); err != nil {
		t.Fatal(err)
	}
	if fresh.Node.Stats()["last_snapshot_index"] == "0" {
		t.Errorf("the new node caught up without a snapshot (stats %v)", fresh.Node.Stats())
	}
	for _, id := range []string{"t1", "t5"} {
		if _, ok := fresh.FSM.Tenant(id); !ok {
			t.Errorf("the new node lacks tenant %s from the snapshot", id)
		}
	}
	clustertest.WaitFor(t, fresh.FSM, 30*time.Second, "t-after on the new node", func() bool {
		got, ok := fresh.FSM.Tenant("t-after")
		return ok && got.Meta == after.Meta
	})
	if _, err := fresh.Node.Apply(ctx, createTenant("t6")); err != nil {
		t.Fatalf("a write through the new node: %v", err)
	}
	clustertest.WaitFor(t, fresh.FSM, 30*time.Second, "t6 on the new node", func() bool { _, ok := fresh.FSM.Tenant("t6"); return ok })
}
