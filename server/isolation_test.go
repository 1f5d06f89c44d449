package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// outcome is what one request of the isolation matrix must get: allowed
// (ok), or refused with a status and its error code.
type outcome struct {
	status int // 0: allowed, the route's own answer (not 401, 403 or 404)
	code   string
}

var (
	ok  = outcome{}
	d40 = outcome{http.StatusForbidden, "permission_denied"}
	d44 = outcome{http.StatusNotFound, "not_found"}
)

// expect is a route's outcomes for superadmin, tenant_admin, operator
// and viewer (in that order), each on its own tenant and on the other.
type expect [4][2]outcome

// everyone is the same outcome for every role on both tenants.
func everyone(o outcome) expect {
	return expect{{o, o}, {o, o}, {o, o}, {o, o}}
}

var (
	// onlySuperAdmin: installation-wide routes.
	onlySuperAdmin = expect{{ok, ok}, {d40, d40}, {d40, d40}, {d40, d40}}
	// tenantList: a list or create of the tenant the request names.
	tenantRead   = expect{{ok, ok}, {ok, d40}, {ok, d40}, {ok, d40}}
	tenantCreate = expect{{ok, ok}, {ok, d40}, {ok, d40}, {d40, d40}}
	// objectRead / objectWrite: one job or worker of the own or the
	// other tenant, whose existence another tenant must not learn.
	objectRead   = expect{{ok, ok}, {ok, d44}, {ok, d44}, {ok, d44}}
	objectWrite  = expect{{ok, ok}, {ok, d44}, {ok, d44}, {d40, d40}}
	objectManage = expect{{ok, ok}, {ok, d44}, {d40, d40}, {d40, d40}}
	// tenantAdmin: a list or create in the tenant the request names,
	// which its tenant admins and a super-admin may make, no one else.
	tenantAdmin = expect{{ok, ok}, {ok, d40}, {d40, d40}, {d40, d40}}
	// tenantObject: a tenant's own record, which a tenant admin reads and
	// no one else but a super-admin.
	tenantObject = expect{{ok, ok}, {ok, d44}, {d40, d40}, {d40, d40}}
	// othersKeys: a user or key that is not the caller's own, which only
	// an admin of its tenant may see.
	othersKeys = expect{{ok, ok}, {ok, d44}, {d44, d44}, {d44, d44}}
	// d41: a credential of the route's own that the probe does not have.
	d41 = outcome{http.StatusUnauthorized, "unauthenticated"}
)

