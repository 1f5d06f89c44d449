package server_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// metricsText returns the node's /metrics, scraped with the super-admin
// key (metrics.view).
func (e *env) metricsText() string {
	e.t.Helper()
	status, body := get(e.t, e.url+"/metrics", e.token)
	if status != http.StatusOK {
		e.t.Fatalf("GET /metrics: %d %s", status, body)
	}
	return body
}

// scrape returns the node's metrics as series -> value.
func (e *env) scrape() map[string]float64 {
	e.t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(e.metricsText(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			e.t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestOperationalMetrics: the gauges and counters the dashboard and the
// alert rules use follow the cluster's state: per-tenant active jobs and
// the resources their running jobs reserve, the oldest queued job's age,
// the store's health, quota refusals by tenant and quota, and failure
// codes exported at zero before the first failure.
func TestOperationalMetrics(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{worker: true})
	before := e.scrape()
	for series, want := range map[string]float64{
		`ffrtmp_store_up`: 1,
		`ffrtmp_jobs_failed_total{code="ffmpeg_error"}`:                  0,
		`ffrtmp_quota_refusals_total{quota="max_jobs",tenant="default"}`: 0,
		`ffrtmp_tenant_jobs{state="queued",tenant="default"}`:            0,
		`ffrtmp_queue_oldest_seconds{queue="default"}`:                   0,
		`ffrtmp_tenant_running_cpu{tenant="default"}`:                    0,
	} {
		if got, ok := before[series]; !ok || got != want {
			t.Errorf("before any job: %s = %v (exported %v), want %v", series, got, ok, want)
		}
	}

	running := e.submit(`{"scenario":"360p30-h264","input":{"url":"testsrc://?duration=600"},"outputs":[{"url":"file:///long.mp4"}],"resources":{"cpu":1.5,"memory_mb":256}}`)
	e.waitFor(func() bool { j, ok := e.fsm.ActiveJob(running.ID); return ok && j.State == fsm.JobRunning }, "job running")
	// No worker has 200 CPUs: this job stays queued.
	e.submit(`{"scenario":"360p30-h264","input":{"url":"testsrc://?duration=1"},"outputs":[{"url":"file:///big.mp4"}],"resources":{"cpu":200}}`)
	if _, err := e.node.Apply(context.Background(), &fsm.UpdateTenant{ID: "default", MaxJobs: new(2), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if resp := e.do("POST", "/v1/jobs", queuedSpec, nil); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third submit past max_jobs 2: %d, want 429", resp.StatusCode)
	}
	// The queued job's age grows past zero.
	time.Sleep(20 * time.Millisecond)
	got := e.scrape()
	for series, want := range map[string]float64{
		`ffrtmp_tenant_jobs{state="running",tenant="default"}`:           1,
		`ffrtmp_tenant_jobs{state="queued",tenant="default"}`:            1,
		`ffrtmp_tenant_running_cpu{tenant="default"}`:                    1.5,
		`ffrtmp_tenant_running_memory_bytes{tenant="default"}`:           256 << 20,
		`ffrtmp_quota_refusals_total{quota="max_jobs",tenant="default"}`: 1,
		`ffrtmp_quota_refusals_total{quota="max_cpu",tenant="default"}`:  0,
		`ffrtmp_store_up`: 1,
	} {
		if got[series] != want {
			t.Errorf("%s = %v, want %v", series, got[series], want)
		}
	}
	if age := got[`ffrtmp_queue_oldest_seconds{queue="default"}`]; age <= 0 || age > 60 {
		t.Errorf("oldest queued age %v s, want between 0 and 60", age)
	}
	// The running ffmpeg's live usage arrives with its progress reports
	// (every 200 ms here): its memory at once, its CPU from the second.
	const usedMem, usedCPU = `ffrtmp_tenant_used_memory_bytes{tenant="default"}`, `ffrtmp_tenant_used_cpu{tenant="default"}`
	e.waitFor(func() bool { m := e.scrape(); return m[usedMem] > 0 && m[usedCPU] > 0 }, "live usage of the running job")
	if m := e.scrape(); m[usedMem] > 4<<30 || m[usedCPU] > 64 {
		t.Errorf("live usage %v bytes, %v CPUs: implausible for one 360p encode", m[usedMem], m[usedCPU])
	}
	e.do("POST", "/v1/jobs/"+running.ID+"/cancel", nil, nil)
}

// TestQuotaRefusalsCountBatchItems: each item of a batch submit refused
// at a quota counts once.
func TestQuotaRefusalsCountBatchItems(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	if _, err := e.node.Apply(context.Background(), &fsm.UpdateTenant{ID: "default", MaxJobs: new(1), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	postBatch(t, e, "/v1/jobs/batch", batchBody(batchItem("", queuedSpec), batchItem("", queuedSpec), batchItem("", queuedSpec)))
	const series = `ffrtmp_quota_refusals_total{quota="max_jobs",tenant="default"}`
	if got := e.scrape()[series]; got != 2 {
		t.Errorf("%s = %v after a batch of 3 at max_jobs 1, want 2", series, got)
	}
}
