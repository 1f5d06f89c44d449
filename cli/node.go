package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
	"github.com/ffrtmp/ffrtmp/store"
	"github.com/ffrtmp/ffrtmp/worker"
)

// nodeConfig configures startNode.
type nodeConfig struct {
	DataDir           string
	StoreURL          string // "" for bolt://<DataDir>/state.db
	StoreMaxConns     int32
	NodeID            string
	RaftAddr          string
	Advertise         string
	APIAddr           string
	GossipAddr        string // "" runs no gossip member (no remote workers)
	GossipAdvertise   string
	Bootstrap         bool
	ClusterKey        []byte
	PeerTLS           *tls.Config // nil: derived from ClusterKey
	Policy            fsm.Policy
	DeadServerTimeout time.Duration
	WorkerLease       time.Duration
	Retention         time.Duration // 0: keep finished jobs forever
	Logger            *slog.Logger
	OnLeave           func()
	// ReadyGrace, Drain and ReadyRequireWorkers are server.Config's.
	ReadyGrace          time.Duration
	ReadyRequireWorkers int
	Drain               time.Duration
}

// runningNode is a store, FSM, Raft node and API server wired together.
type runningNode struct {
	store  fsm.Store
	fsm    *fsm.FSM
	node   *cluster.Node
	srv    *server.Server
	logs   *logRouter
	log    *slog.Logger
	gossip *cluster.Gossip
	// gossipRef is gossip for the worker protocol's handlers, which may
	// run before gossip is set.
	gossipRef atomic.Pointer[cluster.Gossip]
}

