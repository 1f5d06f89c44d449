package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
	"golang.org/x/sync/errgroup"
)

// These benchmarks run real server processes on 127.0.0.N and report
// their own metrics; run them once each:
//
//	go test -run '^$' -bench Cluster -benchtime 1x .
//
// docs/BENCHMARKS.md has the method and results.

// BenchmarkClusterSubmit measures submit throughput and latency of a
// one-node and a three-node cluster in the same run, with the load
// generator of `ffrtmp bench submit` (round robin over the nodes; on
// three nodes also one client through the leader only and through a
// follower only), against raw hashicorp/raft (`ffrtmp bench raft`) run
// before and after them, and reports the ratios (vs-raw-raft).
func BenchmarkClusterSubmit(b *testing.B) {
	raw := &rawRaftResults{}
	benchRawRaft(b, "raw-raft-before", raw)
	got := map[string]cli.BenchResult{}
	for _, size := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			c, client := newBenchCluster(b, size)
			for _, conc := range []int{1, 16, 64} {
				b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
					got[fmt.Sprintf("nodes=%d/concurrency=%d", size, conc)] = benchSubmitOnce(b, client, conc)
				})
			}
			if size == 3 {
				benchSubmitViaLeaderAndFollower(b, c, got)
			}
		})
	}
	benchRawRaft(b, "raw-raft-after", raw)
	b.Run("vs-raw-raft", func(b *testing.B) { reportAgainstRawRaft(b, raw, got) })
}

// benchSubmitOnce runs bench submit's closed loop of 2000 submits from
// conc clients (GET /health first, as its baseline), logs its table,
// reports the submits' rate and p50, and returns their result.
func benchSubmitOnce(b *testing.B, client *cli.Client, conc int) cli.BenchResult {
	b.Helper()
	var out bytes.Buffer
	cfg := cli.SubmitBench{Jobs: 2000, Concurrency: conc, Keep: true, Baseline: true}
	if err := cli.BenchSubmit(context.Background(), []*cli.Client{client}, cfg, cli.Output{W: &out, JSON: true}, io.Discard); err != nil {
		b.Fatal(err)
	}
	var report cli.BenchReport
	if err := json.Unmarshal(out.Bytes(), &report); err != nil || len(report.Results) == 0 {
		b.Fatalf("bench submit report: %v\n%s", err, out.String())
	}
	var table bytes.Buffer
	cli.PrintBenchResults(&table, report.Results)
	b.Logf("to %s:\n%s", strings.Join(report.Targets, ","), table.String())
	res := report.Results[len(report.Results)-1]
	b.ReportMetric(res.Throughput, "submits/s")
	b.ReportMetric(res.P50, "p50-ms")
	return res
}

// benchSubmitViaLeaderAndFollower measures one client submitting to the
// leader only and to one follower only (the leader found with `ffrtmp
// cluster status`), as got["via=leader"] and got["via=follower"].
func benchSubmitViaLeaderAndFollower(b *testing.B, c *testCluster, got map[string]cli.BenchResult) {
	l := c.leader()
	for _, via := range []struct {
		name string
		node *serverProc
	}{{"leader", l}, {"follower", c.followers(l)[0]}} {
		b.Run("via="+via.name, func(b *testing.B) {
			client, err := cli.NewClient(c.addrs(via.node), c.key())
			if err != nil {
				b.Fatal(err)
			}
			got["via="+via.name] = benchSubmitOnce(b, client, 1)
		})
	}
}

// rawRaftResults are the bench raft measurements of one benchmark run,
// by entry size and concurrency, each run of them in order.
type rawRaftResults struct {
	runs []map[[2]int]cli.BenchResult
}

// best returns the best of the runs for an entry size and concurrency:
// the highest rate and the lowest p50 (each may come from another run),
// the baseline least favourable to ffrtmp; ok is false if none ran.
func (r *rawRaftResults) best(size, conc int) (rate, p50 float64, ok bool) {
	for _, run := range r.runs {
		res, found := run[[2]int{size, conc}]
		if !found {
			continue
		}
		if !ok || res.Throughput > rate {
			rate = res.Throughput
		}
		if !ok || res.P50 < p50 {
			p50 = res.P50
		}
		ok = true
	}
	return rate, p50, ok
}

