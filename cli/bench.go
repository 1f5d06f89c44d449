package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	json "github.com/go-json-experiment/json/v1"
	"github.com/urfave/cli/v2"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// The bench commands are the load generator behind docs/BENCHMARKS.md.
// Every measurement is reported next to a baseline taken in the same run
// against the same node, so numbers from different machines compare.

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "load generator: measure a running cluster (see docs/BENCHMARKS.md)",
		Subcommands: []*cli.Command{
			{
				Name: "submit",
				Usage: "submit throughput and latency, against GET /health as baseline; closed loop (--jobs, --concurrency) " +
					"or open loop (--rate, --duration), round robin over every --addr",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "jobs", Value: 2000, Usage: "closed loop: jobs to submit"},
					&cli.IntFlag{Name: "concurrency", Value: 16, Usage: "closed loop: concurrent clients"},
					&cli.StringFlag{Name: "rate", Usage: "open loop: submits per second, issued on schedule whether or not earlier ones returned (e.g. 500 or 500/s)"},
					&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "open loop: how long to submit"},
					&cli.IntFlag{Name: "max-in-flight", Value: 4096, Usage: "open loop: requests outstanding at most; a request over the bound waits, and its wait counts in its latency"},
					&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "per request, retries included"},
					&cli.StringFlag{Name: "tenants", Usage: "super-admin: spread submits over tenants: a count N (bench-1 … bench-N, created if missing) or a comma-separated list of tenant IDs"},
					&cli.StringFlag{Name: "tenant-keys", Usage: "file with one API key per line: spread submits over them, each in its own key's tenant"},
					&cli.StringFlag{Name: "spec", Usage: "job spec file (JSON) to submit (default: 240p H.264 of a 1 s testsrc)"},
					&cli.BoolFlag{Name: "no-baseline", Usage: "skip the GET /health baseline"},
					&cli.BoolFlag{Name: "keep", Usage: "leave the jobs queued instead of canceling them afterwards"},
					&cli.IntFlag{Name: "batch", Usage: "submit N specs per request with POST /v1/jobs/batch (reports jobs/s; jobs are kept)"},
				},
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					if n := c.Int("batch"); n > 0 {
						return BenchSubmitBatch(c.Context, client, out.W, c.Int("jobs"), c.Int("concurrency"), n)
					}
					cfg := SubmitBench{
						Jobs: c.Int("jobs"), Concurrency: c.Int("concurrency"), Duration: c.Duration("duration"),
						MaxInFlight: c.Int("max-in-flight"), Timeout: c.Duration("timeout"),
						Keep: c.Bool("keep"), Baseline: !c.Bool("no-baseline"),
					}
					if r := c.String("rate"); r != "" {
						if cfg.Rate, err = parseRate(r); err != nil {
							return fmt.Errorf("%w: --rate: %w", ErrConfig, err)
						}
					}
					if cfg.Spec, err = benchSpec(c.String("spec")); err != nil {
						return err
					}
					clients, err := benchClients(c.Context, client, c.String("tenants"), c.String("tenant-keys"))
					if err != nil {
						return err
					}
					return BenchSubmit(c.Context, clients, cfg, out, envOf(c).Stderr)
				},
			},
			{
				Name:  "latency",
				Usage: "idle submit→running latency of tiny jobs, one at a time (needs an idle worker)",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "samples", Value: 20, Usage: "jobs to run"},
				},
				Action: func(c *cli.Context) error {
					client, out, err := clientAndOutput(c)
					if err != nil {
						return err
					}
					return BenchLatency(c.Context, client, out.W, c.Int("samples"))
				},
			},
			benchWorkersCommand(),
			benchGetCommand(),
			benchRaftCommand(),
			benchRaftNodeCommand(),
		},
	}
}

// parseRate parses a rate: "500" or "500/s".
func parseRate(s string) (float64, error) {
	r, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "/s"), 64)
	if err != nil || !(r > 0) || math.IsInf(r, 0) {
		return 0, fmt.Errorf("%q: want requests per second, e.g. 500 or 500/s", s)
	}
	return r, nil
}

// DefaultBenchSpec is what bench submit submits unless given a spec: a
// 240p H.264 encode of a one-second test pattern.
func DefaultBenchSpec() *fsm.JobSpec {
	return &fsm.JobSpec{
		Name: "bench", Scenario: "240p30-h264", Queue: fsm.QueueBatch, Priority: fsm.PriorityLow,
		Input: fsm.Input{URL: "testsrc://?duration=1"}, Outputs: []fsm.Output{{URL: "file:///bench/out.mp4"}},
	}
}

