package fsm

import (
	"time"

	"github.com/google/btree"
)

// class is a dispatch class: a queue and a priority.
type class struct {
	queue Queue
	prio  Priority
}

// classes lists the dispatch classes in the order the scheduler serves
// them: by queue (live, default, batch), then by priority.
var classes = func() []class {
	var out []class
	for _, q := range Queues {
		for _, p := range Priorities {
			out = append(out, class{q, p})
		}
	}
	return out
}()

// qitem orders a tenant's queued jobs by submission (CreateIndex), so a
// requeued job goes back to its original place. It also carries what
// Schedule asks of every job it walks past, so that passing over a job
// does not touch the job: its NotBefore and its interned demand.
type qitem struct {
	create    uint64
	id        string
	notBefore time.Time
	demand    *demand
}

func qless(a, b qitem) bool {
	if a.create != b.create {
		return a.create < b.create
	}
	return a.id < b.id
}

// ditem orders queued jobs by acquire deadline.
type ditem struct {
	at time.Time
	id string
}

func dless(a, b ditem) bool {
	if !a.at.Equal(b.at) {
		return a.at.Before(b.at)
	}
	return a.id < b.id
}

// indexes are the in-memory scheduling indexes over active jobs.
type indexes struct {
	queued    map[class]map[string]*btree.BTreeG[qitem] // class → tenant → FIFO
	deadlines *btree.BTreeG[ditem]
	byWorker  map[string]map[string]struct{}
	// busy counts, by worker, its jobs in byWorker whose ffmpeg has not
	// exited: the slots they take (usage's jobs). Schedule skips the
	// workers it shows full without computing their usage.
	busy map[string]int
	// demands interns the demands of queued jobs: queued jobs with equal
	// demands share one *demand, which Schedule compares by pointer.
	demands map[demand]*interned
	// byTenant counts each tenant's active jobs, for its quotas; a tenant
	// without active jobs has no entry.
	byTenant map[string]tenantUse
}

// tenantUse is what a tenant's active jobs count against its limits.
// CPU is in millicores, an integer, so that sums do not depend on order.
type tenantUse struct {
	// active counts queued, assigned, running and paused jobs (max_jobs).
	active int
	// held counts the jobs that hold a worker: assigned, running and
	// paused (max_concurrent_jobs).
	held int
	// milliCPU sums the resources.cpu of the held jobs (max_cpu).
	milliCPU int64
}

// holdsWorker reports whether a job in state s holds a worker slot.
func holdsWorker(s JobState) bool { return s == JobAssigned || s == JobRunning || s == JobPaused }

// count adds (n = 1) or removes (n = -1) an active job to its tenant's
// usage.
func (x *indexes) count(j *Job, n int) {
	u := x.byTenant[j.TenantID]
	u.active += n
	if holdsWorker(j.State) {
		u.held += n
		u.milliCPU += int64(n) * milliCPU(j.Spec.Resources.CPU)
	}
	if u == (tenantUse{}) {
		delete(x.byTenant, j.TenantID)
		return
	}
	x.byTenant[j.TenantID] = u
}

// interned is a demand and how many queued jobs have it.
type interned struct {
	demand demand
	refs   int
}

func newIndexes() *indexes {
	return &indexes{
		queued:    make(map[class]map[string]*btree.BTreeG[qitem]),
		deadlines: btree.NewG(16, dless),
		byWorker:  make(map[string]map[string]struct{}),
		busy:      make(map[string]int),
		demands:   make(map[demand]*interned),
		byTenant:  make(map[string]tenantUse),
	}
}

func jobClass(j *Job) class { return class{j.Spec.Queue, j.Spec.Priority} }

// deadline is when a queued job fails for want of a worker: its acquire
// timeout counts from when it became eligible (queued, and past any retry
// backoff).
func deadline(j *Job) ditem {
	return ditem{expiry(j, time.Time{}), j.ID}
}

// expiry is when a queued job's acquire timeout ends if it is counted
// from when the job became eligible, or from countFrom if that is later.
func expiry(j *Job, countFrom time.Time) time.Time {
	from := j.QueuedAt
	if j.NotBefore.After(from) {
		from = j.NotBefore
	}
	if countFrom.After(from) {
		from = countFrom
	}
	return from.Add(time.Duration(j.Spec.AcquireTimeout))
}

// add indexes an active job by its state.
func (x *indexes) add(j *Job) {
	x.count(j, 1)
	switch j.State {
	case JobQueued:
		c := jobClass(j)
		tenants := x.queued[c]
		if tenants == nil {
			tenants = make(map[string]*btree.BTreeG[qitem])
			x.queued[c] = tenants
		}
		t := tenants[j.TenantID]
		if t == nil {
			t = btree.NewG(16, qless)
			tenants[j.TenantID] = t
		}
		d := demandOf(j)
		in := x.demands[d]
		if in == nil {
			in = &interned{demand: d}
			x.demands[d] = in
		}
		in.refs++
		t.ReplaceOrInsert(qitem{create: j.CreateIndex, id: j.ID, notBefore: j.NotBefore, demand: &in.demand})
		x.deadlines.ReplaceOrInsert(deadline(j))
	case JobAssigned, JobRunning, JobPaused:
		m := x.byWorker[j.WorkerID]
		if m == nil {
			m = make(map[string]struct{})
			x.byWorker[j.WorkerID] = m
		}
		m[j.ID] = struct{}{}
		if j.ExitedAt.IsZero() {
			x.busy[j.WorkerID]++
		}
	}
}

// remove drops a job from the indexes of its state.
func (x *indexes) remove(j *Job) {
	x.count(j, -1)
	switch j.State {
	case JobQueued:
		c := jobClass(j)
		if t := x.queued[c][j.TenantID]; t != nil {
			if _, ok := t.Delete(qitem{create: j.CreateIndex, id: j.ID}); ok {
				d := demandOf(j)
				if in := x.demands[d]; in != nil {
					if in.refs--; in.refs == 0 {
						delete(x.demands, d)
					}
				}
			}
			if t.Len() == 0 {
				delete(x.queued[c], j.TenantID)
			}
		}
		x.deadlines.Delete(deadline(j))
	case JobAssigned, JobRunning, JobPaused:
		if m := x.byWorker[j.WorkerID]; m != nil {
			delete(m, j.ID)
			if len(m) == 0 {
				delete(x.byWorker, j.WorkerID)
			}
		}
		if j.ExitedAt.IsZero() {
			if x.busy[j.WorkerID]--; x.busy[j.WorkerID] <= 0 {
				delete(x.busy, j.WorkerID)
			}
		}
	}
}
