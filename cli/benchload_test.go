package cli

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	ms := func(vs ...int) []time.Duration {
		out := make([]time.Duration, len(vs))
		for i, v := range vs {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	thousand := make([]time.Duration, 1000)
	for i := range thousand {
		thousand[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one value, p50", ms(7), 0.5, 7 * time.Millisecond},
		{"one value, p99.9", ms(7), 0.999, 7 * time.Millisecond},
		{"two values, p50 is the lower", ms(1, 2), 0.5, time.Millisecond},
		{"two values, p51 is the upper", ms(1, 2), 0.51, 2 * time.Millisecond},
		{"1..1000, p50", thousand, 0.50, 500 * time.Millisecond},
		{"1..1000, p99", thousand, 0.99, 990 * time.Millisecond},
		{"1..1000, p99.9", thousand, 0.999, 999 * time.Millisecond},
		{"1..1000, max", thousand, 1, 1000 * time.Millisecond},
		{"100 values, p99.9 is the max", thousand[:100], 0.999, 100 * time.Millisecond},
		{"ten values, p90", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.9, 9 * time.Millisecond},
	} {
		if got := percentile(tc.sorted, tc.p); got != tc.want {
			t.Errorf("%s: percentile(%v) = %v, want %v", tc.name, tc.p, got, tc.want)
		}
	}
}

func TestRecorderResult(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	now := time.Unix(1000, 0)
	rec.now = func() time.Time { return now }
	for i := range 100 {
		rec.record(now.Add(-time.Duration(i+1)*time.Millisecond), nil)
	}
	rec.record(now, &APIError{Status: 503, Code: "unavailable"})
	rec.record(now, &APIError{Status: 503, Code: "unavailable"})
	rec.record(now, fmt.Errorf("post: %w", context.DeadlineExceeded))
	rec.record(now, errors.New("connection refused"))
	rec.record(now, fsm.Errorf(fsm.CodeStaleAttempt, "stale"))
	got := rec.result("op", 2*time.Second)
	want := map[string]int{"unavailable": 2, "timeout": 1, "transport": 1, "stale_attempt": 1}
	if got.Requests != 105 || got.OK != 100 || fmt.Sprint(got.Errors) != fmt.Sprint(want) {
		t.Errorf("requests %d ok %d errors %v, want 105, 100, %v", got.Requests, got.OK, got.Errors, want)
	}
	if got.Throughput != 50 {
		t.Errorf("throughput %v, want 50/s (100 ok in 2 s)", got.Throughput)
	}
	if got.P50 != 50 || got.P99 != 99 || got.P999 != 100 || got.Max != 100 {
		t.Errorf("p50 %v p99 %v p99.9 %v max %v ms, want 50, 99, 100, 100 (errors not counted)", got.P50, got.P99, got.P999, got.Max)
	}
}

// TestOpenLoopSchedule: the i-th request is due at start + i/rate, and
// the schedule holds rate × duration requests.
func TestOpenLoopSchedule(t *testing.T) {
	t.Parallel()
	start := time.Unix(1000, 0)
	l := newOpenLoop(200, 500*time.Millisecond, 10)
	l.now = func() time.Time { return start }
	var mu sync.Mutex
	var waited []time.Time
	l.wait = func(ctx context.Context, at time.Time) error {
		mu.Lock()
		defer mu.Unlock()
		waited = append(waited, at)
		return nil
	}
	rec := newRecorder()
	rec.now = l.now
	l.run(context.Background(), rec, func(context.Context, int) error { return nil })
	if len(waited) != 100 {
		t.Fatalf("%d requests scheduled, want 100 (200/s for 0.5 s)", len(waited))
	}
	for i, at := range waited {
		if want := start.Add(time.Duration(i) * 5 * time.Millisecond); !at.Equal(want) {
			t.Fatalf("request %d due at +%v, want +%v", i, at.Sub(start), want.Sub(start))
		}
	}
}

// TestOpenLoopDoesNotWaitForAnswers: requests go out on schedule while
// every earlier one is still outstanding, as a closed loop never does.
func TestOpenLoopDoesNotWaitForAnswers(t *testing.T) {
	t.Parallel()
	l := newOpenLoop(1000, 50*time.Millisecond, 1000)
	release := make(chan struct{})
	issued := make(chan int, 50)
	rec := newRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(context.Background(), rec, func(ctx context.Context, i int) error {
			issued <- i
			<-release
			return nil
		})
	}()
	deadline := time.After(30 * time.Second)
	for range 50 {
		select {
		case <-issued:
		case <-deadline:
			t.Fatalf("only %d requests issued while none returned, want 50", rec.issued.Load())
		}
	}
	if got := rec.inFlight.Load(); got != 50 {
		t.Errorf("%d in flight, want all 50", got)
	}
	close(release)
	<-done
	if got := rec.result("op", time.Second); got.OK != 50 {
		t.Errorf("%d ok, want 50", got.OK)
	}
}

// TestOpenLoopLatencyFromSchedule: when the generator falls behind (here
// it is stalled until every request is overdue), each request's latency
// counts from its scheduled time, not from when it went out, so the
// stall is not hidden (coordinated omission).
func TestOpenLoopLatencyFromSchedule(t *testing.T) {
	t.Parallel()
	start := time.Unix(1000, 0)
	var mu sync.Mutex
	clock := start
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return clock
	}
	l := newOpenLoop(100, time.Second, 1000)
	l.now = now
	l.wait = func(context.Context, time.Time) error { return nil }
	rec := newRecorder()
	rec.now = now
	first := true
	l.run(context.Background(), rec, func(context.Context, int) error {
		mu.Lock()
		defer mu.Unlock()
		if first {
			// The stall: the clock jumps to the end of the schedule.
			clock, first = start.Add(time.Second), false
		}
		return nil
	})
	lat := slices.Sorted(slices.Values(rec.lat))
	if len(lat) != 100 {
		t.Fatalf("%d latencies, want 100", len(lat))
	}
	// Request i was due at start + 10 ms × i and ended at start + 1 s.
	if lat[0] != 10*time.Millisecond || lat[99] != time.Second {
		t.Errorf("latencies from %v to %v, want 10ms (the last request) to 1s (the first)", lat[0], lat[99])
	}
}

