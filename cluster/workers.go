package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Worker liveness. A worker is up while both hold:
//
//   - it is alive in the gossip pool (if it joined one: remote workers
//     do, an in-process dev worker does not), and
//   - its lease is fresh: it heartbeats (through any node, forwarded to
//     the leader) more often than the lease.
//
// The leader checks both every second and proposes MarkWorkerDown for a
// worker that fails either; its jobs are requeued within their retry
// budgets. Leases live only in the leader's memory: a new leader starts
// every lease afresh, which is the grace period that keeps a failover from
// declaring every worker dead at once.

// DefaultWorkerLease is how long a worker stays up without a heartbeat.
const DefaultWorkerLease = 15 * time.Second

type leases struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func (l *leases) touch(id string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = make(map[string]time.Time)
	}
	l.seen[id] = at
}

func (l *leases) last(id string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.seen[id]
	return t, ok
}

// Heartbeat renews a worker's lease on the leader (forwarded if this node
// is not the leader).
func (n *Node) Heartbeat(ctx context.Context, workerID string) error {
	if n.IsLeader() {
		n.leases.touch(workerID, time.Now())
		return nil
	}
	addr, _ := n.Leader()
	if addr == "" {
		return ErrNoLeader
	}
	b, _ := json.Marshal(Peer{ID: workerID})
	if err := n.rpcCall(ctx, addr, "POST", "/rpc/heartbeat", b, nil); err != nil {
		return fmt.Errorf("heartbeat: %w: %w", ErrNoLeader, err)
	}
	return nil
}

func (n *Node) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	var p Peer
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&p); err != nil || p.ID == "" {
		rpcError(w, http.StatusBadRequest, errors.New("heartbeat needs a worker id"))
		return
	}
	if n.notLeader(w) {
		return
	}
	n.leases.touch(p.ID, time.Now())
	rpcJSON(w, http.StatusOK, map[string]string{})
}

func (n *Node) gossipAddr() string {
	if g := n.gossip.Load(); g != nil {
		return g.Addr()
	}
	return ""
}

// monitorWorkers runs on the leader: it marks down workers that left the
// gossip pool or whose lease ran out.
func (n *Node) monitorWorkers(ctx context.Context) {
	lease := n.cfg.WorkerLease
	if lease <= 0 {
		lease = DefaultWorkerLease
	}
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-n.gossipLeft:
		}
		now := time.Now()
		g := n.gossip.Load()
		for _, w := range n.cfg.FSM.Workers("") {
			if w.State != fsm.WorkerUp {
				continue
			}
			reason := ""
			seen, ok := n.leases.last(w.ID)
			if !ok || seen.Before(start) {
				seen = start // a new leader gives every worker a full lease
			}
			switch {
			case g != nil && w.Addr != "" && !g.Alive(w.ID) && now.Sub(start) > 2*time.Second:
				reason = "it left the gossip pool"
			case now.Sub(seen) > lease:
				reason = "its lease of " + lease.String() + " ran out"
			}
			if reason == "" {
				continue
			}
			n.log.Warn("worker is gone", "worker", w.ID, "reason", reason)
			if _, err := n.Apply(ctx, &fsm.MarkWorkerDown{WorkerID: w.ID, Reason: reason, At: now.UTC()}); err != nil && ctx.Err() == nil {
				n.log.Error("mark worker down", "worker", w.ID, "error", err)
			}
		}
	}
}
