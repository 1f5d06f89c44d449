package server

import (
	"context"
	"net/http"
	"slices"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// This file is the API's one authorizer. Every decision of who may do
// what, to which tenant, is Authorize's: the route wrapper asks it with
// the route's permission and the tenant the request acts on, and every
// object check (a job, a worker) asks it again with the object's tenant.
// Handlers never compare roles or tenants themselves.

// Permission names one thing a principal may do. The names are stable:
// they appear in docs/security.md and, later, in key scopes.
type Permission string

// Permissions, by the resource they govern.
const (
	PermSelfView      Permission = "self.view"      // read one's own identity: user, key, tenant, role (whoami)
	PermJobsView      Permission = "jobs.view"      // read jobs, their logs and events
	PermJobsCreate    Permission = "jobs.create"    // submit jobs
	PermJobsCancel    Permission = "jobs.cancel"    // cancel jobs
	PermJobsControl   Permission = "jobs.control"   // pause, resume, retry jobs
	PermWorkersView   Permission = "workers.view"   // read the tenant's and the shared workers
	PermWorkersManage Permission = "workers.manage" // drain and undrain the tenant's dedicated workers
	PermTenantsView   Permission = "tenants.view"   // read the tenant, its limits and usage
	PermTenantsManage Permission = "tenants.manage" // create, update, disable and delete tenants
	PermUsersView     Permission = "users.view"     // read the tenant's users
	PermUsersManage   Permission = "users.manage"   // create, disable users; invite
	PermKeysSelf      Permission = "keys.self"      // list, create, revoke and rotate one's own keys
	PermKeysManage    Permission = "keys.manage"    // create, revoke, rotate the keys of the tenant's users
	PermAuditView     Permission = "audit.view"     // read the tenant's audit records
	PermAuditVerify   Permission = "audit.verify"   // verify the installation's audit chain
	PermClusterView   Permission = "cluster.view"   // read members and Raft status
	PermClusterManage Permission = "cluster.manage" // join, remove, leave, transfer, snapshots
	PermMetricsView   Permission = "metrics.view"   // scrape /metrics, which names every tenant
)

// permPublic marks a route that needs no API key; such a route either
// serves nothing a tenant owns or checks a credential of its own.
const permPublic Permission = "public"

// installationWide holds the permissions that concern the installation,
// not one tenant: Authorize checks them against tenant "", which only a
// super-admin may act on.
var installationWide = []Permission{PermTenantsManage, PermClusterView, PermClusterManage, PermAuditVerify}

// isInstallationWide reports whether perm concerns the installation.
func isInstallationWide(perm Permission) bool { return slices.Contains(installationWide, perm) }

// roleGrant is one role's own grants; it also holds those of every role
// below it.
type roleGrant struct {
	role   fsm.Role
	grants []Permission
}

// roleChain is the roles from least to most powerful, each with the
// permissions it adds to the role before it. A TenantAdmin runs its
// tenant: its people, keys and dedicated workers; only a SuperAdmin acts
// on other tenants, on the shared worker pool and on the cluster.
var roleChain = []roleGrant{
	{fsm.RoleViewer, []Permission{PermSelfView, PermKeysSelf, PermJobsView, PermWorkersView}},
	{fsm.RoleOperator, []Permission{PermJobsCreate, PermJobsCancel, PermJobsControl}},
	{fsm.RoleTenantAdmin, []Permission{PermWorkersManage, PermTenantsView, PermUsersView, PermUsersManage, PermKeysManage, PermAuditView}},
	{fsm.RoleSuperAdmin, []Permission{PermTenantsManage, PermClusterView, PermClusterManage, PermAuditVerify, PermMetricsView}},
}

// AllPermissions returns every permission, in the order of the roles that
// first grant them.
func AllPermissions() []Permission {
	var out []Permission
	for _, g := range roleChain {
		out = append(out, g.grants...)
	}
	return out
}

// Roles returns the roles from least to most powerful.
func Roles() []fsm.Role {
	out := make([]fsm.Role, len(roleChain))
	for i, g := range roleChain {
		out[i] = g.role
	}
	return out
}

// RolePermissions returns what role may do: its own grants and those of
// every role below it. An unknown role may do nothing.
func RolePermissions(role fsm.Role) []Permission {
	var out []Permission
	for _, g := range roleChain {
		out = append(out, g.grants...)
		if g.role == role {
			return out
		}
	}
	return nil
}

// roleGrants reports whether RolePermissions(role) holds perm, without
// building the list: Authorize asks it on every request.
func roleGrants(role fsm.Role, perm Permission) bool {
	found := false
	for _, g := range roleChain {
		found = found || slices.Contains(g.grants, perm)
		if g.role == role {
			return found
		}
	}
	return false
}

// knownPermission reports whether perm is in the roles table.
func knownPermission(perm Permission) bool {
	return slices.Contains(AllPermissions(), perm)
}

// Authorize decides whether p may use perm on tenant ("" meaning the
// installation as a whole): the role must grant perm, and the tenant
// must be p's own unless p is a super-admin. The error is
// permission_denied; an object check turns it into not_found when the
// principal may not even see the object (authorizeJob, authorizeWorker).
func Authorize(p *Principal, perm Permission, tenant string) error {
	if p == nil {
		return fsm.Errorf(CodeUnauthenticated, "an API key is required: Authorization: Bearer <key>")
	}
	if !roleGrants(p.Role, perm) {
		return fsm.Errorf(CodePermissionDenied, "role %s lacks permission %s", p.Role, perm)
	}
	if !inScopes(p, perm) {
		return fsm.Errorf(CodePermissionDenied, "the API key's scopes do not include %s", perm)
	}
	if p.Role == fsm.RoleSuperAdmin {
		return nil
	}
	if tenant == "" {
		return fsm.Errorf(CodePermissionDenied, "permission %s on the whole installation is for a super-admin", perm)
	}
	if tenant != p.TenantID {
		return fsm.Errorf(CodePermissionDenied, "only a super-admin may act on another tenant")
	}
	return nil
}

// access is what the route wrapper leaves in a request's context: the
// principal and the permission its route requires.
type access struct {
	p    *Principal
	perm Permission
}

type accessKey struct{}

// withAccess returns ctx carrying the principal and its route's permission.
func withAccess(ctx context.Context, p *Principal, perm Permission) context.Context {
	ctx = context.WithValue(ctx, principalKey{}, p)
	return context.WithValue(ctx, accessKey{}, access{p: p, perm: perm})
}

// namedTenant returns the tenant a request names with ?tenant=, or the
// principal's own.
func namedTenant(r *http.Request, p *Principal) string {
	if t := r.URL.Query().Get("tenant"); t != "" {
		return t
	}
	return p.TenantID
}

// authorizeRoute is the route wrapper's check: the route's permission on
// the tenant the request acts on (the named one or the principal's own),
// or on the installation for installation-wide permissions.
func authorizeRoute(r *http.Request, p *Principal, perm Permission) error {
	tenant := namedTenant(r, p)
	if isInstallationWide(perm) {
		tenant = ""
	}
	return Authorize(p, perm, tenant)
}

// requestTenant returns the tenant a request acts on, already authorized
// by the route wrapper: the one named by ?tenant=, else the principal's
// own, or "" (every tenant) for a super-admin on a route that allows it.
func requestTenant(r *http.Request, allowAll bool) string {
	p := principalOf(r)
	if t := r.URL.Query().Get("tenant"); t != "" {
		return t
	}
	if allowAll && p.Role == fsm.RoleSuperAdmin {
		return ""
	}
	return p.TenantID
}

// principalOf returns the principal the route wrapper authenticated.
func principalOf(r *http.Request) *Principal { return accessOf(r).p }

// accessOf returns what the route wrapper left in the request's context.
func accessOf(r *http.Request) access {
	a, _ := r.Context().Value(accessKey{}).(access)
	return a
}

// authorizeJob checks the request's route permission on job j. A job the
// principal may not even see is not_found, so that the existence of
// another tenant's job does not leak.
func authorizeJob(r *http.Request, j *fsm.Job) error {
	a := accessOf(r)
	if Authorize(a.p, PermJobsView, j.TenantID) != nil {
		return fsm.Errorf(fsm.CodeNotFound, "job %s not found", j.ID)
	}
	if err := Authorize(a.p, a.perm, j.TenantID); err != nil {
		return err
	}
	auditTenant(r, j.TenantID)
	return nil
}

// authorizeWorker checks the request's route permission on worker wk. A
// worker the principal may not even see is not_found; a visible one it may
// not manage (the shared pool, for a tenant admin) is permission_denied.
func authorizeWorker(r *http.Request, wk *fsm.Worker) error {
	a := accessOf(r)
	if !visibleWorker(a.p, wk) {
		return fsm.Errorf(fsm.CodeNotFound, "worker %s not found", echo(wk.ID))
	}
	if err := Authorize(a.p, a.perm, workerOwner(a.p, a.perm, wk)); err != nil {
		return err
	}
	auditTenant(r, wk.TenantID)
	return nil
}

// visibleWorker reports whether p may see worker wk.
func visibleWorker(p *Principal, wk *fsm.Worker) bool {
	return Authorize(p, PermWorkersView, workerOwner(p, PermWorkersView, wk)) == nil
}

// workerOwner returns the tenant a worker is checked against for perm: a
// dedicated worker's tenant; for the shared pool (no tenant) reading is
// every tenant's right (their jobs run there), while managing it is
// installation-wide.
func workerOwner(p *Principal, perm Permission, wk *fsm.Worker) string {
	if wk.TenantID == "" && perm == PermWorkersView && p != nil {
		return p.TenantID
	}
	return wk.TenantID
}
