package fsm

import "time"

// TenantStats are a tenant's active jobs and what those holding a worker
// reserve, for metrics.
type TenantStats struct {
	// Jobs counts active jobs by state (queued, assigned, running,
	// paused).
	Jobs map[JobState]int
	// CPU and MemoryMB sum the resources of the jobs holding a worker
	// (assigned, running, paused).
	CPU      float64
	MemoryMB int
	// UsedCPU and UsedMemoryMB sum what the running jobs' workers last
	// reported they use (Progress.CPU, Progress.MemoryMB).
	UsedCPU      float64
	UsedMemoryMB int
}

// Stats returns every tenant's active jobs and reserved resources (a
// tenant with none has zero values), and the time the oldest queued job
// of each queue entered it (absent for an empty queue). It reads memory
// only.
func (f *FSM) Stats() (tenants map[string]*TenantStats, oldestQueued map[Queue]time.Time) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	tenants = make(map[string]*TenantStats, len(f.tenants))
	stats := func(id string) *TenantStats {
		s := tenants[id]
		if s == nil {
			s = &TenantStats{Jobs: make(map[JobState]int)}
			tenants[id] = s
		}
		return s
	}
	for id, t := range f.tenants {
		if !t.Deleted() {
			stats(id)
		}
	}
	oldestQueued = make(map[Queue]time.Time)
	for _, j := range f.jobs {
		if j.State.Terminal() {
			continue
		}
		s := stats(j.TenantID)
		s.Jobs[j.State]++
		if j.State == JobQueued {
			if t, ok := oldestQueued[j.Spec.Queue]; !ok || j.QueuedAt.Before(t) {
				oldestQueued[j.Spec.Queue] = j.QueuedAt
			}
			continue
		}
		s.CPU += j.Spec.Resources.CPU
		s.MemoryMB += j.Spec.Resources.MemoryMB
		if p := j.Progress; p != nil && j.State == JobRunning {
			s.UsedCPU += p.CPU
			s.UsedMemoryMB += p.MemoryMB
		}
	}
	return tenants, oldestQueued
}
