package fsm

import (
	"math"
	"slices"
	"strings"
	"time"

	"github.com/google/btree"
)

// Decisions are the commands the scheduler wants the leader to propose.
type Decisions struct {
	Assign []*AssignJob
	Expire []*ExpireJob
	// Wake is the earliest time at which a backoff or an acquire timeout
	// ends and the scheduler should run again even if nothing changes;
	// zero if there is none.
	Wake time.Time
}

// Fairness is the leader's round-robin position between tenants in each
// dispatch class. It is leader-local and not replicated: after a failover
// the rotation restarts, which only shifts which tenant goes first.
type Fairness struct {
	last map[class]string
}

// NewFairness returns an empty rotation.
func NewFairness() *Fairness { return &Fairness{last: make(map[class]string)} }

// usage is what a worker's active jobs reserve. All sums are integers
// (CPU in millicores): float addition depends on order, and map order is
// random, so a float sum could make Apply's capacity check differ between
// nodes.
type usage struct {
	jobs     int
	milliCPU int64
	memoryMB int
	sessions sessions
}

// sessions counts hardware encoder sessions, indexed like HardwareKinds.
type sessions [len(hardwareKinds)]int

func milliCPU(cpu float64) int64 { return int64(math.Round(cpu * 1000)) }

// add returns u plus job j on worker w.
func (u usage) add(w *Worker, j *Job) usage {
	u.jobs++
	u.milliCPU += milliCPU(j.Spec.Resources.CPU)
	u.memoryMB += j.Spec.Resources.MemoryMB
	need, _ := w.sessionsFor(&j.Plan)
	for i, n := range need {
		u.sessions[i] += n
	}
	return u
}

func (f *FSM) usage(w *Worker) usage {
	var u usage
	for id := range f.idx.byWorker[w.ID] {
		u = u.add(w, f.jobs[id])
	}
	return u
}

// sessionsFor returns the hardware encoder sessions plan p holds on w:
// one for each rendition whose encoder (Worker.EncoderFor) is a hardware
// one. ok is false if w has no encoder for some rendition.
func (w *Worker) sessionsFor(p *Plan) (need sessions, ok bool) {
	for _, r := range p.Outputs {
		e := w.EncoderFor(r.Video.Codec, p.Hardware)
		if e == "" {
			return need, false
		}
		if i := hwIndex(e); i >= 0 {
			need[i]++
		}
	}
	return need, true
}

// capable reports whether w could ever run j: tenant, encoders, encoder
// sessions and size.
func capable(w *Worker, j *Job) bool {
	if w.TenantID != "" && w.TenantID != j.TenantID {
		return false
	}
	if w.Slots < 1 {
		return false
	}
	need, ok := w.sessionsFor(&j.Plan)
	if !ok {
		return false
	}
	for i, n := range need {
		if n > w.EncoderSessions[hardwareKinds[i]] {
			return false
		}
	}
	r := j.Spec.Resources
	if r.CPU > 0 && w.CPUs > 0 && r.CPU > float64(w.CPUs) {
		return false
	}
	if r.MemoryMB > 0 && w.MemoryMB > 0 && r.MemoryMB > w.MemoryMB {
		return false
	}
	return true
}

// fits reports whether w can take j now, given what it already runs.
func (f *FSM) fits(w *Worker, j *Job, u usage) bool {
	if w.State != WorkerUp || w.Draining || !capable(w, j) || u.jobs >= w.Slots {
		return false
	}
	r := j.Spec.Resources
	if r.CPU > 0 && w.CPUs > 0 && u.milliCPU+milliCPU(r.CPU) > int64(w.CPUs)*1000 {
		return false
	}
	if r.MemoryMB > 0 && w.MemoryMB > 0 && u.memoryMB+r.MemoryMB > w.MemoryMB {
		return false
	}
	need, _ := w.sessionsFor(&j.Plan)
	for i, n := range need {
		if n > 0 && u.sessions[i]+n > w.EncoderSessions[hardwareKinds[i]] {
			return false
		}
	}
	return true
}

