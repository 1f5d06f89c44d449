package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/server"
	"github.com/ffrtmp/ffrtmp/worker"
)

func benchWorkersCommand() *cli.Command {
	return &cli.Command{
		Name: "workers",
		Usage: "run simulated workers in this process: they speak the real worker protocol with worker tokens " +
			"and \"transcode\" by sleeping for each job's duration",
		Description: "Each simulated worker needs a worker token of its own (a token binds to the first worker that " +
			"registers with it). Give them in a file, one per line (--token-file), or let an admin key create them " +
			"(--tokens-create): tokens created so are revoked when the command ends. A worker's ID is sim-<token ID>, " +
			"so a token file reused on a later run brings back the same workers. The workers reach the servers " +
			"through --join only (no gossip). They run until interrupted, or for --for.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "count", Value: 1, Usage: "simulated workers to run"},
			&cli.IntFlag{Name: "slots", Value: 2, Usage: "concurrent jobs per worker"},
			&cli.StringFlag{Name: "token-file", Usage: "file with one worker token per line, at least --count of them"},
			&cli.BoolFlag{Name: "tokens-create", Usage: "create --count worker tokens with --api-key (a super-admin's, or a tenant admin's for its tenant) and revoke them at the end"},
			&cli.StringFlag{Name: "token-tenant", Usage: "with --tokens-create: the tenant whose dedicated workers to simulate (default: a super-admin's shared pool)"},
			&cli.StringSliceFlag{Name: "join", Usage: "node addresses of servers (host:7071); default: those named when the tokens were created"},
			&cli.StringFlag{Name: "ca-hash", Usage: "hash of the cluster CA (sha256:…); default: the one named when the tokens were created"},
			&cli.DurationFlag{Name: "job-duration", DefaultText: "its testsrc input's duration, else 1s", Usage: "how long every job runs"},
			&cli.DurationFlag{Name: "progress-interval", Value: time.Second, Usage: "progress reports per running job"},
			&cli.DurationFlag{Name: "for", DefaultText: "run until interrupted", Usage: "stop after this long"},
			&cli.StringFlag{Name: "log-level", Value: "error", Usage: "debug, info, warn or error"},
		},
		Action: func(c *cli.Context) error {
			cfg := WorkersBench{
				Count: c.Int("count"), Slots: c.Int("slots"), Join: splitList(c.StringSlice("join")), CAHash: c.String("ca-hash"),
				JobDuration: c.Duration("job-duration"), ProgressInterval: c.Duration("progress-interval"), For: c.Duration("for"),
				Logger: commandLogger(envOf(c), c.String("log-level")),
			}
			if cfg.Count < 1 || cfg.Slots < 1 {
				return fmt.Errorf("%w: --count and --slots must be positive", ErrConfig)
			}
			_, out, err := clientAndOutput(c)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			switch {
			case c.Bool("tokens-create") == (c.String("token-file") != ""):
				return fmt.Errorf("%w: give --token-file or --tokens-create (one of them)", ErrConfig)
			case c.String("token-file") != "":
				b, err := os.ReadFile(c.String("token-file"))
				if err != nil {
					return fmt.Errorf("%w: read --token-file: %w", ErrConfig, err)
				}
				cfg.Tokens = strings.Fields(string(b))
			default:
				client, err := clientFrom(c)
				if err != nil {
					return err
				}
				created, err := createBenchTokens(ctx, client, cfg.Count, c.String("token-tenant"))
				// Revoked even if the run fails; not with ctx, which may
				// have ended.
				defer revokeBenchTokens(context.WithoutCancel(ctx), client, created, envOf(c).Stderr)
				if err != nil {
					return err
				}
				for _, t := range created {
					cfg.Tokens = append(cfg.Tokens, t.Token)
				}
				if len(cfg.Join) == 0 {
					cfg.Join = created[0].Join
				}
				if cfg.CAHash == "" {
					cfg.CAHash = created[0].CAHash
				}
				fmt.Fprintf(envOf(c).Stderr, "created %d worker tokens (revoked at the end)\n", len(created))
			}
			return BenchWorkers(ctx, cfg, out, envOf(c).Stderr)
		},
	}
}

// createBenchTokens creates n worker tokens for tenant ("" for the
// caller's default), 16 at a time. It returns those it created, also on
// error, so that the caller can revoke them.
func createBenchTokens(ctx context.Context, c *Client, n int, tenant string) ([]server.CreatedWorkerToken, error) {
	out := make([]server.CreatedWorkerToken, n)
	rec := newRecorder()
	closedLoop(ctx, rec, n, min(16, n), func(ctx context.Context, i int) error {
		req := server.CreateWorkerTokenRequest{TenantID: tenant, Name: fmt.Sprintf("bench simulated worker %d", i+1)}
		return c.do(ctx, "POST", "/v1/worker-tokens", nil, req, &out[i])
	})
	var made []server.CreatedWorkerToken
	for _, t := range out {
		if t.Token != "" {
			made = append(made, t)
		}
	}
	if res := rec.result("create", 0); len(res.Errors) > 0 || len(made) < n {
		return made, fmt.Errorf("create worker tokens: %d of %d created, errors %s", len(made), n, ErrorCounts(res.Errors))
	}
	return made, nil
}

