package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestWorkerTokenBoundaries: on the worker protocol a worker token is
// its worker's only credential. It registers its worker in its own
// tenant only, speaks for that worker only, cannot report on a job its
// worker does not hold, and stops working once revoked, which also takes
// its worker out of the pool.
func TestWorkerTokenBoundaries(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	ctx := context.Background()
	now := time.Now().UTC()
	for _, id := range []string{"acme", "globex"} {
		if _, err := e.node.Apply(ctx, &fsm.CreateTenant{Tenant: fsm.Tenant{ID: id, Name: id, CreatedAt: now}}); err != nil {
			t.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	e.srv.MountWorkerRPC(func(pattern string, h http.Handler) { mux.Handle(pattern, h) })
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	call := func(token, path, body string, out any) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", hs.URL+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ae apiError
		if resp.StatusCode >= 300 {
			json.NewDecoder(resp.Body).Decode(&ae)
			return resp.StatusCode, ae.Error.Code
		}
		if out != nil {
			json.NewDecoder(resp.Body).Decode(out)
		}
		return resp.StatusCode, ""
	}
	acme, acme2 := e.workerToken("acme"), e.workerToken("acme")
	reg := func(id, tenant string) string {
		return `{"id":"` + id + `","tenant_id":"` + tenant + `","name":"` + id + `","slots":1,"incarnation":"1","encoders":["libx264"]}`
	}

	for _, tc := range []struct {
		name, token, path, body string
		status                  int
		code                    string
	}{
		{"no token", "", "/rpc/worker/hello", `{}`, 401, "unauthenticated"},
		{"an API key", e.token, "/rpc/worker/hello", `{}`, 401, "unauthenticated"},
		{"a mistyped token", mistype(acme), "/rpc/worker/hello", `{}`, 401, "unauthenticated"},
		{"register as another tenant", acme, "/rpc/worker/register", reg("wa", "globex"), 403, "permission_denied"},
		{"heartbeat before registering", acme, "/rpc/worker/heartbeat", `{"id":"wa"}`, 403, "permission_denied"},
	} {
		if status, code := call(tc.token, tc.path, tc.body, nil); status != tc.status || code != tc.code {
			t.Errorf("%s: %d %q, want %d %s", tc.name, status, code, tc.status, tc.code)
		}
	}
	var w fsm.Worker
	if status, code := call(acme, "/rpc/worker/register", reg("wa", ""), &w); status != 200 || w.TenantID != "acme" || w.TokenID == "" {
		t.Fatalf("register with acme's token: %d %s, worker %+v; want acme's dedicated worker", status, code, w)
	}
	if status, code := call(acme2, "/rpc/worker/register", reg("wb", "acme"), nil); status != 200 {
		t.Fatalf("register wb: %d %s", status, code)
	}
	// A job of acme's, assigned to wb.
	var j fsm.Job
	if resp := e.do("POST", "/v1/jobs?tenant=acme", queuedSpec, &j); resp.StatusCode != http.StatusCreated {
		t.Fatalf("submit: %d", resp.StatusCode)
	}
	e.waitFor(func() bool { got, ok := e.fsm.ActiveJob(j.ID); return ok && got.WorkerID != "" }, "job assigned")
	got, _ := e.fsm.ActiveJob(j.ID)
	mine, theirs := acme, acme2
	holder, other := got.WorkerID, "wa"
	if holder == "wa" {
		mine, theirs, other = acme2, acme, "wb"
	}
	report := func(worker string) string {
		return `{"job_id":"` + j.ID + `","worker_id":"` + worker + `","attempt":1}`
	}
	for _, tc := range []struct {
		name, token, path, body string
		status                  int
		code                    string
	}{
		{"another worker's ID", mine, "/rpc/worker/start", report(holder), 403, "permission_denied"},
		{"a job the worker does not hold", mine, "/rpc/worker/start", report(other), 409, "stale_attempt"},
		{"finish a job the worker does not hold", mine, "/rpc/worker/finish", report(other), 409, "stale_attempt"},
		{"another worker's assignments", mine, "/rpc/worker/assignments", `{"worker_id":"` + holder + `"}`, 403, "permission_denied"},
		{"register another worker's ID", mine, "/rpc/worker/register", reg(holder, "acme"), 403, "permission_denied"},
		{"a second worker on a bound token", theirs, "/rpc/worker/register", reg("wc", "acme"), 403, "permission_denied"},
	} {
		if status, code := call(tc.token, tc.path, tc.body, nil); status != tc.status || code != tc.code {
			t.Errorf("%s: %d %q, want %d %s", tc.name, status, code, tc.status, tc.code)
		}
	}
	if j2, _ := e.fsm.ActiveJob(j.ID); j2.State != fsm.JobAssigned || j2.WorkerID != holder {
		t.Errorf("job after refused reports: %s on %s, want assigned on %s", j2.State, j2.WorkerID, holder)
	}

	// Revoking the holder's token: refused at its next call, down, and
	// its job back in the queue.
	var hello struct {
		TokenID string `json:"token_id"`
	}
	call(theirs, "/rpc/worker/hello", `{}`, &hello)
	if resp := e.do("DELETE", "/v1/worker-tokens/"+hello.TokenID, "", nil); resp.StatusCode != 200 {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	if status, code := call(theirs, "/rpc/worker/heartbeat", `{"id":"`+holder+`"}`, nil); status != 401 || code != "unauthenticated" {
		t.Errorf("heartbeat with a revoked token: %d %q, want 401 unauthenticated", status, code)
	}
	if wk, _ := e.fsm.Worker(holder); wk.State != fsm.WorkerDown {
		t.Errorf("the revoked token's worker is %s, want down", wk.State)
	}
	if j3, ok := e.fsm.ActiveJob(j.ID); ok && j3.WorkerID == holder {
		t.Errorf("the revoked token's worker still holds job %s", j.ID)
	}
}

// mistype returns token with its last character changed (to x, or to y
// if it was x, so that it always differs).
func mistype(token string) string {
	last := "x"
	if strings.HasSuffix(token, "x") {
		last = "y"
	}
	return token[:len(token)-1] + last
}
