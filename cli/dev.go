package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/worker"
)

func devCommand() *cli.Command {
	return &cli.Command{
		Name:  "dev",
		Usage: "run one node and one local worker in this process (bbolt store), for a laptop",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Usage: "state, Raft log and media (default $XDG_DATA_HOME/ffrtmp/dev)"},
			&cli.StringFlag{Name: "http", Value: "127.0.0.1:7070", Usage: "HTTP API listen address"},
			&cli.StringFlag{Name: "raft-addr", Value: "127.0.0.1:7071", Usage: "Raft listen address"},
			&cli.StringFlag{Name: "gossip-addr", Value: "127.0.0.1:" + DefaultGossipPort, Usage: "gossip address remote workers join (\"off\" for none)"},
			&cli.IntFlag{Name: "workers", Value: 1, Usage: "local workers to run (0 or 1)"},
			&cli.IntFlag{Name: "slots", DefaultText: "half the CPUs", Usage: "concurrent jobs of the local worker"},
			&cli.StringSliceFlag{Name: "allow-host", Usage: "host that network inputs/outputs may reach (repeatable); default 127.0.0.1 and localhost"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
		},
		Action: func(c *cli.Context) error {
			env := envOf(c)
			dir := c.String("data-dir")
			if dir == "" {
				d, err := defaultDataDir(env.Getenv)
				if err != nil {
					return err
				}
				dir = d
			}
			hosts := c.StringSlice("allow-host")
			if !c.IsSet("allow-host") {
				hosts = []string{"127.0.0.1", "localhost"}
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			return RunDev(ctx, DevConfig{
				DataDir: dir, HTTPAddr: c.String("http"), RaftAddr: c.String("raft-addr"), GossipAddr: c.String("gossip-addr"),
				Workers: c.Int("workers"), Slots: c.Int("slots"), AllowHosts: hosts,
				Logger: commandLogger(env, c.String("log-level")), Out: env.Stdout, Getenv: env.Getenv,
			})
		},
	}
}

func defaultDataDir(getenv func(string) string) (string, error) {
	if d := getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "ffrtmp", "dev"), nil
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "share", "ffrtmp", "dev"), nil
	}
	return "", errors.New("set --data-dir (no HOME)")
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// commandLogger is the logger of a long-running command: newLogger on
// the command's stderr, made the process's default when env.Process.
func commandLogger(env Env, level string) *slog.Logger {
	l := newLogger(env.Stderr, level)
	if env.Process {
		slog.SetDefault(l)
	}
	return l
}

// DevConfig configures RunDev.
type DevConfig struct {
	DataDir    string
	GossipAddr string // "" or "off": no gossip
	HTTPAddr   string
	RaftAddr   string
	Workers    int
	Slots      int
	AllowHosts []string
	Logger     *slog.Logger
	Out        io.Writer
	Getenv     func(string) string
	// OnReady, if set, is called with the API URL once the node serves.
	OnReady func(apiURL string)
}

