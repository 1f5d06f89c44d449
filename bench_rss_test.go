package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
)

// BenchmarkServerRSS measures the memory of real `ffrtmp server`
// processes (bolt store, built without the race detector) at rest:
//
//   - queued: RSS and live heap of a fresh cluster, then after
//     FFRTMP_BENCH_QUEUED jobs (default 100,000) submitted through POST
//     /v1/jobs/batch and left queued (no worker), per node; the bytes per
//     queued job are the growth over the job count. One node, and three
//     nodes unless FFRTMP_BENCH_NODES=1. On one node, the same jobs are
//     then canceled (POST /v1/jobs/{id}/cancel) and the node sampled
//     again: what finished jobs leave in a running node's memory
//     (FFRTMP_BENCH_NO_CANCEL set skips this).
//   - history: one node restarted on a state file holding 10,000 finished
//     jobs, then on the same file grown to FFRTMP_BENCH_HISTORY finished
//     jobs (default 1,000,000). The history is written into the stopped
//     node's state file with the store API (as a restart after that many
//     jobs finds it), above the node's applied index.
//
// Every sample is taken at rest: after a garbage collection that started
// once the load had ended (the servers run with GODEBUG=gctrace=1, whose
// line gives the live heap the collection marked; the runtime collects at
// least every two minutes, and reading /metrics meanwhile makes a small
// heap reach its goal sooner), and once VmRSS has settled (changed by
// less than 1% over 10 s, or 60 s passed). VmRSS is split into anonymous
// memory (the Go heap, stacks, the runtime) and file-backed pages, of
// which those of the state file's and the Raft log's memory maps are
// counted from /proc/PID/smaps. Run it
// with -benchtime 1x; docs/BENCHMARKS.md section 12 has the method and
// results.
func BenchmarkServerRSS(b *testing.B) {
	queued := benchEnvInt(b, "FFRTMP_BENCH_QUEUED", 100_000)
	history := benchEnvInt(b, "FFRTMP_BENCH_HISTORY", 1_000_000)
	sizes := []int{1, 3}
	if os.Getenv("FFRTMP_BENCH_NODES") == "1" {
		sizes = sizes[:1]
	}
	for _, size := range sizes {
		b.Run(fmt.Sprintf("queued/nodes=%d", size), func(b *testing.B) { benchQueuedRSS(b, size, queued) })
	}
	b.Run("history", func(b *testing.B) { benchHistoryRSS(b, history) })
}

// rssSpec is the job every sample holds: the 720p30 H.264
// testsrc job, with an acquire timeout long enough that no queued job
// fails while the benchmark runs.
func rssSpec() *fsm.JobSpec {
	return &fsm.JobSpec{
		Name: "rss", Scenario: "720p30-h264", Queue: fsm.QueueBatch, Priority: fsm.PriorityLow,
		Input: fsm.Input{URL: "testsrc://?duration=5"}, Outputs: []fsm.Output{{URL: "file:///bench/rss.mp4"}},
		AcquireTimeout: fsm.Duration(24 * time.Hour),
	}
}

// newRSSCluster starts size servers that print a line per garbage
// collection, and initializes the cluster.
func newRSSCluster(b *testing.B, size int) *testCluster {
	b.Helper()
	raceBinary = false // measure the binary users run
	c := newTestCluster(b, size)
	c.env = append(c.env, "GODEBUG=gctrace=1")
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", "http://"+c.nodes[0].httpAddr, "--cluster-key-file", c.keyFile)
	return c
}

func benchQueuedRSS(b *testing.B, size, n int) {
	c := newRSSCluster(b, size)
	client, err := cli.NewClient(c.addrs(c.nodes...), c.key())
	if err != nil {
		b.Fatal(err)
	}
	before := settleAll(b, c)
	start := time.Now()
	ids := submitQueued(b, client, n)
	b.Logf("submitted %d jobs in %s", n, time.Since(start).Round(time.Millisecond))
	after := settleAll(b, c)
	for i, s := range c.nodes {
		m0, m1 := before[i], after[i]
		b.Logf("%s: before %s; after %d queued %s; per queued job: %.0f B RSS (%.0f B anon, %.0f B file), %.0f B live heap, %.0f B heap in use",
			s.id, m0, n, m1, perJob(m1.rss-m0.rss, n), perJob(m1.rssAnon-m0.rssAnon, n), perJob(m1.rssFile-m0.rssFile, n),
			perJob(m1.live-m0.live, n), perJob(m1.heapInuse-m0.heapInuse, n))
		b.ReportMetric(perJob(m1.rss-m0.rss, n), s.id+"_rss_B/job")
		b.ReportMetric(perJob(m1.rssAnon-m0.rssAnon, n), s.id+"_anon_B/job")
		b.ReportMetric(perJob(m1.live-m0.live, n), s.id+"_live_heap_B/job")
	}
	if size > 1 || os.Getenv("FFRTMP_BENCH_NO_CANCEL") != "" {
		return
	}
	// The same jobs finished (canceled) by the running node: what they
	// leave in its memory without a restart.
	start = time.Now()
	cancelAll(b, client, ids)
	b.Logf("canceled %d jobs in %s", n, time.Since(start).Round(time.Millisecond))
	m0, m2 := before[0], settle(b, c, c.nodes[0])
	b.Logf("%s: after the %d jobs finished %s; per finished job: %.0f B RSS (%.0f B anon, %.0f B file), %.0f B live heap",
		c.nodes[0].id, n, m2, perJob(m2.rss-m0.rss, n), perJob(m2.rssAnon-m0.rssAnon, n), perJob(m2.rssFile-m0.rssFile, n), perJob(m2.live-m0.live, n))
	b.ReportMetric(perJob(m2.rss-m0.rss, n), "finished_rss_B/job")
	b.ReportMetric(perJob(m2.live-m0.live, n), "finished_live_heap_B/job")
}