// benchRawRaft runs `ffrtmp bench raft` (three raw hashicorp/raft nodes,
// each a process of the ffrtmp binary, one entry per request to the
// leader) at the concurrencies of BenchmarkClusterSubmit, 64 B and 1 KiB
// entries, 5 s each, and adds its results to raw.
func benchRawRaft(b *testing.B, name string, raw *rawRaftResults) {
	b.Run(name, func(b *testing.B) {
		raceBinary = false // measure the binary users run
		cfg := cli.RaftBench{Nodes: 3, Sizes: []int{64, 1024}, Concurrencies: []int{1, 16, 64}, Duration: 5 * time.Second, Exe: binary(b)}
		report, err := cli.BenchRaft(context.Background(), cfg, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		var table bytes.Buffer
		cli.PrintRaftBench(&table, report)
		b.Log("\n" + strings.TrimSuffix(table.String(), "\n"))
		run := map[[2]int]cli.BenchResult{}
		for _, r := range report.Results {
			run[[2]int{r.Size, r.Concurrency}] = r.BenchResult
		}
		raw.runs = append(raw.runs, run)
		b.ReportMetric(run[[2]int{1024, 64}].Throughput, "1KiB-64c-ops/s")
		b.ReportMetric(run[[2]int{1024, 1}].P50, "1KiB-1c-p50-ms")
	})
}

// reportAgainstRawRaft reports the targets as ratios against raw
// Raft (the best of its runs): three nodes round robin at 64 clients
// against the raw 1 KiB rate at 64 clients (target >= 1), and one
// client's p50 through a follower and through the leader against the raw
// 1 KiB serial p50 (targets <= 2 and <= 1.5).
func reportAgainstRawRaft(b *testing.B, raw *rawRaftResults, got map[string]cli.BenchResult) {
	rate64, _, ok64 := raw.best(1024, 64)
	_, p50, ok1 := raw.best(1024, 1)
	rows := []struct {
		metric, what, target string
		ffrtmp               cli.BenchResult
		found, useRate       bool
		raw                  float64
	}{
		{metric: "rr64/raw", what: "3 nodes round robin, 64 clients: submits/s over raw 1 KiB entries/s", target: ">= 1.0", useRate: true, raw: rate64},
		{metric: "follower-p50/raw", what: "1 client through a follower: p50 over raw 1 KiB serial p50", target: "<= 2.0", raw: p50},
		{metric: "leader-p50/raw", what: "1 client through the leader: p50 over raw 1 KiB serial p50", target: "<= 1.5", raw: p50},
	}
	rows[0].ffrtmp, rows[0].found = got["nodes=3/concurrency=64"]
	rows[1].ffrtmp, rows[1].found = got["via=follower"]
	rows[2].ffrtmp, rows[2].found = got["via=leader"]
	var tb strings.Builder
	tw := tabwriter.NewWriter(&tb, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ratio\tffrtmp\traw raft\tratio\ttarget\n")
	for _, r := range rows {
		if !r.found || (r.useRate && !ok64) || (!r.useRate && !ok1) {
			fmt.Fprintf(tw, "%s\tnot measured\t\t\t%s\n", r.what, r.target)
			continue
		}
		v, unit := r.ffrtmp.P50, "ms"
		if r.useRate {
			v, unit = r.ffrtmp.Throughput, "/s"
		}
		ratio := v / r.raw
		b.ReportMetric(ratio, r.metric)
		fmt.Fprintf(tw, "%s\t%.2f%s\t%.2f%s\t%.2f\t%s\n", r.what, v, unit, r.raw, unit, ratio, r.target)
	}
	tw.Flush()
	b.Log("against raw hashicorp/raft (best of its runs):\n" + strings.TrimSuffix(tb.String(), "\n"))
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
	followers := c.followers(l)
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
			startSimWorkers(b, c, workers, 2)
			waitWorkers(b, client, workers)
			var out bytes.Buffer
			cfg := cli.SubmitBench{Jobs: jobs, Concurrency: 64, Keep: true}
			if err := cli.BenchSubmit(context.Background(), []*cli.Client{client}, cfg, cli.Output{W: &out}, io.Discard); err != nil {
				b.Fatal(err)
			}
			b.Log("\n" + out.String())
			r, _ := waitJobsDone(b, client, jobs)
			b.ReportMetric(r.placements, "placements/s")
			// The floor: every slot busy from the start, no scheduling cost.
			ideal := time.Duration(jobs) * time.Second / time.Duration(2*workers)
			b.Logf("%d jobs, %d workers × 2 slots, %d node(s): wall %v (slot-bound floor %v), placements %.0f/s, submit→running p50 %v p99 %v",
				jobs, workers, size, r.wall.Round(time.Millisecond), ideal, r.placements, r.runP50.Round(time.Millisecond), r.runP99.Round(time.Millisecond))
		})
	}
}

