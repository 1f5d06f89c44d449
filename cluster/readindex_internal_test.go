package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitCond waits until cond holds, failing the test after a deadline.
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// gatedFetch is a fetch that reports each start and returns the number of
// fetches started so far once the test releases it.
type gatedFetch struct {
	started atomic.Uint64
	release chan struct{}
	err     error
}

func (g *gatedFetch) fetch(ctx context.Context) (uint64, error) {
	n := g.started.Add(1)
	<-g.release
	return n, g.err
}

func TestReadBatcherSharesOneFetchPerBatch(t *testing.T) {
	t.Parallel()
	var b readBatcher
	g := &gatedFetch{release: make(chan struct{})}
	ctx := context.Background()

	// One read starts the first fetch, which the test holds.
	first := make(chan uint64, 1)
	go func() {
		i, _ := b.do(ctx, g.fetch)
		first <- i
	}()
	waitCond(t, "the first fetch", func() bool { return g.started.Load() == 1 })

	// Reads that arrive while it is in flight form the next batch: they
	// must not get the answer of a fetch that began before them.
	const late = 200
	var wg sync.WaitGroup
	got := make([]uint64, late)
	errs := make([]error, late)
	for i := range late {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = b.do(ctx, g.fetch)
		}()
	}
	waitCond(t, "every read to wait", func() bool { return b.reads.Load() == late+1 })
	close(g.release)
	wg.Wait()
	if i := <-first; i != 1 {
		t.Errorf("first read got the index of fetch %d, want 1", i)
	}
	for i := range late {
		if errs[i] != nil || got[i] != 2 {
			t.Fatalf("late read %d: got fetch %d (%v), want fetch 2, which began after it", i, got[i], errs[i])
		}
	}
	if n := b.batches.Load(); n != 2 {
		t.Errorf("%d reads made %d round trips, want 2", late+1, n)
	}
}

func TestReadBatcherFailsEveryReadOfAFailedBatch(t *testing.T) {
	t.Parallel()
	var b readBatcher
	g := &gatedFetch{release: make(chan struct{}), err: ErrNotLeader}
	close(g.release)
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.do(context.Background(), g.fetch); !errors.Is(err, ErrNotLeader) {
				t.Errorf("read of a failed batch: err %v, want ErrNotLeader", err)
			}
		}()
	}
	wg.Wait()
}

func TestReadBatcherReaderLeavesWithItsContext(t *testing.T) {
	t.Parallel()
	var b readBatcher
	g := &gatedFetch{release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := b.do(ctx, g.fetch)
		done <- err
	}()
	waitCond(t, "the fetch", func() bool { return g.started.Load() == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
	// The loop finishes its fetch and stops; a later read starts anew.
	close(g.release)
	if i, err := b.do(context.Background(), g.fetch); err != nil || i != 2 {
		t.Errorf("later read: %d, %v; want fetch 2", i, err)
	}
}
