package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	json "github.com/go-json-experiment/json/v1"
	"github.com/google/uuid"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Paging and long-poll limits. DefaultPageSize and MaxPageSize bound a
// page of jobs or audit records; the CLI's --limit defaults to
// DefaultPageSize.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
	maxWait         = 5 * time.Minute
	keepAlive       = 15 * time.Second
)

// submitJob queues a job. An Idempotency-Key header (a UUIDv7, which
// becomes the job's ID) makes retries safe: a repeated submit with the
// same key and spec returns the job it created (200) instead of a new one.
func (s *Server) submitJob(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		s.writeError(w, r, jsonError(err))
		return
	}
	spec, err := DecodeJobSpec(data)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	tenant := requestTenant(r, false)
	id, err := s.idempotencyKey(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if id != "" {
		if j, ok, err := s.replayed(r.Context(), id, tenant, spec); ok || err != nil {
			s.answerReplay(w, r, j, err)
			return
		}
	}
	j, err := s.submit(r.Context(), tenant, spec, "", id)
	if id != "" && fsm.ErrorCode(err) == fsm.CodeAlreadyExists {
		// A concurrent request with the same key won the race, perhaps
		// through another node: catch up with the leader so that its job
		// is visible here, then answer as a replay, or with the refusal
		// itself if the job still cannot be read.
		if rerr := s.raft.ReadIndex(r.Context()); rerr != nil {
			s.writeError(w, r, rerr)
			return
		}
		if prev, ok, rerr := s.replayed(r.Context(), id, tenant, spec); ok || rerr != nil {
			s.answerReplay(w, r, prev, rerr)
			return
		}
		s.writeError(w, r, err)
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/jobs/"+j.ID)
	setIndex(w, j.ModifyIndex)
	writeJSON(w, http.StatusCreated, apiJob(j))
}

// refuseZeroFPS refuses a spec that sets a frame rate of 0 (job-wide or
// in an output): Compile reads 0 as "not set" and would take the
// scenario's, which is not what the caller wrote.
func refuseZeroFPS(body []byte) error {
	type video struct {
		FPS *int `json:"fps"`
	}
	var probe struct {
		Video   *video `json:"video"`
		Outputs []struct {
			Video *video `json:"video"`
		} `json:"outputs"`
	}
	if json.Unmarshal(body, &probe) != nil {
		return nil // decodeBody accepted it; nothing more to learn here
	}
	zero := func(v *video) bool { return v != nil && v.FPS != nil && *v.FPS == 0 }
	if zero(probe.Video) {
		return fsm.Errorf(fsm.CodeInvalidArgument, "video.fps must be between %d and %d; leave it out to use the scenario's", fsm.MinFPS, fsm.MaxFPS)
	}
	for i, o := range probe.Outputs {
		if zero(o.Video) {
			return fsm.Errorf(fsm.CodeInvalidArgument, "outputs[%d].video.fps must be between %d and %d; leave it out to use the job's", i, fsm.MinFPS, fsm.MaxFPS)
		}
	}
	return nil
}

// idempotencyKeyWindow bounds how far an Idempotency-Key's timestamp may
// be from now, so that job IDs stay roughly in submission order.
const idempotencyKeyWindow = 24 * time.Hour

func (s *Server) idempotencyKey(r *http.Request) (string, error) {
	return s.parseIdempotencyKey(r.Header.Get("Idempotency-Key"), "Idempotency-Key")
}

// parseIdempotencyKey checks key, a UUIDv7 that becomes a job's ID ("" for
// none); field names it in a refusal.
func (s *Server) parseIdempotencyKey(key, field string) (string, error) {
	if key == "" {
		return "", nil
	}
	u, err := uuid.Parse(key)
	if err != nil || u.Version() != 7 {
		return "", fsm.Errorf(fsm.CodeInvalidArgument, "%s must be a UUIDv7 (it becomes the job ID)", field)
	}
	sec, nsec := u.Time().UnixTime()
	if d := s.now().Sub(time.Unix(sec, nsec)); d > idempotencyKeyWindow || d < -idempotencyKeyWindow {
		return "", fsm.Errorf(fsm.CodeInvalidArgument, "%s's time is more than %s from now", field, idempotencyKeyWindow)
	}
	return u.String(), nil
}

// replayed returns the job an earlier submit with the same key created,
// if any. A key reused by another tenant or with another spec conflicts.
func (s *Server) replayed(ctx context.Context, id, tenant string, spec fsm.JobSpec) (*fsm.Job, bool, error) {
	j, err := s.loadJob(ctx, id)
	if errors.Is(err, fsm.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	// A replay answers the job as it is now, not as this node last saw
	// it: catch up with the leader first (this node may trail a cancel
	// acknowledged through another one).
	if err := s.catchUp(ctx); err != nil {
		return nil, false, err
	}
	if j, err = s.loadJob(ctx, id); err != nil {
		return nil, false, err
	}
	if _, err := spec.Compile(s.policy); err != nil {
		return nil, false, err
	}
	a, _ := json.Marshal(spec)
	b, _ := json.Marshal(j.Spec)
	if j.TenantID != tenant || !bytes.Equal(a, b) {
		return nil, false, fsm.Errorf(fsm.CodeAlreadyExists, "Idempotency-Key %s was used for another job", id)
	}
	return j, true, nil
}

func (s *Server) answerReplay(w http.ResponseWriter, r *http.Request, j *fsm.Job, err error) {
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/jobs/"+j.ID)
	setIndex(w, j.ModifyIndex)
	writeJSON(w, http.StatusOK, apiJob(j))
}

// submit compiles spec and proposes it as a new job of tenant, with the
// given ID or a new UUIDv7.
func (s *Server) submit(ctx context.Context, tenant string, spec fsm.JobSpec, retryOf, id string) (*fsm.Job, error) {
	job, err := s.newJob(ctx, tenant, spec, retryOf, id)
	if err != nil {
		return nil, err
	}
	resp, err := s.raft.Apply(ctx, &fsm.SubmitJob{Job: *job})
	if id == "" && fsm.ErrorCode(err) == fsm.CodeAlreadyExists {
		return s.resentOwn(ctx, job, err)
	}
	if err != nil {
		return nil, err
	}
	return resp.(*fsm.Job), nil
}

// resentOwn answers a submit refused with already_exists (refusal) whose
// job ID this node stamped itself (a fresh UUIDv7, not a client's key).
// No other request can carry that ID: the job is this submission's own.
// Its first try was applied, a leader change lost the answer, the node
// sent it again (cluster/retry.go), and the job finished in between: the
// FSM keeps only active jobs in memory and does not read the store per
// submit, so the second apply could not recognize it as the same
// submission and refused it. Catch up and answer with the job, so that
// the client sees the success it had, not a conflict with itself.
func (s *Server) resentOwn(ctx context.Context, job *fsm.Job, refusal error) (*fsm.Job, error) {
	if err := s.catchUp(ctx); err != nil {
		return nil, err
	}
	j, err := s.loadJob(ctx, job.ID)
	if err != nil {
		return nil, err
	}
	if !fsm.SameSubmission(j, job) {
		return nil, refusal
	}
	return j, nil
}

// newJob compiles spec into a new job of tenant, with the given ID or a
// new UUIDv7, ready to propose.
func (s *Server) newJob(ctx context.Context, tenant string, spec fsm.JobSpec, retryOf, id string) (*fsm.Job, error) {
	// A tenant created through another node a moment ago may not be here
	// yet: catch up with the leader before saying it does not exist.
	_, ok, err := find(s, ctx, func() (*fsm.Tenant, bool) { return s.fsm.Tenant(tenant) })
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fsm.Errorf(fsm.CodeNotFound, "tenant %s does not exist", echo(tenant))
	}
	plan, err := spec.Compile(s.policy)
	if err != nil {
		return nil, err
	}
	if id == "" {
		u, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("job id: %w", err)
		}
		id = u.String()
	}
	return &fsm.Job{ID: id, TenantID: tenant, Spec: spec, Plan: *plan, SubmittedAt: s.now(), RetryOf: retryOf}, nil
}

