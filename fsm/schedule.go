package fsm

import (
	"math"
	"slices"
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

// Fairness is the leader's local scheduling state: its round-robin
// position between tenants in each dispatch class, and what it knows of
// when jobs could have been placed (CountFrom). It is leader-local and not
// replicated: after a failover the rotation restarts, which only shifts
// which tenant goes first, and the new leader counts acquire timeouts from
// its own start.
type Fairness struct {
	last map[class]string
	// since is when this leader began placing jobs.
	since time.Time
	// poolUp maps a pool ("" for the shared workers, else the tenant of
	// dedicated ones) to the time of the first pass that saw one of its
	// workers up and not draining, since when it has always had one; nil
	// if acquire timeouts count from the jobs' queued times.
	poolUp map[string]time.Time
	// quota maps each tenant seen at its max_concurrent_jobs to the time
	// of the first pass that saw it with room again, zero while it is at
	// the limit: time a job waits for its own tenant's jobs to end is not
	// the cluster failing to place it, so it does not count towards the
	// job's acquire timeout.
	quota map[string]time.Time
}

// observeQuota records at now whether tenant t has room under its
// max_concurrent_jobs.
func (fr *Fairness) observeQuota(now time.Time, t string, room bool) {
	if fr.quota == nil {
		fr.quota = make(map[string]time.Time)
	}
	since, seen := fr.quota[t]
	switch {
	case !room:
		fr.quota[t] = time.Time{}
	case seen && since.IsZero():
		fr.quota[t] = now
	}
}

// NewFairness returns an empty rotation that counts acquire timeouts from
// the jobs' queued times.
func NewFairness() *Fairness { return &Fairness{last: make(map[class]string)} }

// CountFrom makes acquire timeouts count only time when the cluster could
// have placed the job: not before since (when this leader took over, so
// a leaderless outage does not count) and not before a worker of the
// job's pool (shared, or its tenant's dedicated ones) has been up, as seen
// by the passes of this Fairness. A job whose pool has no worker up does
// not expire.
func (fr *Fairness) CountFrom(since time.Time) {
	fr.since = since
	fr.poolUp = make(map[string]time.Time)
}

// observe records at now which pools have a worker that can take jobs.
func (fr *Fairness) observe(now time.Time, workers []*Worker) {
	if fr.poolUp == nil {
		return
	}
	up := make(map[string]bool)
	for _, w := range workers {
		if !w.Draining {
			up[w.TenantID] = true
		}
	}
	for p := range fr.poolUp {
		if !up[p] {
			delete(fr.poolUp, p)
		}
	}
	for p := range up {
		if _, ok := fr.poolUp[p]; !ok {
			fr.poolUp[p] = now
		}
	}
}

// countFrom returns when j's acquire timeout began to count (zero: from
// its queued time), or false if it does not count yet.
func (fr *Fairness) countFrom(j *Job) (time.Time, bool) {
	from, ok := fr.poolFrom(j)
	if since, seen := fr.quota[j.TenantID]; ok && seen {
		if since.IsZero() {
			return time.Time{}, false // at its own limit
		}
		if since.After(from) {
			from = since
		}
	}
	return from, ok
}

// poolFrom is countFrom as the job's worker pool alone decides it.
func (fr *Fairness) poolFrom(j *Job) (time.Time, bool) {
	if fr.poolUp == nil {
		return time.Time{}, true
	}
	shared, ok1 := fr.poolUp[""]
	own, ok2 := fr.poolUp[j.TenantID]
	switch {
	case !ok1 && !ok2:
		return time.Time{}, false
	case !ok1 || (ok2 && own.Before(shared)):
		shared = own
	}
	if fr.since.After(shared) {
		return fr.since, true
	}
	return shared, true
}

// order returns the tenants with queued jobs in class c, rotated so that
// the tenant after the one served last in c goes first.
func (fr *Fairness) order(c class, queued map[string]*btree.BTreeG[qitem]) []string {
	tenants := sortedKeys(queued)
	if last, ok := fr.last[c]; ok && len(tenants) > 0 {
		i, _ := slices.BinarySearch(tenants, last)
		if i < len(tenants) && tenants[i] == last {
			i++
		}
		tenants = append(tenants[i%len(tenants):], tenants[:i%len(tenants)]...)
	}
	return tenants
}

// demand is what a job asks of a worker. capable and fits see a job only
// through its demand, so jobs with equal demands fit exactly the same
// workers: Schedule relies on that to pass over, for the rest of a pass,
// every job whose demand already fit nowhere.
type demand struct {
	tenant   string
	hardware string
	// renditions counts the plan's renditions per video codec, in
	// videoCodecs order; the last element is 1 if any rendition has
	// another codec (which no worker encodes).
	renditions [9]uint8
	cpu        float64
	memoryMB   int
}

func demandOf(j *Job) demand {
	d := demand{tenant: j.TenantID, hardware: j.Plan.Hardware, cpu: j.Spec.Resources.CPU, memoryMB: j.Spec.Resources.MemoryMB}
	other := len(d.renditions) - 1
	for _, r := range j.Plan.Outputs {
		i := slices.Index(videoCodecs, r.Video.Codec)
		if i < 0 || i >= other || d.renditions[i] == math.MaxUint8 {
			d.renditions[other] = 1
			continue
		}
		d.renditions[i]++
	}
	return d
}

// sessions returns the hardware encoder sessions d holds on w: one for
// each rendition whose encoder (Worker.EncoderFor) is a hardware one. ok
// is false if w has no encoder for some rendition.
func (d *demand) sessions(w *Worker) (need sessions, ok bool) {
	other := len(d.renditions) - 1
	if d.renditions[other] > 0 {
		return need, false
	}
	for i, n := range d.renditions[:other] {
		if n == 0 {
			continue
		}
		e := w.EncoderFor(videoCodecs[i], d.hardware)
		if e == "" {
			return need, false
		}
		if k := hwIndex(e); k >= 0 {
			need[k] += int(n)
		}
	}
	return need, true
}

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

// add returns u plus a job of demand d on worker w.
func (u usage) add(w *Worker, d *demand) usage {
	u.jobs++
	u.milliCPU += milliCPU(d.cpu)
	u.memoryMB += d.memoryMB
	need, _ := d.sessions(w)
	for i, n := range need {
		u.sessions[i] += n
	}
	return u
}

func (f *FSM) usage(w *Worker) usage {
	var u usage
	for id := range f.idx.byWorker[w.ID] {
		j := f.jobs[id]
		if !j.ExitedAt.IsZero() {
			continue // its ffmpeg has exited (ExitJob)
		}
		d := demandOf(j)
		u = u.add(w, &d)
	}
	return u
}

// capable reports whether w could ever run a job of demand d: tenant,
// encoders, encoder sessions and size.
func capable(w *Worker, d *demand) bool {
	if w.TenantID != "" && w.TenantID != d.tenant {
		return false
	}
	if w.Slots < 1 {
		return false
	}
	need, ok := d.sessions(w)
	if !ok {
		return false
	}
	for i, n := range need {
		if n > w.EncoderSessions[hardwareKinds[i]] {
			return false
		}
	}
	if d.cpu > 0 && w.CPUs > 0 && d.cpu > float64(w.CPUs) {
		return false
	}
	if d.memoryMB > 0 && w.MemoryMB > 0 && d.memoryMB > w.MemoryMB {
		return false
	}
	return true
}

// fits reports whether w can take a job of demand d now, given what it
// already runs.
func fits(w *Worker, d *demand, u usage) bool {
	if w.State != WorkerUp || w.Draining || u.jobs >= w.Slots || !capable(w, d) {
		return false
	}
	if d.cpu > 0 && w.CPUs > 0 && u.milliCPU+milliCPU(d.cpu) > int64(w.CPUs)*1000 {
		return false
	}
	if d.memoryMB > 0 && w.MemoryMB > 0 && u.memoryMB+d.memoryMB > w.MemoryMB {
		return false
	}
	need, _ := d.sessions(w)
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
// is passed over, so it never blocks the jobs behind it. A job goes to
// the worker with the most free slots that can take it (the lowest ID
// among equals). A tenant's max_concurrent_jobs and max_cpu are kept
// (nextPlaceable), and a disabled or deleted tenant's jobs wait.
//
// A pass walks each tenant's queue at most once, and asks the workers
// about each distinct demand at most once after it fit nowhere: within a
// pass usage only grows, so a demand that fit nowhere never fits again.
func (f *FSM) Schedule(now time.Time, fair *Fairness, limit int) *Decisions {
	f.mu.RLock()
	defer f.mu.RUnlock()
	p := &pass{f: f, now: now, d: &Decisions{}, blocked: make(map[*demand]bool), quota: make(map[string]tenantUse)}
	d := p.d

	var workers []*Worker // up, in map order: only capability is asked of them
	p.avail = btree.NewG(16, wless)
	// free counts the free slots of the up workers, a draining worker's
	// too; once it is zero nothing more can be placed.
	free := 0
	for _, w := range f.workers {
		if w.State != WorkerUp {
			continue
		}
		workers = append(workers, w)
		n := w.Slots - f.idx.busy[w.ID]
		if n <= 0 {
			continue // full: no need of its usage (with many slots, most are)
		}
		free += n
		if !w.Draining {
			p.avail.ReplaceOrInsert(&wstate{w: w, u: f.usage(w)})
		}
	}

	// Acquire timeouts. The index orders jobs by the end of a timeout
	// counted from their queued times; one that CountFrom starts later
	// is passed over until then.
	fair.observe(now, workers)
	for id, t := range f.tenants {
		l := t.Limits.MaxConcurrentJobs
		if _, seen := fair.quota[id]; l > 0 || seen {
			fair.observeQuota(now, id, l == 0 || f.idx.byTenant[id].held < l)
		}
	}
	p.expired = make(map[string]bool)
	capableAnywhere := make(map[demand]bool)
	f.idx.deadlines.Ascend(func(it ditem) bool {
		if it.at.After(now) {
			p.wake(it.at)
			return false
		}
		j := f.jobs[it.id]
		from, counting := fair.countFrom(j)
		if !counting {
			return true // a worker coming up changes the FSM and wakes us
		}
		if due := expiry(j, from); due.After(now) {
			p.wake(due)
			return true
		}
		dm := demandOf(j)
		ok, known := capableAnywhere[dm]
		if !known {
			ok = slices.ContainsFunc(workers, func(w *Worker) bool { return capable(w, &dm) })
			capableAnywhere[dm] = ok
		}
		code := CodeAcquireTimeout
		if !ok {
			code = CodeNoCapableWorker
		}
		d.Expire = append(d.Expire, &ExpireJob{JobID: j.ID, Code: code, At: now, CountFrom: from})
		p.expired[j.ID] = true
		return true
	})

	for _, c := range classes {
		if free == 0 || len(d.Assign) >= limit {
			break
		}
		tenants := fair.order(c, f.idx.queued[c])
		cursors := make(map[string]qitem, len(tenants))
		for len(tenants) > 0 && free > 0 && len(d.Assign) < limit {
			next := tenants[:0:0]
			for _, t := range tenants {
				if free == 0 || len(d.Assign) >= limit {
					break
				}
				j, ws := p.nextPlaceable(f.idx.queued[c][t], t, cursors)
				if j == nil {
					continue // this tenant has nothing placeable in c
				}
				d.Assign = append(d.Assign, &AssignJob{JobID: j.ID, WorkerID: ws.w.ID, Attempt: j.Attempt + 1, At: now})
				p.take(ws, j)
				free--
				fair.last[c] = t
				next = append(next, t)
			}
			tenants = next
		}
	}
	return d
}

// pass is the state of one Schedule call.
type pass struct {
	f       *FSM
	now     time.Time
	d       *Decisions
	expired map[string]bool // job IDs expiring in this pass
	// avail holds the workers that may take jobs and have a free slot:
	// the worker with the most free slots first, then by ID.
	avail *btree.BTreeG[*wstate]
	// blocked holds the demands that fit no worker in this pass.
	blocked map[*demand]bool
	// quota is the usage of each limited tenant met in this pass: its
	// jobs' and this pass's assignments.
	quota map[string]tenantUse
}

// tenantRoom returns tenant t's usage as of this pass and whether it may
// have jobs placed at all: a disabled or deleted tenant's jobs wait, and a
// tenant at max_concurrent_jobs has no room until a job of its own ends.
// Within a pass usage only grows, so a tenant without room stays so.
func (p *pass) tenantRoom(t string) (*Tenant, tenantUse, bool) {
	tn := p.f.tenants[t]
	if tn == nil {
		return nil, tenantUse{}, true // an orphan: no limits apply
	}
	if tn.Disabled || tn.Deleted() {
		return tn, tenantUse{}, false
	}
	use, ok := p.quota[t]
	if !ok {
		use = p.f.idx.byTenant[t]
		p.quota[t] = use
	}
	return tn, use, quotaRoom(tn, use, 0) == nil
}

// wstate is a worker and what its active jobs (and this pass's
// assignments) reserve.
type wstate struct {
	w *Worker
	u usage
}

func wless(a, b *wstate) bool {
	if fa, fb := a.w.Slots-a.u.jobs, b.w.Slots-b.u.jobs; fa != fb {
		return fa > fb
	}
	return a.w.ID < b.w.ID
}

func (p *pass) wake(t time.Time) {
	if p.d.Wake.IsZero() || t.Before(p.d.Wake) {
		p.d.Wake = t
	}
}

// place returns the worker with the most free slots that can take a job
// of demand d now, or nil. d must be interned (from a qitem), so that
// equal demands are one pointer.
func (p *pass) place(d *demand) *wstate {
	if p.blocked[d] {
		return nil
	}
	var found *wstate
	p.avail.Ascend(func(ws *wstate) bool {
		if fits(ws.w, d, ws.u) {
			found = ws
			return false
		}
		return true
	})
	if found == nil {
		p.blocked[d] = true
	}
	return found
}

// take reserves job j's demand on ws, keeping p.avail in order, and
// counts it against its tenant's quotas.
func (p *pass) take(ws *wstate, j *Job) {
	if use, ok := p.quota[j.TenantID]; ok {
		use.held++
		use.milliCPU += milliCPU(j.Spec.Resources.CPU)
		p.quota[j.TenantID] = use
	}
	p.avail.Delete(ws)
	d := demandOf(j)
	ws.u = ws.u.add(ws.w, &d)
	if ws.w.Slots > ws.u.jobs {
		p.avail.ReplaceOrInsert(ws)
	}
}

// nextPlaceable returns tenant t's next job in queue q, after its cursor,
// that some worker can take now, and that worker. It advances the cursor
// past every job it looked at.
//
// A tenant's quotas pass over its jobs without blocking anyone else's: at
// max_concurrent_jobs it has nothing placeable in this pass, and a job
// that would take it past max_cpu is passed over (a smaller one behind it
// may fit), in both cases without marking the job's demand blocked.
func (p *pass) nextPlaceable(q *btree.BTreeG[qitem], t string, cursors map[string]qitem) (*Job, *wstate) {
	tn, use, room := p.tenantRoom(t)
	if !room {
		return nil, nil
	}
	cur, started := cursors[t]
	var found qitem
	var best *wstate
	visit := func(it qitem) bool {
		if started && !qless(cur, it) {
			return true // the cursor itself
		}
		found = it
		switch {
		case p.expired[it.id]:
		case it.notBefore.After(p.now):
			p.wake(it.notBefore)
		case quotaRoom(tn, use, it.demand.cpu) != nil:
		default:
			best = p.place(it.demand)
		}
		return best == nil
	}
	if started {
		q.AscendGreaterOrEqual(cur, visit)
	} else {
		q.Ascend(visit)
	}
	if found.id != "" {
		cursors[t] = found
	}
	if best == nil {
		return nil, nil
	}
	return p.f.jobs[found.id], best
}
