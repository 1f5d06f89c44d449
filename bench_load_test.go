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
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// The plan's load tests at ten times their size (issue 13): sustained
// open-loop submits, with and without leader kills, and fairness across
// tenants. Sizes come from the environment; docs/BENCHMARKS.md sections
// 13 and 14 have the method, the commands and the results.

// BenchmarkClusterSustained submits FFRTMP_BENCH_RATE single jobs per
// second (default 2,000) for FFRTMP_BENCH_DURATION (default 60s) in an
// open loop, round robin over the nodes: requests are issued on schedule
// whether or not earlier ones returned, and a request's latency counts
// from its scheduled time. It runs against one node (the same-run
// baseline), three nodes ("steady", the kill run's baseline) and three
// nodes whose leader is killed with SIGKILL every FFRTMP_BENCH_KILL_EVERY
// (default 20s) and restarted ("leader-kill"). Every request names its
// job, so that afterwards every node's job list shows acknowledged jobs
// lost (on no node) and requests that made two jobs.
func BenchmarkClusterSustained(b *testing.B) {
	rate := benchEnvInt(b, "FFRTMP_BENCH_RATE", 2000)
	duration := benchEnvDuration(b, "FFRTMP_BENCH_DURATION", 60*time.Second)
	every := benchEnvDuration(b, "FFRTMP_BENCH_KILL_EVERY", 20*time.Second)
	for _, run := range []struct {
		name  string
		nodes int
		kill  time.Duration
	}{{"nodes=1", 1, 0}, {"steady", 3, 0}, {"leader-kill", 3, every}} {
		b.Run(run.name, func(b *testing.B) {
			sustainedRun(b, run.nodes, float64(rate), duration, run.kill)
		})
	}
}

// ack is one acknowledged submit.
type ack struct {
	i  int
	id string
	at time.Time
}

// sustainedRun runs one open-loop submit run against a new cluster of
// size nodes, killing the leader every kill (0: never), and reports it.
func sustainedRun(b *testing.B, size int, rate float64, duration, kill time.Duration) {
	c, client := newBenchCluster(b, size)
	var mu sync.Mutex
	var acks []ack
	spec := cli.DefaultBenchSpec()
	spec.Name = "load"
	cfg := cli.SubmitBench{Rate: rate, Duration: duration, MaxInFlight: 4096, Timeout: 30 * time.Second,
		Spec: spec, Keep: true, NameEach: true,
		Acked: func(i int, j *server.Job, at time.Time) {
			mu.Lock()
			acks = append(acks, ack{i, j.ID, at})
			mu.Unlock()
		}}
	var out bytes.Buffer
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- cli.BenchSubmit(context.Background(), []*cli.Client{client}, cfg, cli.Output{W: &out, JSON: true}, io.Discard)
	}()
	// Kill the leader on schedule while the submits run; this goroutine
	// is the benchmark's, so the cluster helpers may fail it.
	var kills []string
	var err error
	for k := 1; ; k++ {
		var tick <-chan time.Time
		if at := start.Add(time.Duration(k) * kill); kill > 0 && at.Before(start.Add(duration)) {
			tick = time.After(time.Until(at))
		}
		select {
		case err = <-done:
		case <-tick:
			l := c.leader()
			t0 := time.Now()
			l.kill9()
			l.start(c.env)
			c.waitReady(l)
			kills = append(kills, fmt.Sprintf("%s at %.1fs (back in %.1fs)", l.id, t0.Sub(start).Seconds(), time.Since(t0).Seconds()))
			continue
		}
		break
	}
	if err != nil {
		b.Fatal(err)
	}
	var rep cli.BenchReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || len(rep.Results) != 1 {
		b.Fatalf("bench submit output %q: %v", out.String(), err)
	}
	res := rep.Results[0]
	c.waitReady(c.nodes...)

	// Every node's view of the jobs, read consistently once all are up.
	lost, dups, missing := len(acks), 0, 0
	present := map[string]int{} // acknowledged job ID → nodes listing it
	acked := map[string]bool{}
	for _, a := range acks {
		acked[a.id] = true
	}
	for _, s := range c.nodes {
		nc, err := cli.NewClient("http://"+s.httpAddr, c.key())
		if err != nil {
			b.Fatal(err)
		}
		names := map[string]int{}
		for _, j := range listAllJobs(b, nc) {
			names[j.Spec.Name]++
			if acked[j.ID] {
				present[j.ID]++
			}
		}
		d := 0
		for _, n := range names {
			d += n - 1
		}
		dups = max(dups, d)
	}
	lost -= len(present)
	for _, n := range present {
		if n != len(c.nodes) {
			missing++
		}
	}

	// The longest stall: the longest time without an acknowledgement,
	// from the start of the run until the last one.
	slices.SortFunc(acks, func(x, y ack) int { return x.at.Compare(y.at) })
	var stall time.Duration
	var stallAt time.Time
	prev := start
	for _, a := range acks {
		if d := a.at.Sub(prev); d > stall {
			stall, stallAt = d, prev
		}
		prev = a.at
	}
	b.ReportMetric(res.Throughput, "ok/s")
	b.ReportMetric(res.P50, "p50-ms")
	b.ReportMetric(res.P99, "p99-ms")
	b.ReportMetric(res.P999, "p99.9-ms")
	b.ReportMetric(float64(res.Requests-res.OK), "errors")
	b.ReportMetric(float64(lost), "lost")
	b.ReportMetric(float64(dups), "duplicated")
	b.ReportMetric(stall.Seconds(), "stall-s")
	b.Logf("%d node(s), %g/s open loop for %v: %d requests, %d ok (%.0f/s over %.1fs), errors %s, p50 %.1fms p99 %.1fms p99.9 %.1fms max %.1fms",
		size, rate, duration, res.Requests, res.OK, res.Throughput, res.Seconds, cli.ErrorCounts(res.Errors), res.P50, res.P99, res.P999, res.Max)
	b.Logf("acknowledged %d: lost %d, duplicated %d, on fewer than all nodes %d; longest stall %.2fs from %.1fs; kills: %s",
		len(acks), lost, dups, missing, stall.Seconds(), stallAt.Sub(start).Seconds(), cmp.Or(strings.Join(kills, ", "), "none"))
	if lost > 0 || dups > 0 {
		b.Errorf("acknowledged jobs lost %d, duplicated %d: want 0 and 0", lost, dups)
	}
}

