package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// MountWorkerRPC serves the worker protocol on node RPC, where remote
// workers reach it over the node port's mutual TLS (holders of the
// cluster key only). handle is the node's HandleRPC.
func (s *Server) MountWorkerRPC(handle func(pattern string, h http.Handler)) {
	ws := s.Workers()
	handle("POST /rpc/worker/register", workerRPC(s, func(ctx context.Context, w *fsm.Worker) (any, error) {
		return ws.Register(ctx, w)
	}))
	handle("POST /rpc/worker/assignments", workerRPC(s, func(ctx context.Context, req *cluster.AssignmentsRequest) (any, error) {
		jobs, index, err := ws.Assignments(ctx, req.WorkerID, req.Index)
		return cluster.AssignmentsResponse{Jobs: jobs, Index: index}, err
	}))
	handle("POST /rpc/worker/start", workerRPC(s, func(ctx context.Context, r *fsm.Report) (any, error) {
		return nil, ws.Start(ctx, *r)
	}))
	handle("POST /rpc/worker/progress", workerRPC(s, func(ctx context.Context, r *cluster.ProgressRequest) (any, error) {
		return nil, ws.Progress(ctx, r.Report, r.Progress)
	}))
	handle("POST /rpc/worker/finish", workerRPC(s, func(ctx context.Context, f *fsm.FinishJob) (any, error) {
		return nil, ws.Finish(ctx, f)
	}))
	handle("POST /rpc/worker/heartbeat", workerRPC(s, func(ctx context.Context, p *cluster.Peer) (any, error) {
		lease, err := ws.Heartbeat(ctx, p.ID)
		return cluster.HeartbeatResponse{LeaseMS: lease.Milliseconds()}, err
	}))
}

// workerRPC adapts fn to an HTTP handler: JSON in, JSON out, errors as
// {"error":{…}} with the API's status codes.
func workerRPC[T any](s *Server, fn func(context.Context, *T) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in := new(T)
		dec := json.NewDecoder(io.LimitReader(r.Body, maxBodyBytes))
		dec.DisallowUnknownFields()
		if err := dec.Decode(in); err != nil {
			s.writeError(w, r, jsonError(err))
			return
		}
		out, err := fn(r.Context(), in)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if out == nil {
			out = map[string]string{}
		}
		writeJSON(w, http.StatusOK, out)
	})
}
