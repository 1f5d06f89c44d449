package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
)

// TestLeaderUnderWritesHasAppliedAll: a leader taking a steady stream of
// writes applies each entry a moment after committing it; that moment is
// not "catching up", so AppliedAll stays true throughout (a load balancer
// probing /ready must not see a busy leader flap to 503).
func TestLeaderUnderWritesHasAppliedAll(t *testing.T) {
	t.Parallel()
	n := clustertest.Start(t, clustertest.Options{ID: "solo", Bootstrap: true})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var wg sync.WaitGroup
	var writes atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if _, err := n.Node.Apply(ctx, createTenant(fmt.Sprintf("t%d-%d", w, i))); err == nil {
					writes.Add(1)
				} else if ctx.Err() == nil {
					t.Errorf("write: %v", err)
				}
			}
		})
	}
	defer wg.Wait()
	defer cancel()
	for i := 0; writes.Load() < 2000 && !t.Failed(); i++ {
		ok, err := n.Node.AppliedAll(ctx)
		if err != nil || !ok {
			t.Fatalf("after %d writes, probe %d: AppliedAll = %v, %v on a leader under writes, want true", writes.Load(), i, ok, err)
		}
	}
}
