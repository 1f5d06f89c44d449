package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	json "github.com/go-json-experiment/json/v1"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Worker liveness. A worker is up while its lease is fresh: it
// heartbeats (through any node, forwarded to the leader) more often than
// the lease. The leader checks every second and proposes MarkWorkerDown
// for a worker whose lease ran out; its jobs are requeued within their
// retry budgets.
//
// Gossip does not mark a worker down, not even when it declares the
// worker dead (a crash or a partition): the worker fences itself a third
// of a lease before the lease runs out (see worker.FenceFor), so a
// partitioned worker has killed its attempts, and a live stream's
// publisher with them, before the leader can give them to another worker.
// Gossip only tells workers where the servers are. Leases live only in the
// leader's memory: a new leader starts every lease afresh, which is the
// grace period that keeps a failover from declaring every worker dead at
// once, and only extends what the worker's fence allows.

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

// HeartbeatResponse is the answer to a heartbeat: the lease the leader
// holds the worker to, from which the worker derives its self-fence.
type HeartbeatResponse struct {
	LeaseMS int64 `json:"lease_ms"`
}

// workerLease is the lease this node holds workers to when it leads.
func (n *Node) workerLease() time.Duration {
	if n.cfg.WorkerLease > 0 {
		return n.cfg.WorkerLease
	}
	return DefaultWorkerLease
}

// Heartbeat renews a worker's lease on the leader (forwarded if this node
// is not the leader) and returns the leader's lease length. The leader
// confirms its leadership first, so that a deposed leader cannot answer a
// heartbeat that the new leader never counted.
func (n *Node) Heartbeat(ctx context.Context, workerID string) (time.Duration, error) {
	if n.IsLeader() {
		return n.renewLease(ctx, workerID)
	}
	addr, _ := n.Leader()
	if addr == "" {
		return 0, ErrNoLeader
	}
	b, _ := json.Marshal(Peer{ID: workerID})
	var out HeartbeatResponse
	if err := n.rpcCall(ctx, addr, "POST", "/rpc/heartbeat", b, &out); err != nil {
		return 0, fmt.Errorf("heartbeat: %w: %w", ErrNoLeader, err)
	}
	if out.LeaseMS <= 0 {
		return 0, fmt.Errorf("heartbeat: %w: the leader named no lease", ErrNoLeader)
	}
	return time.Duration(out.LeaseMS) * time.Millisecond, nil
}

// renewLease touches the worker's lease with the time the heartbeat
// arrived, once this node has confirmed that it still leads. The
// heartbeats that arrive while a confirmation (a quorum round of
// VerifyLeader) runs share the next one, which starts after they arrived,
// as reads share read barriers (readindex.go): a thousand workers'
// heartbeats cost a few rounds a second, not one each.
func (n *Node) renewLease(ctx context.Context, workerID string) (time.Duration, error) {
	now := time.Now()
	if _, err := n.leaseChecks.do(ctx, n.verifyLeader); err != nil {
		return 0, fmt.Errorf("heartbeat: %w: %w", ErrNoLeader, err)
	}
	n.leases.touch(workerID, now)
	return n.workerLease(), nil
}

// verifyLeader confirms that this node still leads (a readBatcher fetch).
func (n *Node) verifyLeader(context.Context) (uint64, error) {
	return 0, n.raft.VerifyLeader().Error()
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
	lease, err := n.renewLease(r.Context(), p.ID)
	if err != nil {
		rpcError(w, http.StatusServiceUnavailable, err)
		return
	}
	rpcJSON(w, http.StatusOK, HeartbeatResponse{LeaseMS: lease.Milliseconds()})
}

func (n *Node) gossipAddr() string {
	if g := n.gossip.Load(); g != nil {
		return g.Addr()
	}
	return ""
}

// monitorWorkers runs on the leader: it marks down workers whose lease ran
// out.
func (n *Node) monitorWorkers(ctx context.Context) {
	lease := n.workerLease()
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
		for _, w := range n.cfg.FSM.Workers("") {
			if w.State != fsm.WorkerUp {
				continue
			}
			seen, ok := n.leases.last(w.ID)
			if !ok || seen.Before(start) {
				seen = start // a new leader gives every worker a full lease
			}
			if now.Sub(seen) <= lease {
				continue
			}
			reason := "its lease of " + lease.String() + " ran out"
			n.log.Warn("worker is gone", "worker", w.ID, "reason", reason)
			if _, err := n.Apply(ctx, &fsm.MarkWorkerDown{WorkerID: w.ID, Reason: reason, At: now.UTC()}); err != nil && ctx.Err() == nil {
				n.log.Error("mark worker down", "worker", w.ID, "error", err)
			}
		}
	}
}
