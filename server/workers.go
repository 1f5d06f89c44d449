package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// listWorkers returns the workers of the tenant the request acts on and
// the shared pool (every worker for a super-admin who names none), each
// one that the authorizer lets the caller see.
func (s *Server) listWorkers(w http.ResponseWriter, r *http.Request) {
	p, tenant := principalOf(r), requestTenant(r, true)
	index := s.fsm.Index()
	out := WorkerList{Workers: []Worker{}}
	for _, wk := range s.fsm.Workers(tenant) {
		if !visibleWorker(p, wk) {
			continue
		}
		out.Workers = append(out.Workers, s.apiWorker(p, wk))
	}
	setIndex(w, index)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getWorker(w http.ResponseWriter, r *http.Request) {
	wk, ok := s.fsm.Worker(r.PathValue("id"))
	if !ok {
		s.writeError(w, r, fsm.Errorf(fsm.CodeNotFound, "worker %s not found", echo(r.PathValue("id"))))
		return
	}
	if err := authorizeWorker(r, wk); err != nil {
		s.writeError(w, r, err)
		return
	}
	setIndex(w, wk.ModifyIndex)
	writeJSON(w, http.StatusOK, s.apiWorker(principalOf(r), wk))
}

// apiWorker converts a worker for p. A worker of the shared pool runs
// every tenant's jobs: its load, for anyone but a super-admin, counts
// only the jobs of p's own tenant, so that no tenant learns how busy
// another is.
func (s *Server) apiWorker(p *Principal, wk *fsm.Worker) Worker {
	if wk.TenantID != "" || p == nil || p.Role == fsm.RoleSuperAdmin {
		return apiWorker(wk, s.fsm.WorkerLoad(wk.ID))
	}
	n := 0
	for _, j := range s.fsm.WorkerJobs(wk.ID) {
		if j.TenantID == p.TenantID {
			n++
		}
	}
	return apiWorker(wk, n)
}

// WorkerService is the node's side of the worker protocol: a worker
// registers, watches its assignments and reports on them. Dev mode hands
// it to an in-process worker.
type WorkerService struct{ s *Server }

// Workers returns the server's worker service.
func (s *Server) Workers() *WorkerService { return &WorkerService{s: s} }

// Register registers (or re-registers) a worker, stamping the time, and
// starts its lease.
func (ws *WorkerService) Register(ctx context.Context, w *fsm.Worker) (*fsm.Worker, error) {
	now := ws.s.now()
	c := &fsm.RegisterWorker{Worker: *w, At: now}
	c.Worker.RegisteredAt = now
	resp, err := ws.s.raft.Apply(ctx, c)
	if err != nil {
		return nil, err
	}
	if _, err := ws.s.raft.Heartbeat(ctx, w.ID); err != nil {
		ws.s.log.Warn("worker lease", "worker", w.ID, "error", err)
	}
	return resp.(*fsm.Worker), nil
}

// Heartbeat renews the worker's lease with the leader and returns the
// lease's length, from which the worker derives its self-fence. A worker
// the cluster has marked down (or never knew) is told so with
// worker_lost, and registers again.
func (ws *WorkerService) Heartbeat(ctx context.Context, workerID string) (time.Duration, error) {
	if w, ok := ws.s.fsm.Worker(workerID); !ok || w.State != fsm.WorkerUp {
		return 0, fsm.Errorf(fsm.CodeWorkerLost, "worker %s is not registered as up; register again", workerID)
	}
	return ws.s.raft.Heartbeat(ctx, workerID)
}

// maxAssignmentWait bounds one Assignments long-poll.
const maxAssignmentWait = 30 * time.Second

// Assignments returns the active jobs assigned to workerID once its list
// changed after index (or after a bounded wait), with the FSM index they
// reflect. Canceled, finished or reassigned jobs disappear from the list;
// the worker stops any process it runs for a job not in it. Only a change
// of the worker's own list ends the wait (fsm.WatchWorker): other jobs'
// changes, and its jobs' progress, do not.
func (ws *WorkerService) Assignments(ctx context.Context, workerID string, index uint64) ([]*fsm.Job, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, maxAssignmentWait)
	defer cancel()
	if last, changed := ws.s.fsm.WatchWorker(workerID); last <= index {
		select {
		case <-changed:
		case <-ctx.Done():
		}
	}
	cur := ws.s.fsm.Index()
	return ws.s.fsm.WorkerJobs(workerID), cur, nil
}

