package server_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// TestAuditRecordsCalls: the route wrapper's actor makes the FSM record
// every state-changing call, with its request ID; refusals by
// authorization are recorded in the caller's own tenant; authentication
// failures and reads are not; a tenant admin reads only its own tenant's
// records, and a super-admin verifies the chain.
func TestAuditRecordsCalls(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	ctx := context.Background()
	now := time.Now().UTC()
	keys := map[string]string{}
	for _, tn := range []string{"acme", "globex"} {
		if _, err := e.node.Apply(ctx, &fsm.CreateTenant{Tenant: fsm.Tenant{ID: tn, Name: tn, CreatedAt: now}}); err != nil {
			t.Fatal(err)
		}
		for _, r := range []fsm.Role{fsm.RoleOperator, fsm.RoleTenantAdmin} {
			tok, key := server.NewAPIKey(tn, string(r)+"@"+tn, r, now, 0)
			if _, err := e.node.Apply(ctx, &fsm.CreateAPIKey{Key: key}); err != nil {
				t.Fatal(err)
			}
			keys[tn+" "+string(r)] = tok
		}
	}
	op := keys["acme operator"]
	send := func(key, method, path, body, rid string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		if rid != "" {
			req.Header.Set("X-Request-Id", rid)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := send(op, "POST", "/v1/jobs", queuedSpec, "req-abc")
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Request-Id") != "req-abc" {
		t.Fatalf("submit: %d, X-Request-Id %q; want 201 and the client's ID echoed", resp.StatusCode, resp.Header.Get("X-Request-Id"))
	}
	if resp := send(op, "POST", "/v1/workers/w-x/drain", "", "req-drain"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("operator drains: %d, want 403", resp.StatusCode)
	}
	if resp := send(op, "POST", "/v1/jobs?tenant=globex", queuedSpec, "bad id with spaces"); resp.StatusCode != http.StatusForbidden ||
		!regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(resp.Header.Get("X-Request-Id")) {
		t.Fatalf("submit to another tenant: %d, X-Request-Id %q; want 403 and a generated ID", resp.StatusCode, resp.Header.Get("X-Request-Id"))
	}
	// Not recorded: an authentication failure, a read.
	if resp := send(op[:len(op)-3]+"AAA", "POST", "/v1/jobs", queuedSpec, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad key: %d, want 401", resp.StatusCode)
	}
	send(op, "GET", "/v1/jobs", "", "")

	var page server.AuditPage
	if resp := e.doKey(keys["acme tenant_admin"], "GET", "/v1/audit", nil, &page); resp.StatusCode != 200 {
		t.Fatalf("audit list: %d", resp.StatusCode)
	}
	type rec struct{ action, target, tenant, result, rid string }
	var got []rec
	for _, r := range page.Records {
		got = append(got, rec{r.Action, r.Target, r.Tenant, string(r.Result), r.RequestID})
		if r.User != "operator@acme" || r.KeyID == "" || r.ActorTenant != "acme" || r.Source == "" || r.Time.IsZero() || len(r.Hash) != 64 {
			t.Errorf("record %d lacks its actor: %+v", r.Seq, r)
		}
	}
	if len(got) != 3 {
		t.Fatalf("acme's admin sees %d records, want 3: %+v", len(got), page.Records)
	}
	if got[2].action != "submitJob" || got[2].target == "" || got[2].tenant != "acme" || got[2].result != "ok" || got[2].rid != "req-abc" {
		t.Errorf("submit record = %+v", got[2])
	}
	if got[1] != (rec{"drainWorker", "w-x", "acme", "permission_denied", "req-drain"}) {
		t.Errorf("refused drain record = %+v", got[1])
	}
	if got[0].action != "submitJob" || got[0].tenant != "acme" || got[0].result != "permission_denied" {
		t.Errorf("refused submit to globex = %+v, want recorded in acme", got[0])
	}
	var gpage server.AuditPage
	e.doKey(keys["globex tenant_admin"], "GET", "/v1/audit", nil, &gpage)
	if len(gpage.Records) != 0 {
		t.Errorf("globex's admin sees acme's records: %+v", gpage.Records)
	}
	var filtered server.AuditPage
	e.doKey(keys["acme tenant_admin"], "GET", "/v1/audit?action=drainWorker&actor=operator@acme", nil, &filtered)
	if len(filtered.Records) != 1 || filtered.Records[0].Action != "drainWorker" {
		t.Errorf("filtered by action and actor: %+v", filtered.Records)
	}
	var first server.AuditPage
	e.doKey(keys["acme tenant_admin"], "GET", "/v1/audit?limit=2", nil, &first)
	var second server.AuditPage
	e.doKey(keys["acme tenant_admin"], "GET", "/v1/audit?limit=2&cursor="+first.Next, nil, &second)
	if len(first.Records) != 2 || first.Next == "" || len(second.Records) != 1 || second.Next != "" || second.Records[0].Seq >= first.Records[1].Seq {
		t.Errorf("pages of 2: %+v then %+v", first, second)
	}

	var v server.AuditVerification
	if resp := e.do("GET", "/v1/audit/verify", nil, &v); resp.StatusCode != 200 || !v.OK || v.Checked < 3 || v.Head.Seq != v.Checked {
		t.Errorf("verify: %d %+v, want ok", resp.StatusCode, v)
	}
	var ae apiError
	if resp := e.doKey(keys["acme tenant_admin"], "GET", "/v1/audit/verify", nil, &ae); resp.StatusCode != 403 {
		t.Errorf("tenant admin verifies: %d, want 403", resp.StatusCode)
	}
	// Verifying recorded nothing: it is a read.
	var after server.AuditVerification
	e.do("GET", "/v1/audit/verify?head="+v.Head.Text, nil, &after)
	if !after.OK || after.Checked != v.Checked {
		t.Errorf("verify again with the head kept: %+v, want ok over %d", after, v.Checked)
	}

	// A call that changes the cluster rather than the FSM (a restore) is
	// recorded by the wrapper, on the restored chain, which still verifies.
	var restored map[string]any
	if resp := e.do("POST", "/v1/cluster/snapshot", e.saveSnapshot(), &restored); resp.StatusCode != http.StatusOK {
		t.Fatalf("restore: %d %v", resp.StatusCode, restored)
	}
	var rs server.AuditPage
	e.do("GET", "/v1/audit?action=restoreSnapshot", nil, &rs)
	if len(rs.Records) != 1 || rs.Records[0].Result != "ok" || rs.Records[0].Tenant != "" || rs.Records[0].Seq != v.Head.Seq+1 {
		t.Errorf("restore records: %+v, want one ok record of the installation after seq %d", rs.Records, v.Head.Seq)
	}
	if e.do("GET", "/v1/audit/verify", nil, &after); !after.OK || after.Checked != v.Checked+1 {
		t.Errorf("verify after the restore: %+v", after)
	}
}

// TestAuditRefusalFiledUnderTheJobsTenant: a super-admin acting by ID on
// another tenant's job and refused by the FSM has its record filed under
// the job's tenant, so that its own tenant's admin does not learn that
// the job exists, nor its state.
func TestAuditRefusalFiledUnderTheJobsTenant(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	ctx := context.Background()
	now := time.Now().UTC()
	if _, err := e.node.Apply(ctx, &fsm.CreateTenant{Tenant: fsm.Tenant{ID: "acme", Name: "acme", CreatedAt: now}}); err != nil {
		t.Fatal(err)
	}
	op, key := server.NewAPIKey("acme", "operator@acme", fsm.RoleOperator, now, 0)
	if _, err := e.node.Apply(ctx, &fsm.CreateAPIKey{Key: key}); err != nil {
		t.Fatal(err)
	}
	var j struct{ ID string }
	if resp := e.doKey(op, "POST", "/v1/jobs", queuedSpec, &j); resp.StatusCode != http.StatusCreated {
		t.Fatalf("submit: %d", resp.StatusCode)
	}
	// The super-admin's key is of tenant default; it names no tenant.
	var ae apiError
	if resp := e.do("POST", "/v1/jobs/"+j.ID+"/pause", nil, &ae); resp.StatusCode != http.StatusConflict || ae.Error.Code != "invalid_transition" {
		t.Fatalf("pause of a queued job: %d %+v, want 409 invalid_transition", resp.StatusCode, ae)
	}
	for tenant, want := range map[string]int{"default": 0, "acme": 1} {
		var page server.AuditPage
		e.do("GET", "/v1/audit?action=pauseJob&tenant="+tenant, nil, &page)
		if len(page.Records) != want {
			t.Errorf("tenant %s has %d pauseJob records, want %d: %+v", tenant, len(page.Records), want, page.Records)
		}
	}
}
