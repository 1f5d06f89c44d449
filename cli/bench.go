package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

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
		Usage: "load generator: measure a running node (see docs/BENCHMARKS.md)",
		Subcommands: []*cli.Command{
			{
				Name:  "submit",
				Usage: "submit throughput and latency, against GET /health as baseline",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "jobs", Value: 2000, Usage: "jobs to submit"},
					&cli.IntFlag{Name: "concurrency", Value: 16, Usage: "concurrent clients"},
					&cli.BoolFlag{Name: "keep", Usage: "leave the jobs queued (default: cancel them afterwards)"},
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
					return BenchSubmit(c.Context, client, out.W, c.Int("jobs"), c.Int("concurrency"), c.Bool("keep"))
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
		},
	}
}

// Stats summarizes a set of latencies.
type Stats struct {
	N          int
	Elapsed    time.Duration
	P50, P99   time.Duration
	Max        time.Duration
	Throughput float64 // operations per second
}

func summarize(lat []time.Duration, elapsed time.Duration) Stats {
	slices.Sort(lat)
	s := Stats{N: len(lat), Elapsed: elapsed}
	if len(lat) == 0 {
		return s
	}
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	s.P50, s.P99, s.Max = q(0.50), q(0.99), lat[len(lat)-1]
	s.Throughput = float64(len(lat)) / elapsed.Seconds()
	return s
}

// hammer runs op n times from conc goroutines and returns the latencies.
func hammer(ctx context.Context, n, conc int, op func(i int) error) (Stats, error) {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				if err := op(i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	return summarize(lat, time.Since(start)), firstErr
}

// BenchSubmit measures job submission against a GET /health baseline.
func BenchSubmit(ctx context.Context, c *Client, w io.Writer, n, conc int, keep bool) error {
	if n < 1 || conc < 1 {
		return fmt.Errorf("--jobs and --concurrency must be positive")
	}
	c.http.Transport = &http.Transport{MaxIdleConnsPerHost: conc}
	base, err := hammer(ctx, n, conc, func(int) error {
		resp, err := c.request(ctx, "GET", "/health", nil, nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	})
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	spec := benchSpec()
	ids := make([]string, n)
	sub, err := hammer(ctx, n, conc, func(i int) error {
		j, err := c.Rotated(i).SubmitJob(ctx, spec) // round robin over the nodes
		if err == nil {
			ids[i] = j.ID
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "operation\tn\tconcurrency\tops/s\tp50\tp99\tmax\n")
	for _, r := range []struct {
		name string
		s    Stats
	}{{"GET /health (baseline)", base}, {"POST /v1/jobs", sub}} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%s\t%s\t%s\n", r.name, r.s.N, conc, r.s.Throughput,
			r.s.P50.Round(time.Microsecond), r.s.P99.Round(time.Microsecond), r.s.Max.Round(time.Microsecond))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if keep {
		return nil
	}
	_, err = hammer(ctx, n, conc, func(i int) error {
		_, err := c.JobAction(ctx, ids[i], "cancel")
		var ae *APIError
		if errors.As(err, &ae) && ae.Code == fsm.CodeInvalidTransition {
			return nil // already ran or finished
		}
		return err
	})
	return err
}

func benchSpec() *fsm.JobSpec {
	return &fsm.JobSpec{
		Name: "bench", Scenario: "240p30-h264", Queue: fsm.QueueBatch, Priority: fsm.PriorityLow,
		Input: fsm.Input{URL: "testsrc://?duration=1"}, Outputs: []fsm.Output{{URL: "file:///bench/out.mp4"}},
	}
}

// BenchSubmitBatch measures POST /v1/jobs/batch: n jobs in requests of
// size specs from conc clients (round robin over the nodes), reported in
// jobs/s and per-request latency, against single submits of the same
// jobs count as the baseline. The jobs stay queued.
func BenchSubmitBatch(ctx context.Context, c *Client, w io.Writer, n, conc, size int) error {
	if n < 1 || conc < 1 || size < 1 || size > fsm.MaxSubmitBatch {
		return fmt.Errorf("--jobs and --concurrency must be positive and --batch between 1 and %d", fsm.MaxSubmitBatch)
	}
	c.http.Transport = &http.Transport{MaxIdleConnsPerHost: conc}
	spec := benchSpec()
	single, err := hammer(ctx, n, conc, func(i int) error {
		_, err := c.Rotated(i).SubmitJob(ctx, spec)
		return err
	})
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	specs := make([]*fsm.JobSpec, size)
	for i := range specs {
		specs[i] = spec
	}
	reqs := (n + size - 1) / size
	batch, err := hammer(ctx, reqs, conc, func(i int) error {
		res, err := c.Rotated(i).SubmitJobs(ctx, specs)
		if err != nil {
			return err
		}
		for _, r := range res {
			if r.Error != nil {
				return fmt.Errorf("batch item: %s: %s", r.Error.Code, r.Error.Message)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("batch submit: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "operation\tjobs\trequests\tconcurrency\tjobs/s\tp50 per request\tp99 per request\n")
	fmt.Fprintf(tw, "POST /v1/jobs (baseline)\t%d\t%d\t%d\t%.0f\t%s\t%s\n", single.N, single.N, conc, single.Throughput,
		single.P50.Round(time.Microsecond), single.P99.Round(time.Microsecond))
	fmt.Fprintf(tw, "POST /v1/jobs/batch (%d per request)\t%d\t%d\t%d\t%.0f\t%s\t%s\n", size, batch.N*size, batch.N, conc,
		batch.Throughput*float64(size), batch.P50.Round(time.Microsecond), batch.P99.Round(time.Microsecond))
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
	start := time.Now()
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
	elapsed := time.Since(start)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "measure\tn\tp50\tp99\tmax\n")
	for _, r := range []struct {
		name string
		lat  []time.Duration
	}{{"submit request (baseline)", submit}, {"submit → running seen by client", client}, {"submitted_at → started_at", started}} {
		s := summarize(r.lat, elapsed)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", r.name, s.N, s.P50.Round(time.Microsecond), s.P99.Round(time.Microsecond), s.Max.Round(time.Microsecond))
	}
	return tw.Flush()
}
