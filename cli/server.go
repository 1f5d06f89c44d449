package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store"
)

func envs(name string) []string { return []string{"FFRTMP_" + name} }

// clusterKeyFlags are how a command gets the cluster key.
var clusterKeyFlags = []cli.Flag{
	&cli.StringFlag{Name: "cluster-key", EnvVars: envs("CLUSTER_KEY"), Usage: "cluster key (prefer --cluster-key-file: flags show in ps)"},
	&cli.StringFlag{Name: "cluster-key-file", EnvVars: envs("CLUSTER_KEY_FILE"), Usage: "file holding the cluster key"},
}

// clusterKey reads the cluster key from --cluster-key or --cluster-key-file.
func clusterKey(c *cli.Context) ([]byte, error) {
	switch {
	case c.String("cluster-key") != "" && c.String("cluster-key-file") != "":
		return nil, errors.New("give --cluster-key or --cluster-key-file, not both")
	case c.String("cluster-key") != "":
		return cluster.ParseKey(c.String("cluster-key"))
	case c.String("cluster-key-file") != "":
		return cluster.ReadKeyFile(c.String("cluster-key-file"))
	}
	return nil, errors.New("a cluster key is required: --cluster-key-file FILE (make one with `ffrtmp keygen`)")
}

// peerTLSFlags are how servers and workers get operator certificates for
// the node port. Every server and worker of a cluster uses them, or none
// does.
var peerTLSFlags = []cli.Flag{
	&cli.StringFlag{Name: "peer-tls-cert", EnvVars: envs("PEER_TLS_CERT"), Usage: "operator certificate for the node port's mutual TLS, of servers and workers (default: TLS derived from the cluster key)"},
	&cli.StringFlag{Name: "peer-tls-key", EnvVars: envs("PEER_TLS_KEY"), Usage: "key of --peer-tls-cert"},
	&cli.StringFlag{Name: "peer-tls-ca", EnvVars: envs("PEER_TLS_CA"), Usage: "CA that signs every server's and worker's --peer-tls-cert"},
}

// peerTLS returns the node port's TLS configuration from the
// --peer-tls-* flags, or nil (TLS derived from the cluster key) when none
// is set.
func peerTLS(c *cli.Context) (*tls.Config, error) {
	cert, key, ca := c.String("peer-tls-cert"), c.String("peer-tls-key"), c.String("peer-tls-ca")
	if cert == "" && key == "" && ca == "" {
		return nil, nil
	}
	return cluster.PeerTLSFromFiles(cert, key, ca)
}

func serverCommand() *cli.Command {
	return &cli.Command{
		Name:  "server",
		Usage: "run a control-plane node: Raft member, HTTP API, scheduler while leader",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "node-id", EnvVars: envs("NODE_ID"), Usage: "stable node ID (default: generated once and kept in the data dir)"},
			&cli.StringFlag{Name: "data-dir", EnvVars: envs("DATA_DIR"), Value: "/var/lib/ffrtmp", Usage: "state, Raft log and snapshots"},
			&cli.StringFlag{Name: "raft-addr", EnvVars: envs("RAFT_ADDR"), Value: "127.0.0.1:7071", Usage: "bind address for Raft and node-to-node RPC"},
			&cli.StringFlag{Name: "advertise", EnvVars: envs("ADVERTISE"), Usage: "Raft address other nodes reach this one at (default: --raft-addr)"},
			&cli.StringFlag{Name: "http-addr", EnvVars: envs("HTTP_ADDR"), Value: "127.0.0.1:7070", Usage: "API listen address"},
			&cli.StringFlag{Name: "gossip-addr", EnvVars: envs("GOSSIP_ADDR"), Usage: "gossip address (TCP and UDP) that workers join (default: the --raft-addr host, port 7072; \"off\" for none)"},
			&cli.StringFlag{Name: "gossip-advertise", EnvVars: envs("GOSSIP_ADVERTISE"), Usage: "gossip address others reach this node at (default: --gossip-addr)"},
			&cli.StringSliceFlag{Name: "join", EnvVars: envs("JOIN"), Usage: "Raft addresses of other nodes (comma-separated or repeated)"},
			&cli.IntFlag{Name: "bootstrap-expect", EnvVars: envs("BOOTSTRAP_EXPECT"), Usage: "servers that form a new cluster together (e.g. 3)"},
			&cli.StringFlag{Name: "store", Usage: "state store: bolt:///path/state.db (default <data-dir>/state.db) or postgres://… shared by all nodes (env FFRTMP_STORE)"},
			&cli.StringFlag{Name: "store-file", Usage: "file holding the store URL, so a password stays out of ps (env FFRTMP_STORE_FILE)"},
			&cli.IntFlag{Name: "store-max-conns", EnvVars: envs("STORE_MAX_CONNS"), DefaultText: "pgx's", Usage: "PostgreSQL connection pool size"},
			&cli.StringFlag{Name: "tls-cert", EnvVars: envs("TLS_CERT"), Usage: "serve the API over HTTPS with this certificate"},
			&cli.StringFlag{Name: "tls-key", EnvVars: envs("TLS_KEY"), Usage: "key of --tls-cert"},
			&cli.StringSliceFlag{Name: "allow-host", EnvVars: envs("ALLOW_HOSTS"), Usage: "hosts network inputs and RTMP outputs may reach (repeatable)"},
			&cli.DurationFlag{Name: "worker-lease", EnvVars: envs("WORKER_LEASE"), Value: cluster.DefaultWorkerLease, Usage: "how long a worker stays up without a heartbeat; workers stop their jobs after two thirds of it (at least 1s)"},
			&cli.DurationFlag{Name: "retention", EnvVars: envs("RETENTION"), Value: cluster.DefaultRetention, Usage: "keep a tenant's finished jobs this long, unless the tenant sets its own; the leader's value counts (0: forever)"},
			&cli.DurationFlag{Name: "dead-server-timeout", EnvVars: envs("DEAD_SERVER_TIMEOUT"), Value: 24 * time.Hour, Usage: "remove a server unreachable this long, if quorum stays safe (0: never)"},
			&cli.DurationFlag{Name: "ready-grace", EnvVars: envs("READY_GRACE"), Value: DefaultReadyGrace, Usage: "how long /ready stays 200 after this node lost its leader, while it holds writes for the election (0: not ready at once)"},
			&cli.IntFlag{Name: "ready-require-workers", EnvVars: envs("READY_REQUIRE_WORKERS"), Usage: "/ready answers 503 unless at least this many workers are up (0: worker connectivity is only reported, as a warning)"},
			&cli.DurationFlag{Name: "drain", EnvVars: envs("DRAIN"), Value: DefaultDrain, Usage: "on SIGTERM or cluster leave, how long /ready answers 503 (and leadership is handed over) before the node stops serving; longer than the load balancer's health check needs to mark it down"},
			&cli.StringFlag{Name: "log-level", EnvVars: envs("LOG_LEVEL"), Value: "info", Usage: "debug, info, warn or error"},
		}, append(clusterKeyFlags, peerTLSFlags...)...),
		Action: func(c *cli.Context) error {
			cfg, err := serverConfig(c)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrConfig, err)
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			return RunServer(ctx, cfg)
		},
	}
}

