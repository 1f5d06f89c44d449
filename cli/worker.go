package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/worker"
)

func workerCommand() *cli.Command {
	return &cli.Command{
		Name:  "worker",
		Usage: "run an FFmpeg worker that joins the cluster with a worker token",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "join", EnvVars: envs("JOIN"), Usage: "node addresses of servers (host:7071), comma-separated or repeated"},
			&cli.StringFlag{Name: "token-file", EnvVars: envs("WORKER_TOKEN_FILE"), Usage: "file holding the worker token (from `ffrtmp workers token create`); or set FFRTMP_WORKER_TOKEN"},
			&cli.StringFlag{Name: "ca-hash", EnvVars: envs("CA_HASH"), Usage: "hash of the cluster CA the servers must present (sha256:…, printed with the worker token)"},
			&cli.StringFlag{Name: "gossip-addr", EnvVars: envs("GOSSIP_ADDR"), Value: "127.0.0.1:7073", Usage: "this worker's gossip address (TCP and UDP)"},
			&cli.StringFlag{Name: "gossip-advertise", EnvVars: envs("GOSSIP_ADVERTISE"), Usage: "gossip address others reach this worker at (default: --gossip-addr)"},
			&cli.StringFlag{Name: "data-dir", EnvVars: envs("DATA_DIR"), Value: "/var/lib/ffrtmp-worker", Usage: "the worker's identity (worker-id)"},
			&cli.StringFlag{Name: "media-root", EnvVars: envs("MEDIA_ROOT"), Usage: "tenants' media: <media-root>/<tenant>/… (default <data-dir>/media)"},
			&cli.IntFlag{Name: "slots", EnvVars: envs("SLOTS"), DefaultText: "half the CPUs", Usage: "concurrent jobs"},
			&cli.IntFlag{Name: "nvenc-sessions", EnvVars: envs("NVENC_SESSIONS"), Value: worker.DefaultNVENCSessions, Usage: "concurrent NVENC sessions the GPUs allow (the consumer driver's limit by default)"},
			&cli.StringSliceFlag{Name: "label", EnvVars: envs("LABELS"), Usage: "label k=v (repeatable)"},
			&cli.StringFlag{Name: "tenant", EnvVars: envs("TENANT"), Usage: "deprecated: the worker token decides the tenant; if set, it must be the token's"},
			&cli.StringFlag{Name: "name", EnvVars: envs("NAME"), Usage: "display name (default: host name)"},
			&cli.StringFlag{Name: "log-level", EnvVars: envs("LOG_LEVEL"), Value: "info", Usage: "debug, info, warn or error"},
		},
		Action: func(c *cli.Context) error {
			cfg, err := workerConfig(c)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrConfig, err)
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			return RunWorker(ctx, cfg)
		},
	}
}

// WorkerConfig configures RunWorker.
type WorkerConfig struct {
	Join            []string // servers' node addresses
	GossipAddr      string
	GossipAdvertise string
	DataDir         string
	MediaRoot       string
	Slots           int
	NVENCSessions   int
	Labels          map[string]string
	// TenantID, if set, must be the worker token's tenant ("" is no
	// check: the token decides).
	TenantID string
	Name     string
	// Token is the worker token; CAHash pins the servers' CA.
	Token  string
	CAHash string
	Logger *slog.Logger
}

func workerConfig(c *cli.Context) (WorkerConfig, error) {
	env := envOf(c)
	cfg := WorkerConfig{
		Join: splitList(c.StringSlice("join")), GossipAddr: c.String("gossip-addr"), GossipAdvertise: c.String("gossip-advertise"),
		DataDir: c.String("data-dir"), MediaRoot: c.String("media-root"), Slots: c.Int("slots"), NVENCSessions: c.Int("nvenc-sessions"),
		TenantID: c.String("tenant"), Name: c.String("name"), Labels: map[string]string{}, CAHash: c.String("ca-hash"),
		Logger: commandLogger(env, c.String("log-level")),
	}
	var err error
	if cfg.Token, err = workerToken(c.String("token-file"), env.Getenv("FFRTMP_WORKER_TOKEN")); err != nil {
		return cfg, err
	}
	if cfg.CAHash == "" {
		return cfg, errors.New("--ca-hash: give the cluster CA hash printed with the worker token")
	}
	if len(cfg.Join) == 0 {
		return cfg, errors.New("--join: give the node address of at least one server (host:7071)")
	}
	if cfg.MediaRoot == "" {
		cfg.MediaRoot = filepath.Join(cfg.DataDir, "media")
	}
	for _, l := range splitList(c.StringSlice("label")) {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return cfg, fmt.Errorf("--label %q: want key=value", l)
		}
		cfg.Labels[k] = v
	}
	return cfg, nil
}