func perJob(bytes int64, n int) float64 { return float64(bytes) / float64(n) }

// cancelAll cancels every job of ids from 16 clients round robin over the
// nodes.
func cancelAll(b *testing.B, client *cli.Client, ids []string) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ids) {
					return
				}
				if _, err := client.Rotated(i).JobAction(context.Background(), ids[i], "cancel"); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d cancels failed", f)
	}
}

// submitQueued submits n jobs of rssSpec in batches of fsm.MaxSubmitBatch
// from 4 clients round robin over the nodes, and returns their IDs.
func submitQueued(b *testing.B, client *cli.Client, n int) []string {
	ids := make([]string, n)
	specs := make([]*fsm.JobSpec, fsm.MaxSubmitBatch)
	for i := range specs {
		specs[i] = rssSpec()
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i*len(specs) >= n {
					return
				}
				res, err := client.Rotated(i).SubmitJobs(context.Background(), specs[:min(len(specs), n-i*len(specs))])
				if err == nil {
					for k, r := range res {
						if r.Error != nil {
							err = fmt.Errorf("item: %s: %s", r.Error.Code, r.Error.Message)
							break
						}
						ids[i*len(specs)+k] = r.Job.ID
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("submit: %v", err)
	}
	return ids
}

func benchHistoryRSS(b *testing.B, n int) {
	c := newRSSCluster(b, 1)
	s := c.nodes[0]
	state := filepath.Join(c.dir, s.id, "state.db")
	var results []string
	written := 0
	for _, total := range []int{10_000, n} {
		s.stop()
		start := time.Now()
		addHistory(b, state, written, total-written)
		written = total
		info, err := os.Stat(state)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("wrote %d finished jobs in %s: a state file of %d MiB", total, time.Since(start).Round(time.Second), info.Size()>>20)
		s.start(c.env)
		c.waitReady(s)
		m := settle(b, c, s)
		results = append(results, fmt.Sprintf("%d finished: %s", total, m))
		b.ReportMetric(float64(m.rss), fmt.Sprintf("rss_B_%d_finished", total))
		b.ReportMetric(float64(m.live), fmt.Sprintf("live_heap_B_%d_finished", total))
	}
	b.Log("\n" + strings.Join(results, "\n"))
}

// addHistory writes n finished jobs (k = from, …, from+n-1) of the
// cluster's first tenant into the stopped node's state file, in batches
// of 10,000 whose indexes follow the file's applied index. Their finish
// times are recent, so that no retention purges them.
func addHistory(b *testing.B, path string, from, n int) {
	st, err := bolt.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	loaded, err := st.Load(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if len(loaded.Tenants) == 0 {
		b.Fatal("no tenant in the state file")
	}
	tenant := loaded.Tenants[0].ID
	plan, err := rssSpec().Compile(fsm.Policy{})
	if err != nil {
		b.Fatal(err)
	}
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	index := loaded.Index
	const size = 10_000
	for i := from; i < from+n; i += size {
		index++
		batch := &fsm.Batch{Index: index}
		for k := i; k < min(i+size, from+n); k++ {
			sub := at.Add(time.Duration(k) * time.Millisecond)
			batch.Jobs = append(batch.Jobs, &fsm.Job{
				ID: fmt.Sprintf("00000000-%04x-7000-8000-%012x", k>>16&0xffff, k), TenantID: tenant,
				Spec: *rssSpec(), Plan: *plan, State: fsm.JobSucceeded, WorkerID: "w1", Attempt: 1,
				SubmittedAt: sub, QueuedAt: sub, AssignedAt: sub.Add(time.Second), StartedAt: sub.Add(2 * time.Second), FinishedAt: sub.Add(time.Minute),
				Meta: fsm.Meta{CreateIndex: index, ModifyIndex: index},
			})
		}
		if err := st.Commit(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
}

// memSample is a server process's memory at rest.
type memSample struct {
	rss, rssAnon, rssFile int64 // VmRSS, RssAnon, RssFile
	// stateFile and raftFile are the resident pages of the mappings of
	// the bolt state file and of the Raft log (raft.db): part of rssFile.
	stateFile, raftFile int64
	live                int64 // heap marked live by the last collection (gctrace)
	heapInuse           int64 // go_memstats_heap_inuse_bytes
}

func (m memSample) String() string {
	mib := func(v int64) string { return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20)) }
	return fmt.Sprintf("VmRSS %s (anon %s, file %s: state.db %s, raft.db %s), live heap %s, heap in use %s",
		mib(m.rss), mib(m.rssAnon), mib(m.rssFile), mib(m.stateFile), mib(m.raftFile), mib(m.live), mib(m.heapInuse))
}

// settleAll samples every node of c at rest.
func settleAll(b *testing.B, c *testCluster) []memSample {
	out := make([]memSample, len(c.nodes))
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, s := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = trySettle(c, s)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	return out
}

// gcLine matches a gctrace line: its start time since the process
// started, and the heap sizes at start, at end and marked live (MB).
var gcLine = regexp.MustCompile(`(?m)^gc \d+ @([0-9.]+)s .* (\d+)->(\d+)->(\d+) MB`)

// settle waits until s has collected garbage in a cycle that started
// after now, then until its VmRSS settles, and samples its memory.
func settle(b *testing.B, c *testCluster, s *serverProc) memSample {
	b.Helper()
	m, err := trySettle(c, s)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// trySettle is settle, returning its error. While it waits for the
// collection it reads the node's /metrics every 200 ms: a node that has
// never collected is not collected by the runtime's two-minute timer
// either, and the garbage of these reads reaches a small heap's goal.
func trySettle(c *testCluster, s *serverProc) (memSample, error) {
	pid := s.cmd.Process.Pid
	var m memSample
	since, err := processAge(pid)
	if err != nil {
		return m, err
	}
	since++ // seconds; a cycle that started later
	deadline := time.Now().Add(4 * time.Minute)
	for m.live == 0 {
		for _, g := range gcLine.FindAllStringSubmatch(s.log.String(), -1) {
			if at, _ := strconv.ParseFloat(g[1], 64); at >= since {
				mb, _ := strconv.ParseInt(g[4], 10, 64)
				m.live = mb << 20
			}
		}
		if m.live == 0 {
			if time.Now().After(deadline) {
				return m, fmt.Errorf("%s: no garbage collection in 4 minutes", s.id)
			}
			if _, err := metricValue(s, c.key(), "go_memstats_heap_inuse_bytes"); err != nil {
				return m, err
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	var readings []int64
	for end := time.Now().Add(time.Minute); ; {
		if m.rss, m.rssAnon, m.rssFile, err = procMem(pid); err != nil {
			return m, err
		}
		readings = append(readings, m.rss)
		if k := len(readings); k > 5 {
			if d := readings[k-1] - readings[k-6]; d*100 < readings[k-1] && -d*100 < readings[k-1] {
				break
			}
		}
		if time.Now().After(end) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if m.stateFile, err = mappedRSS(pid, "/state.db"); err != nil {
		return m, err
	}
	if m.raftFile, err = mappedRSS(pid, "/raft.db"); err != nil {
		return m, err
	}
	inuse, err := metricValue(s, c.key(), "go_memstats_heap_inuse_bytes")
	m.heapInuse = int64(inuse)
	return m, err
}

// processAge returns the seconds since process pid started.
func processAge(pid int) (float64, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Field 22 (starttime, clock ticks since boot) counts from after the
	// command name, which may hold spaces: split after its ")".
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	ticks, _ := strconv.ParseFloat(fields[19], 64)
	up, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	uptime, _ := strconv.ParseFloat(strings.Fields(string(up))[0], 64)
	return uptime - ticks/100, nil // USER_HZ is 100 on Linux
}

// procMem returns VmRSS, RssAnon and RssFile of process pid, in bytes.
func procMem(pid int) (rss, anon, file int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch name {
		case "VmRSS":
			rss = kb << 10
		case "RssAnon":
			anon = kb << 10
		case "RssFile":
			file = kb << 10
		}
	}
	return rss, anon, file, sc.Err()
}

// mappedRSS returns the resident bytes of process pid's mappings of files
// whose path ends in suffix (/proc/PID/smaps).
func mappedRSS(pid int, suffix string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = strings.HasSuffix(line, suffix) // a mapping's header line
			continue
		}
		if in && len(fields) == 3 && fields[0] == "Rss:" {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			total += kb << 10
		}
	}
	return total, sc.Err()
}

// metricValue reads one unlabeled sample from a node's /metrics.
func metricValue(s *serverProc, key, name string) (float64, error) {
	req, _ := http.NewRequest("GET", "http://"+s.httpAddr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == name {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s in /metrics (status %s)", s.id, name, resp.Status)
}
