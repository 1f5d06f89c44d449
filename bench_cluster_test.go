package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

// These benchmarks run real server processes on 127.0.0.N and report
// their own metrics; run them once each:
//
//	go test -run '^$' -bench Cluster -benchtime 1x .
//
// docs/BENCHMARKS.md has the method and results.

// BenchmarkClusterSubmit measures submit throughput and latency of a
// one-node and a three-node cluster in the same run, with the load
// generator of `ffrtmp bench submit` (round robin over the nodes).
func BenchmarkClusterSubmit(b *testing.B) {
	for _, size := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			_, client := newBenchCluster(b, size)
			for _, conc := range []int{1, 16, 64} {
				b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
					var out bytes.Buffer
					cfg := cli.SubmitBench{Jobs: 2000, Concurrency: conc, Keep: true, Baseline: true}
					if err := cli.BenchSubmit(context.Background(), []*cli.Client{client}, cfg, cli.Output{W: &out}, io.Discard); err != nil {
						b.Fatal(err)
					}
					b.Log("\n" + out.String())
				})
			}
		})
	}
}

// BenchmarkClusterSubmitPostgres is BenchmarkClusterSubmit's three-node
// cluster on the PostgreSQL store: three servers on one new schema of
// the database of FFRTMP_TEST_POSTGRES_URL (skipped without it), at 1, 16
// and 64 clients round robin over the nodes, FFRTMP_BENCH_JOBS submits
// each (default 2000).
func BenchmarkClusterSubmitPostgres(b *testing.B) {
	raceBinary = false // measure the binary users run
	jobs := benchEnvInt(b, "FFRTMP_BENCH_JOBS", 2000)
	dbURL := pgtest.URL(b)
	c := newTestCluster(b, 3)
	for _, s := range c.nodes {
		s.args = append(s.args, "--store", dbURL)
	}
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", "http://"+c.nodes[0].httpAddr, "--cluster-key-file", c.keyFile)
	client, err := cli.NewClient(c.addrs(c.nodes...), c.key())
	if err != nil {
		b.Fatal(err)
	}
	for _, conc := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			var out bytes.Buffer
			cfg := cli.SubmitBench{Jobs: jobs, Concurrency: conc, Keep: true, Baseline: true}
			if err := cli.BenchSubmit(context.Background(), []*cli.Client{client}, cfg, cli.Output{W: &out}, io.Discard); err != nil {
				b.Fatal(err)
			}
			b.Log("\n" + out.String())
		})
	}
}

// BenchmarkClusterSubmitBatch measures POST /v1/jobs/batch on a
// three-node cluster (100 specs per request, round robin over the nodes),
// with single submits of as many jobs in the same run as the baseline.
func BenchmarkClusterSubmitBatch(b *testing.B) {
	_, client := newBenchCluster(b, 3)
	var out bytes.Buffer
	if err := cli.BenchSubmitBatch(context.Background(), client, &out, 20000, 16, 100); err != nil {
		b.Fatal(err)
	}
	b.Log("\n" + out.String())
}

// BenchmarkClusterGet measures GET /v1/jobs/{id} through the two
// followers of a three-node cluster, linearizable (the default) against
// stale, in the same run, with the load generator of `ffrtmp bench get`.
func BenchmarkClusterGet(b *testing.B) {
	raceBinary = false // measure the binary users run
	c := newTestCluster(b, 3)
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", "http://"+c.nodes[0].httpAddr, "--cluster-key-file", c.keyFile)
	l := c.leader()
	var followers []*serverProc
	for _, s := range c.nodes {
		if s != l {
			followers = append(followers, s)
		}
	}
	client, err := cli.NewClient(c.addrs(followers...), c.key())
	if err != nil {
		b.Fatal(err)
	}
	var out bytes.Buffer
	if err := cli.BenchGet(context.Background(), client, &out, 10000, 64, 3); err != nil {
		b.Fatal(err)
	}
	b.Logf("through followers %s and %s (leader %s):\n%s", followers[0].id, followers[1].id, l.id, out.String())
}

// BenchmarkClusterFailover kills the leader of a three-node cluster with
// SIGKILL ten times and measures the time from the kill until a write
// (retried by the client across the surviving nodes) succeeds again; the
// killed node is restarted and caught up between rounds.
func BenchmarkClusterFailover(b *testing.B) {
	c, client := newBenchCluster(b, 3)
	spec := &fsm.JobSpec{Scenario: "240p30-h264", Queue: fsm.QueueBatch,
		Input: fsm.Input{URL: "testsrc://?duration=1"}, Outputs: []fsm.Output{{URL: "file:///failover.mp4"}}}
	var times []time.Duration
	for round := range 10 {
		l := c.leader()
		t0 := time.Now()
		l.kill9()
		if _, err := client.Rotated(round).SubmitJob(context.Background(), spec); err != nil {
			b.Fatalf("round %d: write after the kill: %v", round, err)
		}
		times = append(times, time.Since(t0))
		l.start(c.env)
		c.waitReady(l)
	}
	slices.Sort(times)
	b.ReportMetric(times[0].Seconds(), "min-s")
	b.ReportMetric(times[len(times)/2].Seconds(), "median-s")
	b.ReportMetric(times[len(times)-1].Seconds(), "max-s")
	b.Logf("failover times: %v", times)
}

