package fsm

import (
	"bytes"
	"slices"
	"strings"
	"time"

	json "github.com/go-json-experiment/json/v1"
)

// This file holds one applyX per command. Each runs with f.mu held, reads
// and replaces objects in memory, records changed objects in the batch, and
// returns the changed object or a *Error. None reads a clock: every time
// comes from f.at, the leader's time of the entry.

func (f *FSM) applyCreateTenant(index uint64, c *CreateTenant, b *batchBuilder) any {
	if old, ok := f.tenants[c.Tenant.ID]; ok {
		if old.ModifyIndex >= index {
			return old
		}
		if old.Deleted() {
			return Errorf(CodeAlreadyExists, "tenant %q was deleted; a deleted tenant's name is not reused", c.Tenant.ID)
		}
		return Errorf(CodeAlreadyExists, "tenant %q already exists", c.Tenant.ID)
	}
	t := c.Tenant
	t.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	f.tenants[t.ID] = &t
	b.put(TenantKind, &t)
	return &t
}

func (f *FSM) applyCreateAPIKey(index uint64, c *CreateAPIKey, b *batchBuilder) any {
	if old, ok := f.keys[c.Key.ID]; ok {
		if old.ModifyIndex >= index {
			return old
		}
		return Errorf(CodeAlreadyExists, "api key %q already exists", c.Key.ID)
	}
	if c.First && len(f.keys) > 0 {
		return Errorf(CodeAlreadyExists, "the cluster is already initialized")
	}
	if _, err := f.liveTenant(c.Key.TenantID, false); err != nil {
		return err
	}
	if c.Key.UserID != "" {
		u, ok := f.users[c.Key.UserID]
		switch {
		case !ok:
			return Errorf(CodeNotFound, "user %q does not exist", c.Key.UserID)
		case u.Disabled:
			return Errorf(CodeInvalidTransition, "user %s is disabled", u.Email)
		}
		k := keyOfUser(c.Key, u, index)
		f.putKey(k, b)
		return k
	}
	k := c.Key
	k.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	f.keys[k.ID] = &k
	b.put(APIKeyKind, &k)
	return &k
}

func (f *FSM) applyRevokeAPIKey(index uint64, c *RevokeAPIKey, b *batchBuilder) any {
	old, ok := f.keys[c.ID]
	if !ok {
		return Errorf(CodeNotFound, "api key %q does not exist", c.ID)
	}
	if old.ModifyIndex >= index || old.Revoked {
		return old
	}
	k := *old
	k.Revoked = true
	k.ModifyIndex = index
	f.keys[k.ID] = &k
	b.put(APIKeyKind, &k)
	return &k
}

func (f *FSM) applyRegisterWorker(index uint64, c *RegisterWorker, b *batchBuilder) any {
	w := c.Worker
	old, ok := f.workers[w.ID]
	if ok && old.ModifyIndex >= index {
		return old
	}
	if err := f.checkWorkerToken(&w, old); err != nil {
		return err
	}
	if w.TenantID != "" {
		t, err := f.liveTenant(w.TenantID, true)
		if err != nil {
			return err
		}
		if err := f.checkWorkerQuota(t, &w); err != nil {
			return err
		}
	}
	// Bound only once every check passed: a refused registration leaves
	// the token free.
	if t := f.workerTokens[w.TokenID]; t != nil && t.WorkerID == "" {
		bound := *t
		bound.WorkerID = w.ID
		bound.ModifyIndex = index
		f.workerTokens[t.ID] = &bound
		b.put(WorkerTokenKind, &bound)
	}
	w.State = WorkerUp
	w.RegisteredAt = f.at(w.RegisteredAt)
	w.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	if ok {
		w.CreateIndex = old.CreateIndex
		w.Draining = old.Draining // an operator's drain survives restarts
		if old.Incarnation != w.Incarnation {
			// The previous process is gone and its attempts with it.
			f.requeueWorker(index, w.ID, f.at(c.At), "worker "+w.ID+" restarted", b)
		}
	}
	f.workers[w.ID] = &w
	b.put(WorkerKind, &w)
	return &w
}

