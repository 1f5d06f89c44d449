package fsm

// A worker long-polls its assignment list (the server's Assignments). If
// every applied batch woke every worker's poll, a cluster with many
// workers would answer workers × batches requests, almost all of them
// with an unchanged list. Instead the FSM records, per worker, the index
// of the last batch that changed what the worker acts on in its list:
// a job added to or removed from it, or a job's state or attempt; not
// what the worker itself reported (its job's start, progress, exit mark
// and final outcome: FSM.putReported). WatchWorker hands out a channel
// closed by the next such batch.

// workerWatches is the per-worker change record. It lives in memory
// only: after a load or a restore every worker counts as changed at the
// loaded index (floor), since this node does not know what changed
// before.
type workerWatches struct {
	floor   uint64
	changed map[string]uint64        // worker ID → index of its list's last change
	waiting map[string]chan struct{} // worker ID → closed at its next change
}

// reset forgets every record: the state was loaded or restored at index.
// Waiting polls wake and read the new state.
func (w *workerWatches) reset(index uint64) {
	for _, ch := range w.waiting {
		close(ch)
	}
	*w = workerWatches{floor: index, changed: map[string]uint64{}, waiting: map[string]chan struct{}{}}
}

// touchWorkers adds to b the workers whose lists the change from old
// (nil for a new job) to j changes as they act on them.
func (b *batchBuilder) touchWorkers(old, j *Job) {
	if old != nil && old.WorkerID == j.WorkerID && old.State == j.State && old.Attempt == j.Attempt {
		return
	}
	if b.workers == nil {
		b.workers = map[string]bool{}
	}
	if old != nil && old.WorkerID != "" {
		b.workers[old.WorkerID] = true
	}
	if j.WorkerID != "" {
		b.workers[j.WorkerID] = true
	}
}

// publish records that the batch ending at index changed the workers'
// lists, and wakes their polls. f.mu is held.
func (w *workerWatches) publish(index uint64, workers map[string]bool) {
	for id := range workers {
		w.changed[id] = index
		if ch, ok := w.waiting[id]; ok {
			close(ch)
			delete(w.waiting, id)
		}
	}
}

// WatchWorker returns the index of the last batch that changed worker
// id's assignment list (WorkerJobs) as the worker acts on it, and a
// channel closed when the next one is applied.
func (f *FSM) WatchWorker(id string) (uint64, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, ok := f.workerWatch.waiting[id]
	if !ok {
		ch = make(chan struct{})
		f.workerWatch.waiting[id] = ch
	}
	return max(f.workerWatch.changed[id], f.workerWatch.floor), ch
}
