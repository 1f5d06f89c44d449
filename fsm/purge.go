package fsm

import (
	"context"
	"slices"
	"time"
)

// PurgeJobsType purges finished jobs past their tenant's retention (see
// PurgeJobs). It carries the skip bit: a node that does not know it keeps
// the jobs, which changes nothing but how much history it answers for,
// and refuses their IDs to new submits as a tombstone would.
const PurgeJobsType MessageType = 35 | IgnoreUnknownTypeFlag

// MaxPurgeIDs bounds the jobs one PurgeJobs names.
const MaxPurgeIDs = 1000

// PurgeJobs deletes finished jobs of one tenant whose retention ran out.
// Only the leader's retention loop proposes it. Apply deletes a listed
// job only if it is the tenant's, finished (succeeded, failed or
// canceled) and finished before the cutoff: the entry's time (FSM.at)
// minus the tenant's retention, or minus Retention, the installation
// default the leader applies, for a tenant without its own. A tenant
// whose retention is 0 keeps everything. Every other listed ID, active,
// unknown, or finished later, is kept. Deleting leaves a tombstone (see
// Deletion): a purged job's ID is not reused.
type PurgeJobs struct {
	TenantID  string    `json:"tenant_id"`
	IDs       []string  `json:"ids"`
	Retention Duration  `json:"retention"`
	At        time.Time `json:"at"`
}

// MessageType implements Command.
func (*PurgeJobs) MessageType() MessageType { return PurgeJobsType }

// Validate implements Validator.
func (c *PurgeJobs) Validate() error {
	var ids, ret, at error
	switch {
	case len(c.IDs) == 0 || len(c.IDs) > MaxPurgeIDs:
		ids = invalid("ids must name 1 to %d jobs", MaxPurgeIDs)
	default:
		for _, id := range c.IDs {
			if err := checkID("ids", id); err != nil {
				ids = err
				break
			}
		}
	}
	if c.Retention <= 0 {
		ret = invalid("retention must be positive")
	}
	if c.At.IsZero() {
		at = invalid("at is required")
	}
	return checkAll(c, checkID("tenant_id", c.TenantID), ids, ret, at)
}

// RetentionOf returns how long tenant t keeps finished jobs: its own
// retention if it has one, else def, the installation default; 0 keeps
// them forever.
func RetentionOf(t *Tenant, def time.Duration) time.Duration {
	if t != nil && t.Retention != nil {
		return time.Duration(*t.Retention)
	}
	return def
}

func (f *FSM) applyPurgeJobs(index uint64, c *PurgeJobs, b *batchBuilder) any {
	ret := RetentionOf(f.tenants[c.TenantID], time.Duration(c.Retention))
	if ret <= 0 {
		return nil
	}
	cutoff := f.at(c.At).Add(-ret)
	for _, id := range c.IDs {
		if _, ok := f.jobs[id]; ok {
			continue // active
		}
		if _, ok := b.deleted[JobKind][id]; ok {
			continue // purged earlier in this batch
		}
		j := b.purgeable[id]
		if o, ok := b.objs[JobKind][id]; ok {
			j = o.(*Job) // finished in this batch
		}
		if j == nil || j.TenantID != c.TenantID || !j.State.Terminal() || !j.FinishedAt.Before(cutoff) || j.ModifyIndex >= index {
			continue
		}
		b.del(JobKind, j, index)
	}
	return nil
}

// storedPurges returns the stored versions of the jobs that the PurgeJobs
// among entries name and memory does not hold (the active
// ones are never purged): what applyPurgeJobs checks. It reads the store
// once, without f.mu, retrying with backoff while the store is
// unreachable, as storedSubmits does. A bolt store holds exactly the state
// as of start. A shared PostgreSQL store may already hold a later state
// (another node committed past start): a job purged there is absent, so
// this node records no deletion for it and needs none, since the row is
// gone and its tombstone written, and memory holds no finished job.
func (f *FSM) storedPurges(entries []*logEntry, start uint64) map[string]*Job {
	var ids []string
	f.mu.RLock()
	for _, e := range entries {
		if e == nil {
			continue
		}
		c, ok := e.cmd.(*PurgeJobs)
		if !ok {
			continue // another command, or one Apply stops on
		}
		for _, id := range c.IDs {
			if _, ok := f.jobs[id]; !ok {
				ids = append(ids, id)
			}
		}
	}
	f.mu.RUnlock()
	if len(ids) == 0 {
		return nil
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var m map[string]*Job
	f.retry("store read", start+1, func(ctx context.Context) (err error) {
		m, err = f.store.GetJobs(ctx, ids)
		return err
	})
	return m
}

// RetentionTenants returns every tenant, deleted ones included (their
// history is purged too), sorted by ID.
func (f *FSM) RetentionTenants() []*Tenant {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.tenants)
}