func (f *FSM) applySubmitJob(index uint64, c *SubmitJob, b *batchBuilder) any {
	if old, ok := f.jobs[c.Job.ID]; ok {
		if old.ModifyIndex >= index || SameSubmission(old, &c.Job) {
			return old
		}
		return Errorf(CodeAlreadyExists, "job %q already exists", c.Job.ID)
	}
	// A finished job is only in the store (or in this batch). The store
	// held exactly the state before this batch when ApplyBatch asked it,
	// so its answer is deterministic.
	if _, ok := b.objs[JobKind][c.Job.ID]; ok {
		return Errorf(CodeAlreadyExists, "job %q already exists", c.Job.ID)
	}
	if _, ok := b.deleted[JobKind][c.Job.ID]; ok {
		// Purged in this batch: its tombstone keeps the ID.
		return Errorf(CodeAlreadyExists, "job %q already exists", c.Job.ID)
	}
	if create, ok := b.stored[c.Job.ID]; ok && create != index {
		// (A stored job created at this very index is this entry, already
		// committed to a shared store by another node.)
		return Errorf(CodeAlreadyExists, "job %q already exists", c.Job.ID)
	}
	t, err := f.liveTenant(c.Job.TenantID, true)
	if err != nil {
		return err
	}
	if err := f.checkSubmitQuota(t, &c.Job); err != nil {
		return err
	}
	j := c.Job
	compact(&j, t.ID)
	j.State = JobQueued
	j.SubmittedAt = f.at(j.SubmittedAt)
	j.QueuedAt = j.SubmittedAt
	j.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	f.put(nil, &j, b)
	return &j
}

