package cluster

import (
	"context"
	"time"

	"github.com/hashicorp/raft"
)

// reapDeadServers runs on the leader: a voter that has failed heartbeats
// for longer than DeadServerTimeout is removed from the configuration, but
// only while the servers that remain healthy are a quorum of the smaller
// configuration, so that a removal can never cost the cluster its
// majority. A failover resets the clocks: a new leader starts timing from
// its own observations, which is the grace period that keeps a brief
// election from making servers look dead.
func (n *Node) reapDeadServers(ctx context.Context) {
	timeout := n.cfg.DeadServerTimeout
	if timeout <= 0 {
		return
	}
	obs := make(chan raft.Observation, 64)
	o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
			return true
		}
		return false
	})
	n.raft.RegisterObserver(o)
	defer n.raft.DeregisterObserver(o)

	failing := make(map[raft.ServerID]time.Time)
	tick := time.NewTicker(max(time.Second, timeout/4))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ob := <-obs:
			switch d := ob.Data.(type) {
			case raft.FailedHeartbeatObservation:
				if _, ok := failing[d.PeerID]; !ok {
					since := d.LastContact
					if since.IsZero() {
						since = time.Now()
					}
					failing[d.PeerID] = since
				}
			case raft.ResumedHeartbeatObservation:
				delete(failing, d.PeerID)
			}
		case <-tick.C:
			n.removeDead(failing, timeout)
		}
	}
}

func (n *Node) removeDead(failing map[raft.ServerID]time.Time, timeout time.Duration) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	voters, healthy := 0, 0
	members := make(map[raft.ServerID]bool)
	for _, s := range f.Configuration().Servers {
		members[s.ID] = true
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if _, bad := failing[s.ID]; !bad {
			healthy++
		}
	}
	for id, since := range failing {
		if !members[id] {
			delete(failing, id)
			continue
		}
		if time.Since(since) < timeout {
			continue
		}
		after := voters - 1
		if after < 1 || healthy < after/2+1 {
			n.log.Warn("dead server kept: removing it would risk quorum", "id", id, "voters", voters, "healthy", healthy)
			continue
		}
		n.log.Warn("removing dead server", "id", id, "unreachable_for", time.Since(since).Round(time.Second))
		if err := n.raft.RemoveServer(id, 0, applyTimeout).Error(); err != nil {
			n.log.Error("remove dead server", "id", id, "error", err)
			continue
		}
		delete(failing, id)
		voters--
	}
}
