package postgres_test

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/postgres"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

// restoreCounter counts the snapshots a store restores.
type restoreCounter struct {
	*postgres.Store
	n *atomic.Int32
}

func (s restoreCounter) Restore(ctx context.Context, r io.Reader) error {
	s.n.Add(1)
	return s.Store.Restore(ctx, r)
}

// raftNode is one member of an in-process Raft cluster: real
// hashicorp/raft over in-memory transports, its FSM on a PostgreSQL store
// that every member shares.
type raftNode struct {
	id       raft.ServerID
	addr     raft.ServerAddress
	logs     *raft.InmemStore // kept across restarts, like raft.db
	snaps    *raft.InmemSnapshotStore
	trans    *raft.InmemTransport
	raft     *raft.Raft
	fsm      *fsm.FSM
	restores atomic.Int32
}

func raftConfig(id raft.ServerID) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = id
	c.Logger = hclog.NewNullLogger()
	// Short enough for a quick test, long enough that a loaded machine
	// (the race detector, packages tested in parallel) does not depose a
	// leader in the middle of the test's proposals.
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 250 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.BatchApplyCh = true
	c.MaxAppendEntries = 64
	c.TrailingLogs = 8
	c.SnapshotThreshold = 1 << 20 // only when the test asks
	c.NoSnapshotRestoreOnStart = true
	return c
}

// start opens a store and FSM on dbURL and starts Raft on the node's log,
// as ffrtmp server does on (re)start.
func (n *raftNode) start(t *testing.T, dbURL string, peers []*raftNode) {
	t.Helper()
	st := pgtest.OpenURL(t, dbURL, postgres.Options{})
	n.fsm = newFSM(t, restoreCounter{st, &n.restores})
	_, n.trans = raft.NewInmemTransport(n.addr)
	for _, p := range peers {
		if p != n && p.trans != nil {
			p.trans.Connect(n.addr, n.trans)
			n.trans.Connect(p.addr, p.trans)
		}
	}
	r, err := raft.NewRaft(raftConfig(n.id), n.fsm, n.logs, n.logs, n.snaps, n.trans)
	if err != nil {
		t.Fatalf("start raft %s: %v", n.id, err)
	}
	n.raft = r
}

func (n *raftNode) stop(t *testing.T) {
	if n.raft == nil {
		return
	}
	if err := n.raft.Shutdown().Error(); err != nil {
		t.Errorf("shutdown %s: %v", n.id, err)
	}
	n.trans.DisconnectAll()
	n.raft = nil
}