// BenchmarkClusterFairness is the plan's fairness test: FFRTMP_BENCH_TENANTS
// tenants (default 10) each submit FFRTMP_BENCH_TENANT_JOBS jobs (default
// 10,000) to three nodes, one tenant after the other, so that every job of
// tenant 1 is older than every job of tenant 2 and a first-come scheduler
// would finish them in tenant order. Then FFRTMP_BENCH_WORKERS simulated
// workers (default 100, 2 slots, shared by every tenant) start, and every
// FFRTMP_BENCH_SAMPLE (default 5s) each tenant's finished count is read
// from GET /v1/jobs/summary. It reports each tenant's share of the jobs
// finished in each interval against the equal share, the max/min ratio,
// and each tenant's finish time (its last finished_at) against the wall
// time.
func BenchmarkClusterFairness(b *testing.B) {
	tenants := benchEnvInt(b, "FFRTMP_BENCH_TENANTS", 10)
	jobs := benchEnvInt(b, "FFRTMP_BENCH_TENANT_JOBS", 10000)
	workers := benchEnvInt(b, "FFRTMP_BENCH_WORKERS", 100)
	sample := benchEnvDuration(b, "FFRTMP_BENCH_SAMPLE", 5*time.Second)
	c, client := newBenchCluster(b, 3)
	ctx := context.Background()
	var ids []string
	var tc []*cli.Client
	for i := range tenants {
		id := fmt.Sprintf("fair-%d", i+1)
		if !c.createTenant(id) {
			b.Skip("this build has no tenants")
		}
		ids = append(ids, id)
		tc = append(tc, client.ForTenant(id))
	}
	for i, t := range tc {
		var out bytes.Buffer
		// At the plan's size the last jobs wait far longer than the
		// default acquire timeout (10 minutes) for a slot.
		spec := cli.DefaultBenchSpec()
		spec.AcquireTimeout = fsm.Duration(2 * time.Hour)
		cfg := cli.SubmitBench{Jobs: jobs, Concurrency: 64, Keep: true, Spec: spec}
		if err := cli.BenchSubmit(ctx, []*cli.Client{t}, cfg, cli.Output{W: &out}, io.Discard); err != nil {
			b.Fatal(err)
		}
		b.Logf("tenant %s submitted:\n%s", ids[i], out.String())
	}
	sim := startSimWorkers(b, c, workers, 2)
	start := time.Now()
	waitWorkers(b, client, workers)

	// Sample each tenant's finished jobs (all of its jobs less the active
	// ones) until every job finished.
	type point struct {
		at   time.Duration
		done []int
	}
	var points []point
	deadline := start.Add(60 * time.Minute)
	for {
		p := point{at: time.Since(start)}
		total := 0
		for i, t := range tc {
			s, _, err := t.JobSummary(ctx)
			if err != nil {
				b.Fatalf("summary of %s: %v", ids[i], err)
			}
			active := 0
			for _, n := range s.States {
				active += n
			}
			p.done = append(p.done, jobs-active)
			total += jobs - active
		}
		points = append(points, p)
		if total == tenants*jobs {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d jobs finished after 60 minutes", total, tenants*jobs)
		}
		time.Sleep(sample)
	}
	sim.stop()

	// Every job read back: succeeded, and each tenant's finish time.
	var first, last time.Time
	finish := make([]time.Time, tenants)
	for i, t := range tc {
		all := listAllJobs(b, t)
		ok := 0
		for _, j := range all {
			if j.State == fsm.JobSucceeded {
				ok++
			}
			if first.IsZero() || j.AssignedAt.Before(first) {
				first = j.AssignedAt
			}
			if j.FinishedAt.After(finish[i]) {
				finish[i] = j.FinishedAt
			}
		}
		if len(all) != jobs || ok != jobs {
			b.Fatalf("tenant %s: %d jobs, %d succeeded; want %d", ids[i], len(all), ok, jobs)
		}
		if finish[i].After(last) {
			last = finish[i]
		}
	}

	var tab strings.Builder
	fmt.Fprintf(&tab, "| interval end (s) | finished in interval | %s | max/min |\n", strings.Join(ids, " | "))
	fmt.Fprintf(&tab, "|%s\n", strings.Repeat(" --- |", tenants+3))
	worst := 0.0
	for k := 1; k < len(points); k++ {
		var shares []string
		total, lo, hi := 0, -1, 0
		for i := range tenants {
			d := points[k].done[i] - points[k-1].done[i]
			total += d
			if lo < 0 || d < lo {
				lo = d
			}
			hi = max(hi, d)
		}
		if total == 0 {
			continue
		}
		for i := range tenants {
			shares = append(shares, fmt.Sprintf("%.1f%%", 100*float64(points[k].done[i]-points[k-1].done[i])/float64(total)))
		}
		ratio := "∞"
		if lo > 0 {
			r := float64(hi) / float64(lo)
			ratio = fmt.Sprintf("%.2f", r)
			// Only intervals where every tenant still had work count.
			if slices.Max(points[k].done) < jobs {
				worst = max(worst, r)
			}
		}
		fmt.Fprintf(&tab, "| %.0f | %d | %s | %s |\n", points[k].at.Seconds(), total, strings.Join(shares, " | "), ratio)
	}
	var fin []string
	for i := range tenants {
		fin = append(fin, fmt.Sprintf("%s %.2fs", ids[i], finish[i].Sub(first).Seconds()))
	}
	wall := last.Sub(first)
	b.ReportMetric(wall.Seconds(), "wall-s")
	b.ReportMetric(float64(tenants*jobs)/wall.Seconds(), "jobs/s")
	b.ReportMetric(worst, "max/min")
	b.Logf("%d tenants × %d jobs, %d workers × 2 slots, 3 nodes; equal share %.1f%%; wall %.1fs (first assignment to last finish)\n%s\nfinish times (from the first assignment): %s",
		tenants, jobs, workers, 100/float64(tenants), wall.Seconds(), tab.String(), strings.Join(fin, ", "))
}