// isolationMatrix is the expected outcome of every route for every role
// on its own tenant and on another. A route missing here fails the test.
var isolationMatrix = map[string]expect{
	"GET /health":                          everyone(ok),
	"GET /ready":                           everyone(ok),
	"GET /metrics":                         onlySuperAdmin,
	"GET /v1/openapi.json":                 everyone(ok),
	"GET /v1/docs":                         everyone(ok),
	"GET /v1/docs/{file}":                  everyone(ok),
	"POST /v1/jobs":                        tenantCreate,
	"POST /v1/jobs/batch":                  tenantCreate,
	"GET /v1/jobs":                         tenantRead,
	"GET /v1/jobs/summary":                 tenantRead,
	"GET /v1/jobs/{id}":                    objectRead,
	"GET /jobs/{id}":                       objectRead, // the deprecated alias of GET /v1/jobs/{id}
	"POST /v1/jobs/{id}/cancel":            objectWrite,
	"POST /v1/jobs/{id}/pause":             objectWrite,
	"POST /v1/jobs/{id}/resume":            objectWrite,
	"POST /v1/jobs/{id}/retry":             objectWrite,
	"GET /v1/jobs/{id}/logs":               objectRead,
	"GET /v1/jobs/{id}/events":             objectRead,
	"GET /v1/whoami":                       tenantRead, // every role reads itself; naming another tenant is a super-admin's
	"GET /v1/audit":                        tenantAdmin,
	"GET /v1/audit/verify":                 onlySuperAdmin,
	"GET /v1/users":                        tenantAdmin,
	"POST /v1/users":                       tenantAdmin,
	"GET /v1/users/{id}":                   objectManage,
	"PATCH /v1/users/{id}":                 objectManage,
	"GET /v1/users/{id}/keys":              othersKeys,
	"POST /v1/users/{id}/keys":             othersKeys,
	"GET /v1/keys":                         tenantRead, // one's own keys; a tenant admin's lists the tenant's
	"DELETE /v1/keys/{id}":                 othersKeys,
	"POST /v1/keys/{id}/rotate":            othersKeys,
	"POST /v1/invitations":                 tenantAdmin,
	"GET /v1/invitations":                  tenantAdmin,
	"DELETE /v1/invitations/{id}":          objectManage,
	"POST /v1/invitations/accept":          everyone(d41), // takes an invitation token, never an API key; the probe's is wrong
	"GET /v1/workers":                      tenantRead,
	"GET /v1/workers/{id}":                 objectRead,
	"POST /v1/workers/{id}/drain":          objectManage,
	"POST /v1/workers/{id}/undrain":        objectManage,
	"POST /v1/tenants":                     onlySuperAdmin,
	"GET /v1/tenants":                      tenantAdmin,
	"GET /v1/tenants/{id}":                 tenantObject,
	"PATCH /v1/tenants/{id}":               onlySuperAdmin,
	"DELETE /v1/tenants/{id}":              expect{{d44, d44}, {d40, d40}, {d40, d40}, {d40, d40}}, // probed on a tenant that does not exist, so that no probe deletes one
	"GET /v1/tenants/{id}/usage":           tenantObject,
	"POST /v1/worker-tokens":               tenantAdmin,
	"GET /v1/worker-tokens":                tenantAdmin,
	"DELETE /v1/worker-tokens/{id}":        objectManage,
	"POST /v1/cluster/init":                everyone(d40), // takes a cluster-key proof, never an API key; this node has no cluster key
	"GET /v1/cluster/members":              onlySuperAdmin,
	"GET /v1/cluster/status":               onlySuperAdmin,
	"POST /v1/cluster/join":                onlySuperAdmin,
	"POST /v1/cluster/remove":              onlySuperAdmin,
	"POST /v1/cluster/leave":               onlySuperAdmin,
	"POST /v1/cluster/transfer-leadership": onlySuperAdmin,
	"GET /v1/cluster/snapshot":             onlySuperAdmin,
	"POST /v1/cluster/snapshot":            onlySuperAdmin,
}

// matrixBodies are the request bodies of the matrix. Those of the
// cluster operations are refused after authorization (no such node, not
// a snapshot), so that an allowed probe does not take the node down.
var matrixBodies = map[string]string{
	"POST /v1/jobs":                        queuedSpec,
	"POST /v1/jobs/batch":                  `{"items":[{"spec":` + queuedSpec + `}]}`,
	"POST /v1/tenants":                     `{"name":"matrix-new"}`,
	"PATCH /v1/tenants/{id}":               `{"plan":"matrix"}`,
	"POST /v1/users":                       `{"email":"new@matrix.example","role":"viewer"}`,
	"PATCH /v1/users/{id}":                 `{"role":"viewer"}`,
	"POST /v1/users/{id}/keys":             `{"name":"matrix"}`,
	"POST /v1/invitations":                 `{"email":"invited@matrix.example","role":"viewer"}`,
	"POST /v1/invitations/accept":          `{"token":"ffi_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`,
	"POST /v1/worker-tokens":               `{"name":"probe"}`,
	"POST /v1/cluster/join":                `{"addrs":["127.0.0.1:1"]}`,
	"POST /v1/cluster/remove":              `{"node":"no-such-node"}`,
	"POST /v1/cluster/transfer-leadership": `{"node":"no-such-node"}`,
	"POST /v1/cluster/snapshot":            "not a snapshot",
}

// tenantFixture is one tenant of the matrix: its keys by role, a job, a
// dedicated worker, an operator user with a key of its own, and an
// invitation.
type tenantFixture struct {
	id          string
	keys        map[fsm.Role]string
	job         string
	worker      string
	workerToken string
	user        string
	key         string
	invite      string
}

