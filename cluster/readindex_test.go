package cluster_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
)

// Concurrent reads on a follower share round trips to the leader, and
// each one sees every write acknowledged before it began.
func TestReadIndexBatchesFollowerReads(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, clustertest.Options{})
	l := leaderOf(t, nodes)
	var f *clustertest.Node
	for _, nd := range nodes {
		if nd != l {
			f = nd
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The leader's first read index of its term runs a barrier; do it
	// before counting.
	if err := f.Node.ReadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	reads0, batches0 := f.Node.ReadIndexStats()
	lreads0, lbatches0 := l.Node.ReadIndexStats()

	const readers = 256
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			name := "r" + string(rune('a'+i%26))
			if i%32 == 0 {
				// Some writes through the leader, each read back at once
				// through the follower.
				name = "w" + string(rune('a'+i/32))
				if _, err := l.Node.Apply(ctx, createTenant(name)); err != nil {
					t.Error(err)
					return
				}
			}
			if err := f.Node.ReadIndex(ctx); err != nil {
				t.Error(err)
				return
			}
			if i%32 == 0 {
				if _, ok := f.FSM.Tenant(name); !ok {
					t.Errorf("tenant %s acknowledged before the read began is missing after it", name)
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	reads, batches := f.Node.ReadIndexStats()
	reads, batches = reads-reads0, batches-batches0
	lreads, lbatches := l.Node.ReadIndexStats()
	lreads, lbatches = lreads-lreads0, lbatches-lbatches0
	t.Logf("follower: %d reads in %d round trips; leader: %d read index calls in %d VerifyLeader rounds", reads, batches, lreads, lbatches)
	if reads != readers {
		t.Errorf("follower counted %d reads, want %d", reads, readers)
	}
	if batches > readers/4 {
		t.Errorf("%d concurrent reads made %d round trips to the leader, want at most %d", readers, batches, readers/4)
	}
	if lbatches > lreads {
		t.Errorf("leader made %d VerifyLeader rounds for %d calls", lbatches, lreads)
	}
}

// A leader that lost its quorum steps down, and then answers no read:
// the read fails (after waiting for a leader) instead of returning the
// state it has. (Reads in the instant before it steps down may still be
// confirmed by a heartbeat answered just before; see readindex.go.)
func TestReadIndexFailsWithoutQuorum(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, clustertest.Options{})
	l := leaderOf(t, nodes)
	ctx := context.Background()
	if err := l.Node.ReadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	for _, nd := range nodes {
		if nd != l {
			nd.Stop()
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for l.Node.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("the leader did not step down without a quorum")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := l.Node.ReadIndex(rctx)
			if err == nil {
				t.Error("a read index without a quorum succeeded")
				return
			}
			if !errors.Is(err, cluster.ErrNoLeader) && !errors.Is(err, cluster.ErrNotLeader) {
				t.Errorf("err %v, want ErrNoLeader or ErrNotLeader", err)
			}
		}()
	}
	wg.Wait()
}