// workerToken returns the worker token from --token-file or, without it,
// from FFRTMP_WORKER_TOKEN.
func workerToken(file, env string) (string, error) {
	switch {
	case file != "" && env != "":
		return "", errors.New("give --token-file or FFRTMP_WORKER_TOKEN, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read worker token: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	case env != "":
		return strings.TrimSpace(env), nil
	}
	return "", errors.New("a worker token is required: --token-file FILE or FFRTMP_WORKER_TOKEN (make one with `ffrtmp workers token create`)")
}

// RunWorker runs a remote worker until ctx ends: it shows its token to a
// server over TLS pinned to the cluster CA, gets the gossip key there,
// joins the gossip pool, finds the servers there, registers through them
// and runs the jobs the leader assigns to it. On shutdown it stops its
// ffmpeg processes and leaves the pool, so the leader requeues its jobs
// at once.
func RunWorker(ctx context.Context, cfg WorkerConfig) error {
	log := cfg.Logger
	id, err := worker.LoadOrCreateID(filepath.Join(cfg.DataDir, "worker-id"))
	if err != nil {
		return err
	}
	conf, err := cluster.WorkerTLS(cfg.CAHash)
	if err != nil {
		return err
	}
	var gossip atomic.Pointer[cluster.Gossip]
	servers := func() []string {
		if g := gossip.Load(); g != nil {
			if s := g.Servers(); len(s) > 0 {
				return s
			}
		}
		return cfg.Join
	}
	control := cluster.NewWorkerClient(conf, cfg.Token, servers)
	// A token the servers refuse (revoked) ends the worker: it could
	// only retry, fenced, for ever.
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	control.OnTokenRefused(func(err error) { stop(fmt.Errorf("%w: %w", errTokenRefused, err)) })
	hello, err := helloUntilAnswered(ctx, log, control)
	if err != nil {
		return err
	}
	if cfg.TenantID != "" && cfg.TenantID != hello.TenantID {
		return fmt.Errorf("%w: --tenant %s: the worker token is for %s; the token decides the tenant", ErrConfig, cfg.TenantID, poolName(hello.TenantID))
	}
	if hello.WorkerID != "" && hello.WorkerID != id {
		return fmt.Errorf("the worker token belongs to worker %s, and this is %s (%s): each worker needs a token of its own", hello.WorkerID, id, filepath.Join(cfg.DataDir, "worker-id"))
	}
	g, err := cluster.NewGossip(cluster.GossipConfig{
		Name: id, BindAddr: cfg.GossipAddr, Advertise: cfg.GossipAdvertise, Key: hello.GossipKey,
		Meta: cluster.GossipMeta{Role: cluster.RoleWorker}, Logger: log,
	})
	if err != nil {
		return err
	}
	gossip.Store(g)
	defer g.Leave()
	// Join in the background until some server answers, and again
	// whenever every server is lost.
	go g.KeepJoined(ctx, hello.GossipAddrs)
	w := worker.New(worker.Config{
		ID: id, Name: cfg.Name, TenantID: hello.TenantID, Addr: g.Addr(), Slots: cfg.Slots, NVENCSessions: cfg.NVENCSessions,
		MediaRoot: cfg.MediaRoot, Labels: cfg.Labels, Logger: log, Control: control,
		// Jobs never reach the servers' ports, nor this worker's gossip.
		Net: &worker.NetGuard{Cluster: func() []string { return append(append(g.ServerEndpoints(), cfg.Join...), g.Addr()) }},
	})
	log.Info("worker starting", "id", id, "tenant", poolName(hello.TenantID), "token", hello.TokenID, "gossip", g.Addr(), "media_root", cfg.MediaRoot)
	err = w.Run(ctx)
	if cause := context.Cause(ctx); errors.Is(cause, errTokenRefused) {
		return cause
	}
	return err
}

// errTokenRefused ends a worker whose token the servers refuse.
var errTokenRefused = errors.New("the servers refused the worker token (revoked?); make a new one with `ffrtmp workers token create`")

// helloUntilAnswered shows the worker token to the servers until one
// answers (retrying with backoff while none can be reached); a refusal
// of the token is final.
func helloUntilAnswered(ctx context.Context, log *slog.Logger, c *cluster.WorkerClient) (*cluster.WorkerHello, error) {
	delay := 200 * time.Millisecond
	for {
		h, err := c.Hello(ctx)
		if err == nil {
			return h, nil
		}
		var refused *fsm.Error
		if errors.As(err, &refused) {
			return nil, fmt.Errorf("%w: %w", errTokenRefused, err)
		}
		log.Warn("no server answered yet", "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// poolName names a tenant, or the shared pool for "".
func poolName(tenantID string) string {
	if tenantID == "" {
		return "the shared pool"
	}
	return "tenant " + tenantID
}
