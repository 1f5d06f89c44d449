package fsm

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	json "github.com/go-json-experiment/json/v1"
	"github.com/hashicorp/raft"
)

// Observer receives domain events for metrics. Its methods are called
// from Apply with the FSM's lock held and must not block or call back.
type Observer interface {
	// JobStarted is called when an attempt starts, with the time it waited
	// in the queue.
	JobStarted(wait time.Duration)
	// JobFinished is called when a job reaches a terminal state (its
	// final version: state, times, error, result).
	JobFinished(j *Job)
}

// FSM is the replicated state machine. It implements raft.BatchingFSM.
//
// Raft's contract, restated: Apply/ApplyBatch and Snapshot are called from
// one goroutine; Snapshot must return quickly and the FSMSnapshot's Persist
// runs concurrently with later Applys; Restore is never concurrent with
// anything and must discard all previous state.
//
// Objects in memory are immutable once published: Apply replaces a changed
// object with a modified copy, so readers may keep the pointers they get.
type FSM struct {
	store    Store
	log      *slog.Logger
	observer Observer

	mu sync.RWMutex
	// index is the last index the store holds; applied the last index
	// applied in memory, which runs ahead of index while a batch's Commit
	// runs (see ApplyBatch). Only the apply goroutine changes applied.
	index, applied uint64
	// committing is closed when the last batch's Commit has returned.
	committing chan struct{}
	tenants    map[string]*Tenant
	keys       map[string]*APIKey
	users      map[string]*User
	emails     map[string]string // EmailKey(email) -> user ID
	invites    map[string]*Invitation
	// workerTokens holds every worker token, revoked ones included.
	workerTokens map[string]*WorkerToken
	workers      map[string]*Worker
	jobs         map[string]*Job // non-terminal jobs only
	idx          *indexes
	watch        chan struct{} // closed and replaced after every batch
	workerWatch  workerWatches // per-worker changes (see workerwatch.go)
	// pending holds the jobs of the batch being committed, and
	// pendingDeleted the jobs it deletes, so that GetJob answers for the
	// applied state until the store has it: a job that finished in the
	// batch stays readable, one it purged is gone.
	pending        map[string]Object
	pendingDeleted map[string]Deletion
	// entryAt is the leader's time of the entry being applied (see at).
	entryAt time.Time
	// storeDown is set while Apply retries a failed store call;
	// storeOutages counts the times it was set.
	storeDown    atomic.Bool
	storeOutages atomic.Uint64
	// storeCtx is what Apply's store calls run under; Abandon cancels
	// it.
	storeCtx      context.Context
	abandonStores context.CancelFunc

	// auditKey keys the audit chain's MACs (see audit.go).
	auditKey []byte
	// auditHead is the newest audit record's, applied in memory;
	// auditCommitted the newest the store holds.
	auditHead, auditCommitted AuditHead
}

var _ raft.BatchingFSM = (*FSM)(nil)

// Config configures an FSM.
type Config struct {
	Store    Store
	Logger   *slog.Logger
	Observer Observer // optional
	// AuditKey keys the MACs of the audit chain: the installation's
	// secret, derived from the cluster key (cluster.AuditKey) and never
	// stored. Every node of a cluster must have the same.
	AuditKey []byte
}

