package server

import (
	"context"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Operational metrics for dashboards and alerts (packaging/monitoring).
// Labels stay bounded: tenant is bounded by the installation's tenants,
// quota by the four quota names, queue by fsm.Queues, state by
// fsm.JobStates. Series of every tenant are exported from the start, at
// zero, so that rate() and alerts see a counter before its first
// increment.

var (
	storeUpDesc     = prometheus.NewDesc("ffrtmp_store_up", "1 if this node's state store answered a ping within the readiness deadline at scrape time, else 0.", nil, nil)
	queueOldestDesc = prometheus.NewDesc("ffrtmp_queue_oldest_seconds", "Age of the oldest queued job by queue (0 for an empty queue).", []string{"queue"}, nil)
	tenantJobsDesc  = prometheus.NewDesc("ffrtmp_tenant_jobs", "Active jobs by tenant and state.", []string{"tenant", "state"}, nil)
	tenantCPUDesc   = prometheus.NewDesc("ffrtmp_tenant_running_cpu", "CPUs (resources.cpu) reserved by the tenant's jobs that hold a worker (assigned, running, paused).", []string{"tenant"}, nil)
	tenantMemDesc   = prometheus.NewDesc("ffrtmp_tenant_running_memory_bytes", "Memory (resources.memory_mb) reserved by the tenant's jobs that hold a worker.", []string{"tenant"}, nil)
	usedCPUDesc     = prometheus.NewDesc("ffrtmp_tenant_used_cpu", "CPUs the tenant's running jobs' ffmpeg processes use, as their workers last reported (progress).", []string{"tenant"}, nil)
	usedMemDesc     = prometheus.NewDesc("ffrtmp_tenant_used_memory_bytes", "Memory the tenant's running jobs' ffmpeg processes use, as their workers last reported (progress).", []string{"tenant"}, nil)
	quotaDesc       = prometheus.NewDesc("ffrtmp_quota_refusals_total", "Submits and other API calls this node refused with quota_exceeded (batch items one by one), by tenant and quota.", []string{"tenant", "quota"}, nil)
)

// quotaNames are the quotas a refusal names (fsm.QuotaDetails.Quota).
var quotaNames = []string{"max_jobs", "max_concurrent_jobs", "max_workers", "max_cpu"}

// jobFailureCodes are the codes a job fails with; ffrtmp_jobs_failed_total
// exports each at zero from the start.
var jobFailureCodes = []fsm.Code{fsm.CodeFFmpeg, fsm.CodeTimeout, fsm.CodeWorkerLost, fsm.CodeNoCapableWorker,
	fsm.CodeAcquireTimeout, fsm.CodeResourceExceeded, fsm.CodeInternal}

// quotaRefusals counts quota_exceeded answers by tenant and quota.
type quotaRefusals struct {
	mu sync.Mutex
	n  map[[2]string]float64
}

func (q *quotaRefusals) inc(tenant, quota string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == nil {
		q.n = make(map[[2]string]float64)
	}
	q.n[[2]string{tenant, quota}]++
}

// countQuotaRefusal counts e if it is a quota refusal of a request by an
// authenticated principal.
func (m *Metrics) countQuotaRefusal(r *http.Request, e *fsm.Error) {
	if e.Code != fsm.CodeQuotaExceeded || e.Details == nil {
		return
	}
	p := principalOf(r)
	if p == nil {
		return
	}
	m.quota.inc(namedTenant(r, p), e.Details.Quota)
}

// opsCollector computes the operational gauges from the FSM at scrape
// time.
type opsCollector struct {
	f     *fsm.FSM
	quota *quotaRefusals
}

func (c *opsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{storeUpDesc, queueOldestDesc, tenantJobsDesc, tenantCPUDesc, tenantMemDesc, usedCPUDesc, usedMemDesc, quotaDesc} {
		ch <- d
	}
}

func (c *opsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), readyDeadline)
	defer cancel()
	up := 1.0
	if c.f.Store().Ping(ctx) != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(storeUpDesc, prometheus.GaugeValue, up)

	tenants, oldest := c.f.Stats()
	now := time.Now()
	for _, q := range fsm.Queues {
		age := 0.0
		if t, ok := oldest[q]; ok {
			age = max(0, now.Sub(t).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(queueOldestDesc, prometheus.GaugeValue, age, string(q))
	}
	ids := make([]string, 0, len(tenants))
	for id, s := range tenants {
		ids = append(ids, id)
		for _, st := range fsm.JobStates {
			if !st.Terminal() {
				ch <- prometheus.MustNewConstMetric(tenantJobsDesc, prometheus.GaugeValue, float64(s.Jobs[st]), id, string(st))
			}
		}
		ch <- prometheus.MustNewConstMetric(tenantCPUDesc, prometheus.GaugeValue, s.CPU, id)
		ch <- prometheus.MustNewConstMetric(tenantMemDesc, prometheus.GaugeValue, float64(s.MemoryMB)*(1<<20), id)
		ch <- prometheus.MustNewConstMetric(usedCPUDesc, prometheus.GaugeValue, s.UsedCPU, id)
		ch <- prometheus.MustNewConstMetric(usedMemDesc, prometheus.GaugeValue, float64(s.UsedMemoryMB)*(1<<20), id)
	}
	sort.Strings(ids)
	c.quota.mu.Lock()
	counts := make(map[[2]string]float64, len(ids)*len(quotaNames)+len(c.quota.n))
	for _, id := range ids {
		for _, q := range quotaNames {
			counts[[2]string{id, q}] = 0
		}
	}
	for k, v := range c.quota.n {
		counts[k] = v
	}
	c.quota.mu.Unlock()
	for k, v := range counts {
		ch <- prometheus.MustNewConstMetric(quotaDesc, prometheus.CounterValue, v, k[0], k[1])
	}
}
