package server

import (
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

var update = flag.Bool("update", false, "rewrite the roles table in docs/security.md from the authorizer")

// rolesTable renders the authorizer's roles table as Markdown: one row
// per permission, one column per role, least powerful first.
func rolesTable() string {
	var b strings.Builder
	b.WriteString("| permission |")
	for _, r := range Roles() {
		b.WriteString(" `" + string(r) + "` |")
	}
	b.WriteString("\n| --- |")
	for range Roles() {
		b.WriteString(" :-: |")
	}
	b.WriteString("\n")
	for _, perm := range AllPermissions() {
		b.WriteString("| `" + string(perm) + "` |")
		for _, r := range Roles() {
			cell := " |"
			if slices.Contains(RolePermissions(r), perm) {
				cell = " ✓ |"
			}
			b.WriteString(cell)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// routesTable renders the permission each route requires as Markdown.
func routesTable() string {
	var b strings.Builder
	b.WriteString("| route | permission |\n| --- | --- |\n")
	for _, rt := range (&Server{metrics: NewMetrics()}).routes() {
		perm := "`" + string(rt.perm) + "`"
		if rt.perm == permPublic {
			perm = "none (public)"
		}
		if rt.checks != "" {
			perm = "none; the handler checks " + rt.checks
		}
		b.WriteString("| `" + rt.method + " " + rt.pattern + "` | " + perm + " |\n")
	}
	return b.String()
}

// TestRolesTableDocumented fails when the roles table or the routes
// table in docs/security.md differs from the code; -update rewrites them.
func TestRolesTableDocumented(t *testing.T) {
	const path = "../docs/security.md"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, table := range []struct{ name, text string }{{"roles", rolesTable()}, {"routes", routesTable()}} {
		begin := "<!-- " + table.name + " table: generated from server/authz.go by go test ./server -run TestRolesTableDocumented -update -->\n"
		end := "<!-- end of " + table.name + " table -->\n"
		i, j := strings.Index(doc, begin), strings.Index(doc, end)
		if i < 0 || j < i {
			t.Fatalf("%s has no %s table between the markers %q and %q", path, table.name, begin, end)
		}
		if got := doc[i+len(begin) : j]; got != table.text {
			if !*update {
				t.Errorf("the %s table in %s differs from the code (go test ./server -run TestRolesTableDocumented -update):\ngot:\n%s\nwant:\n%s", table.name, path, got, table.text)
				continue
			}
			doc = doc[:i+len(begin)] + table.text + doc[j:]
		}
	}
	if *update && doc != string(data) {
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRolesInherit checks the chain of inheritance: each role holds
// everything the role below it holds, and more.
func TestRolesInherit(t *testing.T) {
	roles := Roles()
	if want := []fsm.Role{fsm.RoleViewer, fsm.RoleOperator, fsm.RoleTenantAdmin, fsm.RoleSuperAdmin}; !slices.Equal(roles, want) {
		t.Fatalf("roles %v, want %v", roles, want)
	}
	for i := 1; i < len(roles); i++ {
		lower, higher := RolePermissions(roles[i-1]), RolePermissions(roles[i])
		if len(higher) <= len(lower) {
			t.Errorf("%s holds no more than %s", roles[i], roles[i-1])
		}
		for _, p := range lower {
			if !slices.Contains(higher, p) {
				t.Errorf("%s lacks %s, which %s holds", roles[i], p, roles[i-1])
			}
		}
	}
	if got := RolePermissions("admin"); got != nil {
		t.Errorf("unknown role holds %v", got)
	}
	if !slices.Equal(RolePermissions(fsm.RoleSuperAdmin), AllPermissions()) {
		t.Errorf("a super-admin does not hold every permission")
	}
}

// TestRoleGrantsAgreesWithRolePermissions checks Authorize's shortcut
// against the list, for every role (and an unknown one) and permission.
func TestRoleGrantsAgreesWithRolePermissions(t *testing.T) {
	for _, role := range append(Roles(), "admin", "") {
		for _, perm := range append(AllPermissions(), "jobs:nothing") {
			if got, want := roleGrants(role, perm), slices.Contains(RolePermissions(role), perm); got != want {
				t.Errorf("roleGrants(%q, %s) = %v, RolePermissions holds it: %v", role, perm, got, want)
			}
		}
	}
}

// TestAuthorize checks the decision's tenant rules.
func TestAuthorize(t *testing.T) {
	sa := &Principal{TenantID: "a", Role: fsm.RoleSuperAdmin}
	ta := &Principal{TenantID: "a", Role: fsm.RoleTenantAdmin}
	op := &Principal{TenantID: "a", Role: fsm.RoleOperator}
	vi := &Principal{TenantID: "a", Role: fsm.RoleViewer}
	for _, c := range []struct {
		p      *Principal
		perm   Permission
		tenant string
		want   fsm.Code // "" = allowed
	}{
		{nil, PermJobsView, "a", CodeUnauthenticated},
		{vi, PermJobsView, "a", ""},
		{vi, PermJobsView, "b", CodePermissionDenied},
		{vi, PermJobsCreate, "a", CodePermissionDenied},
		{op, PermJobsCreate, "a", ""},
		{op, PermJobsControl, "a", ""},
		{op, PermWorkersManage, "a", CodePermissionDenied},
		{ta, PermWorkersManage, "a", ""},
		{ta, PermWorkersManage, "", CodePermissionDenied}, // the shared pool
		{ta, PermKeysManage, "b", CodePermissionDenied},
		{ta, PermClusterView, "", CodePermissionDenied},
		{ta, PermTenantsManage, "a", CodePermissionDenied},
		{sa, PermJobsCreate, "b", ""},
		{sa, PermWorkersManage, "", ""},
		{sa, PermClusterManage, "", ""},
		{&Principal{TenantID: "a", Role: "admin"}, PermJobsView, "a", CodePermissionDenied},
	} {
		err := Authorize(c.p, c.perm, c.tenant)
		if got := fsm.ErrorCode(err); got != c.want {
			t.Errorf("Authorize(%v, %s, %q) = %v, want code %q", c.p, c.perm, c.tenant, err, c.want)
		}
	}
}

// TestEveryRouteHasAPermission fails when a route is registered without
// a permission the roles table knows; New refuses such a route.
func TestEveryRouteHasAPermission(t *testing.T) {
	s := &Server{metrics: NewMetrics()}
	if err := checkRoutes(s.routes()); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []route{
		{method: "GET", pattern: "/v1/things"},
		needs("GET", "/v1/things", "things.view", nil),
	} {
		if err := checkRoutes(append(s.routes(), bad)); err == nil {
			t.Errorf("route with permission %q accepted", bad.perm)
		}
	}
}

// TestObjectChecks checks that an object the principal may not see is
// not_found, and a visible one it may not change is permission_denied.
func TestObjectChecks(t *testing.T) {
	ta := &Principal{TenantID: "a", Role: fsm.RoleTenantAdmin}
	req := func(perm Permission) *http.Request {
		r := httptest.NewRequest("POST", "/", nil)
		return r.WithContext(withAccess(r.Context(), ta, perm))
	}
	for _, c := range []struct {
		tenant string
		want   fsm.Code
	}{{"a", ""}, {"b", fsm.CodeNotFound}, {"", fsm.CodeNotFound}} {
		err := authorizeJob(req(PermJobsCancel), &fsm.Job{ID: "j", TenantID: c.tenant})
		if got := fsm.ErrorCode(err); got != c.want {
			t.Errorf("cancel a job of tenant %q: %v, want code %q", c.tenant, err, c.want)
		}
	}
	for _, c := range []struct {
		tenant string
		perm   Permission
		want   fsm.Code
	}{
		{"a", PermWorkersView, ""},
		{"a", PermWorkersManage, ""},
		{"", PermWorkersView, ""},
		{"", PermWorkersManage, CodePermissionDenied},
		{"b", PermWorkersView, fsm.CodeNotFound},
		{"b", PermWorkersManage, fsm.CodeNotFound},
	} {
		err := authorizeWorker(req(c.perm), &fsm.Worker{ID: "w", TenantID: c.tenant})
		if got := fsm.ErrorCode(err); got != c.want {
			t.Errorf("%s on a worker of tenant %q: %v, want code %q", c.perm, c.tenant, err, c.want)
		}
	}
}
