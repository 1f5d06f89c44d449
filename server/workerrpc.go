package server

import (
	"context"
	"io"
	"net/http"

	json "github.com/go-json-experiment/json/v1"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// MountWorkerRPC serves the worker protocol on the node port's worker
// handlers (cluster.Node.HandleWorkerRPC), which are all a node port
// caller without a server certificate can reach. Every request carries a
// worker token; a worker may act only for the worker bound to its token,
// and registers in its token's tenant (or the shared pool), whatever it
// asks for.
func (s *Server) MountWorkerRPC(handle func(pattern string, h http.Handler)) {
	ws := s.Workers()
	handle("POST /rpc/worker/hello", workerRPC(s, func(ctx context.Context, t *fsm.WorkerToken, _ *struct{}) (any, error) {
		h := cluster.WorkerHello{TokenID: t.ID, TenantID: t.TenantID, WorkerID: t.WorkerID, GossipAddrs: []string{}}
		if s.workerGossip != nil {
			h.GossipKey, h.GossipAddrs = s.workerGossip()
		}
		return h, nil
	}))
	handle("POST /rpc/worker/register", workerRPC(s, func(ctx context.Context, t *fsm.WorkerToken, w *fsm.Worker) (any, error) {
		if w.TenantID != "" && w.TenantID != t.TenantID {
			return nil, fsm.Errorf(CodePermissionDenied, "worker token %s is for %s: a worker registers only there", t.ID, poolOf(t.TenantID))
		}
		if t.WorkerID != "" && t.WorkerID != w.ID {
			return nil, fsm.Errorf(CodePermissionDenied, "worker token %s belongs to worker %s", t.ID, t.WorkerID)
		}
		w.TenantID, w.TokenID = t.TenantID, t.ID
		return ws.Register(ctx, w)
	}))
	handle("POST /rpc/worker/assignments", workerRPC(s, func(ctx context.Context, t *fsm.WorkerToken, req *cluster.AssignmentsRequest) (any, error) {
		if err := s.ownWorker(ctx, t, req.WorkerID); err != nil {
			return nil, err
		}
		jobs, index, err := ws.Assignments(ctx, req.WorkerID, req.Index)
		return cluster.AssignmentsAnswer(jobs, index), err
	}))
	handle("POST /rpc/worker/start", workerRPC(s, func(ctx context.Context, t *fsm.WorkerToken, r *fsm.Report) (any, error) {
		if err := s.ownWorker(ctx, t, r.WorkerID); err != nil {
			return nil, err
		}
		return nil, ws.Start(ctx, *r)
	}))
	handle("POST /rpc/worker/progress", workerRPC(s, func(ctx context.Context, t *fsm.WorkerToken, r *cluster.ProgressRequest) (any, error) {
		if err := s.ownWorker(ctx, t, r.Report.WorkerID); err != nil {
			return nil, err
		}
		return nil, ws.Progress(ctx, r.Report, r.Progress)
	}))
	handle("POST /rpc/worker/exit", workerRPC(s, func(ctx context.Context, t *fsm.WorkerToken, r *fsm.Report) (any, error) {
		if err := s.ownWorker(ctx, t, r.WorkerID); err != nil {
			return nil, err
		}
		return nil, ws.Exit(ctx, *r)
	}))
	handle("POST /rpc/worker/finish", workerRPC(s, func(ctx context.Context, t *fsm.WorkerToken, f *fsm.FinishJob) (any, error) {
		if err := s.ownWorker(ctx, t, f.WorkerID); err != nil {
			return nil, err
		}
		return nil, ws.Finish(ctx, f)
	}))
	handle("POST /rpc/worker/heartbeat", workerRPC(s, func(ctx context.Context, t *fsm.WorkerToken, p *cluster.Peer) (any, error) {
		if err := s.ownWorker(ctx, t, p.ID); err != nil {
			return nil, err
		}
		lease, err := ws.Heartbeat(ctx, p.ID)
		return cluster.HeartbeatResponse{LeaseMS: lease.Milliseconds()}, err
	}))
}

// poolOf names a tenant, or the shared pool for "".
func poolOf(tenantID string) string {
	if tenantID == "" {
		return "the shared pool"
	}
	return "tenant " + echo(tenantID)
}

// workerRPC adapts fn to an HTTP handler: the worker token checked first,
// then JSON in, JSON out, errors as {"error":{…}} with the API's status
// codes.
func workerRPC[T any](s *Server, fn func(context.Context, *fsm.WorkerToken, *T) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, err := s.authenticateWorker(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		in := new(T)
		dec := json.NewDecoder(io.LimitReader(r.Body, maxBodyBytes))
		dec.DisallowUnknownFields()
		if err := dec.Decode(in); err != nil {
			s.writeError(w, r, jsonError(err))
			return
		}
		out, err := fn(r.Context(), t, in)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if out == nil {
			out = map[string]string{}
		}
		writeCompactJSON(w, http.StatusOK, out)
	})
}
