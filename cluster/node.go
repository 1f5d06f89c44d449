package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Errors returned by Node.
var (
	// ErrNoLeader is returned when a write cannot be committed because the
	// cluster has no leader (yet).
	ErrNoLeader = errors.New("cluster has no leader")
	// ErrNotLeader is returned for a leader-only operation on a follower.
	ErrNotLeader = errors.New("this node is not the leader")
	// ErrUnknownOutcome is returned for a write that may or may not have
	// been committed (leadership was lost while it was in flight).
	ErrUnknownOutcome = errors.New("leadership changed while the write was in flight; it may or may not have been applied")
)

// Raft tuning. A snapshot is taken after SnapshotThreshold new entries (or
// every SnapshotInterval if at least that many are pending), and
// TrailingLogs entries are kept after it so that a briefly lagging
// follower catches up from the log rather than from a snapshot. Apply
// batches up to MaxAppendEntries commands into one FSM batch (one store
// transaction).
const (
	SnapshotThreshold = 8192
	SnapshotInterval  = 2 * time.Minute
	TrailingLogs      = 10240
	MaxAppendEntries  = 512
	CommitTimeout     = 5 * time.Millisecond
	applyTimeout      = 10 * time.Second
	barrierTimeout    = 30 * time.Second
)

// Config configures a Node.
type Config struct {
	// NodeID is this node's stable Raft ID.
	NodeID string
	// DataDir holds raft.db (the log) and snapshots/.
	DataDir string
	// RaftAddr is the TCP address to bind for Raft and node RPC.
	RaftAddr string
	// Advertise is the address other nodes reach this one at; defaults to
	// the bound address.
	Advertise string
	// TLS is the mutual TLS configuration of node-to-node traffic (see
	// PeerTLSFromKey). Required.
	TLS *tls.Config
	// APIAddr is this node's public API URL, reported in its status.
	APIAddr string
	// Bootstrap forms a single-node cluster if there is no Raft state yet
	// (dev mode). Multi-node clusters use Start's join and bootstrap-expect.
	Bootstrap bool
	// FSM is the state machine.
	FSM *fsm.FSM
	// Logger receives Raft and node logs.
	Logger *slog.Logger
	// LeaderLoop runs while this node is leader, after a barrier: it is
	// started on gaining leadership and its context is canceled on losing
	// it. It must return promptly once ctx is done.
	LeaderLoop func(ctx context.Context, n *Node)
	// Metrics, if set, receives the node's Raft metrics.
	Metrics prometheus.Registerer
	// DeadServerTimeout, if positive, lets the leader remove a server it
	// has not heard from for that long, when the remaining servers still
	// form a quorum of the smaller configuration.
	DeadServerTimeout time.Duration
	// WorkerLease is how long a worker stays up without a heartbeat
	// (default DefaultWorkerLease).
	WorkerLease time.Duration
}

// Node is one member of the Raft cluster.
type Node struct {
	cfg       Config
	log       *slog.Logger
	raft      *raft.Raft
	mux       *mux
	trans     *raft.NetworkTransport
	logStore  *raftboltdb.BoltStore
	snaps     *refSnapshots
	rpc       *http.Client
	rpcServer *http.Server
	notifyCh  chan bool
	stop      chan struct{}
	// gossipLeft is nudged when a gossip member leaves.
	gossipLeft chan struct{}
	wg         sync.WaitGroup
	closeOnce  sync.Once
	metrics    nodeMetrics

	peersMu sync.Mutex
	peers   map[string]string // announced by notify, for bootstrap-expect

	rpcMux *http.ServeMux
	// workerMux serves the node port's worker connections: only what
	// HandleWorkerRPC adds (the worker protocol).
	workerMux    *http.ServeMux
	workerServer *http.Server
	leases       leases
	gossip       atomic.Pointer[Gossip]

	// submits is the group commit of submits (see batch.go).
	submits *batcher
	// forwards batches the other writes a follower forwards (forward.go).
	forwards *batcher
	// withoutApplyMany makes the node answer /rpc/apply-many as a binary
	// from before it did (tests of a rolling upgrade).
	withoutApplyMany atomic.Bool

	ident           identity     // cluster ID (see join.go)
	reads           readIndexes  // batched read barriers (see readindex.go)
	leaseChecks     readBatcher  // batched leadership checks of heartbeats (workers.go)
	proto           protocolGate // command types every server can apply (see protocol.go)
	speaks          atomic.Int32 // the protocol this node reports: fsm.Protocol but in tests
	waitsToBeJoined atomic.Bool  // started without join addresses or bootstrap-expect
	// leaderLost is when this node lost its leader (unix ns), or
	// leaderHeld, or leaderNever (see LeaderlessFor).
	leaderLost atomic.Int64
}