// scopedJob returns the job named by the path if the principal holds the
// route's permission on it. A job of another tenant is reported as not
// found.
func (s *Server) scopedJob(r *http.Request) (*fsm.Job, error) {
	id := r.PathValue("id")
	if !fsm.ValidJobID(id) {
		return nil, fsm.Errorf(fsm.CodeInvalidArgument, "malformed job id %s", echo(id))
	}
	j, err := s.loadJob(r.Context(), id)
	stale, _ := staleRequested(r)
	if errors.Is(err, fsm.ErrNotFound) && !readFresh(r.Context()) && !(stale && r.Method == http.MethodGet) {
		// It may have been created through another node a moment ago:
		// catch up with the leader once before saying it does not exist
		// (a read whose barrier passed has; a stale read asked for this
		// node's state as it is). Without a leader, nobody knows:
		// unavailable, not not_found.
		if err := s.catchUp(r.Context()); err != nil {
			return nil, err
		}
		j, err = s.loadJob(r.Context(), id)
	}
	if errors.Is(err, fsm.ErrNotFound) {
		return nil, fsm.Errorf(fsm.CodeNotFound, "job %s not found", id)
	}
	if err != nil {
		return nil, err
	}
	if err := authorizeJob(r, j); err != nil {
		return nil, err
	}
	return j, nil
}