// New loads the FSM's memory from the store.
func New(ctx context.Context, cfg Config) (*FSM, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &FSM{store: cfg.Store, log: cfg.Logger, observer: cfg.Observer, watch: make(chan struct{}), auditKey: cfg.AuditKey}
	f.storeCtx, f.abandonStores = context.WithCancel(context.Background())
	if err := f.load(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *FSM) load(ctx context.Context) error {
	st, err := f.store.Load(ctx)
	if err != nil {
		return fmt.Errorf("load state: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index, f.applied = st.Index, st.Index
	f.workerWatch.reset(st.Index)
	f.auditHead, f.auditCommitted = st.AuditHead, st.AuditHead
	f.tenants = make(map[string]*Tenant, len(st.Tenants))
	f.keys = make(map[string]*APIKey, len(st.Keys))
	f.workerTokens = make(map[string]*WorkerToken, len(st.WorkerTokens))
	f.workers = make(map[string]*Worker, len(st.Workers))
	f.jobs = make(map[string]*Job, len(st.Jobs))
	f.idx = newIndexes()
	for _, t := range st.Tenants {
		f.tenants[t.ID] = t
	}
	for _, k := range st.Keys {
		f.keys[k.ID] = k
	}
	f.loadUsers(st)
	for _, t := range st.WorkerTokens {
		f.workerTokens[t.ID] = t
	}
	for _, w := range st.Workers {
		f.workers[w.ID] = w
	}
	for _, j := range st.Jobs {
		tenant := j.TenantID
		if t, ok := f.tenants[tenant]; ok {
			tenant = t.ID
		}
		compact(j, tenant)
		f.jobs[j.ID] = j
		f.idx.add(j)
	}
	return nil
}

// Store returns the FSM's store, for paged history reads.
func (f *FSM) Store() Store { return f.store }

// Apply applies one log entry. It implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed log entries in order, in memory, and
// starts the Commit that writes every object they changed and the last
// index to the store in one transaction; it returns without waiting for
// that Commit, which the next ApplyBatch, Snapshot, Restore and Flush
// wait for. Entries at or below the index applied before were applied
// before a restart (the store's index) and are skipped. The response for
// each entry is the changed object or an error (*Error for a refused
// command).
//
// Returning before the Commit takes the store's round trip off every
// write's answer without weakening anything: the entries are durable in
// Raft's log, which a node replays after a crash past the store's index
// (such entries are skipped above), and Index, which every consistent
// read waits for, advances only once the store holds the batch. Memory
// runs ahead of Index meanwhile, as it did during a Commit before; a job
// that finished in the batch stays readable from f.pending until the
// store has it.
//
// No store I/O happens under f.mu (readers never wait on the store): the
// one store read Apply needs, whether submitted IDs belong to finished
// jobs, is made for the whole batch before the lock is taken (after the
// previous Commit, so the store holds the state the batch starts from),
// and the Commit after it is released. While the store is down only
// Raft's apply goroutine waits, in the next ApplyBatch; readers keep
// answering from memory.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	resps := make([]any, len(logs))
	b := newBatchBuilder()
	start := f.applied // only this goroutine changes f.applied
	entries := decodeEntries(logs, start)
	f.Flush()
	b.stored = f.storedSubmits(entries, start)
	b.purgeable = f.storedPurges(entries, start)
	if f.storeCtx.Err() != nil {
		for i := range resps {
			resps[i] = ErrAbandoned
		}
		return resps
	}
	done := f.applyEntries(logs, entries, b, resps)
	if done == nil {
		return resps // applied before a restart
	}
	last := logs[len(logs)-1].Index
	go func() {
		defer close(done)
		if !f.commit(b.build(last)) {
			return // abandoned: the store keeps its index
		}
		f.mu.Lock()
		f.index = last
		f.auditCommitted = f.auditHead
		f.pending, f.pendingDeleted = nil, nil
		f.workerWatch.publish(last, b.workers)
		ch := f.watch
		f.watch = make(chan struct{})
		f.mu.Unlock()
		close(ch)
	}()
	return resps
}

// applyEntries applies the decoded entries of logs with f.mu held, putting
// each response in resps, and if the batch reaches past the index applied
// before, marks it applied and being committed: the returned channel is to
// be closed when its Commit has returned. The lock is released even if an
// entry panics (a bug that stops the node), so that shutting down does
// not hang on it.
func (f *FSM) applyEntries(logs []*raft.Log, entries []*logEntry, b *batchBuilder, resps []any) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, l := range logs {
		if entries[i] == nil {
			continue
		}
		f.entryAt = l.AppendedAt
		resps[i] = f.applyEntry(l.Index, entries[i], b)
	}
	f.entryAt = time.Time{}
	last := logs[len(logs)-1].Index
	if last <= f.applied {
		return nil
	}
	f.applied = last
	f.pending, f.pendingDeleted = b.objs[JobKind], b.deleted[JobKind]
	f.committing = make(chan struct{})
	return f.committing
}

// Flush waits until the store holds every batch ApplyBatch applied (its
// Commit may still run when ApplyBatch returns), and returns the index the
// store then holds. A node flushes before it closes its store.
func (f *FSM) Flush() uint64 {
	f.mu.RLock()
	done := f.committing
	f.mu.RUnlock()
	if done != nil {
		<-done
	}
	return f.Index()
}

// at returns the time of the entry being applied: the leader's clock when
// it appended the entry (raft.Log.AppendedAt, replicated with the entry),
// so that every node applies the same time and a submitting node's skew
// changes nothing. Entries written before Raft stamped them (AppendedAt
// zero) fall back to the time the proposer put in the command.
func (f *FSM) at(proposed time.Time) time.Time {
	if f.entryAt.IsZero() {
		return proposed
	}
	return f.entryAt.UTC()
}

// storedSubmits returns the create index of every job the store holds
// whose ID a SubmitJob or a SubmitJobs item among entries proposes and
// memory does not hold: the finished jobs such a submit collides with. It
// reads the store once, without f.mu, retrying with backoff while the
// store is unreachable (Apply cannot give up on a committed entry). The
// store holds the state as of the batch's start, so the answer is
// deterministic.
func (f *FSM) storedSubmits(entries []*logEntry, start uint64) map[string]uint64 {
	var ids []string
	add := func(id string) {
		if _, ok := f.jobs[id]; !ok {
			ids = append(ids, id)
		}
	}
	f.mu.RLock()
	for _, e := range entries {
		if e == nil {
			continue
		}
		switch c := e.cmd.(type) {
		case *SubmitJob:
			add(c.Job.ID)
		case *SubmitJobs:
			for i := range c.Items {
				add(c.Items[i].Job.ID)
			}
		}
	}
	f.mu.RUnlock()
	if len(ids) == 0 {
		return nil
	}
	var m map[string]uint64
	f.retry("store read", start+1, func(ctx context.Context) (err error) {
		m, err = f.store.JobsExist(ctx, ids)
		return err
	})
	return m
}

// logEntry is a command entry of a batch, decoded once for everything
// ApplyBatch does with it (the store reads before the lock and the apply
// under it): its type, its command (nil for a type this version does not
// know), the actor of its envelope, and why it would not decode (Apply
// stops on such an entry, in its place in the batch).
type logEntry struct {
	typ   MessageType
	cmd   Command
	actor *Actor
	bad   string
}

// decodeEntries decodes the command entries of logs after index start,
// each once; the others (applied before a restart, or not commands) are
// nil.
func decodeEntries(logs []*raft.Log, start uint64) []*logEntry {
	out := make([]*logEntry, len(logs))
	for i, l := range logs {
		if l.Index <= start || l.Type != raft.LogCommand {
			continue
		}
		out[i] = decodeEntry(l.Index, l.Data)
	}
	return out
}

// decodeEntry decodes one command entry; a failure is recorded in bad,
// with the same words Apply has always stopped with.
func decodeEntry(index uint64, data []byte) *logEntry {
	e := &logEntry{}
	if len(data) == 0 {
		e.bad = fmt.Sprintf("fsm: empty log entry at index %d", index)
		return e
	}
	t, body, actor, err := unwrap(data)
	if err != nil {
		e.bad = fmt.Sprintf("fsm: decode envelope at index %d: %v", index, err)
		return e
	}
	e.typ, e.actor = t, actor
	ct, ok := commandTypes[t]
	if !ok {
		return e
	}
	c := ct.new()
	if s, ok := c.(*SubmitJobs); ok {
		s.presize(body)
	}
	if err := json.Unmarshal(body, c); err != nil {
		// A body that does not decode is a bug in the proposer or a
		// corrupt log: Apply stops rather than diverge.
		e.bad = fmt.Sprintf("fsm: decode command type %d: %v", t, err)
		return e
	}
	e.cmd = c
	return e
}

// commit writes a batch, retrying with backoff until the store takes it
// (the entries are committed in Raft, so giving up would lose them) or
// the FSM is abandoned; it reports whether the store took it.
func (f *FSM) commit(b *Batch) bool {
	return f.retry("store commit", b.Index, func(ctx context.Context) error { return f.store.Commit(ctx, b) })
}

// retry calls fn until it succeeds, with backoff from 50ms to 5s, logging
// each failure of op at index. It gives up, returning false, only once the
// FSM is abandoned.
func (f *FSM) retry(op string, index uint64, fn func(context.Context) error) bool {
	delay := 50 * time.Millisecond
	for {
		err := fn(f.storeCtx)
		if err == nil {
			f.storeDown.Store(false)
			return true
		}
		if f.storeCtx.Err() != nil {
			f.log.Warn(op+" abandoned; the Raft log applies it again at the next start", "index", index, "error", err)
			return false
		}
		if !f.storeDown.Swap(true) {
			f.storeOutages.Add(1)
		}
		f.log.Error(op+" failed; retrying", "index", index, "error", err, "retry_in", delay)
		select {
		case <-time.After(delay):
		case <-f.storeCtx.Done():
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// Abandon makes the FSM give up on its store, for a node that stops while
// its store does not answer: a store call Apply is retrying or waiting
// for is canceled, and from then on Apply neither reads nor writes the
// store and answers every entry with ErrAbandoned. A batch the store did
// not take is lost to the store only: its entries are in Raft's log past
// the store's index, and the next start applies them again. The FSM
// cannot be used after it; a node abandons it only once Raft has stopped
// or is stopping.
func (f *FSM) Abandon() { f.abandonStores() }

// applyEntry applies one decoded entry, with f.mu held, and writes its
// audit record if it has an actor.
func (f *FSM) applyEntry(index uint64, e *logEntry, b *batchBuilder) any {
	if e.bad != "" {
		panic(e.bad)
	}
	if e.cmd != nil {
		resp := commandTypes[e.typ].apply(f, index, e.cmd, b)
		if e.actor != nil {
			f.audit(index, e.actor, e.cmd, resp, b)
		}
		return resp
	}
	if e.typ&IgnoreUnknownTypeFlag != 0 {
		// Skipped whole, with its audit record: every node that skips it
		// skips both, so their chains stay alike.
		f.log.Warn("skipping unknown command type", "type", e.typ, "index", index)
		return nil
	}
	panic(fmt.Sprintf("fsm: unknown command type %d at index %d", e.typ, index))
}

// StoreDown reports whether Apply is waiting for the store, retrying a
// read or a commit that failed: nothing new is applied until it answers.
func (f *FSM) StoreDown() bool { return f.storeDown.Load() }

// StoreOutages returns how many times StoreDown has become true: a reader
// that polls StoreDown only now and then learns from it that an outage
// began (and perhaps ended) since it last looked.
func (f *FSM) StoreOutages() uint64 { return f.storeOutages.Load() }

// Index returns the index of the last batch applied and committed to the
// store: a read that waits for it sees every write up to it, in memory and
// in the store alike.
func (f *FSM) Index() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.index
}

// Watch returns the current index and a channel closed when the next batch
// has been applied.
func (f *FSM) Watch() (uint64, <-chan struct{}) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.index, f.watch
}

// WaitIndex blocks until the FSM has applied index, or ctx ends.
func (f *FSM) WaitIndex(ctx context.Context, index uint64) error {
	for {
		cur, ch := f.Watch()
		if cur >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Tenant returns a tenant by ID.
func (f *FSM) Tenant(id string) (*Tenant, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t, ok := f.tenants[id]
	return t, ok
}

// APIKey returns a key by ID.
func (f *FSM) APIKey(id string) (*APIKey, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	k, ok := f.keys[id]
	return k, ok
}

// KeyCount returns how many keys exist, revoked or not.
func (f *FSM) KeyCount() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.keys)
}

// WorkerToken returns a worker token by ID.
func (f *FSM) WorkerToken(id string) (*WorkerToken, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t, ok := f.workerTokens[id]
	return t, ok
}

// WorkerTokens returns the worker tokens of a tenant, or of the shared
// pool for "", or every token with all set; sorted by ID.
func (f *FSM) WorkerTokens(tenantID string, all bool) []*WorkerToken {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := []*WorkerToken{}
	for _, t := range f.workerTokens {
		if all || t.TenantID == tenantID {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b *WorkerToken) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Worker returns a worker by ID.
func (f *FSM) Worker(id string) (*Worker, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	w, ok := f.workers[id]
	return w, ok
}

// Workers returns the workers visible to a tenant ("" for all), sorted by
// ID. A tenant sees the shared pool and its own dedicated workers.
func (f *FSM) Workers(tenantID string) []*Worker {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*Worker, 0, len(f.workers))
	for _, w := range f.workers {
		if tenantID == "" || w.TenantID == "" || w.TenantID == tenantID {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b *Worker) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// WorkerLoad returns how many active jobs a worker holds.
func (f *FSM) WorkerLoad(id string) int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.idx.byWorker[id])
}

// ActiveJob returns a non-terminal job from memory.
func (f *FSM) ActiveJob(id string) (*Job, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	j, ok := f.jobs[id]
	return j, ok
}

// GetJob returns a job, active from memory or finished from the store (or
// from the batch being committed, which the store does not hold yet; a job
// that batch purged is not found).
func (f *FSM) GetJob(ctx context.Context, id string) (*Job, error) {
	f.mu.RLock()
	j, ok := f.jobs[id]
	if !ok {
		var o Object
		if o, ok = f.pending[id]; ok {
			j = o.(*Job)
		}
	}
	_, deleted := f.pendingDeleted[id]
	f.mu.RUnlock()
	if ok {
		return j, nil
	}
	if deleted {
		return nil, ErrNotFound
	}
	return f.store.GetJob(ctx, id)
}

// WorkerJobs returns the active jobs assigned to a worker, sorted by ID.
func (f *FSM) WorkerJobs(workerID string) []*Job {
	f.mu.RLock()
	defer f.mu.RUnlock()
	ids := sortedKeys(f.idx.byWorker[workerID])
	out := make([]*Job, 0, len(ids))
	for _, id := range ids {
		out = append(out, f.jobs[id])
	}
	return out
}

// Counts returns the number of active jobs per state and of queued jobs
// per queue.
func (f *FSM) Counts() (byState map[JobState]int, byQueue map[Queue]int) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	byState = make(map[JobState]int)
	byQueue = make(map[Queue]int)
	for _, j := range f.jobs {
		byState[j.State]++
		if j.State == JobQueued {
			byQueue[j.Spec.Queue]++
		}
	}
	return byState, byQueue
}

// JobSummary counts a tenant's active jobs, see FSM.JobSummary.
type JobSummary struct {
	// States counts active jobs by state; every active state is present.
	States map[JobState]int
	// Queued counts queued jobs by queue and priority; every queue and
	// priority is present.
	Queued map[Queue]map[Priority]int
	// OldestQueued is the earliest QueuedAt of a queued job in each
	// queue that has one.
	OldestQueued map[Queue]time.Time
	// Index is the FSM index the counts reflect.
	Index uint64
}

// JobSummary counts the active jobs of tenantID ("" for every tenant)
// by state, and the queued ones by queue and priority, with each queue's
// oldest queued time, from memory in one consistent view.
func (f *FSM) JobSummary(tenantID string) JobSummary {
	s := JobSummary{States: map[JobState]int{}, Queued: map[Queue]map[Priority]int{}, OldestQueued: map[Queue]time.Time{}}
	for _, st := range JobStates {
		if !st.Terminal() {
			s.States[st] = 0
		}
	}
	for _, q := range Queues {
		s.Queued[q] = map[Priority]int{}
		for _, p := range Priorities {
			s.Queued[q][p] = 0
		}
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	s.Index = f.index
	for _, j := range f.jobs {
		if tenantID != "" && j.TenantID != tenantID {
			continue
		}
		s.States[j.State]++
		if j.State != JobQueued {
			continue
		}
		q := j.Spec.Queue
		if s.Queued[q] == nil {
			s.Queued[q] = map[Priority]int{}
		}
		s.Queued[q][j.Spec.Priority]++
		if old, ok := s.OldestQueued[q]; !ok || j.QueuedAt.Before(old) {
			s.OldestQueued[q] = j.QueuedAt
		}
	}
	return s
}

// Snapshot implements raft.FSM. It captures the store's committed state,
// which equals the FSM's applied state once the last Commit has returned.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.Flush()
	s, err := f.store.Snapshot(context.Background())
	if err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	return &fsmSnapshot{s: s}, nil
}

// Restore implements raft.FSM: it replaces the store's contents with the
// snapshot and rebuilds memory from it. It never panics: a snapshot the
// store refuses (an error wrapping ErrBadSnapshot) leaves the store and
// memory as they were, and a panic in the store is returned as an error.
func (f *FSM) Restore(rc io.ReadCloser) (err error) {
	defer rc.Close()
	f.Flush()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("restore store: %w: %v", ErrBadSnapshot, p)
		}
	}()
	if err := f.store.Restore(context.Background(), rc); err != nil {
		return fmt.Errorf("restore store: %w", err)
	}
	if err := f.load(context.Background()); err != nil {
		return err
	}
	f.mu.Lock()
	ch := f.watch
	f.watch = make(chan struct{})
	f.mu.Unlock()
	close(ch)
	return nil
}