// New starts a Raft node. If the FSM's store is behind the newest
// snapshot (a lost or replaced state file), the snapshot is restored first.
func New(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TLS == nil {
		return nil, errors.New("cluster: node-to-node TLS configuration is required")
	}
	n := &Node{cfg: cfg, log: cfg.Logger, notifyCh: make(chan bool, 16), stop: make(chan struct{}),
		peers: make(map[string]string), gossipLeft: make(chan struct{}, 1)}
	n.proto.recheck = make(chan struct{}, 1)
	n.speaks.Store(fsm.Protocol)
	n.submits = newBatcher(n.flushSubmits, maxBatchItems, maxBatchBytes, batchesInFlight)
	n.forwards = newBatcher(n.flushForwards, maxForwardItems, maxBatchBytes, forwardsInFlight)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if err := n.ident.load(cfg.DataDir); err != nil {
		return nil, err
	}
	hlog := NewHCLogger(cfg.Logger, "raft")

	ls, err := openLogStore(filepath.Join(cfg.DataDir, "raft.db"))
	if err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	n.logStore = ls
	fss, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hlog)
	if err != nil {
		ls.Close()
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	// A local store's snapshots are references to its file (refsnapshots.go).
	local, _ := cfg.FSM.Store().(fsm.LocalStore)
	snaps := &refSnapshots{FileSnapshotStore: fss, local: local}
	var raftFSM raft.FSM = cfg.FSM
	if local != nil {
		raftFSM = refFSM{cfg.FSM}
	}
	n.snaps = snaps
	if err := restoreIfBehind(n.log, cfg.DataDir, cfg.FSM, snaps, ls); err != nil {
		ls.Close()
		return nil, err
	}

	m, err := newMux(cfg.RaftAddr, cfg.Advertise, cfg.TLS, cfg.Logger)
	if err != nil {
		ls.Close()
		return nil, fmt.Errorf("raft transport: %w", err)
	}
	n.mux = m
	// MaxRPCsInFlight 1 turns off hashicorp/raft's pipelined replication.
	// With pipelining, a follower's refusal (a newer term, a log mismatch)
	// ends the pipeline's decoder while the sender may still queue one more
	// request on the unbuffered in-flight channel; the sender then blocks
	// for good, replication to that follower stops while heartbeats go on,
	// and Raft's Shutdown never returns (hashicorp/raft issue 612; seen here
	// as a node that hung in Shutdown after a leadership transfer). Raft's
	// own documentation says pipelining gains little once entries are
	// batched, as they are here (BatchApplyCh, MaxAppendEntries).
	n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: &raftLayer{chanListener: m.raft, m: m}, MaxPool: 4, Timeout: 10 * time.Second, Logger: hlog,
		MaxRPCsInFlight: 1,
	})
	n.rpc = newRPCClient(cfg.TLS)

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hlog
	rc.SnapshotThreshold = SnapshotThreshold
	rc.SnapshotInterval = SnapshotInterval
	rc.TrailingLogs = TrailingLogs
	rc.MaxAppendEntries = MaxAppendEntries
	// An idle leader tells followers of new commits after CommitTimeout
	// (hashicorp/raft's default is 50 ms); a short one lets a follower
	// answer a forwarded write soon, at the cost of a small idle
	// AppendEntries every few milliseconds.
	rc.CommitTimeout = CommitTimeout
	rc.BatchApplyCh = true
	rc.NotifyCh = n.notifyCh
	// The FSM is durable: its store already holds everything up to its
	// index, so Raft need not restore the snapshot at start; entries the
	// store already has are skipped by index.
	rc.NoSnapshotRestoreOnStart = true

	if cfg.Bootstrap {
		has, err := raft.HasExistingState(ls, ls, snaps)
		if err != nil {
			n.closeTransport()
			return nil, fmt.Errorf("check raft state: %w", err)
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{
				ID: rc.LocalID, Address: n.trans.LocalAddr(), Suffrage: raft.Voter,
			}}}
			err := n.ident.set(cfg.DataDir, randomHex(8))
			if err == nil {
				err = raft.BootstrapCluster(rc, ls, ls, snaps, n.trans, conf)
			}
			if err != nil {
				n.closeTransport()
				return nil, fmt.Errorf("bootstrap cluster: %w", err)
			}
		}
	}

	// Raft reads back the entries it just appended (logCache).
	logs := newLogCache(ls, logCacheEntries, logCacheBytes)
	r, err := raft.NewRaft(rc, raftFSM, logs, ls, snaps, n.trans)
	if err != nil {
		n.closeTransport()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	n.raft = r
	n.rpcMux = n.rpcHandler()
	n.rpcServer = &http.Server{Handler: n.rpcMux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: NewStdLogger(cfg.Logger, "http", slog.LevelWarn)}
	go n.rpcServer.Serve(m.rpc)
	n.workerMux = http.NewServeMux()
	n.workerServer = &http.Server{Handler: n.workerMux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: NewStdLogger(cfg.Logger, "http", slog.LevelWarn)}
	go n.workerServer.Serve(m.workerRPC)
	n.metrics.init(n)
	n.wg.Add(1)
	go n.monitorLeadership()
	return n, nil
}

