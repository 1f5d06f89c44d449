package cluster_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func createTenant(id string) *fsm.CreateTenant {
	return &fsm.CreateTenant{Tenant: fsm.Tenant{ID: id, Name: id, CreatedAt: t0}}
}

// wantCode fails unless err is an *fsm.Error with the given code.
func wantCode(t *testing.T, what string, err error, code fsm.Code) {
	t.Helper()
	var fe *fsm.Error
	if !errors.As(err, &fe) {
		t.Fatalf("%s: error %v (%T), want an *fsm.Error %s", what, err, err, code)
	}
	if fe.Code != code {
		t.Fatalf("%s: code %s (%v), want %s", what, fe.Code, fe, code)
	}
}

func TestBootstrapApply(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	n := clustertest.Start(t, clustertest.Options{ID: "solo", Bootstrap: true})
	if addr, id := n.Node.Leader(); id != "solo" || addr == "" || addr != n.Addr {
		t.Errorf("Leader() = %q, %q; want this node (%q, solo)", addr, id, n.Addr)
	}

	resp, err := n.Node.Apply(ctx, createTenant("acme"))
	if err != nil {
		t.Fatalf("Apply(CreateTenant): %v", err)
	}
	acme, ok := resp.(*fsm.Tenant)
	if !ok {
		t.Fatalf("Apply(CreateTenant) response is %T, want *fsm.Tenant", resp)
	}
	if acme.ID != "acme" || acme.Name != "acme" || acme.CreateIndex == 0 || acme.ModifyIndex != acme.CreateIndex {
		t.Errorf("created tenant = %+v; want acme with create_index = modify_index > 0", acme)
	}
	// Apply returns once the command is applied on this node.
	if got, ok := n.FSM.Tenant("acme"); !ok || got.CreateIndex != acme.CreateIndex {
		t.Errorf("FSM.Tenant(acme) after Apply = %+v, %v", got, ok)
	}
	// The store has it once the FSM's commit of its batch has returned.
	if index := n.FSM.Flush(); index < acme.CreateIndex {
		t.Errorf("Flush() = %d, want at least the tenant's index %d", index, acme.CreateIndex)
	} else if st, err := n.Store.Load(ctx); err != nil || st.Index != index || len(st.Tenants) != 1 {
		t.Errorf("store after Flush: %+v, %v; want index %d and the tenant", st, err, index)
	}

	// Refusals come back as typed errors and change nothing.
	index := n.FSM.Flush()
	again := createTenant("acme")
	again.Tenant.Plan = "impostor"
	resp, err = n.Node.Apply(ctx, again)
	if resp != nil {
		t.Errorf("refused Apply response = %v, want nil", resp)
	}
	wantCode(t, "CreateTenant of an existing ID", err, fsm.CodeAlreadyExists)
	if got, _ := n.FSM.Tenant("acme"); got.Plan != "" {
		t.Errorf("tenant after a refused CreateTenant has plan %q", got.Plan)
	}
	if got := n.FSM.Flush(); got <= index {
		t.Errorf("FSM index %d did not advance past %d: a refused command still consumes its log entry", got, index)
	}
	nobody := submitCmd(t, "j1")
	nobody.Job.TenantID = "nobody"
	_, err = n.Node.Apply(ctx, nobody)
	wantCode(t, "SubmitJob for an unknown tenant", err, fsm.CodeNotFound)
	_, err = n.Node.Apply(ctx, &fsm.SubmitJob{Job: fsm.Job{ID: "j1", TenantID: "nobody"}})
	wantCode(t, "SubmitJob without a compiled spec", err, fsm.CodeInvalidArgument)

	resps, errs := n.Node.ApplyAll(ctx, []fsm.Command{createTenant("globex"), createTenant("acme"), createTenant("initech")})
	if g, ok := resps[0].(*fsm.Tenant); !ok || g.ID != "globex" || errs[0] != nil {
		t.Errorf("ApplyAll[0] = %v, %v; want tenant globex", resps[0], errs[0])
	}
	if resps[1] != nil {
		t.Errorf("ApplyAll[1] response = %v, want nil", resps[1])
	}
	wantCode(t, "ApplyAll[1]", errs[1], fsm.CodeAlreadyExists)
	if i, ok := resps[2].(*fsm.Tenant); !ok || i.CreateIndex <= resps[0].(*fsm.Tenant).CreateIndex {
		t.Errorf("ApplyAll[2] = %v, %v; want tenant initech after globex", resps[2], errs[2])
	}
}

