package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
)

// TestHeartbeatsShareLeadershipChecks sends 200 heartbeats at once, half
// to the leader and half through a follower: each renews its lease with
// the leader's lease length (a heartbeat that met a leader change is sent
// again, as workers do), and the leaders confirmed their leadership for
// them in fewer rounds than heartbeats.
func TestHeartbeatsShareLeadershipChecks(t *testing.T) {
	t.Parallel()
	nodes := startThree(t, clustertest.Options{})
	nodes[0].Apply(createTenant("acme")) // every node has caught up
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 200
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			via := nodes[i%2]
			for {
				lease, err := via.Node.Heartbeat(ctx, fmt.Sprintf("w-%d", i))
				if err == nil && lease <= 0 {
					err = fmt.Errorf("lease %v", lease)
				}
				errs[i] = err
				if err == nil || ctx.Err() != nil || !errors.Is(err, cluster.ErrNoLeader) {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("heartbeat %d: %v", i, err)
		}
	}
	var heartbeats, rounds uint64
	for _, node := range nodes {
		h, r := node.Node.LeaseChecksForTest()
		heartbeats, rounds = heartbeats+h, rounds+r
	}
	if heartbeats < n || rounds == 0 || rounds >= heartbeats {
		t.Errorf("%d heartbeats confirmed in %d rounds; want at least %d in fewer rounds", heartbeats, rounds, n)
	}
}
