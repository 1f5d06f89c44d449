package cluster

import (
	"context"
	"log/slog"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// maxPlacements bounds the assignments proposed in one scheduling pass.
const maxPlacements = 512

// idleWake is how long the scheduler sleeps when nothing is due; state
// changes wake it earlier.
const idleWake = 30 * time.Second

// Scheduler is the leader-only dispatch loop: it turns fsm.Schedule's
// decisions into AssignJob and ExpireJob commands. Because its decisions
// are commands, a new leader continues exactly where the old one stopped.
type Scheduler struct {
	FSM    *fsm.FSM
	Logger *slog.Logger
	// Now returns the current time; tests may replace it.
	Now func() time.Time
}

// Run schedules until ctx ends. It runs a pass whenever the FSM changes
// or a backoff or acquire timeout falls due.
func (s *Scheduler) Run(ctx context.Context, n *Node) {
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := s.Now
	if now == nil {
		now = func() time.Time { return time.Now().UTC() }
	}
	fair := fsm.NewFairness()
	// Run starts once this leader has applied what earlier leaders
	// committed: acquire timeouts count from here, not through the
	// leaderless time before.
	fair.CountFrom(now())
	timer := time.NewTimer(0)
	defer timer.Stop()
	// outages is the count of store outages acquire timeouts count from
	// the end of; starting at zero, one under way as Run starts is counted
	// from when it ends too.
	var outages uint64
	for {
		_, changed := s.FSM.Watch()
		// While the store is down nothing can be placed: expire nothing,
		// and count acquire timeouts afresh once it is back. The count of
		// outages tells of one that began and ended between two passes
		// (the FSM answers a batch before its commit, which then fails,
		// and nothing wakes this loop until the commit goes through). It
		// is read before StoreDown, so an outage it counts is over if the
		// store is up.
		seen := s.FSM.StoreOutages()
		down := s.FSM.StoreDown()
		if !down && seen != outages {
			outages = seen
			fair.CountFrom(now())
		}
		d := s.FSM.Schedule(now(), fair, maxPlacements)
		if down {
			d.Expire = nil
			d.Wake = now().Add(time.Second) // look again
		}
		cmds := make([]fsm.Command, 0, len(d.Assign)+len(d.Expire))
		for _, e := range d.Expire {
			cmds = append(cmds, e)
		}
		for _, a := range d.Assign {
			cmds = append(cmds, a)
		}
		wait := idleWake
		if !d.Wake.IsZero() {
			wait = max(time.Millisecond, min(wait, d.Wake.Sub(now())))
		}
		if len(cmds) > 0 {
			_, errs := n.ApplyAll(ctx, cmds)
			failed := 0
			for i, err := range errs {
				if err != nil {
					failed++
					log.Debug("scheduler command refused", "command", cmds[i].MessageType(), "error", err)
				}
			}
			if failed == 0 {
				continue // the state changed; plan again at once
			}
			// Refusals mean the state moved under the plan; a Raft error
			// means leadership is changing. Either way, pause briefly.
			wait = min(wait, 100*time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-changed:
			if !timer.Stop() {
				<-timer.C
			}
		case <-timer.C:
		}
	}
}