// BenchmarkClusterPlacements is the placement target's test: FFRTMP_BENCH_JOBS
// jobs (default 10,000) are queued, through the batch endpoint, in a
// tenant whose max_concurrent_jobs quota is 1, then FFRTMP_BENCH_WORKERS
// simulated workers (default 100) with FFRTMP_BENCH_SLOTS slots each
// (default 10) start, and once all are up the quota is lifted: the
// scheduler then places from a full queue onto workers that are all up.
// Jobs run one second, so once every slot is busy the slots bound
// placements at workers × slots per second. On one node (the same-run
// baseline) and on three (FFRTMP_BENCH_NODES) it reports the fill rate
// (the placements that filled every free slot after the quota was
// lifted, over the time from the lift until the last of them),
// placements per second from then until the last assignment, the time
// from the lift until the last job finished, the workers' connections
// to the node ports and the Raft term.
func BenchmarkClusterPlacements(b *testing.B) {
	jobs, workers := benchEnvInt(b, "FFRTMP_BENCH_JOBS", 10000), benchEnvInt(b, "FFRTMP_BENCH_WORKERS", 100)
	slots := benchEnvInt(b, "FFRTMP_BENCH_SLOTS", 10)
	for _, size := range benchSizes(b) {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			c, client := newBenchCluster(b, size)
			ctx, discard := context.Background(), cli.Output{W: io.Discard}
			const tenant = "placements"
			req := server.CreateTenantRequest{Name: tenant, Limits: server.TenantLimits{MaxConcurrentJobs: 1}}
			if err := cli.CreateTenant(ctx, client, discard, io.Discard, req); err != nil {
				b.Fatal(err)
			}
			tc := client.ForTenant(tenant)
			fillQueue(b, tc, jobs)
			startSimWorkers(b, c, workers, slots)
			waitWorkers(b, client, workers)
			lifted := time.Now()
			unlimited := 0
			lift := server.UpdateTenantRequest{Limits: &server.TenantLimitsPatch{MaxConcurrentJobs: &unlimited}}
			if err := cli.UpdateTenant(ctx, client, discard, tenant, lift); err != nil {
				b.Fatal(err)
			}
			r, all := waitJobsDone(b, tc, jobs)
			var after []time.Time // assignments after the lift
			held := 0             // slots the quota's one job held at the lift
			for _, j := range all {
				switch {
				case j.AssignedAt.After(lifted):
					after = append(after, j.AssignedAt)
				case j.FinishedAt.After(lifted):
					held++
				}
			}
			slices.SortFunc(after, time.Time.Compare)
			fill := min(workers*slots-held, len(after))
			fillRate := float64(fill) / after[fill-1].Sub(lifted).Seconds()
			rate := float64(len(after)) / after[len(after)-1].Sub(lifted).Seconds()
			b.ReportMetric(fillRate, "fill-placements/s")
			b.ReportMetric(rate, "placements/s")
			conns, term := nodePortLoad(b, c)
			b.ReportMetric(conns, "worker-conns")
			b.ReportMetric(term, "raft-term")
			b.Logf("%d jobs queued, %d workers × %d slots up, %d node(s): after the lift, the first %d placements at %.0f/s, all %d at %.0f/s (slot-bound ceiling %d/s); last job finished %v after the lift; assign→running p50 %v p99 %v; worker connections to the node ports %.0f; Raft term %.0f",
				jobs, workers, slots, size, fill, fillRate, len(after), rate, workers*slots, r.lastFinish.Sub(lifted).Round(time.Millisecond),
				r.startP50.Round(time.Millisecond), r.startP99.Round(time.Millisecond), conns, term)
		})
	}
}