// serverConfig builds the server's configuration from its flags.
func serverConfig(c *cli.Context) (cfg ServerConfig, err error) {
	env := envOf(c)
	key, err := clusterKey(c)
	if err != nil {
		return cfg, err
	}
	gossip, err := gossipAddr(c.String("gossip-addr"), c.String("raft-addr"))
	if err != nil {
		return cfg, err
	}
	cfg = ServerConfig{
		GossipAddr: gossip, GossipAdvertise: c.String("gossip-advertise"),
		NodeID: c.String("node-id"), DataDir: c.String("data-dir"), RaftAddr: c.String("raft-addr"),
		Advertise: c.String("advertise"), HTTPAddr: c.String("http-addr"), Join: splitList(c.StringSlice("join")),
		BootstrapExpect: c.Int("bootstrap-expect"), ClusterKey: key, TLSCert: c.String("tls-cert"), TLSKey: c.String("tls-key"),
		AllowHosts: splitList(c.StringSlice("allow-host")), DeadServerTimeout: c.Duration("dead-server-timeout"),
		Logger: commandLogger(env, c.String("log-level")), Out: env.Stdout, WorkerLease: c.Duration("worker-lease"),
		Retention:  c.Duration("retention"),
		ReadyGrace: c.Duration("ready-grace"), Drain: c.Duration("drain"), ReadyRequireWorkers: c.Int("ready-require-workers"),
	}
	if cfg.Retention < 0 {
		return cfg, fmt.Errorf("--retention %s: want 0 (forever) or more", cfg.Retention)
	}
	if cfg.ReadyGrace < 0 || cfg.Drain < 0 {
		return cfg, fmt.Errorf("--ready-grace %s, --drain %s: want 0 or more", cfg.ReadyGrace, cfg.Drain)
	}
	if cfg.ReadyRequireWorkers < 0 {
		return cfg, fmt.Errorf("--ready-require-workers %d: want 0 or more", cfg.ReadyRequireWorkers)
	}
	if cfg.WorkerLease < time.Second {
		return cfg, fmt.Errorf("--worker-lease %s: want at least 1s", cfg.WorkerLease)
	}
	if cfg.StoreURL, err = store.URLFrom(c.String("store"), c.String("store-file"), env.Getenv); err != nil {
		return cfg, err
	}
	cfg.StoreMaxConns = int32(c.Int("store-max-conns"))
	if (cfg.TLSCert == "") != (c.String("tls-key") == "") {
		return cfg, errors.New("--tls-cert and --tls-key go together")
	}
	if cfg.PeerTLS, err = peerTLS(c); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// splitList flattens comma-separated values of a repeatable flag.
func splitList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// ServerConfig configures RunServer.
type ServerConfig struct {
	GossipAddr        string
	GossipAdvertise   string
	NodeID            string
	DataDir           string
	StoreURL          string
	StoreMaxConns     int32
	RaftAddr          string
	Advertise         string
	HTTPAddr          string
	Join              []string
	BootstrapExpect   int
	ClusterKey        []byte
	PeerTLS           *tls.Config
	TLSCert, TLSKey   string
	AllowHosts        []string
	DeadServerTimeout time.Duration
	WorkerLease       time.Duration // 0: cluster.DefaultWorkerLease
	// Retention is how long tenants without their own retention keep
	// finished jobs; 0 keeps them forever (the --retention flag's default
	// is cluster.DefaultRetention).
	Retention time.Duration
	// ReadyGrace is how long /ready stays 200 without a leader.
	ReadyGrace time.Duration
	// ReadyRequireWorkers is how many workers must be up for /ready to
	// answer 200 (0: none, worker loss is only a warning).
	ReadyRequireWorkers int
	// Drain is how long a stopping node answers /ready 503 before it
	// stops serving.
	Drain  time.Duration
	Logger *slog.Logger
	Out    io.Writer
	// OnReady, if set, is called with the API URL once the node serves.
	OnReady func(apiURL string)
}

// Defaults of --ready-grace and --drain. The grace covers an election
// (hashicorp/raft's default timeouts elect within about 1-3 s) and is as
// long as a follower holds a write for a leader. The drain covers a load
// balancer that checks every 500 ms and marks a server down after two
// failed checks, with room to spare.
const (
	DefaultReadyGrace = 5 * time.Second
	DefaultDrain      = 5 * time.Second
)

// RunServer runs a control-plane node until ctx ends or the node leaves
// the cluster. The API answers from the start; /ready turns true once the
// node has a leader and has caught up. When ctx ends the node stops
// gracefully: it drains (server.Drain: /ready 503, leadership handed
// over, cfg.Drain for load balancers to notice), finishes the requests in
// flight, closing their connections, then stops Raft and the store.
func RunServer(ctx context.Context, cfg ServerConfig) error {
	log := cfg.Logger
	ln, err := listenAPI(cfg.DataDir, cfg.HTTPAddr)
	if err != nil {
		return err
	}
	defer ln.Close()
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	apiURL := scheme + "://" + ln.Addr().String()

	// The node runs on until RunServer returns, past ctx: it serves the
	// drain. stop ends serving: ctx ends, or the node left the cluster.
	stop, stopServing := context.WithCancel(ctx)
	defer stopServing()
	nodeCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	n, err := startNode(nodeCtx, nodeConfig{
		DataDir: cfg.DataDir, StoreURL: cfg.StoreURL, StoreMaxConns: cfg.StoreMaxConns,
		NodeID: cfg.NodeID, RaftAddr: cfg.RaftAddr, Advertise: cfg.Advertise,
		APIAddr: apiURL, ClusterKey: cfg.ClusterKey, PeerTLS: cfg.PeerTLS,
		GossipAddr: cfg.GossipAddr, GossipAdvertise: cfg.GossipAdvertise,
		Policy: fsm.Policy{AllowedHosts: cfg.AllowHosts}, DeadServerTimeout: cfg.DeadServerTimeout,
		WorkerLease: cfg.WorkerLease, Retention: cfg.Retention, Logger: log, OnLeave: stopServing,
		ReadyGrace: cfg.ReadyGrace, Drain: cfg.Drain, ReadyRequireWorkers: cfg.ReadyRequireWorkers,
	})
	if err != nil {
		return err
	}
	defer n.close()
	if err := n.node.Start(stop, cluster.StartOptions{Join: cfg.Join, BootstrapExpect: cfg.BootstrapExpect}); err != nil {
		return err
	}
	gossipAt := "off"
	if n.gossip != nil {
		gossipAt = n.gossip.Addr()
	}
	log.Info("node started", "id", n.node.ID(), "raft", n.node.Addr(), "api", apiURL, "gossip", gossipAt)
	fmt.Fprintf(cfg.Out, "ffrtmp server %s: API %s, Raft and workers (--join) %s, gossip %s, data in %s\n",
		n.node.ID(), apiURL, n.node.Addr(), gossipAt, cfg.DataDir)
	if cfg.OnReady != nil {
		cfg.OnReady(apiURL)
	}
	drain := func() {
		dctx, cancel := context.WithTimeout(context.Background(), cfg.Drain+shutdownTimeout)
		defer cancel()
		n.srv.Drain(dctx)
	}
	err = serveAPI(stop, log, ln, n.srv, cfg.TLSCert, cfg.TLSKey, drain)
	log.Info("shutting down")
	return err
}

// DefaultGossipPort is the gossip port of a server or dev node.
const DefaultGossipPort = "7072"

// gossipAddr resolves --gossip-addr: "off" disables gossip, "" means the
// host of nodeAddr on DefaultGossipPort.
func gossipAddr(flag, nodeAddr string) (string, error) {
	switch flag {
	case "off":
		return "", nil
	case "":
		host, _, err := net.SplitHostPort(nodeAddr)
		if err != nil {
			return "", fmt.Errorf("--raft-addr %q: %w", nodeAddr, err)
		}
		return net.JoinHostPort(host, DefaultGossipPort), nil
	}
	return flag, nil
}
