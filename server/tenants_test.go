package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// quotaError is an error body with quota details.
type quotaError struct {
	Error struct {
		Code    string           `json:"code"`
		Message string           `json:"message"`
		Details fsm.QuotaDetails `json:"details"`
	} `json:"error"`
}

func TestTenantsAPI(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})

	// Create: the name is the ID, validated; created_by is the caller.
	var tn server.Tenant
	if resp := e.do("POST", "/v1/tenants", `{"name":"acme","plan":"gold","limits":{"max_jobs":2,"max_cpu":0}}`, &tn); resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: status %d", resp.StatusCode)
	}
	if tn.ID != "acme" || tn.Name != "acme" || tn.Plan != "gold" || tn.Limits.MaxJobs != 2 || tn.CreatedBy == "" || tn.CreatedAt.IsZero() {
		t.Errorf("created tenant = %+v", tn)
	}
	var ae apiError
	for body, want := range map[string]string{
		`{"name":"Acme"}`:                       "invalid_argument",
		`{"name":"acme"}`:                       "already_exists",
		`{"name":"x","limits":{"max_jobs":-1}}`: "invalid_argument",
		`{"name":"x","bogus":1}`:                "unknown_field",
	} {
		if resp := e.do("POST", "/v1/tenants", body, &ae); resp.StatusCode/100 != 4 || ae.Error.Code != want {
			t.Errorf("create %s: %d %s, want %s", body, resp.StatusCode, ae.Error.Code, want)
		}
	}

	// A tenant admin of acme sees acme only.
	now := time.Now().UTC()
	adminTok, adminKey := server.NewAPIKey("acme", "ann@acme", fsm.RoleTenantAdmin, now, 0)
	opTok, opKey := server.NewAPIKey("acme", "otto@acme", fsm.RoleOperator, now, 0)
	for _, k := range []fsm.APIKey{adminKey, opKey} {
		if _, err := e.node.Apply(context.Background(), &fsm.CreateAPIKey{Key: k}); err != nil {
			t.Fatal(err)
		}
	}
	var list struct{ Tenants []server.Tenant }
	e.doKey(adminTok, "GET", "/v1/tenants", nil, &list)
	if len(list.Tenants) != 1 || list.Tenants[0].ID != "acme" {
		t.Errorf("tenant admin lists %+v, want acme only", list.Tenants)
	}
	e.do("GET", "/v1/tenants", nil, &list)
	if len(list.Tenants) != 2 {
		t.Errorf("super-admin lists %d tenants, want default and acme", len(list.Tenants))
	}
	if resp := e.doKey(adminTok, "GET", "/v1/tenants/default", nil, &ae); resp.StatusCode != 404 {
		t.Errorf("tenant admin gets another tenant: %d, want 404", resp.StatusCode)
	}

	// max_jobs: the third submit is refused with 429 and the details.
	for range 2 {
		if resp := e.doKey(opTok, "POST", "/v1/jobs", queuedSpec, nil); resp.StatusCode != http.StatusCreated {
			t.Fatalf("submit: %d", resp.StatusCode)
		}
	}
	var qe quotaError
	if resp := e.doKey(opTok, "POST", "/v1/jobs", queuedSpec, &qe); resp.StatusCode != http.StatusTooManyRequests ||
		qe.Error.Code != "quota_exceeded" || qe.Error.Details != (fsm.QuotaDetails{Quota: "max_jobs", Limit: 2, Usage: 2}) {
		t.Errorf("third submit: %d %+v, want 429 quota_exceeded max_jobs 2/2", resp.StatusCode, qe)
	}
	var use server.TenantUsage
	e.doKey(adminTok, "GET", "/v1/tenants/acme/usage", nil, &use)
	if use.Jobs != (server.Quota{Limit: 2, Usage: 2}) || use.ConcurrentJobs != (server.Quota{}) || use.Tenant != "acme" {
		t.Errorf("usage = %+v", use)
	}

	// Update: partial.
	if resp := e.do("PATCH", "/v1/tenants/acme", `{"limits":{"max_concurrent_jobs":3}}`, &tn); resp.StatusCode != 200 ||
		tn.Limits != (server.TenantLimits{MaxJobs: 2, MaxConcurrentJobs: 3}) || tn.Plan != "gold" {
		t.Errorf("update: %d %+v", resp.StatusCode, tn)
	}
	if resp := e.doKey(adminTok, "PATCH", "/v1/tenants/acme", `{"plan":"free"}`, &ae); resp.StatusCode != 403 {
		t.Errorf("tenant admin updates its tenant: %d, want 403", resp.StatusCode)
	}

	// Retention: the tenant's own, forever, back to the installation's.
	if tn.Retention != "" {
		t.Errorf("a new tenant's retention = %q, want none (the installation default)", tn.Retention)
	}
	for body, want := range map[string]string{`{"retention":"2160h"}`: "2160h0m0s", `{"retention":"0s"}`: "0s", `{"retention":"default"}`: ""} {
		tn = server.Tenant{}
		if resp := e.do("PATCH", "/v1/tenants/acme", body, &tn); resp.StatusCode != 200 || tn.Retention != want || tn.Limits.MaxConcurrentJobs != 3 {
			t.Errorf("update %s: %d, retention %q; want 200, %q and the limits kept", body, resp.StatusCode, tn.Retention, want)
		}
	}
	for _, body := range []string{`{"retention":"soon"}`, `{"retention":"10s"}`, `{"retention":"-1h"}`, `{"retention":720}`} {
		if resp := e.do("PATCH", "/v1/tenants/acme", body, &ae); resp.StatusCode != 400 {
			t.Errorf("update %s: %d %s, want 400", body, resp.StatusCode, ae.Error.Code)
		}
	}
	if resp := e.doKey(adminTok, "PATCH", "/v1/tenants/acme", `{"retention":"1h"}`, &ae); resp.StatusCode != 403 {
		t.Errorf("tenant admin sets its retention: %d, want 403", resp.StatusCode)
	}
	var withRet server.Tenant
	if resp := e.do("POST", "/v1/tenants", `{"name":"kept","retention":"8760h"}`, &withRet); resp.StatusCode != http.StatusCreated || withRet.Retention != "8760h0m0s" {
		t.Errorf("create with a retention: %d %+v", resp.StatusCode, withRet)
	}

	// Disable: the tenant's keys stop; a super-admin still reads its jobs.
	e.do("PATCH", "/v1/tenants/acme", `{"disabled":true}`, &tn)
	if resp := e.doKey(opTok, "GET", "/v1/jobs", nil, &ae); resp.StatusCode != 401 || ae.Error.Code != "unauthenticated" {
		t.Errorf("a disabled tenant's key: %d %s, want 401", resp.StatusCode, ae.Error.Code)
	}
	var page fsm.JobPage
	if resp := e.do("GET", "/v1/jobs?tenant=acme", nil, &page); resp.StatusCode != 200 || len(page.Jobs) != 2 {
		t.Errorf("super-admin reads a disabled tenant's jobs: %d, %d jobs", resp.StatusCode, len(page.Jobs))
	}
	if resp := e.do("POST", "/v1/jobs?tenant=acme", queuedSpec, &ae); resp.StatusCode != 403 || ae.Error.Code != "tenant_disabled" {
		t.Errorf("submit to a disabled tenant: %d %s, want 403 tenant_disabled", resp.StatusCode, ae.Error.Code)
	}
	e.do("PATCH", "/v1/tenants/acme", `{"disabled":false}`, &tn)
	if resp := e.doKey(opTok, "GET", "/v1/jobs", nil, nil); resp.StatusCode != 200 {
		t.Errorf("re-enabled tenant's key: %d", resp.StatusCode)
	}

	// Delete: refused while jobs are active, then a tombstone.
	if resp := e.do("DELETE", "/v1/tenants/acme", nil, &ae); resp.StatusCode != 409 || ae.Error.Code != "tenant_has_active_jobs" {
		t.Errorf("delete with active jobs: %d %s", resp.StatusCode, ae.Error.Code)
	}
	for _, j := range page.Jobs {
		e.do("POST", "/v1/jobs/"+j.ID+"/cancel", nil, nil)
	}
	if resp := e.do("DELETE", "/v1/tenants/acme", nil, nil); resp.StatusCode != 204 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	if resp := e.do("GET", "/v1/tenants/acme", nil, &ae); resp.StatusCode != 404 {
		t.Errorf("get a deleted tenant: %d, want 404", resp.StatusCode)
	}
	if resp := e.doKey(adminTok, "GET", "/v1/whoami", nil, nil); resp.StatusCode != 401 {
		t.Errorf("a deleted tenant's key: %d, want 401", resp.StatusCode)
	}
	if resp := e.do("POST", "/v1/tenants", `{"name":"acme"}`, &ae); resp.StatusCode != 409 {
		t.Errorf("re-create a deleted name: %d, want 409", resp.StatusCode)
	}
	if resp := e.do("DELETE", "/v1/tenants/default", nil, &ae); resp.StatusCode != 400 {
		t.Errorf("delete default: %d, want 400", resp.StatusCode)
	}

	// migrate_existing on the existing default tenant succeeds, twice.
	for range 2 {
		if resp := e.do("POST", "/v1/tenants", `{"name":"default","migrate_existing":true}`, &tn); resp.StatusCode != 200 || tn.ID != "default" || tn.Adopted == nil {
			t.Errorf("create default with migrate_existing: %d %+v", resp.StatusCode, tn)
		}
	}
}
