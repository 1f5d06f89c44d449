package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// Raft is what the server needs of the cluster node (*cluster.Node).
type Raft interface {
	// ID is this node's ID.
	ID() string
	// Apply proposes a command (forwarded to the leader if need be) and
	// returns the FSM's response.
	Apply(ctx context.Context, c fsm.Command) (any, error)
	// SubmitAll submits jobs through the group commit and returns each
	// one's result: its queued *fsm.Job or its own error.
	SubmitAll(ctx context.Context, cmds []*fsm.SubmitJob) ([]any, []error)
	// Leader returns the leader's address and ID, empty if none.
	Leader() (addr, id string)
	// AppliedAll reports whether this node has applied what the cluster
	// has committed; it fails when it cannot tell (no leader to ask).
	AppliedAll(ctx context.Context) (bool, error)
	// LeaderlessFor is how long this node has been without a leader (0
	// while it has one).
	LeaderlessFor() time.Duration
	// ReadIndex waits until this node has applied everything committed
	// when it was called (a linearizable read barrier).
	ReadIndex(ctx context.Context) error
	// Members lists the cluster's servers, with their status if asked.
	Members(ctx context.Context, status bool) ([]cluster.Member, error)
	// JoinCluster makes this node join the cluster of addrs and waits
	// until it has caught up (idempotent; typed *cluster.JoinError).
	JoinCluster(ctx context.Context, addrs []string) error
	// Waiting reports whether this node belongs to no cluster yet, with
	// a hint for the operator.
	Waiting() (hint string, waiting bool)
	// ClusterID is the ID of this node's cluster, "" if none is known.
	ClusterID() string
	// CallRPC calls node RPC at addr.
	CallRPC(ctx context.Context, addr, method, path string, in, out any) error
	// Remove removes a server.
	Remove(ctx context.Context, id string) error
	// TransferLeadership moves leadership to id, or to any follower.
	TransferLeadership(ctx context.Context, id string) error
	// Leave removes this node from the cluster.
	Leave(ctx context.Context) error
	// Backup writes a consistent copy of the state.
	Backup(ctx context.Context, w io.Writer) error
	// RestoreBackup replaces the cluster's state with a backup file.
	RestoreBackup(ctx context.Context, path string) error
	// Heartbeat renews a worker's lease with the leader and returns the
	// leader's lease length.
	Heartbeat(ctx context.Context, workerID string) (time.Duration, error)
}

var _ Raft = (*cluster.Node)(nil)

// LogSource returns the live stderr tail of a job running on a worker.
type LogSource interface {
	// JobLog returns the current log of the job's attempt on workerID.
	JobLog(ctx context.Context, workerID, jobID string) (string, error)
}

// Config configures a Server.
type Config struct {
	FSM     *fsm.FSM
	Raft    Raft
	Policy  fsm.Policy
	Metrics *Metrics
	Logger  *slog.Logger
	// Logs, if set, serves the log of running jobs.
	Logs LogSource
	// Now returns the current time; defaults to time.Now in UTC.
	Now func() time.Time
	// ClusterKey proves the right to initialize the cluster.
	ClusterKey []byte
	// OnLeave, if set, is called after this node left the cluster, to
	// stop the process.
	OnLeave func()
	// CAHash is the hash of the cluster CA that workers pin (see
	// cluster.CAHash), shown with every new worker token.
	CAHash string
	// WorkerGossip, if set, returns the worker gossip key and the gossip
	// addresses of the servers, which a worker gets once its token is
	// checked (POST /rpc/worker/hello).
	WorkerGossip func() (key []byte, addrs []string)
	// ReadyGrace is how long /ready stays 200 while this node has lost
	// its leader (and holds writes for the election); 0 means none.
	ReadyGrace time.Duration
	// Drain is how long Drain waits, /ready answering 503, for load
	// balancers to stop sending requests here.
	Drain time.Duration
	// ReadyRequireWorkers is how many workers must be up (and not
	// draining) for /ready to answer 200; with 0, /ready only reports
	// worker connectivity, as a warning.
	ReadyRequireWorkers int
}

// Server is the HTTP API of one node. Every node serves it; reads come
// from local state after a read barrier (linearizable unless the caller
// asks for a stale read), writes go through Raft.
type Server struct {
	fsm     *fsm.FSM
	raft    Raft
	policy  fsm.Policy
	metrics *Metrics
	log     *slog.Logger
	logs    LogSource
	now     func() time.Time
	mux     *http.ServeMux

	clusterKey   []byte
	onLeave      func()
	caHash       string
	workerGossip func() (key []byte, addrs []string)
	// authLog rate-limits the warning lines of failed authentications.
	authLog rateLimiter
	// keyUse batches the last-used times of keys (TouchAPIKeys).
	keyUse keyUse
	// ready holds /ready's state between checks (see ready.go).
	ready readiness
}