// loopRecorder is a leader loop that reports when it starts and stops.
type loopRecorder struct {
	started chan loopStart
	stopped chan error
}

// loopStart is what a leader loop saw when it started.
type loopStart struct {
	leader  bool
	index   uint64
	tenants []string
}

func newLoopRecorder() *loopRecorder {
	return &loopRecorder{started: make(chan loopStart, 16), stopped: make(chan error, 16)}
}

func (r *loopRecorder) factory(tenants ...string) func(*fsm.FSM) func(context.Context, *cluster.Node) {
	return func(f *fsm.FSM) func(context.Context, *cluster.Node) {
		return func(ctx context.Context, n *cluster.Node) {
			s := loopStart{leader: n.IsLeader(), index: f.Index()}
			for _, id := range tenants {
				if _, ok := f.Tenant(id); ok {
					s.tenants = append(s.tenants, id)
				}
			}
			r.started <- s
			<-ctx.Done()
			r.stopped <- ctx.Err()
		}
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestLeaderLoopCanceledOnShutdown(t *testing.T) {
	t.Parallel()
	started := make(chan bool, 4)
	stopped := make(chan error, 4)
	// A loop that takes a moment to wind down, as the scheduler does when
	// a proposal is in flight: Shutdown must wait for it to return.
	loop := func(*fsm.FSM) func(context.Context, *cluster.Node) {
		return func(ctx context.Context, n *cluster.Node) {
			started <- n.IsLeader()
			<-ctx.Done()
			wind := time.NewTimer(200 * time.Millisecond)
			<-wind.C
			stopped <- ctx.Err()
		}
	}
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true, LeaderLoop: loop})
	if leader := recv(t, started, "the leader loop to start"); !leader {
		t.Error("leader loop started while the node was not leader")
	}
	select {
	case err := <-stopped:
		t.Fatalf("leader loop stopped (%v) while the node still leads", err)
	default:
	}

	n.Stop()
	select {
	case err := <-stopped:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("leader loop context ended with %v, want context.Canceled", err)
		}
	default:
		t.Fatal("Shutdown returned while the leader loop was still running")
	}
	if len(started) != 0 {
		t.Errorf("leader loop started %d more times", len(started))
	}
}