// newBenchCluster starts size servers, initializes the cluster and
// returns it with a client that knows every node.
func newBenchCluster(b *testing.B, size int) (*testCluster, *cli.Client) {
	b.Helper()
	raceBinary = false // measure the binary users run
	c := newTestCluster(b, size)
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", "http://"+c.nodes[0].httpAddr, "--cluster-key-file", c.keyFile)
	client, err := cli.NewClient(c.addrs(c.nodes...), c.key())
	if err != nil {
		b.Fatal(err)
	}
	return c, client
}

// BenchmarkClusterWorkers is the plan's first load test (jobs through
// many workers) at the size this machine allows: FFRTMP_BENCH_JOBS jobs
// (default 10,000) of one second each through FFRTMP_BENCH_WORKERS
// simulated workers (default 100, 2 slots each), run by `ffrtmp bench
// workers` in a process of its own with a worker token each, while
// `ffrtmp bench submit`'s load generator submits every job from 64
// clients round robin over the nodes. It runs on one node (the same-run
// baseline) and on three, and reports the wall time from the first
// submit until the last job finished, placements per second (jobs over
// the time from the first to the last assignment), and submit → running
// p50/p99 (submitted_at to started_at, as the servers stamped them).
func BenchmarkClusterWorkers(b *testing.B) {
	jobs, workers := benchEnvInt(b, "FFRTMP_BENCH_JOBS", 10000), benchEnvInt(b, "FFRTMP_BENCH_WORKERS", 100)
	for _, size := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			c, client := newBenchCluster(b, size)
			wlog, wout := &syncBuffer{}, &syncBuffer{}
			sim := exec.Command(binary(b), "--addr", c.addrs(c.nodes...), "bench", "workers", "--count", fmt.Sprint(workers),
				"--slots", "2", "--tokens-create", "-o", "json")
			sim.Env, sim.Stdout, sim.Stderr = c.env, wout, wlog
			if err := sim.Start(); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				if sim.ProcessState == nil {
					sim.Process.Signal(syscall.SIGTERM)
					sim.Wait()
				}
				b.Logf("bench workers:\n%s\n%s", lastLines(wlog.String(), 3), wout.String())
			})
			waitWorkers(b, client, workers)
			var out bytes.Buffer
			cfg := cli.SubmitBench{Jobs: jobs, Concurrency: 64, Keep: true}
			if err := cli.BenchSubmit(context.Background(), []*cli.Client{client}, cfg, cli.Output{W: &out}, io.Discard); err != nil {
				b.Fatal(err)
			}
			b.Log("\n" + out.String())
			ctx := context.Background()
			deadline := time.Now().Add(30 * time.Minute)
			for {
				page, err := client.ListJobs(ctx, url.Values{"state": {"queued,assigned,running"}, "limit": {"1"}, "consistent": {"true"}})
				if err == nil && len(page.Jobs) == 0 {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("jobs still active after 30 minutes (%v)", err)
				}
				time.Sleep(500 * time.Millisecond)
			}
			var all []server.Job
			q := url.Values{"limit": {"1000"}, "consistent": {"true"}}
			for {
				page, err := client.ListJobs(ctx, q)
				if err != nil {
					b.Fatal(err)
				}
				all = append(all, page.Jobs...)
				if page.Next == "" {
					break
				}
				q.Set("after", page.Next)
			}
			var firstSubmit, firstAssign, lastAssign, lastFinish time.Time
			var wait []time.Duration
			succeeded := 0
			for _, j := range all {
				if j.State == fsm.JobSucceeded {
					succeeded++
				}
				wait = append(wait, j.StartedAt.Sub(j.SubmittedAt))
				if firstSubmit.IsZero() || j.SubmittedAt.Before(firstSubmit) {
					firstSubmit = j.SubmittedAt
				}
				if firstAssign.IsZero() || j.AssignedAt.Before(firstAssign) {
					firstAssign = j.AssignedAt
				}
				if j.AssignedAt.After(lastAssign) {
					lastAssign = j.AssignedAt
				}
				if j.FinishedAt.After(lastFinish) {
					lastFinish = j.FinishedAt
				}
			}
			if len(all) != jobs || succeeded != jobs {
				b.Fatalf("%d jobs, %d succeeded; want %d", len(all), succeeded, jobs)
			}
			slices.Sort(wait)
			wall := lastFinish.Sub(firstSubmit)
			placements := float64(jobs) / lastAssign.Sub(firstAssign).Seconds()
			p50, p99 := wait[(len(wait)-1)/2], wait[(len(wait)*99+99)/100-1]
			b.ReportMetric(wall.Seconds(), "wall-s")
			b.ReportMetric(placements, "placements/s")
			b.ReportMetric(p50.Seconds(), "run-p50-s")
			b.ReportMetric(p99.Seconds(), "run-p99-s")
			// The floor: every slot busy from the start, no scheduling cost.
			ideal := time.Duration(jobs) * time.Second / time.Duration(2*workers)
			b.Logf("%d jobs, %d workers × 2 slots, %d node(s): wall %v (slot-bound floor %v), placements %.0f/s, submit→running p50 %v p99 %v",
				jobs, workers, size, wall.Round(time.Millisecond), ideal, placements, p50.Round(time.Millisecond), p99.Round(time.Millisecond))
		})
	}
}

// benchEnvInt returns the positive integer in the environment variable,
// or def if it is unset.
func benchEnvInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