// RunDev runs a single-node cluster with a local worker until ctx ends.
// On first start it creates the admin key, prints it once and writes it
// with the API address to the CLI config file.
func RunDev(ctx context.Context, cfg DevConfig) error {
	if cfg.Workers < 0 || cfg.Workers > 1 {
		return fmt.Errorf("--workers must be 0 or 1 (remote workers join with ffrtmp worker)")
	}
	log := cfg.Logger
	ln, err := listenAPI(cfg.DataDir, cfg.HTTPAddr)
	if err != nil {
		return err
	}
	defer ln.Close()

	key, err := loadOrCreateKey(filepath.Join(cfg.DataDir, "cluster.key"))
	if err != nil {
		return err
	}
	apiURL := "http://" + ln.Addr().String()
	n, err := startNode(ctx, nodeConfig{
		DataDir: cfg.DataDir, RaftAddr: cfg.RaftAddr, APIAddr: apiURL, Bootstrap: true, ClusterKey: key,
		GossipAddr: offToEmpty(cfg.GossipAddr),
		Policy:     fsm.Policy{AllowedHosts: cfg.AllowHosts}, Logger: log,
	})
	if err != nil {
		return err
	}
	defer n.close()

	if err := n.node.WaitLeader(ctx); err != nil {
		return err
	}
	token, err := n.srv.Bootstrap(ctx)
	if err != nil {
		return err
	}
	if token != "" {
		path, err := SaveConfig(cfg.Getenv, &Config{Addr: apiURL, APIKey: token})
		if err != nil {
			return err
		}
		fmt.Fprintf(cfg.Out, "Created the admin API key (shown once; saved to %s):\n\n    %s\n\n", path, token)
	} else if c, err := LoadConfig(cfg.Getenv); err == nil && c.APIKey != "" && c.Addr != apiURL {
		c.Addr = apiURL
		if _, err := SaveConfig(cfg.Getenv, c); err != nil {
			return err
		}
	}

	wctx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	var workerDone chan error // nil without a worker: never ready
	if cfg.Workers == 1 {
		workerDone = make(chan error, 1)
		id, err := worker.LoadOrCreateID(filepath.Join(cfg.DataDir, "worker-id"))
		if err != nil {
			return err
		}
		// The default policy allows localhost: jobs may reach loopback
		// services, but not this node's own ports.
		own := []string{ln.Addr().String(), n.node.Addr()}
		if n.gossip != nil {
			own = append(own, n.gossip.Addr())
		}
		w := worker.New(worker.Config{
			ID: id, Slots: cfg.Slots, MediaRoot: filepath.Join(cfg.DataDir, "media"),
			Control: n.srv.Workers(), Logger: log,
			Net: &worker.NetGuard{AllowLoopback: true, Cluster: func() []string { return own }},
		})
		n.logs.set(w)
		go func() { workerDone <- w.Run(wctx) }()
	}

	sctx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	serveErr := make(chan error, 1)
	go func() { serveErr <- serveAPI(sctx, log, ln, n.srv, "", "", nil) }()
	fmt.Fprintf(cfg.Out, "ffrtmp dev: API %s, data in %s, media in %s\n", apiURL, cfg.DataDir, filepath.Join(cfg.DataDir, "media"))
	if n.gossip != nil {
		tokenFile, err := devWorkerToken(ctx, n, cfg.DataDir)
		if err != nil {
			return err
		}
		fmt.Fprintf(cfg.Out, "remote worker: ffrtmp worker --join %s --token-file %s --ca-hash %s\n", n.node.Addr(), tokenFile, n.node.CAHash())
	}
	if cfg.OnReady != nil {
		cfg.OnReady(apiURL)
	}

	var runErr error
	workerStopped := workerDone == nil
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = err
	case err := <-workerDone:
		workerStopped = true
		if err != nil {
			runErr = fmt.Errorf("worker: %w", err)
		}
	}
	log.Info("shutting down")
	stopServing()
	// Stop the worker (and its ffmpeg processes) before Raft and the store.
	stopWorker()
	if !workerStopped {
		<-workerDone
	}
	return runErr
}

// devWorkerToken returns the file of the shared-pool worker token that
// dev mode makes, on first start, for one remote worker (the in-process
// worker needs none: it is not on the network).
func devWorkerToken(ctx context.Context, n *runningNode, dataDir string) (string, error) {
	path := filepath.Join(dataDir, "worker.token")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	created, err := n.srv.CreateWorkerToken(ctx, "", "dev remote worker", "dev")
	if err != nil {
		return "", fmt.Errorf("create the dev worker token: %w", err)
	}
	if err := os.WriteFile(path, []byte(created.Token+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write the dev worker token: %w", err)
	}
	return path, nil
}

// offToEmpty maps the flag value "off" to "" (no gossip).
func offToEmpty(s string) string {
	if s == "off" {
		return ""
	}
	return s
}