// New builds a Server.
func New(cfg Config) (*Server, error) {
	if err := fsm.ValidatePolicy(cfg.Policy); err != nil {
		return nil, err
	}
	s := &Server{
		fsm: cfg.FSM, raft: auditedRaft{cfg.Raft}, policy: cfg.Policy, metrics: cfg.Metrics,
		log: cfg.Logger, logs: cfg.Logs, now: cfg.Now, mux: http.NewServeMux(),
		clusterKey: cfg.ClusterKey, onLeave: cfg.OnLeave, authLog: rateLimiter{window: authLogWindow},
		caHash: cfg.CAHash, workerGossip: cfg.WorkerGossip,
		ready: readiness{grace: cfg.ReadyGrace, drain: cfg.Drain, requireWorkers: cfg.ReadyRequireWorkers},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = func() time.Time { return time.Now().UTC() }
	}
	if s.metrics == nil {
		s.metrics = NewMetrics()
	}
	s.metrics.watch(cfg.FSM)
	routes := s.routes()
	if err := checkRoutes(routes); err != nil {
		return nil, err
	}
	for _, rt := range routes {
		s.mux.Handle(rt.method+" "+rt.pattern, s.wrap(rt))
		if rt.deprecated != nil {
			s.metrics.deprecatedRoute(rt.method + " " + rt.pattern)
		}
	}
	notAllowed := s.methodNotAllowed(routes)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if notAllowed(w, r) {
			return
		}
		s.writeError(w, r, fsm.Errorf(fsm.CodeNotFound, "no route for %s %s", echo(r.Method), echo(r.URL.Path)))
	})
	return s, nil
}

// methodNotAllowed returns a handler of the route table's paths, method
// left out, that answers 405 with an Allow header listing the path's
// methods (HEAD with GET, as the mux serves it), and reports whether a
// path matched. The catch-all handler asks it before answering 404. Each
// path has a mux of its own: without their methods, two patterns may
// overlap (such as /v1/a/{id}/b and /v1/a/b/{id}), which one mux
// refuses. The OpenAPI lint refuses such paths too.
func (s *Server) methodNotAllowed(routes []route) func(w http.ResponseWriter, r *http.Request) bool {
	allow := map[string][]string{}
	var order []string
	for _, rt := range routes {
		if allow[rt.pattern] == nil {
			order = append(order, rt.pattern)
		}
		allow[rt.pattern] = append(allow[rt.pattern], rt.method)
		if rt.method == http.MethodGet {
			allow[rt.pattern] = append(allow[rt.pattern], http.MethodHead)
		}
	}
	muxes := make([]*http.ServeMux, 0, len(order))
	for _, pattern := range order {
		methods := strings.Join(allow[pattern], ", ")
		mux := http.NewServeMux()
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", methods)
			s.writeError(w, r, fsm.Errorf(CodeMethodNotAllowed, "%s is not allowed on %s (allowed: %s)", echo(r.Method), pattern, methods))
		})
		muxes = append(muxes, mux)
	}
	return func(w http.ResponseWriter, r *http.Request) bool {
		for _, mux := range muxes {
			if h, pattern := mux.Handler(r); pattern != "" {
				h.ServeHTTP(w, r)
				return true
			}
		}
		return false
	}
}

// ServeHTTP implements http.Handler. Every response carries the API
// version. While the node drains, every response closes its connection,
// so that keep-alive clients open their next one elsewhere (through the
// load balancer).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(apiVersionHeader, APIVersion)
	if s.ready.draining.Load() {
		w.Header().Set("Connection", "close")
	}
	s.mux.ServeHTTP(w, r)
}

// route is one API endpoint. The route table is the single source for the
// mux, for the test that checks it against the OpenAPI document and for
// the isolation matrix. A route is made only by needs or public, so that
// none exists without a permission; New refuses an unknown one.
type route struct {
	method  string
	pattern string
	perm    Permission
	// checks is, for a public route that checks a credential itself,
	// what it checks.
	checks string
	// local marks a GET route that answers from this node alone (health,
	// readiness, metrics, the OpenAPI document, the cluster's status).
	// Every other GET route is a read: wrap puts it behind a read barrier
	// (see consistency.go).
	local bool
	// deprecated, if set, marks a route that has a successor (see
	// legacyAlias).
	deprecated *deprecation
	handle     func(w http.ResponseWriter, r *http.Request)
}

