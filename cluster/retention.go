package cluster

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Retention defaults.
const (
	// DefaultRetention is the installation default of ffrtmp server
	// --retention: 0, finished jobs are kept until an operator chooses an
	// age. Purging is opt-in, so that history nobody asked to lose (jobs
	// imported from an older system with old finish times, for one) is
	// never deleted by an upgrade.
	DefaultRetention = 0
	// DefaultPurgeBatch is how many jobs one PurgeJobs names.
	DefaultPurgeBatch = 500
	// DefaultPurgeInterval is the pause between two retention passes that
	// found nothing more to purge.
	DefaultPurgeInterval = time.Minute
	// DefaultPurgePause is the pause between two PurgeJobs proposals:
	// with DefaultPurgeBatch, at most 5,000 jobs a second, in one entry
	// each 100ms, so purging never crowds out other writes.
	DefaultPurgePause = 100 * time.Millisecond
	// purgeBatchesPerTenant bounds the proposals for one tenant in one
	// pass, so that one tenant's backlog does not hold up the others'.
	purgeBatchesPerTenant = 20
)

// Retention is the leader-only loop that purges finished jobs past their
// tenant's retention (fsm.RetentionOf): it pages each tenant's finished
// jobs oldest first from the store (fsm.Store.FinishedJobs) and proposes
// fsm.PurgeJobs of at most BatchSize IDs, one at a time and Pause apart.
// Apply checks each job again against the entry's time, so a job the
// loop listed that changed in between, or a retention lengthened in
// between, is kept.
type Retention struct {
	FSM    *fsm.FSM
	Logger *slog.Logger
	// Default is the retention of tenants without their own; 0 keeps
	// their finished jobs forever.
	Default time.Duration
	// BatchSize, Interval and Pause default to DefaultPurgeBatch,
	// DefaultPurgeInterval and DefaultPurgePause.
	BatchSize int
	Interval  time.Duration
	Pause     time.Duration
	// Now returns the current time; tests may replace it. It decides
	// which jobs are listed; Apply decides with the entry's time.
	Now func() time.Time
	// Wake, if set, starts a pass at once (tests).
	Wake <-chan struct{}
}

// Run purges until ctx ends.
func (r *Retention) Run(ctx context.Context, n *Node) {
	interval := cmp.Or(r.Interval, DefaultPurgeInterval)
	pause := cmp.Or(r.Pause, DefaultPurgePause)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-r.Wake:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
		wait := interval
		if r.pass(ctx, n, pause) {
			wait = pause // a tenant has more past its retention
		}
		timer.Reset(wait)
	}
}

// pass proposes PurgeJobs for every tenant with finished jobs past its
// retention, at most purgeBatchesPerTenant each, and reports whether any
// tenant had more left.
func (r *Retention) pass(ctx context.Context, n *Node, pause time.Duration) (more bool) {
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := r.Now
	if now == nil {
		now = func() time.Time { return time.Now().UTC() }
	}
	size := cmp.Or(r.BatchSize, DefaultPurgeBatch)
	proposed := 0
	defer func() {
		if proposed > 0 {
			log.Info("retention pass", "proposed", proposed, "more", more)
		}
	}()
	// Bookkeeping: no API caller, so no audit record.
	ctx = fsm.WithActor(ctx, nil)
	for _, t := range r.FSM.RetentionTenants() {
		ret := fsm.RetentionOf(t, r.Default)
		if ret <= 0 {
			continue
		}
		var last []string
		for i := 0; ; i++ {
			if ctx.Err() != nil || r.FSM.StoreDown() {
				return false
			}
			at := now()
			ids, err := r.FSM.Store().FinishedJobs(ctx, &fsm.FinishedJobsParams{TenantID: t.ID, Before: at.Add(-ret), Limit: size})
			if err != nil {
				log.Warn("retention: list finished jobs", "tenant", t.ID, "error", err)
				return false
			}
			if len(ids) == 0 || slices.Equal(ids, last) {
				break // done, or Apply kept them all: look again next pass
			}
			if i == purgeBatchesPerTenant {
				more = true
				break
			}
			if proposed > 0 && !sleepCtx(ctx, pause) {
				return false // one entry each pause, across tenants too
			}
			if _, err := n.Apply(ctx, &fsm.PurgeJobs{TenantID: t.ID, IDs: ids, Retention: fsm.Duration(ret), At: at}); err != nil {
				log.Warn("retention: purge", "tenant", t.ID, "jobs", len(ids), "error", err)
				return false
			}
			// The next listing reads the store, which has the purge once
			// this node's FSM has committed up to the commit index (at
			// or past the purge's; see leaderLoop).
			if err := n.waitApplied(ctx, n.raft.CommitIndex()); err != nil {
				return false
			}
			log.Debug("retention: purge proposed", "tenant", t.ID, "jobs", len(ids), "retention", ret)
			proposed += len(ids)
			last = ids
		}
	}
	return more
}

// sleepCtx waits d, and reports false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// LeaderLoops returns a leader loop (Config.LeaderLoop) that runs every
// one of loops concurrently and returns once all have returned.
func LeaderLoops(loops ...func(context.Context, *Node)) func(context.Context, *Node) {
	return func(ctx context.Context, n *Node) {
		var wg sync.WaitGroup
		for _, loop := range loops {
			wg.Go(func() { loop(ctx, n) })
		}
		wg.Wait()
	}
}
