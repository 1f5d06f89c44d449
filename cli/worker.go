package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/worker"
)

func workerCommand() *cli.Command {
	return &cli.Command{
		Name:  "worker",
		Usage: "run an FFmpeg worker that joins the cluster's gossip pool",
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{Name: "join", EnvVars: envs("JOIN"), Usage: "gossip addresses of servers (host:7072), comma-separated or repeated"},
			&cli.StringFlag{Name: "gossip-addr", EnvVars: envs("GOSSIP_ADDR"), Value: "127.0.0.1:7073", Usage: "this worker's gossip address (TCP and UDP)"},
			&cli.StringFlag{Name: "gossip-advertise", EnvVars: envs("GOSSIP_ADVERTISE"), Usage: "gossip address others reach this worker at (default: --gossip-addr)"},
			&cli.StringFlag{Name: "data-dir", EnvVars: envs("DATA_DIR"), Value: "/var/lib/ffrtmp-worker", Usage: "the worker's identity (worker-id)"},
			&cli.StringFlag{Name: "media-root", EnvVars: envs("MEDIA_ROOT"), Usage: "tenants' media: <media-root>/<tenant>/… (default <data-dir>/media)"},
			&cli.IntFlag{Name: "slots", EnvVars: envs("SLOTS"), Usage: "concurrent jobs (default: half the CPUs)"},
			&cli.IntFlag{Name: "nvenc-sessions", EnvVars: envs("NVENC_SESSIONS"), Usage: "concurrent NVENC sessions the GPUs allow (default 8, the consumer driver limit)"},
			&cli.StringSliceFlag{Name: "label", EnvVars: envs("LABELS"), Usage: "label k=v (repeatable)"},
			&cli.StringFlag{Name: "tenant", EnvVars: envs("TENANT"), Usage: "run only this tenant's jobs (default: the shared pool)"},
			&cli.StringFlag{Name: "name", EnvVars: envs("NAME"), Usage: "display name (default: host name)"},
			&cli.StringFlag{Name: "log-level", EnvVars: envs("LOG_LEVEL"), Value: "info", Usage: "debug, info, warn or error"},
		}, append(clusterKeyFlags, peerTLSFlags...)...),
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
	Join            []string
	GossipAddr      string
	GossipAdvertise string
	DataDir         string
	MediaRoot       string
	Slots           int
	NVENCSessions   int
	Labels          map[string]string
	TenantID        string
	Name            string
	ClusterKey      []byte
	// PeerTLS is the node port's TLS from operator certificates; nil
	// derives it from ClusterKey. Gossip uses ClusterKey either way.
	PeerTLS *tls.Config
	Logger  *slog.Logger
}

func workerConfig(c *cli.Context) (WorkerConfig, error) {
	key, err := clusterKey(c)
	if err != nil {
		return WorkerConfig{}, err
	}
	cfg := WorkerConfig{
		Join: splitList(c.StringSlice("join")), GossipAddr: c.String("gossip-addr"), GossipAdvertise: c.String("gossip-advertise"),
		DataDir: c.String("data-dir"), MediaRoot: c.String("media-root"), Slots: c.Int("slots"), NVENCSessions: c.Int("nvenc-sessions"),
		TenantID: c.String("tenant"), Name: c.String("name"), ClusterKey: key, Labels: map[string]string{},
		Logger: newLogger(envOf(c).Stderr, c.String("log-level")),
	}
	if cfg.PeerTLS, err = peerTLS(c); err != nil {
		return cfg, err
	}
	if len(cfg.Join) == 0 {
		return cfg, errors.New("--join: give the gossip address of at least one server")
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

// RunWorker runs a remote worker until ctx ends: it joins the gossip
// pool, finds the servers there, registers through them and runs the jobs
// the leader assigns to it. On shutdown it stops its ffmpeg processes and
// leaves the pool, so the leader requeues its jobs at once.
func RunWorker(ctx context.Context, cfg WorkerConfig) error {
	log := cfg.Logger
	id, err := worker.LoadOrCreateID(filepath.Join(cfg.DataDir, "worker-id"))
	if err != nil {
		return err
	}
	peerTLS := cfg.PeerTLS
	if peerTLS == nil {
		if peerTLS, err = cluster.PeerTLSFromKey(cfg.ClusterKey); err != nil {
			return err
		}
	}
	g, err := cluster.NewGossip(cluster.GossipConfig{
		Name: id, BindAddr: cfg.GossipAddr, Advertise: cfg.GossipAdvertise, ClusterKey: cfg.ClusterKey,
		Meta: cluster.GossipMeta{Role: cluster.RoleWorker}, Logger: log,
	})
	if err != nil {
		return err
	}
	defer g.Leave()
	// Join in the background until some server answers, and again
	// whenever every server is lost.
	go g.KeepJoined(ctx, cfg.Join)
	w := worker.New(worker.Config{
		ID: id, Name: cfg.Name, TenantID: cfg.TenantID, Addr: g.Addr(), Slots: cfg.Slots, NVENCSessions: cfg.NVENCSessions,
		MediaRoot: cfg.MediaRoot, Labels: cfg.Labels, Logger: log,
		Control: cluster.NewWorkerClient(peerTLS, g.Servers),
		// Jobs never reach the servers' ports, nor this worker's gossip.
		Net: &worker.NetGuard{Cluster: func() []string { return append(g.ServerEndpoints(), g.Addr()) }},
	})
	log.Info("worker starting", "id", id, "gossip", g.Addr(), "media_root", cfg.MediaRoot)
	return w.Run(ctx)
}
