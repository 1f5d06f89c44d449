package cluster

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// errLeaderUnknown is AppliedAll's answer when no leader could be asked.
var errLeaderUnknown = errors.New("no leader to compare with")

// leaderHeld and leaderNever are the values of Node.leaderLost besides a
// time: the node has a leader, or never had one since it started.
const (
	leaderHeld  = -1
	leaderNever = 0
)

// noteLeader records a leader change seen at now (by the observer of
// nodeMetrics, which counts them).
func (n *Node) noteLeader(has bool, now time.Time) {
	if has {
		n.leaderLost.Store(leaderHeld)
		return
	}
	if v := n.leaderLost.Load(); v == leaderHeld {
		n.leaderLost.CompareAndSwap(v, now.UnixNano())
	}
}

// LeaderlessFor returns how long this node has been without a leader: 0
// while it knows one, and math.MaxInt64 if it has not had one since it
// started (it is joining or catching up, not riding out an election).
func (n *Node) LeaderlessFor() time.Duration {
	if addr, _ := n.Leader(); addr != "" {
		return 0
	}
	switch v := n.leaderLost.Load(); v {
	case leaderHeld:
		return 0 // lost a moment ago; the observation is on its way
	case leaderNever:
		return math.MaxInt64
	default:
		return time.Since(time.Unix(0, v))
	}
}

// AppliedAll reports whether this node has applied what the cluster has
// committed, less readyLag: for the leader, its own commit index; for a
// follower, the leader's (asked over node RPC: right after a restart a
// follower's own commit index is as stale as its log). The lag applies to
// the leader too: under writes, each batch is committed a moment before it
// is applied, and a busy leader is not catching up. It fails when it
// cannot tell: there is no leader, or the leader did not answer.
func (n *Node) AppliedAll(ctx context.Context) (bool, error) {
	applied := n.raft.AppliedIndex()
	if n.IsLeader() {
		return applied+readyLag >= n.raft.CommitIndex(), nil
	}
	addr, _ := n.Leader()
	if addr == "" {
		return false, errLeaderUnknown
	}
	var st Status
	if err := n.rpcCall(ctx, addr, "GET", "/rpc/status", nil, &st); err != nil {
		return false, fmt.Errorf("ask the leader: %w", err)
	}
	return applied+readyLag >= st.CommitIndex, nil
}

// CaughtUp reports whether AppliedAll is sure that this node has caught
// up.
func (n *Node) CaughtUp(ctx context.Context) bool {
	ok, err := n.AppliedAll(ctx)
	return err == nil && ok
}
