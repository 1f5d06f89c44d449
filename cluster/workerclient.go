package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"

	json "github.com/go-json-experiment/json/v1"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// WorkerClient is a remote worker's side of the worker protocol: HTTP
// calls over TLS to the node port of any server the worker knows of (from
// the gossip pool), each with the worker's token as bearer. The TLS
// configuration (WorkerTLS) presents no certificate, so the node port
// takes the caller for a worker and lets it reach the worker protocol
// only. It implements worker.Control.
type WorkerClient struct {
	http    *http.Client
	token   string
	servers func() []string
	next    atomic.Uint32
	// refused, if set, is told when a server refuses the token (401).
	refused func(error)
}

// OnTokenRefused registers fn to be called, with the server's refusal,
// whenever a server refuses the worker's token (revoked, unknown): the
// worker cannot go on with it. Call it before the client is used.
func (c *WorkerClient) OnTokenRefused(fn func(error)) { c.refused = fn }

// NewWorkerClient returns a client that calls the servers listed by
// servers (node port addresses) with token, moving on when one cannot be
// reached. It starts at a random server of the list, so that the workers
// of a cluster spread over its servers: every worker's list is the same
// (sorted), and starting at its head sent all of them to one server,
// which then served every worker's calls while the others idled.
func NewWorkerClient(conf *tls.Config, token string, servers func() []string) *WorkerClient {
	c := &WorkerClient{http: newRPCClient(conf), token: token, servers: servers}
	c.next.Store(rand.Uint32())
	return c
}

// WorkerHello is the answer to POST /rpc/worker/hello: what the worker's
// token is, and what the worker needs to join the gossip pool.
type WorkerHello struct {
	// TokenID is the token's ID; TenantID its tenant ("" for the shared
	// pool), which is the worker's.
	TokenID  string `json:"token_id"`
	TenantID string `json:"tenant_id,omitempty"`
	// WorkerID is the worker the token is bound to, "" if none yet.
	WorkerID string `json:"worker_id,omitempty"`
	// GossipKey is the worker gossip key (WorkerGossipKey).
	GossipKey []byte `json:"gossip_key"`
	// GossipAddrs are the servers' gossip addresses.
	GossipAddrs []string `json:"gossip_addrs"`
}

