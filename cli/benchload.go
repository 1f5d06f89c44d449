package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// The load generator's engine: an open-loop scheduler, a closed loop,
// and a recorder of latencies and errors.
//
// Latencies are kept exactly (8 bytes per request, 16 MB for two million
// requests), so percentiles are exact, not estimated from buckets.

// recorder collects the outcome of requests. It is safe for concurrent
// use.
type recorder struct {
	now func() time.Time

	issued   atomic.Int64
	inFlight atomic.Int64
	ok       atomic.Int64
	failed   atomic.Int64

	mu   sync.Mutex
	lat  []time.Duration // of successful requests
	errs map[string]int  // failed requests by error code
}

func newRecorder() *recorder {
	return &recorder{now: time.Now, errs: map[string]int{}}
}

// record records a request that was due at due (its scheduled time in an
// open loop, its start in a closed loop) and ended now with err.
func (r *recorder) record(due time.Time, err error) {
	d := r.now().Sub(due)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.failed.Add(1)
		r.errs[errorCode(err)]++
		return
	}
	r.ok.Add(1)
	r.lat = append(r.lat, d)
}

// errorCode names an error for the error table: the API's code, or
// "timeout" or "transport" for a request without an answer.
func errorCode(err error) string {
	var ae *APIError
	var fe *fsm.Error
	switch {
	case errors.As(err, &ae):
		return string(ae.Code)
	case errors.As(err, &fe):
		return string(fe.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "transport"
}

// BenchResult is one measured operation of a bench run (JSON with -o
// json). Latencies are in milliseconds, of successful requests only;
// in an open loop they count from each request's scheduled time.
type BenchResult struct {
	Operation   string         `json:"operation"`
	Mode        string         `json:"mode"`                  // "open" or "closed"
	Rate        float64        `json:"rate,omitempty"`        // open loop: requests scheduled per second
	Concurrency int            `json:"concurrency,omitempty"` // closed loop: clients
	Requests    int            `json:"requests"`
	OK          int            `json:"ok"`
	Errors      map[string]int `json:"errors"` // by error code
	Seconds     float64        `json:"seconds"`
	Throughput  float64        `json:"throughput"` // successful requests per second
	P50         float64        `json:"p50_ms"`
	P99         float64        `json:"p99_ms"`
	P999        float64        `json:"p999_ms"`
	Max         float64        `json:"max_ms"`
}

// result summarizes what r recorded over elapsed.
func (r *recorder) result(op string, elapsed time.Duration) BenchResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	lat := slices.Clone(r.lat)
	slices.Sort(lat)
	res := BenchResult{Operation: op, OK: len(lat), Errors: map[string]int{}, Seconds: elapsed.Seconds()}
	for k, v := range r.errs {
		res.Errors[k] = v
		res.Requests += v
	}
	res.Requests += len(lat)
	if elapsed > 0 {
		res.Throughput = float64(len(lat)) / elapsed.Seconds()
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	res.P50, res.P99, res.P999 = ms(percentile(lat, 0.50)), ms(percentile(lat, 0.99)), ms(percentile(lat, 0.999))
	res.Max = ms(percentile(lat, 1))
	return res
}

// percentile returns the p-quantile (0 < p <= 1) of sorted by the
// nearest-rank method: the smallest value that at least p of the values
// do not exceed. It is 0 for no values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p*float64(len(sorted)) - 1e-9))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// openLoop issues requests on a fixed schedule: the i-th at start +
// i/rate, whether or not earlier ones have returned, for duration. A
// request's latency counts from its scheduled time, so that a slow
// server cannot slow the load down and hide its own latency (coordinated
// omission): when the generator falls behind, overdue requests go out at
// once and their wait is counted.
type openLoop struct {
	rate     float64
	duration time.Duration
	// maxInFlight bounds the requests outstanding at once; at the bound a
	// request waits, and its wait counts in its latency.
	maxInFlight int
	now         func() time.Time
	// wait blocks until t or ctx ends.
	wait func(ctx context.Context, t time.Time) error
}

func newOpenLoop(rate float64, duration time.Duration, maxInFlight int) *openLoop {
	return &openLoop{rate: rate, duration: duration, maxInFlight: maxInFlight, now: time.Now, wait: waitUntil}
}

// waitUntil blocks until t or ctx ends.
func waitUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}

// requests returns how many requests the schedule holds.
func (l *openLoop) requests() int { return int(math.Round(l.rate * l.duration.Seconds())) }

// at returns the scheduled time of request i.
func (l *openLoop) at(start time.Time, i int) time.Time {
	return start.Add(time.Duration(float64(i) * float64(time.Second) / l.rate))
}

// run runs op on the schedule, records every outcome in rec, and returns
// the time from the start until the last request ended.
func (l *openLoop) run(ctx context.Context, rec *recorder, op func(ctx context.Context, i int) error) time.Duration {
	sem := make(chan struct{}, max(1, l.maxInFlight))
	var wg sync.WaitGroup
	start := l.now()
loop:
	for i := range l.requests() {
		due := l.at(start, i)
		if l.wait(ctx, due) != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		rec.issued.Add(1)
		rec.inFlight.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := op(ctx, i)
			rec.record(due, err)
			rec.inFlight.Add(-1)
			<-sem
		}()
	}
	wg.Wait()
	return l.now().Sub(start)
}

// closedLoop runs op n times from conc clients, each issuing its next
// request when the previous one returned; latency counts from each
// request's start. It returns the elapsed time.
func closedLoop(ctx context.Context, rec *recorder, n, conc int, op func(ctx context.Context, i int) error) time.Duration {
	return closedLoopFor(ctx, rec, n, conc, 0, op)
}

// closedLoopFor is closedLoop that, for a positive d, also stops issuing
// requests d after the start; the requests then in flight complete and
// count.
func closedLoopFor(ctx context.Context, rec *recorder, n, conc int, d time.Duration, op func(ctx context.Context, i int) error) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := rec.now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil || (d > 0 && rec.now().Sub(start) >= d) {
					return
				}
				rec.issued.Add(1)
				rec.inFlight.Add(1)
				t0 := rec.now()
				err := op(ctx, i)
				rec.record(t0, err)
				rec.inFlight.Add(-1)
			}
		}()
	}
	wg.Wait()
	return rec.now().Sub(start)
}

// showProgress writes a line per second about rec to w until ctx ends.
func showProgress(ctx context.Context, w io.Writer, phase string, rec *recorder) {
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastOK int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		ok := rec.ok.Load()
		fmt.Fprintf(w, "%s %3.0fs: issued %d, ok %d (%d/s), errors %d, in flight %d\n", phase,
			time.Since(start).Seconds(), rec.issued.Load(), ok, ok-lastOK, rec.failed.Load(), rec.inFlight.Load())
		lastOK = ok
	}
}