// startNode opens the store, loads the FSM, starts Raft with the
// scheduler and retention as leader loops, and builds the API server.
func startNode(ctx context.Context, cfg nodeConfig) (*runningNode, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	id, err := cluster.LoadOrCreateNodeID(cfg.DataDir, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	peerTLS := cfg.PeerTLS
	if peerTLS == nil {
		if peerTLS, err = cluster.PeerTLSFromKey(cfg.ClusterKey); err != nil {
			return nil, err
		}
	}
	storeURL := cfg.StoreURL
	if storeURL == "" {
		storeURL = store.BoltURL(filepath.Join(cfg.DataDir, "state.db"))
	}
	st, err := store.Open(ctx, storeURL, store.Options{MaxConns: cfg.StoreMaxConns})
	if err != nil {
		return nil, err
	}
	cfg.Logger.Info("store opened", "store", store.Redact(storeURL))
	metrics := server.NewMetrics()
	f, err := fsm.New(ctx, fsm.Config{Store: st, Logger: cfg.Logger, Observer: metrics, AuditKey: cluster.AuditKey(cfg.ClusterKey)})
	if err != nil {
		st.Close()
		return nil, err
	}
	sched := &cluster.Scheduler{FSM: f, Logger: cfg.Logger}
	retention := &cluster.Retention{FSM: f, Logger: cfg.Logger, Default: cfg.Retention}
	node, err := cluster.New(cluster.Config{
		NodeID: id, DataDir: filepath.Join(cfg.DataDir, "raft"), RaftAddr: cfg.RaftAddr,
		Advertise: cfg.Advertise, APIAddr: cfg.APIAddr, TLS: peerTLS, Bootstrap: cfg.Bootstrap,
		FSM: f, Logger: cfg.Logger, LeaderLoop: cluster.LeaderLoops(sched.Run, retention.Run), Metrics: metrics.Registry(),
		DeadServerTimeout: cfg.DeadServerTimeout, WorkerLease: cfg.WorkerLease,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	logs := &logRouter{}
	rn := &runningNode{store: st, fsm: f, node: node, logs: logs, log: cfg.Logger}
	srv, err := server.New(server.Config{
		FSM: f, Raft: node, Policy: cfg.Policy, Metrics: metrics, Logger: cfg.Logger, Logs: logs,
		ClusterKey: cfg.ClusterKey, OnLeave: cfg.OnLeave, CAHash: node.CAHash(), WorkerGossip: rn.workerGossip(cfg.ClusterKey),
		ReadyGrace: cfg.ReadyGrace, Drain: cfg.Drain, ReadyRequireWorkers: cfg.ReadyRequireWorkers,
	})
	if err != nil {
		node.Shutdown()
		st.Close()
		return nil, err
	}
	srv.MountWorkerRPC(node.HandleWorkerRPC)
	srv.MountClusterRPC(node.HandleRPC)
	rn.srv = srv
	if cfg.GossipAddr != "" {
		g, err := cluster.NewGossip(cluster.GossipConfig{
			Name: id, BindAddr: cfg.GossipAddr, Advertise: cfg.GossipAdvertise, Key: cluster.WorkerGossipKey(cfg.ClusterKey),
			Meta: cluster.GossipMeta{Role: cluster.RoleServer, NodeAddr: node.Addr(), APIAddr: urlHost(cfg.APIAddr)}, Logger: cfg.Logger,
		})
		if err != nil {
			rn.close()
			return nil, err
		}
		rn.gossip = g
		rn.gossipRef.Store(g)
		node.SetGossip(g)
		cfg.Logger.Info("gossip pool of servers and workers", "gossip", g.Addr())
	}
	return rn, nil
}

// workerGossip returns what a worker gets once its token is checked: the
// worker gossip key and the servers' gossip addresses (none without a
// gossip member).
func (n *runningNode) workerGossip(clusterKey []byte) func() ([]byte, []string) {
	key := cluster.WorkerGossipKey(clusterKey)
	return func() ([]byte, []string) {
		g := n.gossipRef.Load()
		if g == nil {
			return key, []string{}
		}
		addrs := append([]string{g.Addr()}, g.ServerGossipAddrs()...)
		slices.Sort(addrs)
		return key, slices.Compact(addrs)
	}
}

func (n *runningNode) close() {
	if n.gossip != nil {
		n.gossip.Leave()
	}
	if err := n.node.Shutdown(); err != nil {
		n.log.Error("shutdown raft", "error", err)
	}
	if err := n.store.Close(); err != nil {
		n.log.Error("close store", "error", err)
	}
}

// shutdownTimeout bounds how long a stopping node waits for its requests
// in flight (long polls and event streams end then).
const shutdownTimeout = 10 * time.Second

// serveAPI serves the node's API on ln (with TLS if certFile is set) until
// ctx ends, then calls drain, if set, while still serving, and shuts the
// server down gracefully: it stops listening, closes idle keep-alive
// connections and waits (up to shutdownTimeout) for requests in flight,
// whose responses close their connections.
func serveAPI(ctx context.Context, log *slog.Logger, ln net.Listener, h http.Handler, certFile, keyFile string, drain func()) error {
	// net/http's own errors (a TLS handshake that failed, a handler that
	// panicked) go to the node's log, in its format.
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: cluster.NewStdLogger(log, "http", slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() {
		if certFile != "" {
			errc <- hs.ServeTLS(ln, certFile, keyFile)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("http: %w", err)
	case <-ctx.Done():
	}
	if drain != nil {
		drain()
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	hs.Shutdown(sctx)
	return nil
}

// urlHost returns the host:port of an http(s) URL, or "" if it has none.
func urlHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

// loadOrCreateKey returns the cluster key stored at path, creating one
// the first time (dev mode keeps its own).
func loadOrCreateKey(path string) ([]byte, error) {
	k, err := cluster.ReadKeyFile(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return k, err
	}
	text := cluster.GenerateKey()
	if err := os.WriteFile(path, []byte(text+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write cluster key: %w", err)
	}
	return cluster.ParseKey(text)
}

// logRouter serves live job logs from the local worker, once there is one.
type logRouter struct {
	w atomic.Pointer[worker.Worker]
}

func (l *logRouter) set(w *worker.Worker) { l.w.Store(w) }

// JobLog implements server.LogSource.
func (l *logRouter) JobLog(ctx context.Context, workerID, jobID string) (string, error) {
	w := l.w.Load()
	if w == nil {
		return "", fmt.Errorf("no local worker")
	}
	return w.JobLog(ctx, workerID, jobID)
}

// listenAPI creates the data directory and listens for the API.
func listenAPI(dataDir, addr string) (net.Listener, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}