// Hello checks the worker's token with a server and returns what the
// worker needs to join the gossip pool.
func (c *WorkerClient) Hello(ctx context.Context) (*WorkerHello, error) {
	var out WorkerHello
	if err := c.call(ctx, "/rpc/worker/hello", struct{}{}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AssignmentsRequest is the body of POST /rpc/worker/assignments.
type AssignmentsRequest struct {
	WorkerID string `json:"worker_id"`
	Index    uint64 `json:"index"`
}

// AssignmentsResponse is its answer, as a worker decodes it; servers send
// what AssignmentsAnswer builds.
type AssignmentsResponse struct {
	Jobs  []*fsm.Job `json:"jobs"`
	Index uint64     `json:"index"`
}

// briefJob is a listed job without its spec, plan and history.
type briefJob struct {
	ID       string       `json:"id"`
	TenantID string       `json:"tenant_id"`
	State    fsm.JobState `json:"state"`
	Attempt  int          `json:"attempt"`
	WorkerID string       `json:"worker_id,omitempty"`
}

// AssignmentsAnswer returns the wire form of a worker's assignment list.
// Only an assigned job, which the worker is to start, goes whole; one in
// any other state (running, paused) goes with its ID, tenant, state,
// attempt and worker only, which is all a worker reads of a job it
// started already (to pause, resume, keep or stop its attempt) or
// reports lost. The list is sent again on every change of any of the
// worker's jobs, so with many slots whole jobs cost more to encode and
// decode than the rest of their lives. A worker of any version decodes
// the brief form into an fsm.Job with a zero spec and plan.
func AssignmentsAnswer(jobs []*fsm.Job, index uint64) any {
	out := struct {
		Jobs  []any  `json:"jobs"`
		Index uint64 `json:"index"`
	}{Jobs: make([]any, len(jobs)), Index: index}
	for i, j := range jobs {
		if j.State == fsm.JobAssigned {
			out.Jobs[i] = j
			continue
		}
		out.Jobs[i] = &briefJob{ID: j.ID, TenantID: j.TenantID, State: j.State, Attempt: j.Attempt, WorkerID: j.WorkerID}
	}
	return out
}

// ProgressRequest is the body of POST /rpc/worker/progress.
type ProgressRequest struct {
	Report   fsm.Report   `json:"report"`
	Progress fsm.Progress `json:"progress"`
}

// ErrNoServer is returned while the worker knows no server.
var ErrNoServer = errors.New("no server known yet (check --join)")

// call posts in to path on a server and decodes the answer into out,
// moving on to the next server when one cannot be reached or answers 503
// (no leader, unavailable). A domain refusal comes back as *fsm.Error
// (final); anything else is an error the caller may retry.
func (c *WorkerClient) call(ctx context.Context, path string, in, out any) error {
	addrs := c.servers()
	if len(addrs) == 0 {
		return ErrNoServer
	}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	start := int(c.next.Load() % uint32(len(addrs)))
	var lastErr error
	for i := range addrs {
		addr := addrs[(start+i)%len(addrs)]
		req, err := http.NewRequestWithContext(ctx, "POST", rpcScheme+addr+path, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := c.http.Do(req)
		if err != nil {
			lastErr = err
			c.next.Add(1)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxRPCBody))
		resp.Body.Close()
		if resp.StatusCode < 300 {
			if out == nil {
				return nil
			}
			return json.Unmarshal(data, out)
		}
		var eb struct {
			Error *fsm.Error `json:"error"`
		}
		if json.Unmarshal(data, &eb) == nil && eb.Error != nil && resp.StatusCode < 500 {
			if resp.StatusCode == http.StatusUnauthorized && c.refused != nil {
				c.refused(eb.Error)
			}
			return eb.Error // a refusal: final
		}
		lastErr = fmt.Errorf("%s on %s: %d %s", path, addr, resp.StatusCode, bytes.TrimSpace(data))
		if resp.StatusCode != http.StatusServiceUnavailable {
			return lastErr
		}
		// No leader, or this server cannot serve now: another server may
		// (it may be on the majority side of a partition).
		c.next.Add(1)
	}
	return fmt.Errorf("no server reachable: %w", lastErr)
}

// Register implements worker.Control.
func (c *WorkerClient) Register(ctx context.Context, w *fsm.Worker) (*fsm.Worker, error) {
	var out fsm.Worker
	return &out, c.call(ctx, "/rpc/worker/register", w, &out)
}

// Assignments implements worker.Control.
func (c *WorkerClient) Assignments(ctx context.Context, workerID string, index uint64) ([]*fsm.Job, uint64, error) {
	var out AssignmentsResponse
	err := c.call(ctx, "/rpc/worker/assignments", AssignmentsRequest{WorkerID: workerID, Index: index}, &out)
	return out.Jobs, out.Index, err
}

// Start implements worker.Control.
func (c *WorkerClient) Start(ctx context.Context, r fsm.Report) error {
	return c.call(ctx, "/rpc/worker/start", r, nil)
}

// Progress implements worker.Control.
func (c *WorkerClient) Progress(ctx context.Context, r fsm.Report, p fsm.Progress) error {
	return c.call(ctx, "/rpc/worker/progress", ProgressRequest{Report: r, Progress: p}, nil)
}

// Exit implements worker.Control.
func (c *WorkerClient) Exit(ctx context.Context, r fsm.Report) error {
	return c.call(ctx, "/rpc/worker/exit", r, nil)
}

// Finish implements worker.Control.
func (c *WorkerClient) Finish(ctx context.Context, f *fsm.FinishJob) error {
	return c.call(ctx, "/rpc/worker/finish", f, nil)
}

// Heartbeat implements worker.Control.
func (c *WorkerClient) Heartbeat(ctx context.Context, workerID string) (time.Duration, error) {
	var out HeartbeatResponse
	if err := c.call(ctx, "/rpc/worker/heartbeat", Peer{ID: workerID}, &out); err != nil {
		return 0, err
	}
	if out.LeaseMS <= 0 {
		return 0, fmt.Errorf("heartbeat: the server named no lease")
	}
	return time.Duration(out.LeaseMS) * time.Millisecond, nil
}