type fsmSnapshot struct{ s StoreSnapshot }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.s.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { s.s.Release() }

// batchBuilder collects the final version of every object a batch
// changes, and every object it deletes, by kind and ID.
type batchBuilder struct {
	objs    map[*Kind]map[string]Object
	deleted map[*Kind]map[string]Deletion
	// stored is the create index of each finished job the batch's
	// submits collide with (storedSubmits).
	stored map[string]uint64
	// purgeable are the stored jobs the batch's PurgeJobs name
	// (storedPurges).
	purgeable map[string]*Job
	// workers are the workers whose assignment lists the batch changes
	// (touchWorkers).
	workers map[string]bool
}

func newBatchBuilder() *batchBuilder {
	b := &batchBuilder{objs: make(map[*Kind]map[string]Object, len(Kinds)), deleted: make(map[*Kind]map[string]Deletion, len(Kinds))}
	for _, k := range Kinds {
		b.objs[k] = map[string]Object{}
		b.deleted[k] = map[string]Deletion{}
	}
	return b
}

// put records o, an object of kind k, as changed.
func (b *batchBuilder) put(k *Kind, o Object) {
	delete(b.deleted[k], o.ObjectID())
	b.objs[k][o.ObjectID()] = o
}

// del records o, an object of kind k, as deleted by the entry at index.
func (b *batchBuilder) del(k *Kind, o Object, index uint64) {
	id := o.ObjectID()
	delete(b.objs[k], id)
	b.deleted[k][id] = Deletion{Kind: k, ID: id, CreateIndex: o.ObjectMeta().CreateIndex, Index: index}
}