// TestOpenLoopMaxInFlight: at the bound the next request waits for a
// slot, and no more than the bound are outstanding.
func TestOpenLoopMaxInFlight(t *testing.T) {
	t.Parallel()
	l := newOpenLoop(1000, 20*time.Millisecond, 3)
	l.wait = func(context.Context, time.Time) error { return nil }
	rec := newRecorder()
	var mu sync.Mutex
	cur, peak := 0, 0
	release := make(chan struct{})
	entered := make(chan struct{}, 20)
	go func() {
		// Nothing returns before the bound is reached, so that the peak
		// does not depend on scheduling.
		for range 3 {
			<-entered
		}
		for range 20 {
			release <- struct{}{}
		}
	}()
	l.run(context.Background(), rec, func(context.Context, int) error {
		mu.Lock()
		cur++
		peak = max(peak, cur)
		mu.Unlock()
		entered <- struct{}{}
		<-release
		mu.Lock()
		cur--
		mu.Unlock()
		return nil
	})
	if peak != 3 {
		t.Errorf("peak %d in flight, want the bound 3", peak)
	}
	if got := rec.result("op", time.Second); got.OK != 20 {
		t.Errorf("%d ok, want 20", got.OK)
	}
}

func TestParseRate(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]float64{"500": 500, "500/s": 500, " 2.5/s": 2.5} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("parseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "fast", "NaN", "Inf", "5/m"} {
		if _, err := parseRate(in); err == nil {
			t.Errorf("parseRate(%q) accepted", in)
		}
	}
}

// TestClosedLoopForStopsIssuing: with a duration, the closed loop stops
// issuing requests once it has passed (on the recorder's clock), and
// the request in flight then completes and counts.
func TestClosedLoopForStopsIssuing(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	rec.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	calls := 0
	// Each request advances the clock by a second: the fifth ends at 5 s,
	// when the loop's 5 s are over.
	closedLoopFor(context.Background(), rec, math.MaxInt, 1, 5*time.Second, func(context.Context, int) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		now = now.Add(time.Second)
		return nil
	})
	if res := rec.result("x", time.Second); calls != 5 || res.OK != 5 {
		t.Errorf("%d requests issued, %d recorded ok; want 5 and 5", calls, res.OK)
	}
}
