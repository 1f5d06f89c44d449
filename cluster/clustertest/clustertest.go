// Package clustertest starts real cluster nodes (hashicorp/raft over TCP
// on 127.0.0.1, a bolt store in a temporary directory) for tests.
package clustertest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
)

// Options configure a test node. The zero value is a node "node1" that
// does not bootstrap, in a new temporary directory, on a free port.
type Options struct {
	// ID is the node ID; default "node1".
	ID string
	// Dir is the data directory (state.db, node-id, raft/); default a new
	// t.TempDir().
	Dir string
	// Addr is the Raft address to bind; default "127.0.0.1:0".
	Addr string
	// Bootstrap forms a single-node cluster; Start then waits until the
	// node leads.
	Bootstrap bool
	// Scheduler runs a cluster.Scheduler as the leader loop.
	Scheduler bool
	// LeaderLoop, if set and Scheduler is false, is called on every
	// (re)start with that start's FSM and returns the leader loop.
	LeaderLoop func(f *fsm.FSM) func(ctx context.Context, n *cluster.Node)
	// WrapStore, if set, wraps the bolt store before the FSM gets it, to
	// observe what the FSM writes. It is called on every (re)start.
	WrapStore func(fsm.Store) fsm.Store
	// ClusterKey replaces Key, the default cluster key.
	ClusterKey []byte
	// DeadServerTimeout is passed to the node.
	DeadServerTimeout time.Duration
}

// Node is a bolt store, an FSM and a Raft node wired as `ffrtmp server`
// wires them. Its fields are replaced by Restart.
type Node struct {
	t    testing.TB
	opts Options
	log  *slog.Logger

	// ID and Dir are the node's identity and data directory.
	ID, Dir string
	// Addr is the Raft address: as configured, or, for a bootstrapped
	// node, the address it bound (so a restart reuses the port).
	Addr  string
	Store *bolt.Store
	FSM   *fsm.FSM
	Node  *cluster.Node

	stopped bool
}

// Start starts a node and stops it when the test ends.
func Start(t testing.TB, opts Options) *Node {
	t.Helper()
	if opts.ID == "" {
		opts.ID = "node1"
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	n := &Node{t: t, opts: opts, log: Logger(t).With("node", opts.ID), ID: opts.ID, Dir: opts.Dir, Addr: opts.Addr}
	t.Cleanup(n.Stop)
	n.start()
	return n
}

// StatePath is the FSM store's file.
func (n *Node) StatePath() string { return filepath.Join(n.Dir, "state.db") }

func (n *Node) start() {
	n.t.Helper()
	if err := n.tryStart(); err != nil {
		n.t.Fatalf("node %s: %v", n.ID, err)
	}
}

// TryRestart stops the node (if it runs) and starts it again as Restart
// does, but returns the error a start fails with instead of failing the
// test; the node is then stopped.
func (n *Node) TryRestart() error {
	n.t.Helper()
	n.Stop()
	return n.tryStart()
}

func (n *Node) tryStart() error {
	t := n.t
	t.Helper()
	id, err := cluster.LoadOrCreateNodeID(n.Dir, n.ID)
	if err != nil {
		return err
	}
	st, err := bolt.Open(n.StatePath())
	if err != nil {
		return err
	}
	var fst fsm.Store = st
	if n.opts.WrapStore != nil {
		fst = n.opts.WrapStore(st)
	}
	key := n.opts.ClusterKey
	if key == nil {
		key = Key
	}
	f, err := fsm.New(context.Background(), fsm.Config{Store: fst, Logger: n.log, AuditKey: cluster.AuditKey(key)})
	if err != nil {
		st.Close()
		return err
	}
	var loop func(context.Context, *cluster.Node)
	switch {
	case n.opts.Scheduler:
		loop = (&cluster.Scheduler{FSM: f, Logger: n.log}).Run
	case n.opts.LeaderLoop != nil:
		loop = n.opts.LeaderLoop(f)
	}
	peerTLS, err := cluster.PeerTLSFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	node, err := cluster.New(cluster.Config{
		TLS:               peerTLS,
		DeadServerTimeout: n.opts.DeadServerTimeout,
		NodeID:            id,
		DataDir:           filepath.Join(n.Dir, "raft"),
		RaftAddr:          n.Addr,
		Bootstrap:         n.opts.Bootstrap,
		FSM:               f,
		Logger:            n.log,
		LeaderLoop:        loop,
	})
	if err != nil {
		st.Close()
		return fmt.Errorf("start: %w", err)
	}
	n.Store, n.FSM, n.Node, n.stopped = st, f, node, false
	if n.opts.Bootstrap {
		n.WaitLeader()
		n.Addr, _ = node.Leader()
	}
	return nil
}

// Key is the cluster key of test clusters.
var Key = bytes.Repeat([]byte{7}, cluster.KeySize)

// PeerTLS returns node-to-node TLS derived from Key.
func PeerTLS(t testing.TB) *tls.Config {
	t.Helper()
	c, err := cluster.PeerTLSFromKey(Key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// WorkerTLS returns a worker's node port TLS that trusts the servers of
// test clusters (made from Key).
func WorkerTLS(t testing.TB) *tls.Config {
	t.Helper()
	hash, err := cluster.CAHash(PeerTLS(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.WorkerTLS(hash)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// WaitLeader waits until this node is the leader.
func (n *Node) WaitLeader() {
	n.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !n.Node.IsLeader() {
		if time.Now().After(deadline) {
			n.t.Fatalf("node %s: not leader after 10s (stats %v)", n.ID, n.Node.Stats())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_ = n.Node.WaitLeader(ctx) // returns early once any leader is known
		cancel()
	}
}

// Stop shuts the Raft node down and closes the store. It may be called
// more than once.
func (n *Node) Stop() {
	if n.stopped || n.Node == nil {
		return
	}
	n.stopped = true
	if err := n.Node.Shutdown(); err != nil {
		n.t.Errorf("node %s: shutdown: %v", n.ID, err)
	}
	if err := n.Store.Close(); err != nil {
		n.t.Errorf("node %s: close store: %v", n.ID, err)
	}
}

// Restart stops the node (if it runs) and starts it again with the same
// ID, data directory and Raft address.
func (n *Node) Restart() {
	n.t.Helper()
	n.Stop()
	n.start()
}

// Apply proposes c on this node and returns the FSM's response, failing
// the test on any error.
func (n *Node) Apply(c fsm.Command) any {
	n.t.Helper()
	resp, err := n.Node.Apply(context.Background(), c)
	if err != nil {
		n.t.Fatalf("node %s: apply %T: %v", n.ID, c, err)
	}
	return resp
}

// WaitFor waits until cond holds, re-checking it after every batch f
// applies, and fails the test if it does not hold within timeout.
func WaitFor(t testing.TB, f *fsm.FSM, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		_, changed := f.Watch()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

// Logger returns a logger that writes to t.Log until the test ends, and
// is silent after (Raft's goroutines may outlive a test by a moment).
func Logger(t testing.TB) *slog.Logger { return LoggerAt(t, slog.LevelInfo) }

// LoggerAt is Logger for records at level and above.
func LoggerAt(t testing.TB, level slog.Level) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}