// benchSpec reads a job spec file, or returns the default spec for "".
func benchSpec(path string) (*fsm.JobSpec, error) {
	if path == "" {
		return DefaultBenchSpec(), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: read spec: %w", ErrConfig, err)
	}
	defer f.Close()
	spec := &fsm.JobSpec{}
	dec := json.NewDecoder(io.LimitReader(f, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(spec); err != nil {
		return nil, fmt.Errorf("%w: parse spec %s: %w", ErrConfig, path, err)
	}
	return spec, nil
}

// benchClients returns the clients submits are spread over: one per
// tenant, from --tenants (the caller's key, a super-admin's, with
// ?tenant=; numbered tenants are created if missing) or --tenant-keys
// (a key per line, each in its own tenant); else c alone.
func benchClients(ctx context.Context, c *Client, tenants, keyFile string) ([]*Client, error) {
	switch {
	case tenants != "" && keyFile != "":
		return nil, fmt.Errorf("%w: give --tenants or --tenant-keys, not both", ErrConfig)
	case keyFile != "":
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: read --tenant-keys: %w", ErrConfig, err)
		}
		var out []*Client
		for _, k := range strings.Fields(string(b)) {
			d := c.Rotated(0)
			d.key, d.tenant = k, ""
			out = append(out, d)
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("%w: --tenant-keys %s holds no key", ErrConfig, keyFile)
		}
		return out, nil
	case tenants != "":
		ids := splitList([]string{tenants})
		if n, err := strconv.Atoi(tenants); err == nil {
			if n < 1 {
				return nil, fmt.Errorf("%w: --tenants must be positive", ErrConfig)
			}
			ids = nil
			for i := range n {
				id := fmt.Sprintf("bench-%d", i+1)
				err := c.do(ctx, "POST", "/v1/tenants", nil, server.CreateTenantRequest{Name: id}, nil)
				var ae *APIError
				if err != nil && !(errors.As(err, &ae) && ae.Code == fsm.CodeAlreadyExists) {
					return nil, fmt.Errorf("create tenant %s: %w", id, err)
				}
				ids = append(ids, id)
			}
		}
		var out []*Client
		for _, id := range ids {
			out = append(out, c.ForTenant(id))
		}
		return out, nil
	}
	return []*Client{c}, nil
}

// SubmitBench configures BenchSubmit.
type SubmitBench struct {
	// Closed loop (Rate 0): Jobs submits from Concurrency clients.
	Jobs, Concurrency int
	// Open loop: Rate submits per second for Duration, at most
	// MaxInFlight outstanding.
	Rate        float64
	Duration    time.Duration
	MaxInFlight int
	// Timeout bounds each request, the client's retries included.
	Timeout time.Duration
	Spec    *fsm.JobSpec
	// Keep leaves the jobs; otherwise those still active are canceled.
	Keep bool
	// Baseline first runs GET /health with the same load.
	Baseline bool
	// NameEach names request i's job "<Spec.Name>-<i>", so that each job
	// can be told to the request that made it (to find duplicates).
	NameEach bool
	// Acked, if set, is called with every acknowledged submit: the
	// request's index, the job and when the answer arrived. It may be
	// called from many goroutines at once.
	Acked func(i int, j *server.Job, at time.Time)
}

// BenchReport is what bench submit prints with -o json.
type BenchReport struct {
	Targets []string      `json:"targets"`
	Tenants []string      `json:"tenants"` // "" is each key's own
	Results []BenchResult `json:"results"`
}

// BenchSubmit measures job submission against a GET /health baseline,
// spreading the requests round robin over the clients (one per tenant)
// and, for each, over its nodes. It writes a progress line per second to
// progress and the results to out.
func BenchSubmit(ctx context.Context, clients []*Client, cfg SubmitBench, out Output, progress io.Writer) error {
	open := cfg.Rate > 0
	switch {
	case len(clients) == 0:
		return errors.New("no client")
	case open && (cfg.Duration <= 0 || cfg.MaxInFlight < 1):
		return fmt.Errorf("%w: --duration and --max-in-flight must be positive", ErrConfig)
	case !open && (cfg.Jobs < 1 || cfg.Concurrency < 1):
		return fmt.Errorf("%w: --jobs and --concurrency must be positive", ErrConfig)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if progress == nil {
		progress = io.Discard
	}
	if cfg.Spec == nil {
		cfg.Spec = DefaultBenchSpec()
	}
	conns := cfg.Concurrency
	if open {
		conns = min(cfg.MaxInFlight, 1024)
	}
	shared := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxIdleConns: conns * len(clients[0].bases)}}
	for _, c := range clients {
		c.http = shared
	}
	report := BenchReport{Targets: strings.Split(clients[0].addrs(), ",")}
	for _, c := range clients {
		report.Tenants = append(report.Tenants, c.tenant)
	}
	// Request i goes to tenant i mod T, and each tenant's requests go
	// round robin over the nodes.
	pick := func(i int) *Client { return clients[i%len(clients)].Rotated(i / len(clients)) }
	n := cfg.Jobs
	if open {
		n = newOpenLoop(cfg.Rate, cfg.Duration, cfg.MaxInFlight).requests()
	}
	measure := func(name string, op func(ctx context.Context, i int) error) BenchResult {
		rec := newRecorder()
		pctx, stop := context.WithCancel(ctx)
		go showProgress(pctx, progress, name, rec)
		timed := func(ctx context.Context, i int) error {
			ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
			defer cancel()
			return op(ctx, i)
		}
		var elapsed time.Duration
		if open {
			elapsed = newOpenLoop(cfg.Rate, cfg.Duration, cfg.MaxInFlight).run(ctx, rec, timed)
		} else {
			elapsed = closedLoop(ctx, rec, n, cfg.Concurrency, timed)
		}
		stop()
		res := rec.result(name, elapsed)
		if open {
			res.Mode, res.Rate = "open", cfg.Rate
		} else {
			res.Mode, res.Concurrency = "closed", cfg.Concurrency
		}
		return res
	}
	if cfg.Baseline {
		report.Results = append(report.Results, measure("GET /health (baseline)", func(ctx context.Context, i int) error {
			resp, err := pick(i).request(ctx, "GET", "/health", nil, nil)
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			return resp.Body.Close()
		}))
	}
	ids := make([]string, n)
	report.Results = append(report.Results, measure("POST /v1/jobs", func(ctx context.Context, i int) error {
		spec := cfg.Spec
		if cfg.NameEach {
			named := *spec
			named.Name = fmt.Sprintf("%s-%d", spec.Name, i)
			spec = &named
		}
		j, err := pick(i).SubmitJob(ctx, spec)
		if err == nil {
			ids[i] = j.ID
			if cfg.Acked != nil {
				cfg.Acked(i, j, time.Now())
			}
		}
		return err
	}))
	if err := ctx.Err(); err != nil {
		return err
	}
	var err error
	if out.JSON {
		err = printJSON(out.W, report)
	} else {
		err = PrintBenchResults(out.W, report.Results)
	}
	if err != nil || cfg.Keep {
		return err
	}
	rec := newRecorder()
	closedLoop(ctx, rec, n, min(64, n), func(ctx context.Context, i int) error {
		if ids[i] == "" {
			return nil
		}
		_, err := clients[i%len(clients)].JobAction(ctx, ids[i], "cancel")
		var ae *APIError
		if errors.As(err, &ae) && ae.Code == fsm.CodeInvalidTransition {
			return nil // already ran or finished
		}
		return err
	})
	if res := rec.result("cancel", 0); len(res.Errors) > 0 {
		return fmt.Errorf("cancel the submitted jobs: errors %s", ErrorCounts(res.Errors))
	}
	return nil
}

