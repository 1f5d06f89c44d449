package server

import (
	"context"
	"net/http"

	json "github.com/go-json-experiment/json/v1"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// maxBatchBodyBytes bounds a POST /v1/jobs/batch body: room for
// fsm.MaxSubmitBatch specs of several KiB each.
const maxBatchBodyBytes = 16 << 20

// BatchSubmitRequest is the body of POST /v1/jobs/batch.
type BatchSubmitRequest struct {
	// Items are the jobs to submit, 1 to 1,000.
	Items []BatchSubmitItem `json:"items"`
}

// BatchSubmitItem is one job of a batch.
type BatchSubmitItem struct {
	// IdempotencyKey, if set, is a UUIDv7 that becomes the job's ID, as
	// the Idempotency-Key header of POST /v1/jobs: submitting it again
	// with the same spec answers the job it created (status 200).
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Spec is the job spec, as the body of POST /v1/jobs.
	Spec json.RawMessage `json:"spec"`
}

// BatchSubmitResponse answers POST /v1/jobs/batch: one result per item,
// in the request's order.
type BatchSubmitResponse struct {
	Items []BatchSubmitResult `json:"items"`
}

// BatchSubmitResult is one item's outcome. Status is what POST /v1/jobs
// would have answered for it alone: 201 with the new Job, 200 with the
// Job an earlier submit with the same idempotency key created, or the
// refusal's status with Error.
type BatchSubmitResult struct {
	Status int        `json:"status"`
	Job    *Job       `json:"job,omitempty"`
	Error  *fsm.Error `json:"error,omitempty"`
}

// submitJobs queues up to fsm.MaxSubmitBatch jobs in one request. Each
// item succeeds or fails on its own; the items that pass validation go to
// the cluster together and share Raft entries (group commit).
func (s *Server) submitJobs(w http.ResponseWriter, r *http.Request) {
	var req BatchSubmitRequest
	if err := decodeBodyLimit(w, r, &req, maxBatchBodyBytes); err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(req.Items) == 0 || len(req.Items) > fsm.MaxSubmitBatch {
		s.writeError(w, r, fsm.Errorf(fsm.CodeInvalidArgument, "items must hold 1 to %d jobs, not %d", fsm.MaxSubmitBatch, len(req.Items)))
		return
	}
	ctx := r.Context()
	tenant := requestTenant(r, false)
	out := make([]BatchSubmitResult, len(req.Items))
	specs := make([]fsm.JobSpec, len(req.Items))
	keys := make([]string, len(req.Items))
	var cmds []*fsm.SubmitJob
	var pos []int
	for i, it := range req.Items {
		job, replay, err := s.batchJob(ctx, tenant, it, &specs[i], &keys[i])
		switch {
		case err != nil:
			out[i] = s.itemError(r, err)
		case replay != nil:
			out[i] = BatchSubmitResult{Status: http.StatusOK, Job: apiJobRef(replay)}
		default:
			cmds = append(cmds, &fsm.SubmitJob{Job: *job})
			pos = append(pos, i)
		}
	}
	var resps []any
	var errs []error
	if len(cmds) > 0 {
		resps, errs = s.raft.SubmitAll(ctx, cmds)
	}
	caughtUp := false
	var index uint64
	for k, i := range pos {
		err := errs[k]
		if err == nil {
			j := resps[k].(*fsm.Job)
			index = max(index, j.ModifyIndex)
			out[i] = BatchSubmitResult{Status: http.StatusCreated, Job: apiJobRef(j)}
			continue
		}
		if keys[i] == "" && fsm.ErrorCode(err) == fsm.CodeAlreadyExists {
			// This node stamped the ID: a resend of this very item (submit).
			j, rerr := s.resentOwn(ctx, &cmds[k].Job, err)
			if rerr == nil {
				out[i] = BatchSubmitResult{Status: http.StatusCreated, Job: apiJobRef(j)}
				continue
			}
			err = rerr
		}
		if keys[i] != "" && fsm.ErrorCode(err) == fsm.CodeAlreadyExists {
			// As submitJob: another submit with the same key won, perhaps
			// in this very batch or through another node.
			if !caughtUp {
				if rerr := s.raft.ReadIndex(ctx); rerr != nil {
					err = rerr
				}
				caughtUp = true
			}
			if prev, ok, rerr := s.replayed(ctx, keys[i], tenant, specs[i]); ok {
				out[i] = BatchSubmitResult{Status: http.StatusOK, Job: apiJobRef(prev)}
				continue
			} else if rerr != nil {
				err = rerr
			}
		}
		out[i] = s.itemError(r, err)
	}
	setIndex(w, max(index, s.fsm.Index()))
	writeJSON(w, http.StatusOK, BatchSubmitResponse{Items: out})
}

// batchJob checks one item as submitJob checks a request: the spec
// (strictly decoded, as a body), the idempotency key and, with a key, an
// earlier submit of it (replay). Otherwise it returns the job to propose.
func (s *Server) batchJob(ctx context.Context, tenant string, it BatchSubmitItem, spec *fsm.JobSpec, key *string) (job, replay *fsm.Job, err error) {
	if len(it.Spec) == 0 {
		return nil, nil, fsm.Errorf(fsm.CodeInvalidArgument, "spec is required")
	}
	if *spec, err = DecodeJobSpec(it.Spec); err != nil {
		return nil, nil, err
	}
	if *key, err = s.parseIdempotencyKey(it.IdempotencyKey, "idempotency_key"); err != nil {
		return nil, nil, err
	}
	if *key != "" {
		j, ok, err := s.replayed(ctx, *key, tenant, *spec)
		if ok || err != nil {
			return nil, j, err
		}
	}
	job, err = s.newJob(ctx, tenant, *spec, "", *key)
	return job, nil, err
}

// itemError is one item's refusal, as writeError would answer it.
func (s *Server) itemError(r *http.Request, err error) BatchSubmitResult {
	e, _ := s.apiError(r, err)
	s.metrics.countQuotaRefusal(r, e)
	return BatchSubmitResult{Status: statusOf(e.Code), Error: e}
}

func apiJobRef(j *fsm.Job) *Job {
	a := apiJob(j)
	return &a
}