// SameSubmission reports whether a SubmitJob for a job that exists is the
// submission that created it, sent again: a follower resends a submit
// whose first try's outcome it could not learn (a leader change), and a
// client resends one with the same Idempotency-Key. Job IDs are stamped
// by the edge (a fresh UUIDv7, or the client's key), so the same ID with
// the same tenant, spec and origin is the same request: it answers with
// the job it created, not already_exists.
func SameSubmission(old, j *Job) bool {
	if old.TenantID != j.TenantID || old.RetryOf != j.RetryOf {
		return false
	}
	// Compared as JSON, the form the store keeps it in: a spec read back
	// from the store may have nil where the command has empty.
	a, errA := json.Marshal(old.Spec)
	b, errB := json.Marshal(j.Spec)
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

func (f *FSM) applyAssignJob(index uint64, c *AssignJob, b *batchBuilder) any {
	old, err := f.activeJob(c.JobID)
	if err != nil {
		return err
	}
	if old.ModifyIndex >= index {
		return old
	}
	if old.State != JobQueued {
		return Errorf(CodeInvalidTransition, "job %s is %s, not queued", old.ID, old.State)
	}
	if c.Attempt != old.Attempt+1 {
		return Errorf(CodeStaleAttempt, "job %s: assignment for attempt %d, next is %d", old.ID, c.Attempt, old.Attempt+1)
	}
	w, ok := f.workers[c.WorkerID]
	if !ok || w.State != WorkerUp {
		return Errorf(CodeNotFound, "worker %q is not up", c.WorkerID)
	}
	if dm := demandOf(old); !fits(w, &dm, f.usage(w)) {
		return Errorf(CodeInvalidTransition, "worker %s cannot take job %s", w.ID, old.ID)
	}
	if err := quotaRoom(f.tenants[old.TenantID], f.idx.byTenant[old.TenantID], old.Spec.Resources.CPU); err != nil {
		return err
	}
	j := *old
	j.State = JobAssigned
	j.Attempt = c.Attempt
	j.WorkerID = w.ID
	j.AssignedAt = f.at(c.At)
	j.StartedAt = time.Time{}
	j.ExitedAt = time.Time{}
	j.Progress = nil
	j.ModifyIndex = index
	f.put(old, &j, b)
	return &j
}

// checkReport returns the active job a worker report is about, or an error
// if the report's attempt is not the job's current one (the fence).
func (f *FSM) checkReport(r Report, states ...JobState) (*Job, *Error) {
	// The refusal names nothing the reporting worker does not hold: a
	// worker may report on any job ID, and must not learn from the answer
	// whether another tenant's job exists, or which worker holds it.
	old, ok := f.jobs[r.JobID]
	if !ok || old.WorkerID != r.WorkerID {
		return nil, Errorf(CodeStaleAttempt, "job %s is not assigned to worker %s", r.JobID, r.WorkerID)
	}
	if old.Attempt != r.Attempt {
		return nil, Errorf(CodeStaleAttempt, "job %s: report for attempt %d, current is attempt %d", r.JobID, r.Attempt, old.Attempt)
	}
	if !slices.Contains(states, old.State) {
		return nil, Errorf(CodeInvalidTransition, "job %s is %s", old.ID, old.State)
	}
	return old, nil
}

func (f *FSM) applyStartJob(index uint64, c *StartJob, b *batchBuilder) any {
	old, err := f.checkReport(c.Report, JobAssigned, JobRunning, JobPaused)
	if err != nil {
		return err
	}
	if old.ModifyIndex >= index || old.State != JobAssigned {
		return old // a repeated start report
	}
	j := *old
	j.State = JobRunning
	j.StartedAt = f.at(c.At)
	j.ModifyIndex = index
	f.putReported(old, &j, b)
	if f.observer != nil {
		f.observer.JobStarted(f.at(c.At).Sub(j.QueuedAt))
	}
	return &j
}

func (f *FSM) applyProgressJob(index uint64, c *ProgressJob, b *batchBuilder) any {
	old, err := f.checkReport(c.Report, JobRunning, JobPaused)
	if err != nil {
		return err
	}
	if old.ModifyIndex >= index {
		return old
	}
	j := *old
	p := c.Progress
	j.Progress = &p
	j.ModifyIndex = index
	f.put(old, &j, b)
	return &j
}

// applyExitJob frees the slot of a running attempt whose ffmpeg exited.
// A repeat is answered with the job as it is.
func (f *FSM) applyExitJob(index uint64, c *ExitJob, b *batchBuilder) any {
	old, err := f.checkReport(c.Report, JobRunning)
	if err != nil {
		return err
	}
	if old.ModifyIndex >= index || !old.ExitedAt.IsZero() {
		return old
	}
	j := *old
	j.ExitedAt = f.at(c.At)
	j.ModifyIndex = index
	f.put(old, &j, b)
	return &j
}

func (f *FSM) applyFinishJob(index uint64, c *FinishJob, b *batchBuilder) any {
	old, err := f.checkReport(c.Report, JobAssigned, JobRunning, JobPaused)
	if err != nil {
		return err
	}
	if old.ModifyIndex >= index {
		return old
	}
	j := *old
	j.ModifyIndex = index
	j.Log = c.Log
	if c.Error == nil {
		j.State = JobSucceeded
		j.Result = c.Result
		j.Error = nil
		j.FinishedAt = f.at(c.At)
		if c.Progress != nil {
			p := *c.Progress
			j.Progress = &p
		}
		if j.Progress != nil {
			p := *j.Progress
			p.Percent = 100
			j.Progress = &p
		}
		f.putReported(old, &j, b)
		return &j
	}
	if c.Retryable {
		return f.requeue(index, old, f.at(c.At), *c.Error, b, func(j *Job) { j.Log = c.Log })
	}
	j.State = JobFailed
	e := *c.Error
	j.Error = &e
	j.FinishedAt = f.at(c.At)
	f.putReported(old, &j, b)
	return &j
}

// requeue ends the current attempt of an active job with reason: back to
// the queue after a backoff if retries are left, else failed.
func (f *FSM) requeue(index uint64, old *Job, at time.Time, reason Error, b *batchBuilder, edits ...func(*Job)) *Job {
	j := *old
	j.ModifyIndex = index
	j.Error = &reason
	for _, e := range edits {
		e(&j)
	}
	// A live stream whose worker died moves to another worker at once,
	// however often: losing workers is not the stream's fault.
	live := j.Spec.Queue == QueueLive && reason.Code == CodeWorkerLost
	if live || j.Retries < j.Spec.retryBudget() {
		j.State = JobQueued
		j.WorkerID = ""
		j.QueuedAt = at
		j.NotBefore = time.Time{}
		j.ExitedAt = time.Time{}
		j.Progress = nil
		if !live {
			j.Retries++
			j.NotBefore = at.Add(Backoff(j.Retries))
		}
	} else {
		j.State = JobFailed
		j.FinishedAt = at
	}
	f.put(old, &j, b)
	return &j
}

func (f *FSM) applyRequeueJob(index uint64, c *RequeueJob, b *batchBuilder) any {
	old, err := f.checkReport(c.Report, JobAssigned, JobRunning, JobPaused)
	if err != nil {
		return err
	}
	if old.ModifyIndex >= index {
		return old
	}
	return f.requeue(index, old, f.at(c.At), c.Reason, b)
}

// transition moves an active job from one of the from states to state to.
func (f *FSM) transition(index uint64, id string, at time.Time, to JobState, b *batchBuilder, from ...JobState) any {
	old, err := f.activeJob(id)
	if err != nil {
		return err
	}
	if old.ModifyIndex >= index {
		return old
	}
	if !slices.Contains(from, old.State) {
		return Errorf(CodeInvalidTransition, "job %s is %s; it can be %s only from %v", id, old.State, to, from)
	}
	j := *old
	j.State = to
	j.ModifyIndex = index
	if to.Terminal() {
		j.FinishedAt = at
	}
	f.put(old, &j, b)
	return &j
}

func (f *FSM) applyCancelJob(index uint64, c *CancelJob, b *batchBuilder) any {
	return f.transition(index, c.JobID, f.at(c.At), JobCanceled, b, JobQueued, JobAssigned, JobRunning, JobPaused)
}

func (f *FSM) applyPauseJob(index uint64, c *PauseJob, b *batchBuilder) any {
	if old, ok := f.jobs[c.JobID]; ok && old.ModifyIndex < index && !old.ExitedAt.IsZero() {
		return Errorf(CodeInvalidTransition, "job %s: its ffmpeg has exited and its outputs are being checked; it cannot be paused", old.ID)
	}
	return f.transition(index, c.JobID, f.at(c.At), JobPaused, b, JobRunning)
}

func (f *FSM) applyResumeJob(index uint64, c *ResumeJob, b *batchBuilder) any {
	return f.transition(index, c.JobID, f.at(c.At), JobRunning, b, JobPaused)
}

func (f *FSM) applyExpireJob(index uint64, c *ExpireJob, b *batchBuilder) any {
	old, err := f.activeJob(c.JobID)
	if err != nil {
		return err
	}
	if old.ModifyIndex >= index {
		return old
	}
	if old.State != JobQueued {
		return Errorf(CodeInvalidTransition, "job %s is %s, not queued", old.ID, old.State)
	}
	if f.at(c.At).Before(expiry(old, c.CountFrom)) {
		return Errorf(CodeInvalidTransition, "job %s has not reached its acquire timeout", old.ID)
	}
	j := *old
	j.State = JobFailed
	j.FinishedAt = f.at(c.At)
	msg := "no worker took the job within its acquire timeout of " + time.Duration(j.Spec.AcquireTimeout).String()
	if c.Code == CodeNoCapableWorker {
		need := "codecs " + strings.Join(j.Plan.Codecs(), ",")
		if j.Plan.Hardware != HardwareAny {
			need += ", hardware " + j.Plan.Hardware
		}
		msg = "no worker can run this job (" + need + ") within its acquire timeout"
	}
	j.Error = &Error{Code: c.Code, Message: msg}
	j.ModifyIndex = index
	f.put(old, &j, b)
	return &j
}

func (f *FSM) activeJob(id string) (*Job, *Error) {
	j, ok := f.jobs[id]
	if !ok {
		return nil, Errorf(CodeInvalidTransition, "job %s is not active", id)
	}
	return j, nil
}

// put publishes a job's new version: indexes, memory, batch and metrics,
// and wakes the watch of each worker whose list it changes. A terminal
// job leaves memory; the store keeps it.
func (f *FSM) put(old, j *Job, b *batchBuilder) {
	b.touchWorkers(old, j)
	f.putReported(old, j, b)
}

// putReported is put for a change that the job's worker reported itself
// (its attempt started, or ended as it says): the worker's list changes,
// but not in a way it acts on, since it knows already, so its watch does
// not wake. With every slot busy, that leaves one answer to a worker's
// long poll per job (its assignment) instead of three.
func (f *FSM) putReported(old, j *Job, b *batchBuilder) {
	if old != nil {
		f.idx.remove(old)
	}
	if j.State.Terminal() {
		delete(f.jobs, j.ID)
		if f.observer != nil {
			f.observer.JobFinished(j)
		}
	} else {
		f.jobs[j.ID] = j
		f.idx.add(j)
	}
	b.put(JobKind, j)
}

// requeueWorker ends every attempt a worker holds: its jobs are requeued
// within their retry budgets, with error worker_lost.
func (f *FSM) requeueWorker(index uint64, workerID string, at time.Time, why string, b *batchBuilder) {
	for _, id := range sortedKeys(f.idx.byWorker[workerID]) {
		f.requeue(index, f.jobs[id], at, Error{Code: CodeWorkerLost, Message: why}, b)
	}
}

func (f *FSM) applyWorkerDown(index uint64, c *MarkWorkerDown, b *batchBuilder) any {
	old, ok := f.workers[c.WorkerID]
	if !ok {
		return Errorf(CodeNotFound, "worker %q does not exist", c.WorkerID)
	}
	if old.ModifyIndex >= index || old.State == WorkerDown {
		return old
	}
	w := *old
	w.State = WorkerDown
	w.ModifyIndex = index
	f.workers[w.ID] = &w
	b.put(WorkerKind, &w)
	f.requeueWorker(index, w.ID, f.at(c.At), "worker "+w.ID+" is gone: "+c.Reason, b)
	return &w
}

func (f *FSM) applyDrainWorker(index uint64, c *DrainWorker, b *batchBuilder) any {
	old, ok := f.workers[c.WorkerID]
	if !ok {
		return Errorf(CodeNotFound, "worker %q does not exist", c.WorkerID)
	}
	if old.ModifyIndex >= index || old.Draining == c.Drain {
		return old
	}
	w := *old
	w.Draining = c.Drain
	w.ModifyIndex = index
	f.workers[w.ID] = &w
	b.put(WorkerKind, &w)
	return &w
}

// checkWorkerToken checks that w's token lets it register: the token
// exists, is not revoked, is for w's tenant (or the shared pool) and is
// bound to no other worker; and that a worker registered with another
// token keeps it until that token is revoked. A worker without a token
// is an in-process one (dev mode), which no remote caller can propose.
func (f *FSM) checkWorkerToken(w, old *Worker) *Error {
	if w.TokenID == "" {
		return nil
	}
	t, ok := f.workerTokens[w.TokenID]
	switch {
	case !ok:
		return Errorf(CodeTokenRefused, "worker token %s does not exist", w.TokenID)
	case t.Revoked:
		return Errorf(CodeTokenRefused, "worker token %s is revoked", t.ID)
	case t.TenantID != w.TenantID:
		return Errorf(CodeTokenRefused, "worker token %s is for %s, not %s", t.ID, poolName(t.TenantID), poolName(w.TenantID))
	case t.WorkerID != "" && t.WorkerID != w.ID:
		return Errorf(CodeTokenRefused, "worker token %s belongs to worker %s", t.ID, t.WorkerID)
	}
	if old != nil && old.TokenID != "" && old.TokenID != w.TokenID {
		if prev, ok := f.workerTokens[old.TokenID]; ok && !prev.Revoked {
			return Errorf(CodeTokenRefused, "worker %s is registered with worker token %s", w.ID, prev.ID)
		}
	}
	return nil
}

// poolName names a tenant, or the shared pool for "".
func poolName(tenantID string) string {
	if tenantID == "" {
		return "the shared pool"
	}
	return "tenant " + tenantID
}

func (f *FSM) applyCreateWorkerToken(index uint64, c *CreateWorkerToken, b *batchBuilder) any {
	if old, ok := f.workerTokens[c.Token.ID]; ok {
		if old.ModifyIndex >= index {
			return old
		}
		return Errorf(CodeAlreadyExists, "worker token %q already exists", c.Token.ID)
	}
	if c.Token.TenantID != "" {
		if _, ok := f.tenants[c.Token.TenantID]; !ok {
			return Errorf(CodeNotFound, "tenant %q does not exist", c.Token.TenantID)
		}
	}
	t := c.Token
	t.CreatedAt = f.at(t.CreatedAt)
	t.Meta = Meta{CreateIndex: index, ModifyIndex: index}
	f.workerTokens[t.ID] = &t
	b.put(WorkerTokenKind, &t)
	return &t
}

func (f *FSM) applyRevokeWorkerToken(index uint64, c *RevokeWorkerToken, b *batchBuilder) any {
	old, ok := f.workerTokens[c.ID]
	if !ok {
		return Errorf(CodeNotFound, "worker token %q does not exist", c.ID)
	}
	if old.ModifyIndex >= index || old.Revoked {
		return old
	}
	t := *old
	t.Revoked = true
	t.ModifyIndex = index
	f.workerTokens[t.ID] = &t
	b.put(WorkerTokenKind, &t)
	// Its worker takes nothing more: down now, its jobs requeued.
	if w, ok := f.workers[t.WorkerID]; ok && w.TokenID == t.ID && w.State == WorkerUp && w.ModifyIndex < index {
		d := *w
		d.State = WorkerDown
		d.ModifyIndex = index
		f.workers[d.ID] = &d
		b.put(WorkerKind, &d)
		f.requeueWorker(index, d.ID, f.at(c.At), "the worker token of worker "+d.ID+" was revoked", b)
	}
	return &t
}