// objectOf returns the object of tf that a route pattern's {id} names.
func (tf *tenantFixture) objectOf(pattern string) string {
	switch {
	case strings.HasPrefix(pattern, "/v1/worker-tokens/{id}"):
		return tf.workerToken
	case strings.HasPrefix(pattern, "/v1/workers/{id}"):
		return tf.worker
	case strings.HasPrefix(pattern, "/v1/users/{id}"):
		return tf.user
	case strings.HasPrefix(pattern, "/v1/keys/{id}"):
		return tf.key
	case strings.HasPrefix(pattern, "/v1/invitations/{id}"):
		return tf.invite
	case strings.HasPrefix(pattern, "/v1/tenants/{id}"):
		return tf.id
	}
	return tf.job
}

// secrets returns what no answer to another tenant's key may show: the
// tenant's ID, its job's and worker's, its users and its keys' IDs.
func (f *tenantFixture) secrets() []string {
	out := []string{f.id, f.job, f.worker, f.workerToken, f.user, f.key, f.invite}
	for r, tok := range f.keys {
		out = append(out, string(r)+"@"+f.id, keyID(tok))
	}
	return out
}

// keyID returns the ID of an API key (ffk_<id>_<secret>).
func keyID(tok string) string {
	parts := strings.SplitN(tok, "_", 3)
	if len(parts) < 3 {
		return ""
	}
	return parts[1]
}

// matrixPath returns the path a matrix probe of pattern uses on tenant
// fixture tf: its object for {id}, and ?tenant= naming the other tenant
// on a route without one; a file of the documentation page for {file}.
func matrixPath(pattern string, tf, other *tenantFixture) string {
	path := strings.ReplaceAll(pattern, "{id}", tf.objectOf(pattern))
	path = strings.ReplaceAll(path, "{file}", "init.js")
	if !strings.Contains(pattern, "{id}") && tf == other {
		path += "?tenant=" + other.id
	}
	return path
}

// ghostID returns an ID of the same form as id that names nothing: its
// last letter or digit changed. A refusal to see another tenant's object
// must read exactly as the answer for a ghost, so that it tells nothing
// about the object, not even that it exists.
func ghostID(id string) string {
	b := []byte(id)
	for i := len(b) - 1; i >= 0; i-- {
		switch c := b[i]; {
		case c >= '0' && c <= '9':
			b[i] = '0' + (c-'0'+1)%10
		case c >= 'a' && c <= 'f':
			b[i] = 'a' + (c-'a'+1)%6
		case c >= 'g' && c <= 'z':
			b[i] = 'g' + (c-'g'+1)%20
		default:
			continue
		}
		return string(b)
	}
	return id + "0"
}

