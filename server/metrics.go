package server

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Metrics are a node's Prometheus metrics, on a registry of its own so
// that several nodes can live in one test process. It implements
// fsm.Observer; job metrics describe the replicated state as this node
// applied it, so every node reports the same values.
type Metrics struct {
	reg         *prometheus.Registry
	jobWait     prometheus.Histogram
	jobDuration *prometheus.HistogramVec
	finished    *prometheus.CounterVec
	failed      *prometheus.CounterVec
	cpuSeconds  prometheus.Histogram
	peakMemory  prometheus.Histogram
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	// authFailures counts refused API keys by authReason.
	authFailures *prometheus.CounterVec
	// deprecated counts calls of deprecated routes by route.
	deprecated *prometheus.CounterVec
	quota      quotaRefusals

	once sync.Once
}

var _ fsm.Observer = (*Metrics)(nil)

// NewMetrics creates the metrics and their registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		jobWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ffrtmp_job_wait_seconds",
			Help:    "Time from a job entering the queue to its attempt running (submit to running latency).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 18),
		}),
		jobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ffrtmp_job_duration_seconds",
			Help:    "Time from submission to a terminal state, by state.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 18),
		}, []string{"state"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ffrtmp_jobs_finished_total",
			Help: "Jobs that reached a terminal state since this node started, by state.",
		}, []string{"state"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ffrtmp_jobs_failed_total",
			Help: "Jobs that failed since this node started, by error code.",
		}, []string{"code"}),
		cpuSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ffrtmp_job_cpu_seconds",
			Help:    "CPU time (user and system) of successful jobs' ffmpeg runs.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 16),
		}),
		peakMemory: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ffrtmp_job_peak_memory_bytes",
			Help:    "Peak memory of successful jobs' ffmpeg runs.",
			Buckets: prometheus.ExponentialBuckets(16<<20, 2, 10),
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ffrtmp_http_requests_total",
			Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ffrtmp_http_request_duration_seconds",
			Help:    "HTTP request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ffrtmp_auth_failures_total",
			Help: "API requests refused authentication by this node, by reason (missing, malformed, unknown_key, wrong_secret, revoked, expired).",
		}, []string{"reason"}),
		deprecated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ffrtmp_http_deprecated_requests_total",
			Help: "Requests to deprecated routes (which answer with Deprecation and Sunset headers), by route.",
		}, []string{"route"}),
	}
	for _, r := range authReasons {
		m.authFailures.WithLabelValues(string(r))
	}
	for _, c := range jobFailureCodes {
		m.failed.WithLabelValues(string(c))
	}
	for _, s := range fsm.JobStates {
		if s.Terminal() {
			m.finished.WithLabelValues(string(s))
			m.jobDuration.WithLabelValues(string(s))
		}
	}
	m.reg.MustRegister(m.jobWait, m.jobDuration, m.finished, m.failed, m.cpuSeconds, m.peakMemory, m.requests, m.latency, m.authFailures, m.deprecated,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the registry, for other packages' collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// JobStarted implements fsm.Observer.
func (m *Metrics) JobStarted(wait time.Duration) { m.jobWait.Observe(wait.Seconds()) }

// JobFinished implements fsm.Observer.
func (m *Metrics) JobFinished(j *fsm.Job) {
	state := string(j.State)
	m.finished.WithLabelValues(state).Inc()
	m.jobDuration.WithLabelValues(state).Observe(j.FinishedAt.Sub(j.SubmittedAt).Seconds())
	if j.State == fsm.JobFailed && j.Error != nil {
		m.failed.WithLabelValues(string(j.Error.Code)).Inc()
	}
	if r := j.Result; r != nil && j.State == fsm.JobSucceeded {
		m.cpuSeconds.Observe(r.CPUSeconds)
		m.peakMemory.Observe(float64(r.PeakMemoryMB) * (1 << 20))
	}
}

func (m *Metrics) observeRequest(route string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}

// deprecatedRoute makes the deprecated-call count of route exist at 0.
func (m *Metrics) deprecatedRoute(route string) { m.deprecated.WithLabelValues(route) }

// deprecatedCall counts one call of the deprecated route.
func (m *Metrics) deprecatedCall(route string) { m.deprecated.WithLabelValues(route).Inc() }

func (m *Metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// watch registers gauges computed from the FSM at scrape time.
func (m *Metrics) watch(f *fsm.FSM) {
	m.once.Do(func() { m.reg.MustRegister(&stateCollector{f: f}, &opsCollector{f: f, quota: &m.quota}) })
}

var (
	jobsDesc    = prometheus.NewDesc("ffrtmp_jobs", "Active jobs by state.", []string{"state"}, nil)
	queueDesc   = prometheus.NewDesc("ffrtmp_queue_depth", "Queued jobs by queue.", []string{"queue"}, nil)
	workersDesc = prometheus.NewDesc("ffrtmp_workers", "Registered workers by state.", []string{"state"}, nil)
	indexDesc   = prometheus.NewDesc("ffrtmp_fsm_applied_index", "Raft index the FSM has applied.", nil, nil)
)

type stateCollector struct{ f *fsm.FSM }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsDesc
	ch <- queueDesc
	ch <- workersDesc
	ch <- indexDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	byState, byQueue := c.f.Counts()
	for _, s := range fsm.JobStates {
		if !s.Terminal() {
			ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(byState[s]), string(s))
		}
	}
	for _, q := range fsm.Queues {
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(byQueue[q]), string(q))
	}
	workers := map[fsm.WorkerState]int{fsm.WorkerUp: 0, fsm.WorkerDown: 0}
	for _, w := range c.f.Workers("") {
		workers[w.State]++
	}
	for s, n := range workers {
		ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(n), string(s))
	}
	ch <- prometheus.MustNewConstMetric(indexDesc, prometheus.GaugeValue, float64(c.f.Index()))
}