func TestLeaderLoopFollowsLeadership(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	recs := []*loopRecorder{newLoopRecorder(), newLoopRecorder(), newLoopRecorder()}
	n1 := clustertest.Start(t, clustertest.Options{ID: "n1", Bootstrap: true, LeaderLoop: recs[0].factory()})
	if s := recv(t, recs[0].started, "n1's leader loop"); !s.leader {
		t.Error("n1's leader loop started while n1 was not leader")
	}
	nodes := []*clustertest.Node{n1}
	for i, id := range []string{"n2", "n3"} {
		nodes = append(nodes, clustertest.Start(t, clustertest.Options{ID: id, LeaderLoop: recs[i+1].factory()}))
	}
	addVoters(t, nodes)
	// Adding a member can cost n1 its lease (see addVoters), and the
	// members elect again before n1 is made leader once more. Every loop
	// that began meanwhile began on its leader and ended with its
	// leadership; n1's loop of now is the one that goes on.
	for i, r := range recs {
		k := len(r.started)
		for range k {
			if s := <-r.started; !s.leader {
				t.Errorf("%s's leader loop started while %s was not leader", nodes[i].ID, nodes[i].ID)
			}
		}
		for range k {
			if err := recv(t, r.stopped, nodes[i].ID+"'s leader loop of an earlier term to stop"); !errors.Is(err, context.Canceled) {
				t.Errorf("%s's leader loop context ended with %v, want context.Canceled", nodes[i].ID, err)
			}
		}
	}
	acme := n1.Apply(createTenant("acme")).(*fsm.Tenant)
	for _, n := range nodes[1:] {
		clustertest.WaitFor(t, n.FSM, 10*time.Second, n.ID+" to apply tenant acme", func() bool {
			got, ok := n.FSM.Tenant("acme")
			return ok && got.CreateIndex == acme.CreateIndex
		})
		// A write on a follower is forwarded to the leader.
		if _, err := n.Node.Apply(ctx, createTenant("from-"+n.ID)); err != nil {
			t.Errorf("Apply on follower %s: %v", n.ID, err)
		}
		if _, ok := n1.FSM.Tenant("from-" + n.ID); !ok {
			t.Errorf("write on follower %s did not reach the leader", n.ID)
		}
	}
	for i, r := range recs[1:] {
		if len(r.started) != 0 {
			t.Errorf("follower %s ran the leader loop", nodes[i+1].ID)
		}
	}

	if err := n1.Node.RaftForTest().LeadershipTransfer().Error(); err != nil {
		t.Fatalf("leadership transfer: %v", err)
	}
	if err := recv(t, recs[0].stopped, "n1's leader loop to stop after losing leadership"); !errors.Is(err, context.Canceled) {
		t.Errorf("n1's leader loop context ended with %v, want context.Canceled", err)
	}
	var leader *clustertest.Node
	select {
	case s := <-recs[1].started:
		leader = nodes[1]
		if !s.leader {
			t.Error("n2's leader loop started while n2 was not leader")
		}
	case s := <-recs[2].started:
		leader = nodes[2]
		if !s.leader {
			t.Error("n3's leader loop started while n3 was not leader")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no new leader loop started after the leadership transfer")
	}
	if len(recs[0].started)+len(recs[1].started)+len(recs[2].started) != 0 {
		t.Error("more than one leader loop started after the transfer")
	}
	// The former leader forwards a write to the new leader.
	v, err := n1.Node.Apply(ctx, createTenant("via-former-leader"))
	if err != nil {
		t.Fatalf("Apply on the former leader: %v", err)
	}
	if err := n1.Node.ReadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if got, ok := n1.FSM.Tenant("via-former-leader"); !ok || got.CreateIndex != v.(*fsm.Tenant).CreateIndex {
		t.Errorf("forwarded write not applied on the former leader after a read barrier: %+v %v", got, ok)
	}
	globex := leader.Apply(createTenant("globex")).(*fsm.Tenant)
	clustertest.WaitFor(t, n1.FSM, 10*time.Second, "n1 to apply the new leader's write", func() bool {
		_, ok := n1.FSM.Tenant("globex")
		return ok
	})
	if globex.CreateIndex <= acme.CreateIndex {
		t.Errorf("new leader's entry index %d is not after %d", globex.CreateIndex, acme.CreateIndex)
	}
}

// commitLog records what an FSM writes to its store, across restarts.
type commitLog struct {
	mu       sync.Mutex
	batches  []*fsm.Batch
	restores int
}

func (l *commitLog) wrap(s fsm.Store) fsm.Store { return &recordingStore{Store: s, log: l} }

// since returns the batches committed after the first n.
func (l *commitLog) since(n int) []*fsm.Batch {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.batches[n:])
}

func (l *commitLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.batches)
}

func (l *commitLog) restoreCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.restores
}

// tenantWrites counts the batches that wrote tenant id.
func tenantWrites(bs []*fsm.Batch, id string) int {
	n := 0
	for _, b := range bs {
		for _, t := range b.Tenants {
			if t.ID == id {
				n++
			}
		}
	}
	return n
}

type recordingStore struct {
	fsm.Store
	log *commitLog
}

func (s *recordingStore) Commit(ctx context.Context, b *fsm.Batch) error {
	s.log.mu.Lock()
	s.log.batches = append(s.log.batches, b)
	s.log.mu.Unlock()
	return s.Store.Commit(ctx, b)
}

func (s *recordingStore) Restore(ctx context.Context, r io.Reader) error {
	s.log.mu.Lock()
	s.log.restores++
	s.log.mu.Unlock()
	return s.Store.Restore(ctx, r)
}