// SetGossip gives the node its member of the gossip pool, where workers
// find the servers; a member leaving only nudges the leader's lease check.
func (n *Node) SetGossip(g *Gossip) {
	n.gossip.Store(g)
	g.OnLeave(func(string) {
		select {
		case n.gossipLeft <- struct{}{}:
		default:
		}
	})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.joinServerGossip(g)
	}()
}

// joinServerGossip keeps this node's gossip member joined with every other
// server of the Raft configuration, so that all servers share one pool
// and every server sees every worker, whichever server a worker joined.
func (n *Node) joinServerGossip(g *Gossip) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		ms, err := n.Members(ctx, true)
		cancel()
		if err == nil {
			known := g.Servers()
			for _, m := range ms {
				if m.Status == nil || m.ID == n.cfg.NodeID || m.Status.GossipAddr == "" || slices.Contains(known, m.Addr) {
					continue
				}
				if _, err := g.Join([]string{m.Status.GossipAddr}); err != nil {
					n.log.Debug("join server gossip", "node", m.ID, "addr", m.Status.GossipAddr, "error", err)
				}
			}
		}
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
	}
}

// HandleRPC adds a handler to node RPC (reached over the node port's
// mutual TLS, so only servers, holders of the cluster key or of a peer
// certificate, can call it).
func (n *Node) HandleRPC(pattern string, h http.Handler) { n.rpcMux.Handle(pattern, h) }

// HandleWorkerRPC adds a handler for workers: node port callers without a
// server certificate reach only the handlers added here, and h must
// authenticate each request itself (a worker token).
func (n *Node) HandleWorkerRPC(pattern string, h http.Handler) { n.workerMux.Handle(pattern, h) }

// CAHash returns the hash of the cluster CA that workers pin this node's
// certificate by (see CAHash).
func (n *Node) CAHash() string {
	h, err := CAHash(n.cfg.TLS)
	if err != nil {
		n.log.Error("cluster CA hash", "error", err)
	}
	return h
}

// Addr returns the address other nodes reach this one at.
func (n *Node) Addr() string { return n.mux.advertise.String() }

// ID returns this node's ID.
func (n *Node) ID() string { return n.cfg.NodeID }

func (n *Node) closeTransport() {
	n.trans.Close()
	n.mux.close()
	n.logStore.Close()
}

// fsmBehind reports whether an entry the FSM applies lies in
// (applied, snapshot]; a compacted entry counts as one.
func fsmBehind(applied, snapshot uint64, logs raft.LogStore) bool {
	for i := applied + 1; i <= snapshot; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			return true
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return true
		}
	}
	return false
}

// monitorLeadership starts the leader loop when this node becomes leader
// and stops it when it loses leadership.
func (n *Node) monitorLeadership() {
	defer n.wg.Done()
	var running *leaderRun
	revoke := func() {
		if running != nil {
			running.stop()
			running = nil
			n.log.Info("leader loop stopped")
		}
	}
	defer revoke()
	for {
		select {
		case <-n.stop:
			return
		case isLeader := <-n.notifyCh:
			switch {
			case !isLeader:
				revoke()
			case running == nil:
				running = startLeaderRun(n.leaderLoop)
			}
		}
	}
}

// leaderRun is one term of leader-only work.
type leaderRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func startLeaderRun(fn func(context.Context)) *leaderRun {
	ctx, cancel := context.WithCancel(context.Background())
	r := &leaderRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		fn(ctx)
	}()
	return r
}