// Schedule decides, at time now, which queued jobs go to which workers
// (at most limit assignments) and which queued jobs have passed their
// acquire timeout. It does not change the FSM: the leader proposes the
// decisions, and Apply checks each again.
//
// Order: classes by queue (live, default, batch) then priority (high,
// medium, low); within a class, tenants take turns (round robin) and each
// tenant's jobs go in submission order. A job that no worker can take now
// is passed over, so it never blocks the jobs behind it.
func (f *FSM) Schedule(now time.Time, fair *Fairness, limit int) *Decisions {
	f.mu.RLock()
	defer f.mu.RUnlock()
	d := &Decisions{}
	wake := func(t time.Time) {
		if d.Wake.IsZero() || t.Before(d.Wake) {
			d.Wake = t
		}
	}

	workers := make([]*Worker, 0, len(f.workers))
	for _, w := range f.workers {
		if w.State == WorkerUp {
			workers = append(workers, w)
		}
	}
	slices.SortFunc(workers, func(a, b *Worker) int { return strings.Compare(a.ID, b.ID) })

	// Acquire timeouts.
	f.idx.deadlines.Ascend(func(it ditem) bool {
		if it.at.After(now) {
			wake(it.at)
			return false
		}
		j := f.jobs[it.id]
		code := CodeAcquireTimeout
		if !slices.ContainsFunc(workers, func(w *Worker) bool { return capable(w, j) }) {
			code = CodeNoCapableWorker
		}
		d.Expire = append(d.Expire, &ExpireJob{JobID: j.ID, Code: code, At: now})
		return true
	})
	expired := make(map[string]bool, len(d.Expire))
	for _, e := range d.Expire {
		expired[e.JobID] = true
	}

	used := make(map[string]usage, len(workers))
	free := 0
	for _, w := range workers {
		u := f.usage(w)
		used[w.ID] = u
		free += max(0, w.Slots-u.jobs)
	}

	for _, c := range classes {
		if free == 0 || len(d.Assign) >= limit {
			break
		}
		tenants := sortedKeys(f.queued(c))
		if len(tenants) == 0 {
			continue
		}
		// Rotate so the tenant after the last one served goes first.
		if last, ok := fair.last[c]; ok {
			i, _ := slices.BinarySearch(tenants, last)
			if i < len(tenants) && tenants[i] == last {
				i++
			}
			tenants = append(tenants[i%len(tenants):], tenants[:i%len(tenants)]...)
		}
		cursors := make(map[string]*qitem, len(tenants))
		for len(tenants) > 0 && free > 0 && len(d.Assign) < limit {
			next := tenants[:0:0]
			for _, t := range tenants {
				if free == 0 || len(d.Assign) >= limit {
					break
				}
				j, w := f.nextPlaceable(c, t, cursors, workers, used, now, expired, wake)
				if j == nil {
					continue // this tenant has nothing placeable in c
				}
				d.Assign = append(d.Assign, &AssignJob{JobID: j.ID, WorkerID: w.ID, Attempt: j.Attempt + 1, At: now})
				used[w.ID] = used[w.ID].add(w, j)
				free--
				fair.last[c] = t
				next = append(next, t)
			}
			tenants = next
		}
	}
	return d
}

func (f *FSM) queued(c class) map[string]*btree.BTreeG[qitem] { return f.idx.queued[c] }

// nextPlaceable returns tenant t's next job in class c, after its cursor,
// that some worker can take now, and that worker (the one with the most
// free slots). It advances the cursor past every job it looked at.
func (f *FSM) nextPlaceable(c class, t string, cursors map[string]*qitem, workers []*Worker,
	used map[string]usage, now time.Time, expired map[string]bool, wake func(time.Time)) (*Job, *Worker) {
	tree := f.idx.queued[c][t]
	var found *Job
	var best *Worker
	visit := func(it qitem) bool {
		if cur := cursors[t]; cur != nil && !qless(*cur, it) {
			return true // at or before the cursor
		}
		cur := it
		cursors[t] = &cur
		j := f.jobs[it.id]
		if expired[j.ID] {
			return true
		}
		if j.NotBefore.After(now) {
			wake(j.NotBefore)
			return true
		}
		bestFree := -1
		for _, w := range workers {
			u := used[w.ID]
			if free := w.Slots - u.jobs; free > bestFree && f.fits(w, j, u) {
				best, bestFree = w, free
			}
		}
		if best == nil {
			return true
		}
		found = j
		return false
	}
	if cur := cursors[t]; cur != nil {
		tree.AscendGreaterOrEqual(*cur, visit)
	} else {
		tree.Ascend(visit)
	}
	return found, best
}