// getJob returns a job. With ?index=N it blocks (up to ?wait=, default
// 30s) until the job's modify_index exceeds N.
func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after uint64
	wait := 30 * time.Second
	if v := q.Get("index"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			s.writeError(w, r, fsm.Errorf(fsm.CodeInvalidArgument, "index must be a non-negative integer"))
			return
		}
		after = n
	}
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > maxWait {
			s.writeError(w, r, fsm.Errorf(fsm.CodeInvalidArgument, "wait must be a duration up to %s", maxWait))
			return
		}
		wait = d
	}
	if err := s.awaitSeen(r, after, wait); err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	for {
		index, changed := s.fsm.Watch()
		j, err := s.scopedJob(r.WithContext(context.WithoutCancel(r.Context())))
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if j.ModifyIndex > after || after == 0 {
			setIndex(w, index)
			writeJSON(w, http.StatusOK, apiJob(j))
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			setIndex(w, index)
			writeJSON(w, http.StatusOK, apiJob(j))
			return
		}
	}
}

func parseStates(v string) ([]fsm.JobState, error) {
	if v == "" {
		return nil, nil
	}
	var out []fsm.JobState
	for _, s := range strings.Split(v, ",") {
		st := fsm.JobState(strings.TrimSpace(s))
		if !st.Valid() {
			return nil, fsm.Errorf(fsm.CodeInvalidArgument, "unknown state %s", echo(s))
		}
		out = append(out, st)
	}
	return out, nil
}

// listJobs returns a page of the tenant's jobs, newest first.
func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	tenant := requestTenant(r, true)
	var err error
	p := &fsm.ListJobsParams{TenantID: tenant, Limit: DefaultPageSize, Queue: fsm.Queue(q.Get("queue")), After: q.Get("after")}
	if p.States, err = parseStates(q.Get("state")); err != nil {
		s.writeError(w, r, err)
		return
	}
	if p.Queue != "" && !validQueue(p.Queue) {
		s.writeError(w, r, fsm.Errorf(fsm.CodeInvalidArgument, "unknown queue %s", echo(string(p.Queue))))
		return
	}
	if p.After != "" {
		if !fsm.ValidJobID(p.After) {
			s.writeError(w, r, fsm.Errorf(fsm.CodeInvalidArgument, "after must be a job id"))
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPageSize {
			s.writeError(w, r, fsm.Errorf(fsm.CodeInvalidArgument, "limit must be between 1 and %d", MaxPageSize))
			return
		}
		p.Limit = n
	}
	if page, index, ok := s.fsm.ListActiveJobs(p); ok {
		setIndex(w, index)
		writeJSON(w, http.StatusOK, apiJobPage(page))
		return
	}
	var page *fsm.JobPage
	index, ok := s.storeRead(w, r, func(ctx context.Context) (err error) {
		page, err = s.fsm.Store().ListJobs(ctx, p)
		return err
	})
	if !ok {
		return
	}
	setIndex(w, index)
	writeJSON(w, http.StatusOK, apiJobPage(page))
}