// simWorkers is an `ffrtmp bench workers` process.
type simWorkers struct {
	cmd      *exec.Cmd
	log, out *syncBuffer
	b        *testing.B
	once     sync.Once
}

// startSimWorkers starts n simulated workers with the given slots, with
// worker tokens of the shared pool created for them; they stop at the
// end of the benchmark, or at stop.
func startSimWorkers(b *testing.B, c *testCluster, n, slots int) *simWorkers {
	b.Helper()
	s := &simWorkers{log: &syncBuffer{}, out: &syncBuffer{}, b: b}
	s.cmd = exec.Command(binary(b), "--addr", c.addrs(c.nodes...), "bench", "workers", "--count", fmt.Sprint(n),
		"--slots", fmt.Sprint(slots), "--tokens-create", "-o", "json")
	s.cmd.Env, s.cmd.Stdout, s.cmd.Stderr = c.env, s.out, s.log
	if err := s.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.stop)
	return s
}

// stop ends the workers and logs their summary.
func (s *simWorkers) stop() {
	s.once.Do(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		s.cmd.Wait()
		s.b.Logf("bench workers:\n%s\n%s", lastLines(s.log.String(), 3), s.out.String())
	})
}

// listAllJobs reads every job the client's node and tenant show,
// consistently, a page at a time.
func listAllJobs(b *testing.B, c *cli.Client) []server.Job {
	b.Helper()
	var all []server.Job
	q := url.Values{"limit": {"1000"}, "consistent": {"true"}}
	for {
		page, err := c.ListJobs(context.Background(), q)
		if err != nil {
			b.Fatal(err)
		}
		all = append(all, page.Jobs...)
		if page.Next == "" {
			return all
		}
		q.Set("after", page.Next)
	}
}

// benchEnvDuration returns the positive duration in the environment
// variable, or def if it is unset.
func benchEnvDuration(b *testing.B, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		b.Fatalf("%s=%q: want a positive duration", name, v)
	}
	return d
}
