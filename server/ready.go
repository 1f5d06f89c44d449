package server

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// readyDeadline bounds /ready's checks, which run in parallel, so that it
// answers within 2 s on every node during any outage (a store that does
// not answer, a leader that cannot be reached).
const readyDeadline = 1500 * time.Millisecond

// readiness is what /ready remembers between checks, and the drain.
type readiness struct {
	// grace is how long a node without a leader stays ready.
	grace time.Duration
	// drain is how long Drain waits.
	drain time.Duration
	// requireWorkers is how many workers must be up for readiness.
	requireWorkers int
	// caughtUp is the last answer of Raft.AppliedAll that was sure.
	caughtUp atomic.Bool
	// unsureSince is when AppliedAll first failed in a row (unix ns; 0
	// after a sure answer): the leader is gone or does not answer.
	unsureSince atomic.Int64
	draining    atomic.Bool
	// drainMu serializes Drain and undrain; drained is set once a drain
	// has run its course.
	drainMu sync.Mutex
	drained bool
}

// leaderless returns how long this node has been unable to reach a leader
// as of now: the longer of Raft's own count and the time the leader has
// not answered the applied check.
func (r *readiness) leaderless(raftFor time.Duration, lagErr error, now time.Time) time.Duration {
	if lagErr == nil {
		r.unsureSince.Store(0)
		return raftFor
	}
	r.unsureSince.CompareAndSwap(0, now.UnixNano())
	return max(raftFor, now.Sub(time.Unix(0, r.unsureSince.Load())))
}

// handleReady reports whether a load balancer should send requests to
// this node. It is ready when it belongs to a cluster, is not draining,
// its store answers, it has applied what the cluster committed, and it has
// a leader -- or lost its leader less than the grace ago (ReadyGrace),
// having been caught up before: it holds writes through an election (see
// cluster.Node.Apply). With ?strict=true it is ready only with a leader
// now. Nothing it calls waits on the FSM's apply or on the store beyond
// readyDeadline.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	strict := false
	if v := r.URL.Query().Get("strict"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.writeError(w, r, fsm.Errorf(fsm.CodeInvalidArgument, "strict must be true or false, not %s", echo(v)))
			return
		}
		strict = b
	}
	checks := map[string]string{"leader": "ok", "store": "ok", "applied": "ok"}
	ok := true
	if s.ready.draining.Load() {
		checks["draining"], ok = "this node is stopping or leaving the cluster", false
	}
	if hint, waiting := s.raft.Waiting(); waiting {
		checks["cluster"], ok = hint, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyDeadline)
	defer cancel()
	storeErr := make(chan error, 1)
	go func() { storeErr <- s.fsm.Store().Ping(ctx) }()
	caught, lagErr := s.raft.AppliedAll(ctx)
	without := s.ready.leaderless(s.raft.LeaderlessFor(), lagErr, time.Now())
	switch {
	case lagErr == nil:
		s.ready.caughtUp.Store(caught)
		if !caught {
			checks["applied"], ok = "catching up", false
		}
	case strict || without > s.ready.grace:
		checks["leader"], ok = noLeader(without, lagErr), false
	default:
		checks["leader"] = noLeader(without, lagErr) + fmt.Sprintf("; writes are held (ready for up to %s)", s.ready.grace)
		if !s.ready.caughtUp.Load() {
			checks["applied"], ok = "catching up", false
		}
	}
	select {
	case err := <-storeErr:
		if err != nil {
			checks["store"], ok = err.Error(), false
		}
	case <-ctx.Done():
		checks["store"], ok = "no answer within "+readyDeadline.String(), false
	}
	workers, warnings := s.workerCheck(checks, &ok)
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	body := map[string]any{"ready": ok, "checks": checks, "workers": workers, "index": s.fsm.Index()}
	if len(warnings) > 0 {
		body["warnings"] = warnings
	}
	writeJSON(w, status, body)
}

// workerCheck counts the workers this node knows of, from its replicated
// state. Fewer up than required fails readiness (checks["workers"]);
// with none required, no worker up is only a warning.
func (s *Server) workerCheck(checks map[string]string, ok *bool) (ReadyWorkers, map[string]string) {
	rw := ReadyWorkers{Required: s.ready.requireWorkers}
	for _, w := range s.fsm.Workers("") {
		switch {
		case w.State != fsm.WorkerUp:
			rw.Down++
		case w.Draining:
			rw.Draining++
		default:
			rw.Up++
		}
	}
	switch {
	case rw.Up < rw.Required:
		checks["workers"], *ok = fmt.Sprintf("%d of the %d required workers up", rw.Up, rw.Required), false
		return rw, nil
	case rw.Up == 0:
		const warn = "no worker is up: jobs wait in the queue (readiness does not require workers; see --ready-require-workers)"
		checks["workers"] = "warning: " + warn
		return rw, map[string]string{"workers": warn}
	}
	checks["workers"] = "ok"
	return rw, nil
}

// noLeader describes a node without a leader for d.
func noLeader(d time.Duration, err error) string {
	if d == math.MaxInt64 {
		return "no leader yet"
	}
	return fmt.Sprintf("no leader for %s (%v)", d.Round(time.Millisecond), err)
}

// Drain prepares this node to stop or leave: /ready answers 503 from now
// on, leadership goes to another node if this one leads, and Drain waits
// Config.Drain (or until ctx ends) for load balancers to notice. Requests
// that still arrive are served, each response closing its connection. The
// drain happens once; a later call returns when the first one has ended.
func (s *Server) Drain(ctx context.Context) {
	s.ready.drainMu.Lock()
	defer s.ready.drainMu.Unlock()
	if s.ready.drained {
		return
	}
	s.ready.draining.Store(true)
	s.log.Info("draining: /ready answers 503", "wait", s.ready.drain)
	if _, id := s.raft.Leader(); id != "" && id == s.raft.ID() {
		if err := s.raft.TransferLeadership(ctx, ""); err != nil {
			s.log.Warn("draining: leadership transfer failed; stepping down with the stop", "error", err)
		}
	}
	t := time.NewTimer(s.ready.drain)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	s.ready.drained = true
}

// undrain makes the node ready again after a drain for a leave that
// failed: the node stays a member and keeps serving.
func (s *Server) undrain() {
	s.ready.drainMu.Lock()
	defer s.ready.drainMu.Unlock()
	s.ready.draining.Store(false)
	s.ready.drained = false
	s.log.Info("drain ended: the node did not leave")
}