// Start reports that the worker started ffmpeg for an attempt.
func (ws *WorkerService) Start(ctx context.Context, r fsm.Report) error {
	_, err := ws.s.raft.Apply(cluster.OutcomeOnly(ctx), &fsm.StartJob{Report: r, At: ws.s.now()})
	return err
}

// Progress reports an attempt's progress.
func (ws *WorkerService) Progress(ctx context.Context, r fsm.Report, p fsm.Progress) error {
	p.UpdatedAt = ws.s.now()
	_, err := ws.s.raft.Apply(cluster.OutcomeOnly(ctx), &fsm.ProgressJob{Report: r, Progress: p})
	return err
}

// Exit reports that an attempt's ffmpeg exited successfully, which frees
// its worker slot while the worker checks the outputs (fsm.ExitJob). The
// leader refuses it with unknown_command until every server speaks the
// protocol that added it; the worker then does without.
func (ws *WorkerService) Exit(ctx context.Context, r fsm.Report) error {
	_, err := ws.s.raft.Apply(cluster.OutcomeOnly(ctx), &fsm.ExitJob{Report: r, At: ws.s.now()})
	return err
}

// Finish reports the end of an attempt. A worker publishes its outputs
// only once this accepts the report, and discards them when it is
// refused, so a repeat of a report the cluster already applied (its first
// answer was lost) is accepted again rather than refused as stale; and
// when this node cannot tell (no leader to catch up with, the store
// unreachable), it answers that error, which the worker retries, never
// the stale refusal, which would make it discard the outputs of a job the
// cluster holds as succeeded.
func (ws *WorkerService) Finish(ctx context.Context, c *fsm.FinishJob) error {
	c.At = ws.s.now()
	if c.Progress != nil {
		c.Progress.UpdatedAt = c.At
	}
	_, err := ws.s.raft.Apply(cluster.OutcomeOnly(ctx), c)
	if fsm.ErrorCode(err) == fsm.CodeStaleAttempt {
		switch ok, aerr := ws.applied(ctx, c); {
		case aerr != nil:
			return aerr
		case ok:
			return nil
		}
	}
	return err
}

// applied reports whether the job ended with exactly the outcome that c
// reports, from c's attempt on c's worker, as of the leader's commit
// index; an error if that cannot be known now.
func (ws *WorkerService) applied(ctx context.Context, c *fsm.FinishJob) (bool, error) {
	if err := ws.s.raft.ReadIndex(ctx); err != nil {
		return false, err
	}
	j, err := ws.s.fsm.GetJob(ctx, c.JobID)
	if errors.Is(err, fsm.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if j.Attempt != c.Attempt || j.WorkerID != c.WorkerID {
		return false, nil
	}
	if c.Error == nil {
		return j.State == fsm.JobSucceeded, nil
	}
	return j.State == fsm.JobFailed && !c.Retryable && j.Error != nil && j.Error.Code == c.Error.Code, nil
}

// drainWorker sets or clears a worker's drain flag.
func (s *Server) drainWorker(drain bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		wk, ok := s.fsm.Worker(id)
		if !ok {
			s.writeError(w, r, fsm.Errorf(fsm.CodeNotFound, "worker %s not found", echo(id)))
			return
		}
		if err := authorizeWorker(r, wk); err != nil {
			s.writeError(w, r, err)
			return
		}
		resp, err := s.raft.Apply(r.Context(), &fsm.DrainWorker{WorkerID: id, Drain: drain, At: s.now()})
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		wk = resp.(*fsm.Worker)
		setIndex(w, wk.ModifyIndex)
		writeJSON(w, http.StatusOK, s.apiWorker(principalOf(r), wk))
	}
}