func (r *leaderRun) stop() {
	r.cancel()
	<-r.done
}

// leaderLoop establishes leadership with a barrier, so that the FSM has
// applied (and its store committed) everything earlier leaders committed,
// then runs the configured leader-only work until ctx ends.
func (n *Node) leaderLoop(ctx context.Context) {
	for {
		err := n.raft.Barrier(barrierTimeout).Error()
		if err == nil {
			// The commit index, not Raft's applied index: Raft hands a
			// batch to the FSM before it records the batch as applied,
			// so the barrier can return while AppliedIndex is older.
			err = n.waitApplied(ctx, n.raft.CommitIndex())
		}
		if err == nil {
			break
		}
		n.log.Error("leader barrier failed", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	n.log.Info("leader loop started", "index", n.cfg.FSM.Index())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		n.reapDeadServers(ctx)
	}()
	go func() {
		defer wg.Done()
		n.watchProtocol(ctx)
	}()
	go func() {
		defer wg.Done()
		n.monitorWorkers(ctx)
	}()
	if n.cfg.LeaderLoop != nil {
		n.cfg.LeaderLoop(ctx, n)
	}
	wg.Wait()
}

// writeHold is how long a write waits for a leader (an election, a
// leadership transfer) before it fails with ErrNoLeader.
const writeHold = 5 * time.Second

// Apply proposes a command, with the actor ctx carries if any, and
// returns the FSM's response: the changed
// object, or the *fsm.Error that refused the command. On a follower the
// command is forwarded to the leader, and Apply returns once this node has
// applied it too, so a client reads its own write from any node. While
// there is no leader the write is held for up to writeHold (each new
// leader starts the hold anew, up to writeHoldMax: see leaderHold), then
// fails with ErrNoLeader. A write whose outcome is unknown (leadership lost
// after it was sent) is sent again, to the new leader, when applying it
// twice is harmless (Resendable), and held for a leader as above: the
// caller gets the new leader's answer. Any other such write fails with
// ErrUnknownOutcome.
func (n *Node) Apply(ctx context.Context, c fsm.Command) (any, error) {
	if sj, ok := c.(*fsm.SubmitJob); ok {
		// Submits share entries (group commit, see batch.go).
		v, errs := n.SubmitAll(ctx, []*fsm.SubmitJob{sj})
		return v[0], errs[0]
	}
	// The actor of an API request (fsm.WithActor) travels in the entry's
	// envelope, so the FSM writes its audit record; forwarding sends the
	// same bytes.
	data, err := fsm.EncodeAs(c, fsm.ActorFrom(ctx))
	if err != nil {
		return nil, err
	}
	start := time.Now()
	defer func() { n.metrics.apply.Observe(time.Since(start).Seconds()) }()
	hold := n.newHold()
	defer hold.stop()
	var unknown error // the first unknown outcome of a resent write
	for {
		if err := ctx.Err(); err != nil {
			return nil, heldError(unknown, err)
		}
		var v any
		if n.IsLeader() {
			v, _, err = n.applyLocal(data, timeoutOf(ctx))
		} else if addr, _ := n.Leader(); addr != "" {
			v, _, err = n.forwardWrite(ctx, data)
		} else {
			err = ErrNoLeader
		}
		if err == nil || isDomainError(err) {
			if isOutcomeOnly(ctx) {
				v = nil
			}
			return v, err
		}
		if resend(err, data) {
			unknown = n.noteResend(unknown, err, hold)
		} else if !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrNoLeader) {
			return nil, failedAfter(unknown, err)
		}
		// Nothing was applied, or it may be applied twice: wait for a
		// leader and try again.
		hold.renew()
		select {
		case <-ctx.Done():
			return nil, heldError(unknown, ctx.Err())
		case <-hold.expired():
			return nil, heldError(unknown, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func timeoutOf(ctx context.Context) time.Duration {
	timeout := applyTimeout
	if dl, ok := ctx.Deadline(); ok {
		// Raft takes a timeout, not a context; it bounds only the wait
		// to enqueue, so the command may still commit after we return.
		timeout = max(time.Millisecond, min(timeout, time.Until(dl)))
	}
	return timeout
}

// propose validates an encoded command with fsm.DecodeCommand and, if it
// passes, appends it to the Raft log. Every proposal of this node goes
// through it, but a batch of submits, whose items are validated one by
// one (proposeBatch): what enters the log decodes, Apply takes it without
// panicking and every store can write it. A refusal is the validation's
// *fsm.Error, unwrapped (a domain error), and nothing is proposed.
func (n *Node) propose(data []byte, timeout time.Duration) (raft.ApplyFuture, error) {
	c, err := fsm.DecodeCommand(data)
	if err != nil {
		return nil, err
	}
	if err := n.gate(c); err != nil {
		return nil, err
	}
	return n.raft.Apply(data, timeout), nil
}

// applyLocal proposes an encoded command on this node, which must lead.
// Errors are classified: a *fsm.Error refused the command (before or in
// the log); ErrNotLeader and ErrNoLeader mean nothing was appended;
// ErrUnknownOutcome means it may have been.
func (n *Node) applyLocal(data []byte, timeout time.Duration) (any, uint64, error) {
	f, err := n.propose(data, timeout)
	if err != nil {
		return nil, 0, err
	}
	return awaitApply(f)
}

// awaitApply waits for a proposal and classifies its outcome as
// applyLocal does.
func awaitApply(f raft.ApplyFuture) (any, uint64, error) {
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return nil, 0, fmt.Errorf("apply: %w: %w", ErrNotLeader, err)
		case errors.Is(err, raft.ErrEnqueueTimeout):
			return nil, 0, fmt.Errorf("apply: %w: %w", ErrNoLeader, err)
		case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown):
			return nil, 0, fmt.Errorf("apply: %w: %w", ErrUnknownOutcome, err)
		}
		return nil, 0, fmt.Errorf("apply: %w", err)
	}
	resp := f.Response()
	if err, ok := resp.(error); ok {
		if errors.Is(err, fsm.ErrAbandoned) {
			// Committed, but this node stops before applying it.
			return nil, f.Index(), fmt.Errorf("apply: %w: %w", ErrUnknownOutcome, err)
		}
		return nil, f.Index(), err
	}
	return resp, f.Index(), nil
}

// forwardApplyWait bounds how long a forwarded write waits for this node
// to apply it; past it the write still succeeds (the leader applied it).
const forwardApplyWait = time.Second

// forward sends an encoded command to the leader in a call of its own
// (forwardWrite batches them), then waits as forwardWrite does.
func (n *Node) forward(ctx context.Context, leader string, data []byte) (any, uint64, error) {
	var resp applyResponse
	if err := n.rpcCall(ctx, leader, "POST", "/rpc/apply", data, &resp); err != nil {
		if isDomainError(err) {
			return nil, 0, err // refused by the leader's validation: not proposed
		}
		if sentNothing(err) {
			return nil, 0, fmt.Errorf("forward: %w: %w", ErrNoLeader, err)
		}
		return nil, 0, fmt.Errorf("forward: %w: %w", ErrUnknownOutcome, err)
	}
	v, err := decodeResponse(&resp)
	n.awaitForwarded(ctx, resp.Index)
	return v, resp.Index, err
}

// awaitForwarded waits (briefly) until this node has applied the entry at
// index, which the leader committed for a forwarded write, so that the
// client reads its own write here. Followers learn of a commit within
// CommitTimeout; past forwardApplyWait the write still succeeds.
func (n *Node) awaitForwarded(ctx context.Context, index uint64) {
	if index == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, forwardApplyWait)
	defer cancel()
	if err := n.cfg.FSM.WaitIndex(wctx, index); err != nil && ctx.Err() == nil {
		n.log.Debug("forwarded write not yet applied here", "index", index)
	}
}