// PrintBenchResults prints load results as the table bench submit prints.
func PrintBenchResults(w io.Writer, results []BenchResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "operation\tload\trequests\tok\terrors\tok/s\tp50\tp99\tp99.9\tmax\n")
	ms := func(v float64) string {
		return time.Duration(v * float64(time.Millisecond)).Round(time.Microsecond).String()
	}
	for _, r := range results {
		load := fmt.Sprintf("%d clients", r.Concurrency)
		if r.Mode == "open" {
			load = fmt.Sprintf("%g/s open", r.Rate)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%.0f\t%s\t%s\t%s\t%s\n", r.Operation, load, r.Requests, r.OK,
			ErrorCounts(r.Errors), r.Throughput, ms(r.P50), ms(r.P99), ms(r.P999), ms(r.Max))
	}
	return tw.Flush()
}

// ErrorCounts formats a load run's errors by code, "0" for none.
func ErrorCounts(errs map[string]int) string {
	if len(errs) == 0 {
		return "0"
	}
	var parts []string
	for _, code := range slices.Sorted(maps.Keys(errs)) {
		parts = append(parts, fmt.Sprintf("%s:%d", code, errs[code]))
	}
	return strings.Join(parts, ",")
}

// BenchSubmitBatch measures POST /v1/jobs/batch: n jobs in requests of
// size specs from conc clients (round robin over the nodes), reported in
// jobs/s and per-request latency, against single submits of the same
// jobs count as the baseline. The jobs stay queued.
func BenchSubmitBatch(ctx context.Context, c *Client, w io.Writer, n, conc, size int) error {
	if n < 1 || conc < 1 || size < 1 || size > fsm.MaxSubmitBatch {
		return fmt.Errorf("--jobs and --concurrency must be positive and --batch between 1 and %d", fsm.MaxSubmitBatch)
	}
	c.http = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
	spec := DefaultBenchSpec()
	rec := newRecorder()
	elapsed := closedLoop(ctx, rec, n, conc, func(ctx context.Context, i int) error {
		_, err := c.Rotated(i).SubmitJob(ctx, spec)
		return err
	})
	single := rec.result("POST /v1/jobs (baseline)", elapsed)
	specs := make([]*fsm.JobSpec, size)
	for i := range specs {
		specs[i] = spec
	}
	rec = newRecorder()
	elapsed = closedLoop(ctx, rec, (n+size-1)/size, conc, func(ctx context.Context, i int) error {
		res, err := c.Rotated(i).SubmitJobs(ctx, specs)
		if err != nil {
			return err
		}
		for _, r := range res {
			if r.Error != nil {
				return &APIError{Code: r.Error.Code, Message: r.Error.Message}
			}
		}
		return nil
	})
	batch := rec.result(fmt.Sprintf("POST /v1/jobs/batch (%d per request)", size), elapsed)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "operation\tjobs\trequests\tconcurrency\tjobs/s\tp50 per request (ms)\tp99 per request (ms)\terrors\n")
	for _, r := range []struct {
		res  BenchResult
		size int
	}{{single, 1}, {batch, size}} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f\t%.1f\t%.1f\t%s\n", r.res.Operation, r.res.OK*r.size, r.res.Requests, conc,
			r.res.Throughput*float64(r.size), r.res.P50, r.res.P99, ErrorCounts(r.res.Errors))
	}
	return tw.Flush()
}

