package cli

import (
	"errors"
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// TestCLITenants drives the tenants commands as an operator types them.
// Not parallel: it calls Run (see TestCLITenantFlag).
func TestCLITenants(t *testing.T) {
	e := startAPINode(t)

	// The upgrade path's first step: default exists (bootstrap made it).
	for range 2 {
		out, err := e.run(e.admin, nil, "tenants", "create", "--name", "default", "--migrate-existing")
		if err != nil {
			t.Fatalf("tenants create --name default --migrate-existing: %v", err)
		}
		if !strings.Contains(out, "default") {
			t.Errorf("create default printed %q", out)
		}
	}
	// Without --migrate-existing an existing name is already_exists.
	_, err := e.run(e.admin, nil, "tenants", "create", "--name", "default")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != fsm.CodeAlreadyExists {
		t.Errorf("create an existing tenant: %v, want already_exists", err)
	}

	var tn server.Tenant
	e.mustJSON(e.admin, nil, &tn, "tenants", "create", "--name", "acme", "--plan", "gold", "--max-jobs", "1", "--max-cpu", "2.5", "-o", "json")
	if tn.ID != "acme" || tn.Plan != "gold" || tn.Limits != (server.TenantLimits{MaxJobs: 1, MaxCPU: 2.5}) {
		t.Errorf("created %+v", tn)
	}
	e.mustJSON(e.admin, nil, &tn, "tenants", "update", "acme", "--max-cpu", "0", "--max-concurrent-jobs", "2", "-o", "json")
	if tn.Limits != (server.TenantLimits{MaxJobs: 1, MaxConcurrentJobs: 2}) || tn.Plan != "gold" {
		t.Errorf("updated %+v", tn)
	}
	e.mustJSON(e.admin, nil, &tn, "tenants", "update", "acme", "--retention", "2160h", "-o", "json")
	if tn.Retention != "2160h0m0s" || tn.Limits.MaxConcurrentJobs != 2 {
		t.Errorf("after --retention 2160h: %+v", tn)
	}
	if out, err := e.run(e.admin, nil, "tenants", "get", "acme"); err != nil || !strings.Contains(out, "2160h0m0s") {
		t.Errorf("tenants get after --retention: %v\n%s", err, out)
	}
	tn = server.Tenant{}
	e.mustJSON(e.admin, nil, &tn, "tenants", "update", "acme", "--retention", "default", "-o", "json")
	if tn.Retention != "" {
		t.Errorf("after --retention default: %+v", tn)
	}
	out, err := e.run(e.admin, nil, "tenants", "list")
	if err != nil || !strings.Contains(out, "acme") || !strings.Contains(out, "gold") || !strings.Contains(out, "unlimited") {
		t.Errorf("tenants list: %v\n%s", err, out)
	}

	// A job, then max_jobs refuses the next with the limit and usage.
	if _, err := e.run(e.admin, nil, append([]string{"--tenant", "acme"}, submitArgs...)...); err != nil {
		t.Fatalf("submit to acme: %v", err)
	}
	_, err = e.run(e.admin, nil, append([]string{"--tenant", "acme"}, submitArgs...)...)
	if !errors.As(err, &ae) || ae.Code != fsm.CodeQuotaExceeded || !strings.Contains(ae.Message, "max_jobs") {
		t.Errorf("second submit: %v, want quota_exceeded max_jobs", err)
	}
	var use server.TenantUsage
	e.mustJSON(e.admin, nil, &use, "tenants", "usage", "acme", "-o", "json")
	if use.Jobs != (server.Quota{Limit: 1, Usage: 1}) {
		t.Errorf("usage %+v", use)
	}
	out, err = e.run(e.admin, nil, "tenants", "usage", "acme")
	if err != nil || !strings.Contains(out, "max_jobs") {
		t.Errorf("tenants usage: %v\n%s", err, out)
	}

	// Disable and enable; delete is refused while the job is active.
	e.mustJSON(e.admin, nil, &tn, "tenants", "update", "acme", "--disable", "-o", "json")
	if !tn.Disabled {
		t.Errorf("after --disable: %+v", tn)
	}
	e.mustJSON(e.admin, nil, &tn, "tenants", "update", "acme", "--enable", "-o", "json")
	if tn.Disabled {
		t.Errorf("after --enable: %+v", tn)
	}
	_, err = e.run(e.admin, nil, "tenants", "delete", "acme")
	if !errors.As(err, &ae) || ae.Code != fsm.CodeTenantBusy {
		t.Errorf("delete with an active job: %v, want tenant_has_active_jobs", err)
	}
	if _, err := e.run(e.admin, nil, "tenants", "update", "acme"); err == nil {
		t.Error("update without a change succeeded")
	}
	out, err = e.run(e.admin, nil, "tenants", "get", "acme")
	if err != nil || !strings.Contains(out, "Max concurrent jobs:") {
		t.Errorf("tenants get: %v\n%s", err, out)
	}
}