// needs is a route that requires perm of the caller's API key.
func needs(method, pattern string, perm Permission, h http.HandlerFunc) route {
	return route{method: method, pattern: pattern, perm: perm, handle: h}
}

// public is a route that needs no API key: it serves nothing a tenant
// owns, from this node's own state.
func public(method, pattern string, h http.HandlerFunc) route {
	return route{method: method, pattern: pattern, perm: permPublic, local: true, handle: h}
}

// selfChecked is a public route whose handler checks a credential
// itself, as checks says (through Authorize where it is an API key).
func selfChecked(method, pattern, checks string, h http.HandlerFunc) route {
	return route{method: method, pattern: pattern, perm: permPublic, checks: checks, handle: h}
}

// checkRoutes refuses a route without a permission of the roles table.
func checkRoutes(routes []route) error {
	for _, rt := range routes {
		if rt.perm != permPublic && !knownPermission(rt.perm) {
			return fmt.Errorf("route %s %s: permission %q is not in the roles table", rt.method, rt.pattern, rt.perm)
		}
	}
	return nil
}

// Deprecation of the legacy ffmpeg-rtmp master's GET /jobs/{id}, which
// ffrtmp serves for migrating clients (imported jobs keep their IDs).
var (
	legacyJobsSince  = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	legacyJobsSunset = time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC)
)

func (s *Server) routes() []route {
	getJob := needs("GET", "/v1/jobs/{id}", PermJobsView, s.getJob)
	return []route{
		public("GET", "/health", s.handleHealth),
		public("GET", "/ready", s.handleReady),
		// Metrics name every tenant (per-tenant series): a key with
		// metrics.view (a super-admin's, narrowed with --scopes
		// metrics.view for Prometheus), read from this node's own state.
		{method: "GET", pattern: "/metrics", perm: PermMetricsView, local: true, handle: s.metrics.handler().ServeHTTP},
		public("GET", "/v1/openapi.json", handleOpenAPI),
		public("GET", "/v1/docs", s.handleDocs),
		public("GET", "/v1/docs/{file}", s.handleDocsFile),
		needs("POST", "/v1/jobs", PermJobsCreate, s.submitJob),
		needs("POST", "/v1/jobs/batch", PermJobsCreate, s.submitJobs),
		needs("GET", "/v1/jobs", PermJobsView, s.listJobs),
		needs("GET", "/v1/jobs/summary", PermJobsView, s.jobSummary),
		getJob,
		legacyAlias("/jobs/{id}", getJob, legacyJobsSince, legacyJobsSunset),
		needs("POST", "/v1/jobs/{id}/cancel", PermJobsCancel, s.cancelJob),
		needs("POST", "/v1/jobs/{id}/pause", PermJobsControl, s.pauseJob),
		needs("POST", "/v1/jobs/{id}/resume", PermJobsControl, s.resumeJob),
		needs("POST", "/v1/jobs/{id}/retry", PermJobsControl, s.retryJob),
		needs("GET", "/v1/jobs/{id}/logs", PermJobsView, s.jobLogs),
		needs("GET", "/v1/jobs/{id}/events", PermJobsView, s.jobEvents),
		needs("GET", "/v1/whoami", PermSelfView, s.whoami),
		needs("GET", "/v1/audit", PermAuditView, s.listAudit),
		needs("GET", "/v1/audit/verify", PermAuditVerify, s.verifyAudit),
		needs("GET", "/v1/users", PermUsersView, s.listUsers),
		needs("POST", "/v1/users", PermUsersManage, s.createUser),
		needs("GET", "/v1/users/{id}", PermUsersView, s.getUser),
		needs("PATCH", "/v1/users/{id}", PermUsersManage, s.updateUser),
		needs("GET", "/v1/users/{id}/keys", PermKeysSelf, s.listUserKeys),
		needs("POST", "/v1/users/{id}/keys", PermKeysSelf, s.createUserKey),
		needs("GET", "/v1/keys", PermKeysSelf, s.listKeys),
		needs("DELETE", "/v1/keys/{id}", PermKeysSelf, s.revokeKey),
		needs("POST", "/v1/keys/{id}/rotate", PermKeysSelf, s.rotateKey),
		needs("POST", "/v1/invitations", PermUsersManage, s.createInvitation),
		needs("GET", "/v1/invitations", PermUsersView, s.listInvitations),
		needs("DELETE", "/v1/invitations/{id}", PermUsersManage, s.revokeInvitation),
		selfChecked("POST", "/v1/invitations/accept", "an invitation token", s.acceptInvitation),
		needs("GET", "/v1/workers", PermWorkersView, s.listWorkers),
		needs("GET", "/v1/workers/{id}", PermWorkersView, s.getWorker),
		needs("POST", "/v1/worker-tokens", PermWorkersManage, s.createWorkerToken),
		needs("GET", "/v1/worker-tokens", PermWorkersManage, s.listWorkerTokens),
		needs("DELETE", "/v1/worker-tokens/{id}", PermWorkersManage, s.revokeWorkerToken),
		needs("POST", "/v1/workers/{id}/drain", PermWorkersManage, s.drainWorker(true)),
		needs("POST", "/v1/workers/{id}/undrain", PermWorkersManage, s.drainWorker(false)),
		needs("POST", "/v1/tenants", PermTenantsManage, s.createTenant),
		needs("GET", "/v1/tenants", PermTenantsView, s.listTenants),
		needs("GET", "/v1/tenants/{id}", PermTenantsView, s.getTenant),
		needs("PATCH", "/v1/tenants/{id}", PermTenantsManage, s.updateTenant),
		needs("DELETE", "/v1/tenants/{id}", PermTenantsManage, s.deleteTenant),
		needs("GET", "/v1/tenants/{id}/usage", PermTenantsView, s.tenantUsage),
		selfChecked("POST", "/v1/cluster/init", "a cluster-key proof", s.clusterInit),
		needs("GET", "/v1/cluster/members", PermClusterView, s.clusterMembers),
		// Each server's own report, gathered now: the view an operator
		// needs during an election, a partition or a store outage, so it
		// is local (no read barrier, which those would fail).
		{method: "GET", pattern: "/v1/cluster/status", perm: PermClusterView, local: true, handle: s.clusterStatus},
		selfChecked("POST", "/v1/cluster/join", "a cluster-key proof, or an API key with cluster.manage", s.clusterJoin),
		needs("POST", "/v1/cluster/remove", PermClusterManage, s.clusterRemove),
		needs("POST", "/v1/cluster/leave", PermClusterManage, s.clusterLeave),
		needs("POST", "/v1/cluster/transfer-leadership", PermClusterManage, s.clusterTransfer),
		needs("GET", "/v1/cluster/snapshot", PermClusterManage, s.clusterSnapshotSave),
		needs("POST", "/v1/cluster/snapshot", PermClusterManage, s.clusterSnapshotRestore),
	}
}

