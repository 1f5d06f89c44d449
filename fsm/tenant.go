package fsm

// Tenants and their quotas. Quotas are enforced here, inside Apply, so
// that concurrent submits through different nodes cannot exceed them:
// every node applies the same entries in the same order against the same
// counters. The counters are the indexes' byTenant (kept up to date by
// put, never recomputed by a scan of the jobs); dedicated workers, which
// are few, are counted when one registers.

// liveTenant returns the tenant id names, refusing a missing or deleted
// one (not_found) and, with active set, a disabled one.
func (f *FSM) liveTenant(id string, active bool) (*Tenant, *Error) {
	t, ok := f.tenants[id]
	if !ok || t.Deleted() {
		return nil, Errorf(CodeNotFound, "tenant %q does not exist", id)
	}
	if active && t.Disabled {
		return nil, Errorf(CodeTenantDisabled, "tenant %q is disabled", id)
	}
	return t, nil
}

// checkSubmitQuota refuses a new active job of tenant t past max_jobs,
// and past max_cpu if the job could never run within it.
func (f *FSM) checkSubmitQuota(t *Tenant, j *Job) *Error {
	use := f.idx.byTenant[t.ID]
	if l := t.Limits.MaxJobs; l > 0 && use.active >= l {
		return quotaError(t.ID, "max_jobs", float64(l), float64(use.active), 0)
	}
	if l := t.Limits.MaxCPU; l > 0 {
		cpu := j.Spec.Resources.CPU
		if cpu <= 0 {
			return Errorf(CodeInvalidArgument, "tenant %s has a max_cpu limit: the job must set resources.cpu", t.ID)
		}
		if milliCPU(cpu) > milliCPU(l) {
			return quotaError(t.ID, "max_cpu", l, float64(use.milliCPU)/1000, cpu)
		}
	}
	return nil
}

// quotaRoom reports whether tenant t may place one more job of cpu on a
// worker when its jobs already hold use: the quota that refuses it, or
// nil.
func quotaRoom(t *Tenant, use tenantUse, cpu float64) *Error {
	if t == nil {
		return nil
	}
	if l := t.Limits.MaxConcurrentJobs; l > 0 && use.held >= l {
		return quotaError(t.ID, "max_concurrent_jobs", float64(l), float64(use.held), 0)
	}
	if l := t.Limits.MaxCPU; l > 0 && use.milliCPU+milliCPU(cpu) > milliCPU(l) {
		return quotaError(t.ID, "max_cpu", l, float64(use.milliCPU)/1000, cpu)
	}
	return nil
}

// dedicatedUp counts the tenant's dedicated workers that are up.
func (f *FSM) dedicatedUp(tenant string) int {
	n := 0
	for _, w := range f.workers {
		if w.TenantID == tenant && w.State == WorkerUp {
			n++
		}
	}
	return n
}

// checkWorkerQuota refuses a dedicated worker that would take tenant t
// past max_workers. A worker already up as t's (re-registering) takes
// nothing new.
func (f *FSM) checkWorkerQuota(t *Tenant, w *Worker) *Error {
	l := t.Limits.MaxWorkers
	if l == 0 {
		return nil
	}
	if old, ok := f.workers[w.ID]; ok && old.State == WorkerUp && old.TenantID == t.ID {
		return nil
	}
	if n := f.dedicatedUp(t.ID); n >= l {
		return quotaError(t.ID, "max_workers", float64(l), float64(n), 0)
	}
	return nil
}

func (f *FSM) applyUpdateTenant(index uint64, c *UpdateTenant, b *batchBuilder) any {
	old, err := f.liveTenant(c.ID, false)
	if err != nil {
		return err
	}
	if old.ModifyIndex >= index {
		return old
	}
	t := *old
	if c.Plan != nil {
		t.Plan = *c.Plan
	}
	if c.MaxJobs != nil {
		t.Limits.MaxJobs = *c.MaxJobs
	}
	if c.MaxConcurrentJobs != nil {
		t.Limits.MaxConcurrentJobs = *c.MaxConcurrentJobs
	}
	if c.MaxWorkers != nil {
		t.Limits.MaxWorkers = *c.MaxWorkers
	}
	if c.MaxCPU != nil {
		t.Limits.MaxCPU = *c.MaxCPU
	}
	if c.Disabled != nil {
		t.Disabled = *c.Disabled
	}
	switch {
	case c.Retention != nil && (old.Retention == nil || *old.Retention != *c.Retention):
		r := *c.Retention
		t.Retention = &r
	case c.DefaultRetention:
		t.Retention = nil
	}
	if t == *old {
		return old
	}
	t.ModifyIndex = index
	f.tenants[t.ID] = &t
	b.put(TenantKind, &t)
	return &t
}