// waitApplied waits until the FSM on this node has applied everything up
// to index. Raft's applied index runs ahead of the FSM (it counts entries
// handed to the FSM, not finished), and the FSM's own index skips entries
// it never sees (no-ops, barriers), so both are consulted: done when the
// FSM reached index, or when Raft has and no FSM entry lies between.
func (n *Node) waitApplied(ctx context.Context, index uint64) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		fi, changed := n.cfg.FSM.Watch()
		if fi >= index || (n.raft.AppliedIndex() >= index && !fsmBehind(fi, index, n.logStore)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d: %w", index, ctx.Err())
		case <-changed:
		case <-t.C:
		}
	}
}

// ApplyAll proposes commands together (Raft batches them) and returns the
// response or error for each.
func (n *Node) ApplyAll(ctx context.Context, cmds []fsm.Command) ([]any, []error) {
	futures := make([]raft.ApplyFuture, len(cmds))
	errs := make([]error, len(cmds))
	resps := make([]any, len(cmds))
	actor := fsm.ActorFrom(ctx)
	for i, c := range cmds {
		data, err := fsm.EncodeAs(c, actor)
		if err == nil {
			futures[i], err = n.propose(data, applyTimeout)
		}
		errs[i] = err
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		if err := f.Error(); err != nil {
			errs[i] = fmt.Errorf("apply: %w", err)
			continue
		}
		if err, ok := f.Response().(error); ok {
			errs[i] = err
			continue
		}
		resps[i] = f.Response()
	}
	return resps, errs
}

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the leader's Raft address and ID, empty if none.
func (n *Node) Leader() (addr, id string) {
	a, i := n.raft.LeaderWithID()
	return string(a), string(i)
}