// BenchLatency submits tiny jobs one at a time and measures the time from
// the submit request until the job is seen running (client view, via
// long-poll) and from submitted_at to started_at (server view); the
// baseline is the submit request alone.
func BenchLatency(ctx context.Context, c *Client, w io.Writer, n int) error {
	spec := &fsm.JobSpec{
		Name: "latency", Scenario: "144p30-h264", Queue: fsm.QueueLive, Priority: fsm.PriorityHigh,
		Input: fsm.Input{URL: "testsrc://?duration=0.2"}, Outputs: []fsm.Output{{URL: "file:///bench/latency.mp4"}},
	}
	var submit, client, started []time.Duration
	for range n {
		t0 := time.Now()
		j, err := c.SubmitJob(ctx, spec)
		if err != nil {
			return err
		}
		submit = append(submit, time.Since(t0))
		for j.State == fsm.JobQueued || j.State == fsm.JobAssigned {
			var next server.Job
			q := url.Values{"index": {fmt.Sprint(j.ModifyIndex)}, "wait": {"10s"}}
			if err := c.do(ctx, "GET", "/v1/jobs/"+j.ID, q, nil, &next); err != nil {
				return err
			}
			j = &next
		}
		client = append(client, time.Since(t0))
		if !j.StartedAt.IsZero() {
			started = append(started, j.StartedAt.Sub(j.SubmittedAt))
		}
		// Let the job finish so that the next one finds an idle worker.
		if _, err := c.WatchJob(ctx, j.ID, func(*server.Job) {}); err != nil {
			return err
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "measure\tn\tp50\tp99\tmax\n")
	for _, r := range []struct {
		name string
		lat  []time.Duration
	}{{"submit request (baseline)", submit}, {"submit → running seen by client", client}, {"submitted_at → started_at", started}} {
		lat := slices.Sorted(slices.Values(r.lat))
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", r.name, len(lat), percentile(lat, 0.5).Round(time.Microsecond),
			percentile(lat, 0.99).Round(time.Microsecond), percentile(lat, 1).Round(time.Microsecond))
	}
	return tw.Flush()
}