// TestIsolationMatrix runs every route × every role × own and other
// tenant against a real single-node cluster, and checks that no answer
// to a tenant's key shows another tenant's data.
func TestIsolationMatrix(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	ctx := context.Background()
	now := time.Now().UTC()
	roles := []fsm.Role{fsm.RoleSuperAdmin, fsm.RoleTenantAdmin, fsm.RoleOperator, fsm.RoleViewer}
	mk := func(id string) *tenantFixture {
		f := &tenantFixture{id: id, keys: map[fsm.Role]string{}, worker: "w-" + id}
		if _, err := e.node.Apply(ctx, &fsm.CreateTenant{Tenant: fsm.Tenant{ID: id, Name: id, CreatedAt: now}}); err != nil {
			t.Fatal(err)
		}
		for _, r := range roles {
			tok, key := server.NewAPIKey(id, string(r)+"@"+id, r, now, 0)
			if _, err := e.node.Apply(ctx, &fsm.CreateAPIKey{Key: key}); err != nil {
				t.Fatal(err)
			}
			f.keys[r] = tok
		}
		_, wt := server.NewWorkerToken(id, "rack "+id, "test", now)
		if _, err := e.node.Apply(ctx, &fsm.CreateWorkerToken{Token: wt}); err != nil {
			t.Fatal(err)
		}
		f.workerToken = wt.ID
		w := fsm.Worker{ID: f.worker, TenantID: id, Name: f.worker, State: fsm.WorkerUp, Incarnation: "1"}
		if _, err := e.node.Apply(ctx, &fsm.RegisterWorker{Worker: w, At: now}); err != nil {
			t.Fatal(err)
		}
		var j fsm.Job
		if resp := e.do("POST", "/v1/jobs?tenant="+id, queuedSpec, &j); resp.StatusCode != http.StatusCreated || j.TenantID != id {
			t.Fatalf("submit to %s: status %d, tenant %q", id, resp.StatusCode, j.TenantID)
		}
		f.job = j.ID
		f.user, f.key, f.invite = "u-"+id, "ab"+strings.Repeat("0", 12)+id[:2], "cd"+strings.Repeat("0", 12)+id[:2]
		u := fsm.User{ID: f.user, Email: "victim@" + id + ".example", TenantID: id, Role: fsm.RoleOperator, CreatedAt: now}
		_, key := server.NewAPIKey(id, u.Email, u.Role, now, 0)
		key.ID, key.UserID = f.key, u.ID
		if _, err := e.node.Apply(ctx, &fsm.CreateUser{User: u, Key: &key}); err != nil {
			t.Fatal(err)
		}
		inv := fsm.Invitation{ID: f.invite, TenantID: id, Email: "invitee@" + id + ".example", Role: fsm.RoleViewer,
			Hash: key.Hash, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		if _, err := e.node.Apply(ctx, &fsm.CreateInvitation{Invitation: inv}); err != nil {
			t.Fatal(err)
		}
		return f
	}
	own, other := mk("acme"), mk("globex")
	shared := fsm.Worker{ID: "w-shared", Name: "w-shared", State: fsm.WorkerUp, Incarnation: "1"}
	if _, err := e.node.Apply(ctx, &fsm.RegisterWorker{Worker: shared, At: now}); err != nil {
		t.Fatal(err)
	}
	heartbeat(t, e, own.worker, other.worker, shared.ID)

	routes := e.srv.RouteKeys()
	for _, rk := range routes {
		if _, ok := isolationMatrix[rk]; !ok {
			t.Errorf("route %s has no entry in the isolation matrix", rk)
		}
	}
	for rk := range isolationMatrix {
		if !slices.Contains(routes, rk) {
			t.Errorf("the isolation matrix names %s, which no route serves", rk)
		}
	}
	// Least powerful first, so that an allowed probe of a more powerful
	// role (a cancel) does not change what a weaker one is tested on.
	for ri := len(roles) - 1; ri >= 0; ri-- {
		role := roles[ri]
		for _, rk := range routes {
			for side, tf := range []*tenantFixture{own, other} {
				want := isolationMatrix[rk][ri][side]
				method, pattern, _ := strings.Cut(rk, " ")
				path := matrixPath(pattern, tf, other)
				if rk == "DELETE /v1/tenants/{id}" {
					path = "/v1/tenants/no-such-tenant"
				}
				status, ctype, body := probe(t, e.url, own.keys[role], method, path, matrixBodies[rk])
				name := string(role) + " " + method + " " + path
				switch {
				case want == ok && (status == 401 || status == 403 || status == 404):
					t.Errorf("%s: status %d %s, want allowed", name, status, body)
				case want != ok:
					var ae apiError
					json.Unmarshal([]byte(body), &ae)
					if status != want.status || ae.Error.Code != want.code {
						t.Errorf("%s: status %d %q, want %d %s", name, status, body, want.status, want.code)
					}
				}
				if rk == "GET /v1/openapi.json" {
					continue
				}
				// No answer, to any role, shows a hash, a host path, a
				// create_index or an incarnation.
				for _, payload := range answerPayloads(ctype, body) {
					for _, v := range server.FindInternals(payload, documentedInternals[rk], e.dataDir) {
						t.Errorf("%s: %s", name, v)
					}
				}
				// A refusal to see the other tenant's object is the
				// answer for an object that does not exist.
				if side == 1 && want.status == http.StatusNotFound && strings.Contains(pattern, "{id}") {
					real := strings.TrimPrefix(path, strings.Split(pattern, "{id}")[0])
					real, _, _ = strings.Cut(real, "/")
					ghost := ghostID(real)
					gs, _, gbody := probe(t, e.url, own.keys[role], method, strings.Replace(path, real, ghost, 1), matrixBodies[rk])
					if gs != status || strings.ReplaceAll(gbody, ghost, real) != body {
						t.Errorf("%s: the refusal %d %s differs from the answer for an object that does not exist: %d %s", name, status, body, gs, gbody)
					}
				}
				if role == fsm.RoleSuperAdmin || strings.HasPrefix(ctype, "application/vnd.oai") {
					continue
				}
				if rk == "GET /v1/audit" && want == ok {
					// The own tenant's records only; the other tenant's
					// IDs appear only where one of this tenant's own
					// callers named them, as a refused call's target.
					var page server.AuditPage
					json.Unmarshal([]byte(body), &page)
					for _, rec := range page.Records {
						if rec.Tenant != own.id {
							t.Errorf("%s: a record of tenant %q: %+v", name, rec.Tenant, rec)
						}
						if rec.Target != "" && rec.Target != other.id && rec.Target != other.job && rec.Target != other.worker {
							continue
						}
						if rec.Target != "" && (rec.ActorTenant != own.id || rec.Result != "permission_denied") {
							t.Errorf("%s: a record shows %q of tenant %s: %+v", name, rec.Target, other.id, rec)
						}
						rec.Target = ""
						if js, _ := json.Marshal(rec); strings.Contains(string(js), other.id) || strings.Contains(string(js), other.job) {
							t.Errorf("%s: a record shows tenant %s: %s", name, other.id, js)
						}
					}
					continue
				}
				// Nothing a tenant's key is answered shows the other
				// tenant: not its name, its jobs, its workers, its users or
				// its keys, except the ID the request itself named.
				for _, secret := range other.secrets() {
					if secret != "" && strings.Contains(body, secret) && !strings.Contains(path, secret) {
						t.Errorf("%s: the answer shows %q of tenant %s: %s", name, secret, other.id, body)
					}
				}
			}
		}
	}

	// Lists show the own tenant's objects (and the shared pool), never
	// the other's; a super-admin sees both.
	for _, role := range roles[1:] {
		var page fsm.JobPage
		e.doKey(own.keys[role], "GET", "/v1/jobs", nil, &page)
		if len(page.Jobs) == 0 {
			t.Errorf("%s sees no job of its own tenant", role)
		}
		for _, j := range page.Jobs {
			if j.TenantID != own.id {
				t.Errorf("%s sees job %s of tenant %s", role, j.ID, j.TenantID)
			}
		}
		var ws struct{ Workers []fsm.Worker }
		e.doKey(own.keys[role], "GET", "/v1/workers", nil, &ws)
		var ids []string
		for _, w := range ws.Workers {
			ids = append(ids, w.ID)
		}
		slices.Sort(ids)
		if want := []string{own.worker, "w-shared"}; !slices.Equal(ids, want) {
			t.Errorf("%s sees workers %v, want %v", role, ids, want)
		}
	}
	// The job summary counts the jobs the same key lists as queued: the
	// own tenant's; a super-admin's every tenant's, or the one it names.
	queued := func(key, query string) int {
		var page fsm.JobPage
		e.doKey(key, "GET", "/v1/jobs?state=queued&limit=1000"+query, nil, &page)
		return len(page.Jobs)
	}
	for _, role := range roles {
		var sum server.JobSummary
		e.doKey(own.keys[role], "GET", "/v1/jobs/summary", nil, &sum)
		if got, want := sum.States[fsm.JobQueued], queued(own.keys[role], ""); got != want || want == 0 {
			t.Errorf("%s: the job summary counts %d queued jobs, the list %d: %+v", role, got, want, sum)
		}
	}
	var named0 server.JobSummary
	e.doKey(own.keys[fsm.RoleSuperAdmin], "GET", "/v1/jobs/summary?tenant="+other.id, nil, &named0)
	if got, want := named0.States[fsm.JobQueued], queued(own.keys[fsm.RoleSuperAdmin], "&tenant="+other.id); named0.Tenant != other.id || got != want || want == 0 {
		t.Errorf("a super-admin naming %s: summary %+v, want %d queued", other.id, named0, want)
	}
	var all struct{ Workers []fsm.Worker }
	e.doKey(own.keys[fsm.RoleSuperAdmin], "GET", "/v1/workers", nil, &all)
	if len(all.Workers) != 3 {
		t.Errorf("a super-admin sees %d workers, want 3", len(all.Workers))
	}
	var named struct{ Workers []fsm.Worker }
	e.doKey(own.keys[fsm.RoleSuperAdmin], "GET", "/v1/workers?tenant="+other.id, nil, &named)
	for _, w := range named.Workers {
		if w.TenantID != "" && w.TenantID != other.id {
			t.Errorf("a super-admin naming %s sees worker %s of %s", other.id, w.ID, w.TenantID)
		}
	}

	// The shared pool is visible to a tenant admin but managed by a
	// super-admin only: a refusal, not a pretence that it does not exist.
	var ae apiError
	if resp := e.doKey(own.keys[fsm.RoleTenantAdmin], "POST", "/v1/workers/w-shared/drain", nil, &ae); resp.StatusCode != 403 || ae.Error.Code != "permission_denied" {
		t.Errorf("tenant admin drains the shared pool: %d %+v, want 403 permission_denied", resp.StatusCode, ae)
	}
	// Naming the other tenant is refused as such, whatever the object.
	if resp := e.doKey(own.keys[fsm.RoleOperator], "GET", "/v1/jobs/"+other.job+"?tenant="+other.id, nil, &ae); resp.StatusCode != 403 || ae.Error.Code != "permission_denied" {
		t.Errorf("operator names the other tenant: %d %+v, want 403 permission_denied", resp.StatusCode, ae)
	}
	var wk fsm.Worker
	if resp := e.doKey(own.keys[fsm.RoleTenantAdmin], "POST", "/v1/workers/"+own.worker+"/drain", nil, &wk); resp.StatusCode != 200 || !wk.Draining {
		t.Errorf("tenant admin drains its own worker: %d draining %v", resp.StatusCode, wk.Draining)
	}

	// Worker tokens: a tenant admin lists and makes its own tenant's; a
	// super-admin's default is the shared pool, which only it may make.
	var tokens struct{ Tokens []server.WorkerTokenView }
	e.doKey(own.keys[fsm.RoleTenantAdmin], "GET", "/v1/worker-tokens", nil, &tokens)
	for _, tv := range tokens.Tokens {
		if tv.TenantID != own.id {
			t.Errorf("tenant admin lists worker token %s of %q", tv.ID, tv.TenantID)
		}
	}
	var created server.CreatedWorkerToken
	if resp := e.doKey(own.keys[fsm.RoleTenantAdmin], "POST", "/v1/worker-tokens", map[string]string{}, &created); resp.StatusCode != 201 || created.WorkerToken.TenantID != own.id || !strings.HasPrefix(created.Token, "ffw_") {
		t.Errorf("tenant admin creates a worker token: %d %+v", resp.StatusCode, created.WorkerToken)
	}
	if resp := e.doKey(own.keys[fsm.RoleTenantAdmin], "POST", "/v1/worker-tokens", map[string]string{"tenant_id": other.id}, &ae); resp.StatusCode != 403 {
		t.Errorf("tenant admin creates a worker token for the other tenant: %d %+v, want 403", resp.StatusCode, ae)
	}
	if resp := e.doKey(own.keys[fsm.RoleSuperAdmin], "POST", "/v1/worker-tokens", map[string]string{}, &created); resp.StatusCode != 201 || created.WorkerToken.TenantID != "" {
		t.Errorf("super-admin creates a worker token: %d %+v, want the shared pool", resp.StatusCode, created.WorkerToken)
	}
	checkCrossTenantLeaks(t, e, roles, routes, own, other)
}

// probe sends one request with key and returns its status, content type
// and body (for an event stream, its first event only).
func probe(t *testing.T, base, key, method, path, body string) (int, string, string) {
	t.Helper()
	status, ctype, b := probeEvents(t, base, key, method, path, body, 1)
	return status, ctype, string(b)
}