// WaitLeader blocks until the cluster has a leader, or ctx ends.
func (n *Node) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if a, _ := n.Leader(); a != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for leader: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Stats returns Raft's statistics (state, term, indexes…).
func (n *Node) Stats() map[string]string { return n.raft.Stats() }

// Snapshot takes a Raft snapshot now.
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Shutdown stops the leader loop, node RPC and Raft, and closes the log.
func (n *Node) Shutdown() error {
	var err error
	n.closeOnce.Do(func() {
		close(n.stop)
		n.wg.Wait()
		// Raft's shutdown waits for the FSM, and the FSM for its store:
		// a store that does not answer (a database that is down) would
		// hold the node's stop until it came back. Past storeStopWait
		// the FSM gives it up; what it did not commit is in the Raft
		// log, and the next start applies it again.
		abandon := time.AfterFunc(storeStopWait, func() {
			n.log.Warn("the store has not taken the last entries; stopping without them, the next start applies them again",
				"wait", storeStopWait, "store_down", n.cfg.FSM.StoreDown())
			n.cfg.FSM.Abandon()
		})
		if e := n.raft.Shutdown().Error(); e != nil {
			err = fmt.Errorf("shutdown raft: %w", e)
		}
		// The last batch's store commit may still run: its caller closes
		// the store next.
		n.cfg.FSM.Flush()
		abandon.Stop()
		n.rpcServer.Close()
		n.workerServer.Close()
		n.trans.Close()
		n.mux.close()
		if e := n.logStore.Close(); e != nil && err == nil {
			err = fmt.Errorf("close raft log: %w", e)
		}
	})
	return err
}

// openLogStore opens the Raft log at path. Raft deletes the entries
// behind each snapshot but TrailingLogs, so a log that has run for a
// while holds about as many free pages as live ones. With bbolt's
// defaults every commit writes the whole list of free pages (8 bytes
// each) and searches it as an array: an append of one 16 KiB entry to
// such a log wrote 210 KB (BenchmarkLogAfterCompaction). NoFreelistSync
// leaves the list out of the file (bbolt rebuilds it by walking the tree
// when it opens the file, and a file written either way opens the other
// way), and the map freelist finds a run of free pages without scanning,
// as etcd opens its bbolt file.
func openLogStore(path string) (*raftboltdb.BoltStore, error) {
	return raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	}})
}

// storeStopWait bounds how long Shutdown waits for the FSM's store.
var storeStopWait = 10 * time.Second

// readyLag is how many entries a node may trail the leader's commit
// index and still count as caught up (entries in flight under load).
const readyLag = 256

// LoadOrCreateNodeID returns the node ID stored in dataDir/node-id, or
// stores and returns want (or a new random ID if want is "").
func LoadOrCreateNodeID(dataDir, want string) (string, error) {
	path := filepath.Join(dataDir, "node-id")
	b, err := os.ReadFile(path)
	if err == nil && len(bytes.TrimSpace(b)) == 0 {
		return "", fmt.Errorf("node id file %s is empty", path)
	}
	if err == nil {
		id := strings.TrimSpace(string(b))
		if want != "" && want != id {
			return "", fmt.Errorf("data dir %s belongs to node %q, not %q", dataDir, id, want)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read node id: %w", err)
	}
	if want == "" {
		r := make([]byte, 6)
		rand.Read(r)
		want = "node-" + hex.EncodeToString(r)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data dir: %w", err)
	}
	// Write and rename, so that a crash never leaves an empty file.
	if err := os.WriteFile(path+".tmp", []byte(want+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write node id: %w", err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return "", fmt.Errorf("write node id: %w", err)
	}
	return want, nil
}