func (b *batchBuilder) build(index uint64) *Batch {
	batch := &Batch{Index: index}
	for _, k := range Kinds {
		for _, o := range sortedValues(b.objs[k]) {
			k.Add(batch, o)
		}
		batch.Deleted = append(batch.Deleted, sortedValues(b.deleted[k])...)
	}
	return batch
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sortedValues[V any](m map[string]V) []V {
	out := make([]V, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}

// ListActiveJobs answers ListJobs from memory for a listing whose states
// are all active (none terminal), which memory holds every job of: the
// store would read its whole history to find them. It returns the page
// and the index it reflects. ok is false if p names no state or a
// terminal one.
func (f *FSM) ListActiveJobs(p *ListJobsParams) (page *JobPage, index uint64, ok bool) {
	if len(p.States) == 0 || slices.ContainsFunc(p.States, JobState.Terminal) {
		return nil, 0, false
	}
	f.mu.RLock()
	var match []*Job
	for _, j := range f.jobs {
		if (p.TenantID == "" || j.TenantID == p.TenantID) && (p.After == "" || j.ID < p.After) &&
			slices.Contains(p.States, j.State) && (p.Queue == "" || j.Spec.Queue == p.Queue) {
			match = append(match, j)
		}
	}
	index = f.index
	f.mu.RUnlock()
	slices.SortFunc(match, func(a, b *Job) int { return strings.Compare(b.ID, a.ID) }) // newest first
	page = &JobPage{Jobs: match}
	if len(match) > p.Limit {
		page.Jobs = match[:p.Limit]
		page.Next = match[p.Limit-1].ID
	}
	return page, index, true
}