func TestRestartKeepsStateWithoutReplay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	commits := &commitLog{}
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true, WrapStore: commits.wrap})
	addr := n.Addr
	acme := n.Apply(createTenant("acme")).(*fsm.Tenant)
	job := n.Apply(&fsm.SubmitJob{Job: newJob(t, "acme", "720p30-h264", 0)}).(*fsm.Job)
	before := n.FSM.Flush()
	mark := commits.len()

	n.Stop()
	n.Restart()
	if n.Addr != addr {
		t.Fatalf("restarted on %s, want the same address %s", n.Addr, addr)
	}
	if got := n.FSM.Index(); got < before {
		t.Errorf("FSM index after restart = %d, want at least %d", got, before)
	}
	if got, ok := n.FSM.Tenant("acme"); !ok || got.Meta != acme.Meta {
		t.Errorf("tenant acme after restart = %+v, %v; want %+v", got, ok, acme.Meta)
	}
	if got, ok := n.FSM.ActiveJob(job.ID); !ok || got.State != fsm.JobQueued || got.Meta != job.Meta {
		t.Errorf("job after restart = %+v, %v; want the queued job at %+v", got, ok, job.Meta)
	}

	// A new entry is applied after every old one, so once it is back the
	// old entries have gone through the FSM again if they ever will.
	globex := n.Apply(createTenant("globex")).(*fsm.Tenant)
	if globex.CreateIndex <= before {
		t.Errorf("first entry after restart has index %d, want > %d", globex.CreateIndex, before)
	}
	_, err := n.Node.Apply(ctx, createTenant("acme"))
	wantCode(t, "CreateTenant acme after restart", err, fsm.CodeAlreadyExists)

	for _, b := range commits.since(mark) {
		if b.Index <= before {
			t.Errorf("after restart the FSM committed batch %d, at or below its index %d before: old entries re-applied", b.Index, before)
		}
		for _, j := range b.Jobs {
			if j.ID == job.ID {
				t.Errorf("after restart batch %d rewrote job %s", b.Index, j.ID)
			}
		}
	}
	all := commits.since(0)
	if got := tenantWrites(all, "acme"); got != 1 {
		t.Errorf("tenant acme was written %d times across the restart, want 1", got)
	}
	if got, _ := n.FSM.Tenant("acme"); got.Meta != acme.Meta {
		t.Errorf("tenant acme meta after restart and new writes = %+v, want %+v", got.Meta, acme.Meta)
	}
	if got := commits.restoreCount(); got != 0 {
		t.Errorf("store restored %d times on a plain restart, want 0", got)
	}
}

func TestRestoreFromSnapshotWhenStateFileLost(t *testing.T) {
	t.Parallel()
	commits := &commitLog{}
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true, WrapStore: commits.wrap})
	a := n.Apply(createTenant("a")).(*fsm.Tenant)
	n.Apply(createTenant("b"))
	job := n.Apply(&fsm.SubmitJob{Job: newJob(t, "a", "720p30-h264", 0)}).(*fsm.Job)
	snapIndex := n.FSM.Flush()
	if err := n.Node.Snapshot(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	c := n.Apply(createTenant("c")).(*fsm.Tenant) // only in the log

	n.Stop()
	if err := os.Remove(n.StatePath()); err != nil {
		t.Fatal(err)
	}
	mark := commits.len()
	n.Restart()
	if got := commits.restoreCount(); got != 1 {
		t.Fatalf("store restored %d times on start, want 1 (from the snapshot)", got)
	}
	for _, id := range []string{"a", "b"} {
		if _, ok := n.FSM.Tenant(id); !ok {
			t.Errorf("tenant %s missing after restart from the snapshot", id)
		}
	}
	if got, ok := n.FSM.ActiveJob(job.ID); !ok || got.Meta != job.Meta {
		t.Errorf("job after restart = %+v, %v; want it as submitted", got, ok)
	}
	if got := n.FSM.Index(); got < snapIndex {
		t.Errorf("FSM index after restart = %d, want at least the snapshot's %d", got, snapIndex)
	}
	// The entry after the snapshot comes back from the log.
	clustertest.WaitFor(t, n.FSM, 10*time.Second, "tenant c to be replayed from the log", func() bool {
		_, ok := n.FSM.Tenant("c")
		return ok
	})
	d := n.Apply(createTenant("d")).(*fsm.Tenant)
	if d.CreateIndex <= c.CreateIndex {
		t.Errorf("first new entry has index %d, want > %d", d.CreateIndex, c.CreateIndex)
	}
	after := commits.since(mark)
	if got := tenantWrites(after, "a") + tenantWrites(after, "b"); got != 0 {
		t.Errorf("tenants from the snapshot were re-applied from the log %d times", got)
	}
	if got := tenantWrites(after, "c"); got != 1 {
		t.Errorf("tenant c (after the snapshot) was applied %d times on restart, want 1", got)
	}
	if got, _ := n.FSM.Tenant("a"); got.Meta != a.Meta {
		t.Errorf("tenant a meta = %+v, want %+v", got.Meta, a.Meta)
	}
}

