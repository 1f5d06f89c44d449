package server

import (
	"net/http"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Tenant is a tenant as the API shows it.
type Tenant struct {
	// ID is the tenant's name, a slug: the one name it is known by.
	ID     string       `json:"id"`
	Name   string       `json:"name"`
	Plan   string       `json:"plan"`
	Limits TenantLimits `json:"limits"`
	// Retention is how long the tenant's finished jobs are kept, a
	// duration such as "720h0m0s" ("0s": forever); absent, the
	// installation default (ffrtmp server --retention) applies.
	Retention string    `json:"retention,omitempty"`
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
	// Adopted is set by a create with migrate_existing: what it gave the
	// tenant.
	Adopted *Adopted `json:"adopted,omitempty"`
}

// TenantLimits are a tenant's quotas; 0 means unlimited.
type TenantLimits struct {
	MaxJobs           int     `json:"max_jobs"`
	MaxConcurrentJobs int     `json:"max_concurrent_jobs"`
	MaxWorkers        int     `json:"max_workers"`
	MaxCPU            float64 `json:"max_cpu"`
}

// Adopted counts the objects without a tenant that a create with
// migrate_existing found, just before it gave them to the tenant.
type Adopted struct {
	Jobs    int `json:"jobs"`
	Workers int `json:"workers"`
}

// CreateTenantRequest is the body of POST /v1/tenants.
type CreateTenantRequest struct {
	Name   string       `json:"name"`
	Plan   string       `json:"plan,omitempty"`
	Limits TenantLimits `json:"limits"`
	// Retention, if set, is the tenant's own retention (see Tenant).
	Retention string `json:"retention,omitempty"`
	// MigrateExisting gives the tenant every object without one (see
	// fsm.AdoptOrphans); with it, an existing tenant is not an error.
	MigrateExisting bool `json:"migrate_existing,omitempty"`
}

// UpdateTenantRequest is the body of PATCH /v1/tenants/{id}: what it
// names changes, the rest stays.
type UpdateTenantRequest struct {
	Plan     *string            `json:"plan,omitempty"`
	Limits   *TenantLimitsPatch `json:"limits,omitempty"`
	Disabled *bool              `json:"disabled,omitempty"`
	// Retention sets the tenant's own retention, a duration such as
	// "720h" ("0s" keeps finished jobs forever); "default" drops it, so
	// that the installation default applies.
	Retention *string `json:"retention,omitempty"`
}

// TenantLimitsPatch names the limits an update changes.
type TenantLimitsPatch struct {
	MaxJobs           *int     `json:"max_jobs,omitempty"`
	MaxConcurrentJobs *int     `json:"max_concurrent_jobs,omitempty"`
	MaxWorkers        *int     `json:"max_workers,omitempty"`
	MaxCPU            *float64 `json:"max_cpu,omitempty"`
}

// TenantUsage is a tenant's usage against each of its limits.
type TenantUsage struct {
	Tenant string `json:"tenant"`
	// Jobs: queued, assigned, running and paused jobs, against max_jobs.
	Jobs Quota `json:"jobs"`
	// ConcurrentJobs: jobs holding a worker (assigned, running, paused),
	// against max_concurrent_jobs.
	ConcurrentJobs Quota `json:"concurrent_jobs"`
	// Workers: dedicated workers up, against max_workers.
	Workers Quota `json:"workers"`
	// CPU: resources.cpu of the jobs holding a worker, against max_cpu.
	CPU Quota `json:"cpu"`
}

// Quota is one limit and the usage of it; a limit of 0 is unlimited.
type Quota struct {
	Limit float64 `json:"limit"`
	Usage float64 `json:"usage"`
}

func tenantView(t *fsm.Tenant) Tenant {
	l := t.Limits
	v := Tenant{
		ID: t.ID, Name: t.Name, Plan: t.Plan, Disabled: t.Disabled, CreatedAt: t.CreatedAt, CreatedBy: t.CreatedBy,
		Limits: TenantLimits{MaxJobs: l.MaxJobs, MaxConcurrentJobs: l.MaxConcurrentJobs, MaxWorkers: l.MaxWorkers, MaxCPU: l.MaxCPU},
	}
	if t.Retention != nil {
		v.Retention = time.Duration(*t.Retention).String()
	}
	return v
}

// parseRetention reads a retention of the tenants API: a Go duration,
// 0 or at least a minute (fsm validates the range).
func parseRetention(s string) (*fsm.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return nil, fsm.Errorf(fsm.CodeInvalidArgument, "retention %s: want a duration such as \"720h\" (\"0s\": forever) or \"default\"", echo(s))
	}
	r := fsm.Duration(d)
	return &r, nil
}

// principalName is how a tenant's created_by names the principal of a
// request: its user and key.
func principalName(p *Principal) string {
	return p.User + " (key " + p.KeyID + ")"
}

