package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Raft is what the server needs of the cluster node.
type Raft interface {
	// Apply proposes a command and returns the FSM's response.
	Apply(ctx context.Context, c fsm.Command) (any, error)
	// Leader returns the leader's address and ID, empty if none.
	Leader() (addr, id string)
	// CaughtUp reports whether this node has applied all it knows is
	// committed.
	CaughtUp() bool
}

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
}

// Server is the HTTP API of one node. Every node serves it; reads come
// from local state, writes go through Raft.
type Server struct {
	fsm     *fsm.FSM
	raft    Raft
	policy  fsm.Policy
	metrics *Metrics
	log     *slog.Logger
	logs    LogSource
	now     func() time.Time
	mux     *http.ServeMux
}

// New builds a Server.
func New(cfg Config) (*Server, error) {
	if err := fsm.ValidatePolicy(cfg.Policy); err != nil {
		return nil, err
	}
	s := &Server{
		fsm: cfg.FSM, raft: cfg.Raft, policy: cfg.Policy, metrics: cfg.Metrics,
		log: cfg.Logger, logs: cfg.Logs, now: cfg.Now, mux: http.NewServeMux(),
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
	for _, rt := range s.routes() {
		s.mux.Handle(rt.method+" "+rt.pattern, s.wrap(rt))
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, fsm.Errorf(fsm.CodeNotFound, "no route for %s %s", r.Method, r.URL.Path))
	})
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// route is one API endpoint. The route table is the single source for the
// mux and for the test that checks it against the OpenAPI document.
type route struct {
	method  string
	pattern string
	perm    permission
	handle  func(w http.ResponseWriter, r *http.Request)
}

func (s *Server) routes() []route {
	return []route{
		{"GET", "/health", permPublic, s.handleHealth},
		{"GET", "/ready", permPublic, s.handleReady},
		{"GET", "/metrics", permPublic, s.metrics.handler().ServeHTTP},
		{"GET", "/v1/openapi.json", permPublic, handleOpenAPI},
		{"POST", "/v1/jobs", permWrite, s.submitJob},
		{"GET", "/v1/jobs", permRead, s.listJobs},
		{"GET", "/v1/jobs/{id}", permRead, s.getJob},
		{"POST", "/v1/jobs/{id}/cancel", permWrite, s.cancelJob},
		{"POST", "/v1/jobs/{id}/pause", permWrite, s.pauseJob},
		{"POST", "/v1/jobs/{id}/resume", permWrite, s.resumeJob},
		{"POST", "/v1/jobs/{id}/retry", permWrite, s.retryJob},
		{"GET", "/v1/jobs/{id}/logs", permRead, s.jobLogs},
		{"GET", "/v1/jobs/{id}/events", permRead, s.jobEvents},
		{"GET", "/v1/workers", permRead, s.listWorkers},
		{"GET", "/v1/workers/{id}", permRead, s.getWorker},
	}
}

// statusWriter records the status code for metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
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

// wrap adds panic recovery, authentication, the permission check and
// metrics around a route's handler.
func (s *Server) wrap(rt route) http.Handler {
	name := rt.method + " " + rt.pattern
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				s.log.Error("handler panic", "route", name, "panic", v, "stack", string(debug.Stack()))
				if sw.status == 0 {
					s.writeError(sw, r, fmt.Errorf("panic: %v", v))
				}
			}
			s.metrics.observeRequest(name, sw.status, time.Since(start))
		}()
		if rt.perm != permPublic {
			p, err := s.authenticate(r)
			if err != nil {
				s.writeError(sw, r, err)
				return
			}
			if !allowed(p.Role, rt.perm) {
				s.writeError(sw, r, fsm.Errorf(CodePermissionDenied, "role %s may not %s", p.Role, name))
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
		}
		rt.handle(sw, r)
	})
}

func (s *Server) principal(r *http.Request) *Principal {
	p, _ := PrincipalFrom(r.Context())
	return p
}

// setIndex reports the FSM index a response reflects.
func setIndex(w http.ResponseWriter, index uint64) {
	w.Header().Set("X-Ffrtmp-Index", strconv.FormatUint(index, 10))
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleReady reports whether this node can serve: a leader is known, the
// store answers, and this node has applied what it knows is committed.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	checks := map[string]string{}
	ok := true
	if addr, _ := s.raft.Leader(); addr == "" {
		checks["leader"], ok = "no leader", false
	} else {
		checks["leader"] = "ok"
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.fsm.Store().Ping(ctx); err != nil {
		checks["store"], ok = err.Error(), false
	} else {
		checks["store"] = "ok"
	}
	if !s.raft.CaughtUp() {
		checks["applied"], ok = "catching up", false
	} else {
		checks["applied"] = "ok"
	}
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]any{"ready": ok, "checks": checks, "index": s.fsm.Index()})
}