// benchSizes returns the cluster sizes to run: FFRTMP_BENCH_NODES (a
// comma-separated list, default "1,3"; the one-node run is the same-run
// baseline).
func benchSizes(b *testing.B) []int {
	v := cmp.Or(os.Getenv("FFRTMP_BENCH_NODES"), "1,3")
	var sizes []int
	for f := range strings.SplitSeq(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			b.Fatalf("FFRTMP_BENCH_NODES=%q: want sizes such as 1,3", v)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// nodePortLoad returns the connections workers opened to the node ports
// of all servers (TLS handshakes, from ffrtmp_node_port_connections_total)
// and the highest Raft term (each election raises it).
func nodePortLoad(b *testing.B, c *testCluster) (workerConns, term float64) {
	b.Helper()
	for _, s := range c.nodes {
		v, err := metricValue(s, c.key(), `ffrtmp_node_port_connections_total{caller="worker"}`)
		if err != nil {
			b.Fatal(err)
		}
		workerConns += v
		t, err := metricValue(s, c.key(), "ffrtmp_raft_term")
		if err != nil {
			b.Fatal(err)
		}
		term = max(term, t)
	}
	return workerConns, term
}

// fillQueue submits n copies of the default bench spec through the batch
// endpoint, 1,000 per request from four clients, and fails on any refusal.
func fillQueue(b *testing.B, client *cli.Client, n int) {
	b.Helper()
	spec := *cli.DefaultBenchSpec()
	// The queue is the test: no job may expire waiting in it.
	spec.AcquireTimeout = fsm.Duration(time.Hour)
	t0 := time.Now()
	var g errgroup.Group
	g.SetLimit(4)
	for i := 0; i < n; i += fsm.MaxSubmitBatch {
		specs := make([]*fsm.JobSpec, min(fsm.MaxSubmitBatch, n-i))
		for k := range specs {
			specs[k] = &spec
		}
		g.Go(func() error {
			res, err := client.Rotated(i).SubmitJobs(context.Background(), specs)
			if err != nil {
				return err
			}
			for _, r := range res {
				if r.Error != nil {
					return fmt.Errorf("submit: %s: %s", r.Error.Code, r.Error.Message)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	b.Logf("queued %d jobs in %v", n, time.Since(t0).Round(time.Millisecond))
}

// jobRun summarizes the jobs of a load test, from the servers' stamps.
type jobRun struct {
	firstSubmit, lastFinish time.Time
	wall                    time.Duration // first submit to last finish
	// placements is jobs per second from the first to the last assignment.
	placements float64
	// submit→running and assign→running.
	runP50, runP99, startP50, startP99 time.Duration
}

// waitJobsDone waits until no job is active, checks that all n jobs
// succeeded, reports the run's metrics and returns them with the jobs.
func waitJobsDone(b *testing.B, client *cli.Client, n int) (jobRun, []server.Job) {
	b.Helper()
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
	all := listAllJobs(b, client)
	var r jobRun
	var firstAssign, lastAssign time.Time
	var run, start []time.Duration
	succeeded := 0
	var failed []string // the first few jobs that did not succeed
	for _, j := range all {
		if j.State == fsm.JobSucceeded {
			succeeded++
		} else if len(failed) < 3 {
			failed = append(failed, fmt.Sprintf("%s %s %+v", j.ID, j.State, j.Error))
		}
		run = append(run, j.StartedAt.Sub(j.SubmittedAt))
		start = append(start, j.StartedAt.Sub(j.AssignedAt))
		if r.firstSubmit.IsZero() || j.SubmittedAt.Before(r.firstSubmit) {
			r.firstSubmit = j.SubmittedAt
		}
		if firstAssign.IsZero() || j.AssignedAt.Before(firstAssign) {
			firstAssign = j.AssignedAt
		}
		if j.AssignedAt.After(lastAssign) {
			lastAssign = j.AssignedAt
		}
		if j.FinishedAt.After(r.lastFinish) {
			r.lastFinish = j.FinishedAt
		}
	}
	if len(all) != n || succeeded != n {
		b.Fatalf("%d jobs, %d succeeded; want %d; for example: %v", len(all), succeeded, n, failed)
	}
	slices.Sort(run)
	slices.Sort(start)
	pct := func(d []time.Duration, p int) time.Duration { return d[(len(d)*p+99)/100-1] }
	r.wall = r.lastFinish.Sub(r.firstSubmit)
	r.placements = float64(n) / lastAssign.Sub(firstAssign).Seconds()
	r.runP50, r.runP99 = pct(run, 50), pct(run, 99)
	r.startP50, r.startP99 = pct(start, 50), pct(start, 99)
	b.ReportMetric(r.wall.Seconds(), "wall-s")
	b.ReportMetric(r.runP50.Seconds(), "run-p50-s")
	b.ReportMetric(r.runP99.Seconds(), "run-p99-s")
	return r, all
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
