package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// fakeFlush records the batches a batcher flushes. While gate is open the
// first flush blocks until release is closed, so that a test can queue
// items behind a batch in flight.
type fakeFlush struct {
	mu      sync.Mutex
	batches [][]string
	started chan struct{} // one send per flush
	release chan struct{} // closed to let flushes return
}

func newFakeFlush() *fakeFlush {
	return &fakeFlush{started: make(chan struct{}, 1024), release: make(chan struct{})}
}

func (f *fakeFlush) flush(batch []*batchItem) {
	var names []string
	for _, it := range batch {
		names = append(names, string(it.raw))
		if strings.HasPrefix(string(it.raw), "bad") {
			it.res.err = fsm.Errorf(fsm.CodeQuotaExceeded, "refused %s", it.raw)
		} else {
			it.res.v = string(it.raw)
		}
	}
	f.mu.Lock()
	f.batches = append(f.batches, names)
	f.mu.Unlock()
	f.started <- struct{}{}
	<-f.release
}

func (f *fakeFlush) sizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for _, b := range f.batches {
		out = append(out, len(b))
	}
	return out
}

// queued waits until b holds n queued items, or fails after a deadline.
func queued(t *testing.T, b *batcher, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		got := len(b.queue)
		b.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue holds %d items, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// submitConcurrently starts one caller per raw, each with its own do, and
// returns a function that waits for their results, by raw.
func submitConcurrently(ctx context.Context, b *batcher, raws []string) func() map[string]batchResult {
	var mu sync.Mutex
	out := map[string]batchResult{}
	var wg sync.WaitGroup
	for _, raw := range raws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := b.do(ctx, [][]byte{[]byte(raw)}, false)
			mu.Lock()
			out[raw] = res[0]
			mu.Unlock()
		}()
	}
	return func() map[string]batchResult {
		wg.Wait()
		return out
	}
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return out
}

// TestBatcherCoalesces: an idle batcher flushes the first item at once,
// alone; everything that arrives while that flush is in flight goes as
// one batch, and each caller gets its own result, refusals included.
func TestBatcherCoalesces(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFakeFlush()
	b := newBatcher(f.flush, 1000, 1<<20, 1)
	first := submitConcurrently(ctx, b, []string{"first"})
	<-f.started // in flight, holding the flush loop
	raws := append(names("ok", 40), names("bad", 10)...)
	rest := submitConcurrently(ctx, b, raws)
	queued(t, b, len(raws))
	close(f.release)
	if got := first()["first"]; got.err != nil || got.v != "first" {
		t.Fatalf("first: %+v", got)
	}
	results := rest()
	if got, want := fmt.Sprint(f.sizes()), "[1 50]"; got != want {
		t.Fatalf("batch sizes %s, want %s (the first alone, then everything queued behind it)", got, want)
	}
	for _, raw := range raws {
		res := results[raw]
		if strings.HasPrefix(raw, "bad") {
			if fsm.ErrorCode(res.err) != fsm.CodeQuotaExceeded || !strings.Contains(res.err.Error(), raw) || res.v != nil {
				t.Errorf("%s: %+v, want its own quota_exceeded", raw, res)
			}
			continue
		}
		if res.err != nil || res.v != raw {
			t.Errorf("%s: %+v, want its own result", raw, res)
		}
	}
}

// TestBatcherBounds: a batch holds at most maxItems items and maxBytes
// bytes (a larger single item goes alone), in arrival order.
func TestBatcherBounds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name               string
		maxItems, maxBytes int
		raws               []string
		want               string
	}{
		{"count", 10, 1 << 20, names("i", 25), "[1 10 10 5]"},
		{"bytes", 1000, 9, names("b", 7), "[1 2 2 2 1]"}, // 4 bytes + 1 separator each
		{"oversized item alone", 1000, 9, []string{"x", "0123456789abcdef", "y", "z"}, "[1 1 1 2]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeFlush()
			b := newBatcher(f.flush, tc.maxItems, tc.maxBytes, 1)
			first := submitConcurrently(context.Background(), b, []string{"head"})
			<-f.started
			// Enqueue in a known order: one do call holding all items.
			done := make(chan []batchResult)
			go func() {
				raws := make([][]byte, len(tc.raws))
				for i, r := range tc.raws {
					raws[i] = []byte(r)
				}
				done <- b.do(context.Background(), raws, false)
			}()
			queued(t, b, len(tc.raws))
			close(f.release)
			first()
			res := <-done
			if got := fmt.Sprint(f.sizes()); got != tc.want {
				t.Fatalf("batch sizes %s, want %s", got, tc.want)
			}
			var order []string
			for _, bt := range f.batches[1:] {
				order = append(order, bt...)
			}
			if got, want := strings.Join(order, ","), strings.Join(tc.raws, ","); got != want {
				t.Errorf("flushed in order %s, want %s", got, want)
			}
			for i, r := range res {
				if r.v != tc.raws[i] {
					t.Errorf("item %d: %+v, want %s", i, r, tc.raws[i])
				}
			}
		})
	}
}

// TestBatcherSkipsAbandonedItems: an item whose caller gave up before its
// batch was taken is never flushed, and its caller hears why.
func TestBatcherSkipsAbandonedItems(t *testing.T) {
	t.Parallel()
	f := newFakeFlush()
	b := newBatcher(f.flush, 1000, 1<<20, 1)
	first := submitConcurrently(context.Background(), b, []string{"head"})
	<-f.started
	ctx, cancel := context.WithCancel(context.Background())
	gone := submitConcurrently(ctx, b, []string{"gone"})
	kept := submitConcurrently(context.Background(), b, []string{"kept"})
	queued(t, b, 2)
	cancel()
	if res := gone()["gone"]; !errors.Is(res.err, context.Canceled) {
		t.Fatalf("abandoned item: %+v, want context.Canceled", res)
	}
	close(f.release)
	first()
	if res := kept()["kept"]; res.err != nil || res.v != "kept" {
		t.Fatalf("kept item: %+v", res)
	}
	if got, want := fmt.Sprint(f.batches), "[[head] [kept]]"; got != want {
		t.Errorf("batches %s, want %s", got, want)
	}
}

// TestBatcherInFlight: with two batches in flight, a second arrival is
// flushed at once beside the first; later ones queue until one returns,
// and then go as one batch.
func TestBatcherInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFakeFlush()
	b := newBatcher(f.flush, 1000, 1<<20, 2)
	first := submitConcurrently(ctx, b, []string{"a"})
	<-f.started
	second := submitConcurrently(ctx, b, []string{"b"})
	<-f.started // a second flush runs while the first is in flight
	rest := submitConcurrently(ctx, b, names("r", 10))
	queued(t, b, 10)
	close(f.release)
	first()
	second()
	rest()
	if got, want := fmt.Sprint(f.sizes()), "[1 1 10]"; got != want {
		t.Fatalf("batch sizes %s, want %s", got, want)
	}
	// The loops end once they find the queue empty.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		running := b.running
		b.mu.Unlock()
		if running == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d flush loops still run with nothing queued", running)
		}
		time.Sleep(time.Millisecond)
	}
}