func (s *Server) createTenant(w http.ResponseWriter, r *http.Request) {
	var req CreateTenantRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := fsm.CheckTenantName(req.Name); err != nil {
		s.writeError(w, r, err)
		return
	}
	l := req.Limits
	t := fsm.Tenant{
		ID: req.Name, Name: req.Name, Plan: req.Plan, CreatedAt: s.now(), CreatedBy: principalName(principalOf(r)),
		Limits: fsm.Limits{MaxJobs: l.MaxJobs, MaxConcurrentJobs: l.MaxConcurrentJobs, MaxWorkers: l.MaxWorkers, MaxCPU: l.MaxCPU},
	}
	if req.Retention != "" {
		ret, err := parseRetention(req.Retention)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		t.Retention = ret
	}
	status := http.StatusCreated
	resp, err := s.raft.Apply(r.Context(), &fsm.CreateTenant{Tenant: t})
	if req.MigrateExisting && fsm.ErrorCode(err) == fsm.CodeAlreadyExists {
		// It exists (dev mode and cluster init create "default"): adopt
		// into it, unless it is a tombstone.
		if old, ok := s.fsm.Tenant(req.Name); ok && !old.Deleted() {
			resp, err, status = old, nil, http.StatusOK
		}
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := tenantView(resp.(*fsm.Tenant))
	if req.MigrateExisting {
		jobs, workers := s.fsm.Orphans()
		resp, err := s.raft.Apply(r.Context(), &fsm.AdoptOrphans{TenantID: req.Name, At: s.now()})
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		out = tenantView(resp.(*fsm.Tenant))
		out.Adopted = &Adopted{Jobs: jobs, Workers: workers}
	}
	w.Header().Set("Location", "/v1/tenants/"+out.ID)
	writeJSON(w, status, out)
}

// listTenants lists every tenant for a super-admin (or the one it names
// with ?tenant=), and the caller's own tenant for anyone else.
func (s *Server) listTenants(w http.ResponseWriter, r *http.Request) {
	index := s.fsm.Index()
	only := requestTenant(r, true)
	out := []Tenant{}
	for _, t := range s.fsm.Tenants() {
		if only == "" || t.ID == only {
			out = append(out, tenantView(t))
		}
	}
	setIndex(w, index)
	writeJSON(w, http.StatusOK, map[string]any{"tenants": out})
}

// scopedTenant returns the tenant the request's path names, checked with
// the route's permission. A tenant the caller may not see, or a deleted
// one, is not_found, so that another tenant's existence does not leak.
func (s *Server) scopedTenant(r *http.Request) (*fsm.Tenant, error) {
	id := r.PathValue("id")
	a := accessOf(r)
	t, ok := s.fsm.Tenant(id)
	if !ok || t.Deleted() || Authorize(a.p, PermTenantsView, id) != nil {
		return nil, fsm.Errorf(fsm.CodeNotFound, "tenant %s not found", echo(id))
	}
	if err := Authorize(a.p, a.perm, id); err != nil {
		return nil, err
	}
	return t, nil
}

func (s *Server) getTenant(w http.ResponseWriter, r *http.Request) {
	t, err := s.scopedTenant(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, tenantView(t))
}

func (s *Server) tenantUsage(w http.ResponseWriter, r *http.Request) {
	t, err := s.scopedTenant(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	u, l := s.fsm.Usage(t.ID), t.Limits
	writeJSON(w, http.StatusOK, TenantUsage{
		Tenant:         t.ID,
		Jobs:           Quota{Limit: float64(l.MaxJobs), Usage: float64(u.Jobs)},
		ConcurrentJobs: Quota{Limit: float64(l.MaxConcurrentJobs), Usage: float64(u.ConcurrentJobs)},
		Workers:        Quota{Limit: float64(l.MaxWorkers), Usage: float64(u.Workers)},
		CPU:            Quota{Limit: l.MaxCPU, Usage: u.CPU},
	})
}

func (s *Server) updateTenant(w http.ResponseWriter, r *http.Request) {
	var req UpdateTenantRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if _, err := s.scopedTenant(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	c := &fsm.UpdateTenant{ID: r.PathValue("id"), Plan: req.Plan, Disabled: req.Disabled, At: s.now()}
	if l := req.Limits; l != nil {
		c.MaxJobs, c.MaxConcurrentJobs, c.MaxWorkers, c.MaxCPU = l.MaxJobs, l.MaxConcurrentJobs, l.MaxWorkers, l.MaxCPU
	}
	switch {
	case req.Retention == nil:
	case *req.Retention == "default":
		c.DefaultRetention = true
	default:
		ret, err := parseRetention(*req.Retention)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		c.Retention = ret
	}
	resp, err := s.raft.Apply(r.Context(), c)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, tenantView(resp.(*fsm.Tenant)))
}

func (s *Server) deleteTenant(w http.ResponseWriter, r *http.Request) {
	if _, err := s.scopedTenant(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	if id == DefaultTenant {
		s.writeError(w, r, fsm.Errorf(fsm.CodeInvalidArgument, "the default tenant cannot be deleted"))
		return
	}
	if _, err := s.raft.Apply(r.Context(), &fsm.DeleteTenant{ID: id, At: s.now()}); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