// revokeBenchTokens revokes the tokens, reporting failures on w.
func revokeBenchTokens(ctx context.Context, c *Client, tokens []server.CreatedWorkerToken, w io.Writer) {
	if len(tokens) == 0 {
		return
	}
	rec := newRecorder()
	closedLoop(ctx, rec, len(tokens), min(16, len(tokens)), func(ctx context.Context, i int) error {
		return c.do(ctx, "DELETE", "/v1/worker-tokens/"+url.PathEscape(tokens[i].WorkerToken.ID), nil, nil, nil)
	})
	if res := rec.result("revoke", 0); len(res.Errors) > 0 {
		fmt.Fprintf(w, "revoke the worker tokens: errors %s\n", ErrorCounts(res.Errors))
		return
	}
	fmt.Fprintf(w, "revoked %d worker tokens\n", len(tokens))
}

// WorkersBench configures BenchWorkers.
type WorkersBench struct {
	Count, Slots int
	// Tokens are the worker tokens, one per worker (at least Count).
	Tokens []string
	// Join are the servers' node addresses; CAHash pins their CA.
	Join   []string
	CAHash string
	// JobDuration, if positive, is how long every job runs.
	JobDuration      time.Duration
	ProgressInterval time.Duration
	// For, if positive, ends the run after that long.
	For    time.Duration
	Logger *slog.Logger
}

// WorkersReport is what bench workers prints at the end (-o json).
type WorkersReport struct {
	Workers    int     `json:"workers"`
	Registered int64   `json:"registered"`
	Started    int64   `json:"started"`
	Succeeded  int64   `json:"succeeded"`
	Refused    int64   `json:"refused"`
	Lost       int64   `json:"lost"`
	Seconds    float64 `json:"seconds"`
	// Exited counts workers that stopped before the end, by reason.
	Exited map[string]int `json:"exited"`
}

// BenchWorkers runs cfg.Count simulated workers until ctx ends (or
// cfg.For passes), writing a progress line per second to progress and a
// summary to out.
func BenchWorkers(ctx context.Context, cfg WorkersBench, out Output, progress io.Writer) error {
	switch {
	case len(cfg.Tokens) < cfg.Count:
		return fmt.Errorf("%w: %d worker tokens for %d workers: each worker needs a token of its own", ErrConfig, len(cfg.Tokens), cfg.Count)
	case cfg.CAHash == "":
		return fmt.Errorf("%w: --ca-hash: give the cluster CA hash printed with the worker tokens", ErrConfig)
	case len(cfg.Join) == 0:
		return fmt.Errorf("%w: --join: give the node address of at least one server (host:7071)", ErrConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if progress == nil {
		progress = io.Discard
	}
	conf, err := cluster.WorkerTLS(cfg.CAHash)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if cfg.For > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.For)
		defer cancel()
	}
	stats := &worker.SimStats{}
	var mu sync.Mutex
	exited := map[string]int{}
	var wg sync.WaitGroup
	start := time.Now()
	pctx, stopProgress := context.WithCancel(ctx)
	go showWorkersProgress(pctx, progress, cfg.Count, stats)
	for i := range cfg.Count {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := runSim(ctx, cfg, conf, cfg.Tokens[i], stats)
			if err != nil && ctx.Err() == nil {
				cfg.Logger.Error("simulated worker stopped", "error", err)
				mu.Lock()
				exited[errorCode(err)]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	stopProgress()
	rep := WorkersReport{
		Workers: cfg.Count, Registered: stats.Registered.Load(), Started: stats.Started.Load(), Succeeded: stats.Succeeded.Load(),
		Refused: stats.Refused.Load(), Lost: stats.Lost.Load(), Seconds: time.Since(start).Seconds(), Exited: exited,
	}
	if out.JSON {
		err = printJSON(out.W, rep)
	} else {
		tw := tabwriter.NewWriter(out.W, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "workers\tregistered\tstarted\tsucceeded\trefused\tlost\texited\tseconds")
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%s\t%.1f\n", rep.Workers, rep.Registered, rep.Started, rep.Succeeded,
			rep.Refused, rep.Lost, ErrorCounts(exited), rep.Seconds)
		err = tw.Flush()
	}
	if err != nil {
		return err
	}
	if len(exited) == cfg.Count && cfg.Count > 0 && rep.Registered == 0 {
		return fmt.Errorf("no simulated worker could register: %s", ErrorCounts(exited))
	}
	return nil
}

// runSim runs one simulated worker with token: it shows the token to the
// servers (which say its tenant and the worker it is bound to, if any),
// then runs as sim-<token ID>, or as the worker the token is bound to.
func runSim(ctx context.Context, cfg WorkersBench, conf *tls.Config, token string, stats *worker.SimStats) error {
	control := cluster.NewWorkerClient(conf, token, func() []string { return cfg.Join })
	hello, err := helloUntilAnswered(ctx, cfg.Logger, control)
	if err != nil {
		return err
	}
	id := hello.WorkerID
	if id == "" {
		id = "sim-" + hello.TokenID
	}
	return worker.NewSim(worker.SimConfig{
		ID: id, Name: id, TenantID: hello.TenantID, Slots: cfg.Slots, Control: control,
		JobDuration: cfg.JobDuration, ProgressInterval: cfg.ProgressInterval, Stats: stats, Logger: cfg.Logger,
	}).Run(ctx)
}

// showWorkersProgress writes a line per second about the simulated
// workers to w until ctx ends.
func showWorkersProgress(ctx context.Context, w io.Writer, count int, s *worker.SimStats) {
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastStarted, lastDone int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		started, done := s.Started.Load(), s.Succeeded.Load()
		fmt.Fprintf(w, "workers %3.0fs: up %d/%d, running %d, started %d (%d/s), succeeded %d (%d/s), refused %d, lost %d\n",
			time.Since(start).Seconds(), s.Registered.Load(), count, s.Running.Load(), started, started-lastStarted,
			done, done-lastDone, s.Refused.Load(), s.Lost.Load())
		lastStarted, lastDone = started, done
	}
}