func leader(t *testing.T, nodes []*raftNode) *raftNode {
	t.Helper()
	var l *raftNode
	waitUntil(t, 10*time.Second, "a leader", func() bool {
		for _, n := range nodes {
			if n.raft != nil && n.raft.State() == raft.Leader {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

// waitUntil polls cond every 10ms until it holds, failing the test after
// timeout: Raft offers no signal for a follower's progress.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

func propose(t *testing.T, n *raftNode, c fsm.Command) any {
	t.Helper()
	data, err := fsm.Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	f := n.raft.Apply(data, 5*time.Second)
	if err := f.Error(); err != nil {
		t.Fatalf("apply %T on %s: %v", c, n.id, err)
	}
	if err, ok := f.Response().(error); ok {
		t.Fatalf("apply %T on %s: refused: %v", c, n.id, err)
	}
	return f.Response()
}

// TestRaftClusterSharedDatabase runs three Raft nodes on one schema,
// submits jobs through the leader, stops the leader, goes on under the
// new one past a snapshot, and restarts the old leader, which catches up
// by installing the snapshot. Every node ends with the same memory, and
// the tables hold each job once.
func TestRaftClusterSharedDatabase(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	var nodes []*raftNode
	var servers []raft.Server
	for i := 1; i <= 3; i++ {
		n := &raftNode{id: raft.ServerID(fmt.Sprintf("n%d", i)), addr: raft.ServerAddress(fmt.Sprintf("n%d", i)),
			logs: raft.NewInmemStore(), snaps: raft.NewInmemSnapshotStore()}
		nodes = append(nodes, n)
		servers = append(servers, raft.Server{ID: n.id, Address: n.addr, Suffrage: raft.Voter})
	}
	for _, n := range nodes {
		_, trans := raft.NewInmemTransport(n.addr)
		if err := raft.BootstrapCluster(raftConfig(n.id), n.logs, n.logs, n.snaps, trans, raft.Configuration{Servers: servers}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		n.start(t, url, nodes)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.stop(t)
		}
	})

	l := leader(t, nodes)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	propose(t, l, &fsm.CreateTenant{Tenant: fsm.Tenant{ID: "acme", Name: "acme", CreatedAt: at(0)}})
	propose(t, l, worker("w1", "i1", at(0)))
	job := 0
	submit := func(l *raftNode, n int) {
		for range n {
			job++
			propose(t, l, submitJob(job, "acme", at(job)))
		}
	}
	submit(l, 20)
	for i := 1; i <= 3; i++ { // three jobs run to the end
		propose(t, l, &fsm.AssignJob{JobID: jobID(i), WorkerID: "w1", Attempt: 1, At: at(100 + i)})
		propose(t, l, &fsm.StartJob{Report: fsm.Report{JobID: jobID(i), WorkerID: "w1", Attempt: 1}, At: at(110 + i)})
		propose(t, l, &fsm.FinishJob{Report: fsm.Report{JobID: jobID(i), WorkerID: "w1", Attempt: 1}, At: at(120 + i)})
	}

	// Stop the leader; the others elect a new one and go on past a
	// snapshot that compacts the log the old leader would need.
	old := l
	old.stop(t)
	l = leader(t, nodes)
	submit(l, 30)
	if err := l.raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	submit(l, 5)

	// The old leader restarts with its Raft log and a new store and FSM.
	old.start(t, url, nodes)
	last := l.raft.LastIndex()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for _, n := range nodes {
		if err := n.fsm.WaitIndex(wctx, last); err != nil {
			t.Fatalf("node %s: index %d, want %d: %v", n.id, n.fsm.Index(), last, err)
		}
		// The restarted FSM loaded the database at the newest index at
		// once; Raft catching up is what remains to wait for.
		waitUntil(t, 20*time.Second, "node "+string(n.id)+" to apply the log", func() bool { return n.raft.AppliedIndex() >= last })
	}
	if old.restores.Load() == 0 {
		t.Error("the restarted node caught up without installing a snapshot; the test meant to exercise Restore")
	}

	var jobIDs []string
	for i := 1; i <= job; i++ {
		jobIDs = append(jobIDs, jobID(i))
	}
	ids := ids{tenants: []string{"acme"}, workers: []string{"w1"}, jobs: jobIDs}
	want := memory(l.fsm, ids)
	for _, n := range nodes {
		assertEqual(t, "memory of node "+string(n.id), memory(n.fsm, ids), want)
	}

	// What psql shows: every job once, with its tenant.
	conn := pgtest.Connect(t, url)
	var total, distinct, queued, succeeded int
	var applied int64
	err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT id),
		count(*) FILTER (WHERE state = 'queued'), count(*) FILTER (WHERE state = 'succeeded')
		FROM jobs WHERE tenant_id = 'acme'`).Scan(&total, &distinct, &queued, &succeeded)
	if err != nil {
		t.Fatal(err)
	}
	if total != job || distinct != job || queued != job-3 || succeeded != 3 {
		t.Errorf("jobs table: %d rows (%d distinct), %d queued, %d succeeded; want %d, %d, %d, 3", total, distinct, queued, succeeded, job, job, job-3)
	}
	if err := conn.QueryRow(ctx, `SELECT applied_index FROM ffrtmp_state`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if uint64(applied) != nodes[0].fsm.Index() {
		t.Errorf("applied_index = %d, nodes at %d", applied, nodes[0].fsm.Index())
	}
}