// statusWriter records the status code for metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
	// code is the error code writeError answered, if any.
	code fsm.Code
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// wrap adds a request ID, panic recovery, the read barrier of a read
// (before authentication, so that a key revoked before the read began is
// refused too; a request without a well-formed key is refused without
// one), authentication, the permission check, the actor of audit
// records (see audit.go) and metrics around a route's handler.
func (s *Server) wrap(rt route) http.Handler {
	name := rt.method + " " + rt.pattern
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		rid := requestID(r)
		sw.Header().Set(requestIDHeader, rid)
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, rid))
		if rt.deprecated != nil {
			rt.deprecated.setHeaders(sw.Header(), r)
			s.metrics.deprecatedCall(name)
		}
		defer func() {
			if v := recover(); v != nil {
				s.log.Error("handler panic", "route", name, "request_id", rid, "panic", v, "stack", string(debug.Stack()))
				if sw.status == 0 {
					s.writeError(sw, r, fmt.Errorf("panic: %v", v))
				}
			}
			s.metrics.observeRequest(name, sw.status, time.Since(start))
		}()
		if rt.isRead() && (rt.perm == permPublic || keyShaped(r)) {
			fresh, err := s.readBarrier(sw, r)
			if err != nil {
				s.writeError(sw, r, err)
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), readFreshKey{}, fresh))
		}
		if rt.local {
			// Always local, so stale changes nothing; a malformed one
			// is refused as on every other GET.
			if _, err := staleRequested(r); err != nil {
				s.writeError(sw, r, err)
				return
			}
		}
		if rt.perm == permPublic {
			rt.handle(sw, r)
			return
		}
		p, err := s.authenticate(r)
		if err != nil {
			s.writeError(sw, r, err)
			return
		}
		call := newAuditCall(r, rt, p)
		if err := authorizeRoute(r, p, rt.perm); err != nil {
			s.writeError(sw, r, err)
			s.auditUnapplied(r, sw, call)
			return
		}
		ctx := fsm.WithActor(withAccess(r.Context(), p, rt.perm), call.actor)
		r = r.WithContext(context.WithValue(ctx, auditCallKey{}, call))
		rt.handle(sw, r)
		s.auditUnapplied(r, sw, call)
	})
}

// setIndex reports the FSM index a response reflects.
func setIndex(w http.ResponseWriter, index uint64) {
	w.Header().Set("X-Ffrtmp-Index", strconv.FormatUint(index, 10))
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