// TestIdleRestartDoesNotRestore checks that a snapshot whose index is a
// no-op entry (which Raft never hands to the FSM) does not make every
// restart restore the whole store.
func TestIdleRestartDoesNotRestore(t *testing.T) {
	t.Parallel()
	commits := &commitLog{}
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true, WrapStore: commits.wrap})
	n.Apply(createTenant("a"))
	n.Stop()
	n.Restart() // the new term's no-op and the leader's barrier follow the tenant
	// Snapshot until the snapshot covers the no-op (past the FSM's index):
	// Raft may take the first one before its FSM goroutine has seen it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := n.Node.Snapshot()
		snap, _ := strconv.ParseUint(n.Node.Stats()["last_snapshot_index"], 10, 64)
		if snap > n.FSM.Index() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot past the FSM index %d (last %d, %v)", n.FSM.Index(), snap, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	n.Stop()
	n.Restart()
	if got := commits.restoreCount(); got != 0 {
		t.Fatalf("store restored %d times on idle restarts, want 0", got)
	}
	if _, ok := n.FSM.Tenant("a"); !ok {
		t.Fatal("tenant a missing after restart")
	}
}

func TestReplayLogWhenStateFileLost(t *testing.T) {
	t.Parallel()
	rec := newLoopRecorder()
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true, LeaderLoop: rec.factory("a", "b")})
	recv(t, rec.started, "the first leader loop")
	n.Apply(createTenant("a"))
	n.Apply(createTenant("b"))
	before := n.FSM.Flush()

	n.Stop()
	recv(t, rec.stopped, "the first leader loop to stop")
	if err := os.Remove(n.StatePath()); err != nil {
		t.Fatal(err)
	}
	n.Restart()
	// The leader loop starts after a barrier, so it sees every entry the
	// log holds, replayed into the new, empty store.
	s := recv(t, rec.started, "the leader loop after restart")
	if !s.leader || s.index < before || !slices.Equal(s.tenants, []string{"a", "b"}) {
		t.Errorf("leader loop after restart saw leader=%v index %d tenants %v; want leader, index >= %d, tenants [a b]",
			s.leader, s.index, s.tenants, before)
	}
	if st, err := n.Store.Load(context.Background()); err != nil || len(st.Tenants) != 2 || st.Index < before {
		t.Errorf("rebuilt store: %+v, %v; want both tenants at index >= %d", st, err, before)
	}
}

func TestLoadOrCreateNodeID(t *testing.T) {
	t.Parallel()
	t.Run("Given", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "data") // not yet created
		id, err := cluster.LoadOrCreateNodeID(dir, "n1")
		if err != nil || id != "n1" {
			t.Fatalf("first call = %q, %v; want n1", id, err)
		}
		for _, want := range []string{"", "n1"} {
			if id, err := cluster.LoadOrCreateNodeID(dir, want); err != nil || id != "n1" {
				t.Errorf("LoadOrCreateNodeID(dir, %q) = %q, %v; want n1", want, id, err)
			}
		}
		if id, err := cluster.LoadOrCreateNodeID(dir, "n2"); err == nil {
			t.Errorf("LoadOrCreateNodeID(dir, n2) = %q, nil; want an error: the directory belongs to n1", id)
		}
		b, err := os.ReadFile(filepath.Join(dir, "node-id"))
		if err != nil || strings.TrimSpace(string(b)) != "n1" {
			t.Errorf("node-id file = %q, %v; want n1", b, err)
		}
	})
	t.Run("Generated", func(t *testing.T) {
		t.Parallel()
		dir1, dir2 := t.TempDir(), t.TempDir()
		id, err := cluster.LoadOrCreateNodeID(dir1, "")
		if err != nil || !regexp.MustCompile(`^node-[0-9a-f]{12}$`).MatchString(id) {
			t.Fatalf("generated ID = %q, %v; want node-<12 hex digits>", id, err)
		}
		for _, want := range []string{"", id} {
			if got, err := cluster.LoadOrCreateNodeID(dir1, want); err != nil || got != id {
				t.Errorf("LoadOrCreateNodeID(dir, %q) = %q, %v; want the stored %q", want, got, err, id)
			}
		}
		if other, err := cluster.LoadOrCreateNodeID(dir2, ""); err != nil || other == id {
			t.Errorf("second directory's ID = %q, %v; want a different new ID", other, err)
		}
	})
	t.Run("Unreadable", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, "node-id"), 0o700); err != nil {
			t.Fatal(err)
		}
		if id, err := cluster.LoadOrCreateNodeID(dir, "n1"); err == nil {
			t.Errorf("LoadOrCreateNodeID with node-id a directory = %q, nil; want an error", id)
		}
	})
}