func (f *FSM) applyDeleteTenant(index uint64, c *DeleteTenant, b *batchBuilder) any {
	old, ok := f.tenants[c.ID]
	if ok && old.ModifyIndex >= index {
		return old
	}
	if _, err := f.liveTenant(c.ID, false); err != nil {
		return err
	}
	if n := f.idx.byTenant[c.ID].active; n > 0 {
		return Errorf(CodeTenantBusy, "tenant %s has %d active jobs (queued, assigned, running or paused); cancel them or let them finish first", c.ID, n)
	}
	t := *old
	t.DeletedAt = f.at(c.At)
	t.ModifyIndex = index
	f.tenants[t.ID] = &t
	b.put(TenantKind, &t)
	return &t
}

// orphan reports whether an object of tenant id has no tenant: id is
// empty or names no tenant, deleted or not.
func (f *FSM) orphan(id string) bool {
	_, ok := f.tenants[id]
	return !ok
}

func (f *FSM) applyAdoptOrphans(index uint64, c *AdoptOrphans, b *batchBuilder) any {
	t, err := f.liveTenant(c.TenantID, false)
	if err != nil {
		return err
	}
	// Sorted, so that the order of the index updates never depends on
	// map order.
	for _, id := range sortedKeys(f.jobs) {
		old := f.jobs[id]
		if old.ModifyIndex >= index || !f.orphan(old.TenantID) {
			continue
		}
		j := *old
		j.TenantID = t.ID
		j.ModifyIndex = index
		f.put(old, &j, b)
	}
	for _, id := range sortedKeys(f.workers) {
		old := f.workers[id]
		if old.ModifyIndex >= index || old.TenantID == "" || !f.orphan(old.TenantID) {
			continue
		}
		w := *old
		w.TenantID = t.ID
		w.ModifyIndex = index
		f.workers[w.ID] = &w
		b.put(WorkerKind, &w)
	}
	return t
}

// Tenants returns every tenant that is not deleted, sorted by ID.
func (f *FSM) Tenants() []*Tenant {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*Tenant, 0, len(f.tenants))
	for _, id := range sortedKeys(f.tenants) {
		if t := f.tenants[id]; !t.Deleted() {
			out = append(out, t)
		}
	}
	return out
}

// TenantUsage is what a tenant uses of each of its limits.
type TenantUsage struct {
	// Jobs counts active jobs: queued, assigned, running and paused.
	Jobs int
	// ConcurrentJobs counts jobs holding a worker: assigned, running and
	// paused.
	ConcurrentJobs int
	// Workers counts the tenant's dedicated workers that are up.
	Workers int
	// CPU sums resources.cpu of the jobs holding a worker.
	CPU float64
}

// Usage returns a tenant's usage, from memory.
func (f *FSM) Usage(tenant string) TenantUsage {
	f.mu.RLock()
	defer f.mu.RUnlock()
	use := f.idx.byTenant[tenant]
	return TenantUsage{Jobs: use.active, ConcurrentJobs: use.held, Workers: f.dedicatedUp(tenant), CPU: float64(use.milliCPU) / 1000}
}

// Orphans counts the active jobs and the dedicated workers without a
// tenant: what AdoptOrphans would adopt now.
func (f *FSM) Orphans() (jobs, workers int) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, j := range f.jobs {
		if f.orphan(j.TenantID) {
			jobs++
		}
	}
	for _, w := range f.workers {
		if w.TenantID != "" && f.orphan(w.TenantID) {
			workers++
		}
	}
	return jobs, workers
}