// jobSummary counts the active jobs of the tenant the request acts on
// by state and queue, from this node's FSM after the route's read
// barrier (linearizable unless ?stale=true), like every read.
func (s *Server) jobSummary(w http.ResponseWriter, r *http.Request) {
	tenant := requestTenant(r, true)
	sum := s.fsm.JobSummary(tenant)
	setIndex(w, sum.Index)
	writeJSON(w, http.StatusOK, apiJobSummary(tenant, sum))
}

// apiJobSummary is sum as the API answers it.
func apiJobSummary(tenant string, sum fsm.JobSummary) JobSummary {
	out := JobSummary{Tenant: tenant, States: sum.States, Queues: map[fsm.Queue]QueueSummary{}}
	for q, prios := range sum.Queued {
		qs := QueueSummary{Priorities: prios}
		for _, n := range prios {
			qs.Queued += n
		}
		if t, ok := sum.OldestQueued[q]; ok {
			qs.OldestQueuedAt = &t
			if out.OldestQueuedAt == nil || t.Before(*out.OldestQueuedAt) {
				out.OldestQueuedAt = &t
			}
		}
		out.Queues[q] = qs
	}
	return out
}

// storeRead makes a read of the store for r (after the route's read
// barrier, see consistency.go), bounded by storeReadTimeout, and returns the FSM index it reflects. On an error
// it answers r itself and returns false.
func (s *Server) storeRead(w http.ResponseWriter, r *http.Request, read func(ctx context.Context) error) (uint64, bool) {
	index := s.fsm.Index()
	ctx, cancel := context.WithTimeout(r.Context(), storeReadTimeout)
	defer cancel()
	if err := read(ctx); err != nil {
		s.writeError(w, r, storeError(err))
		return 0, false
	}
	return index, true
}

func validQueue(q fsm.Queue) bool {
	for _, v := range fsm.Queues {
		if v == q {
			return true
		}
	}
	return false
}

// jobCommand applies the command made by mk to the job in the path.
func (s *Server) jobCommand(mk func(id string, at time.Time) fsm.Command) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		j, err := s.scopedJob(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if j.State.Terminal() {
			s.writeError(w, r, fsm.Errorf(fsm.CodeInvalidTransition, "job %s is %s; finished jobs never change", j.ID, j.State))
			return
		}
		resp, err := s.raft.Apply(r.Context(), mk(j.ID, s.now()))
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		j = resp.(*fsm.Job)
		setIndex(w, j.ModifyIndex)
		writeJSON(w, http.StatusOK, apiJob(j))
	}
}

func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) {
	s.jobCommand(func(id string, at time.Time) fsm.Command { return &fsm.CancelJob{JobID: id, At: at} })(w, r)
}

func (s *Server) pauseJob(w http.ResponseWriter, r *http.Request) {
	s.jobCommand(func(id string, at time.Time) fsm.Command { return &fsm.PauseJob{JobID: id, At: at} })(w, r)
}

func (s *Server) resumeJob(w http.ResponseWriter, r *http.Request) {
	s.jobCommand(func(id string, at time.Time) fsm.Command { return &fsm.ResumeJob{JobID: id, At: at} })(w, r)
}

// retryJob submits a failed or canceled job again as a new job that
// points back to it; the finished job itself never changes.
func (s *Server) retryJob(w http.ResponseWriter, r *http.Request) {
	j, err := s.scopedJob(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !j.State.Terminal() {
		// This node may trail a cancel acknowledged through another one:
		// catch up with the leader before refusing.
		if err := s.catchUp(r.Context()); err != nil {
			s.writeError(w, r, err)
			return
		}
		if j, err = s.scopedJob(r); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	if j.State != fsm.JobFailed && j.State != fsm.JobCanceled {
		s.writeError(w, r, fsm.Errorf(fsm.CodeInvalidTransition, "job %s is %s; only failed or canceled jobs can be retried", j.ID, j.State))
		return
	}
	nj, err := s.submit(r.Context(), j.TenantID, j.Spec, j.ID, "")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/jobs/"+nj.ID)
	setIndex(w, nj.ModifyIndex)
	writeJSON(w, http.StatusCreated, apiJob(nj))
}

// jobLogs returns ffmpeg's stderr tail: live from the worker while the
// job runs, else the tail stored with the job's last attempt.
func (s *Server) jobLogs(w http.ResponseWriter, r *http.Request) {
	j, err := s.scopedJob(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	text := j.Log
	if s.logs != nil && j.WorkerID != "" && (j.State == fsm.JobRunning || j.State == fsm.JobPaused) {
		if live, err := s.logs.JobLog(r.Context(), j.WorkerID, j.ID); err == nil {
			text = live
		} else {
			s.log.Debug("live log unavailable", "job", j.ID, "error", err)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	setIndex(w, j.ModifyIndex)
	fmt.Fprint(w, text)
}

// jobEvents streams the job as Server-Sent Events: a "job" event with the
// whole job (as GET /v1/jobs/{id} answers it) every time it changes (state
// or progress), until it finishes. An event's id is the job's
// modify_index; a client that reconnects with Last-Event-ID (to any node)
// gets only newer states, never an older one.
func (s *Server) jobEvents(w http.ResponseWriter, r *http.Request) {
	var last uint64
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			s.writeError(w, r, fsm.Errorf(fsm.CodeInvalidArgument, "Last-Event-ID must be an event id this stream sent (a non-negative integer)"))
			return
		}
		last = n
	}
	if err := s.awaitSeen(r, last, eventsCatchUp); err != nil {
		s.writeError(w, r, err)
		return
	}
	j, err := s.scopedJob(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		s.writeError(w, r, errors.New("streaming unsupported"))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(j *fsm.Job) error {
		b, err := json.Marshal(apiJob(j))
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "id: %d\nevent: job\ndata: %s\n\n", j.ModifyIndex, b)
		flusher.Flush()
		return err
	}
	ka := time.NewTicker(keepAlive)
	defer ka.Stop()
	for {
		_, changed := s.fsm.Watch()
		if j.ModifyIndex > last {
			if err := send(j); err != nil {
				return
			}
			last = j.ModifyIndex
		}
		if j.State.Terminal() {
			fmt.Fprint(w, "event: end\ndata: {}\n\n")
			flusher.Flush()
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-ka.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			flusher.Flush()
			continue
		case <-changed:
		}
		if j, err = s.loadJob(r.Context(), j.ID); err != nil {
			return
		}
	}
}

// storeReadTimeout bounds an API read that needs the store (finished jobs,
// list pages): during a database outage it answers 503 unavailable with
// Retry-After instead of waiting for the database.
const storeReadTimeout = 2 * time.Second

// loadJob reads a job: active ones from memory, finished ones from the
// store within storeReadTimeout.
func (s *Server) loadJob(ctx context.Context, id string) (*fsm.Job, error) {
	ctx, cancel := context.WithTimeout(ctx, storeReadTimeout)
	defer cancel()
	j, err := s.fsm.GetJob(ctx, id)
	if err != nil && !errors.Is(err, fsm.ErrNotFound) {
		return nil, storeError(err)
	}
	return j, err
}
