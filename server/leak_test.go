package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// documentedInternals lists, by route, the JSON keys that server.FindInternals
// would refuse but that the route documents on purpose (in openapi.json and
// docs/api.md). The audit routes show each record's chain hash (an HMAC,
// not a secret's hash): it is what an operator keeps to check the chain
// later (`ffrtmp audit verify --head`). A new worker token comes with the
// cluster CA's fingerprint, which a worker pins (public, not a secret).
var documentedInternals = map[string][]string{
	"POST /v1/worker-tokens": {"ca_hash"},
	"GET /v1/audit":          {"hash", "prev_hash"},
	"GET /v1/audit/verify":   {"hash"},
}

// notProbedForInternals are the routes TestResponsesCarryNoInternals does
// not call, and why. Every other route is called; the isolation matrix
// checks every route's answers to every role as well.
var notProbedForInternals = map[string]string{
	"GET /v1/openapi.json":                 "the document describes fields, it holds no object",
	"GET /v1/docs":                         "a static page embedded in the binary",
	"GET /v1/docs/{file}":                  "static files embedded in the binary",
	"GET /v1/cluster/snapshot":             "a backup is the whole state by design, for a super-admin",
	"POST /v1/cluster/snapshot":            "replaces the state",
	"POST /v1/cluster/init":                "takes a cluster-key proof; the matrix checks its refusal",
	"POST /v1/cluster/join":                "the matrix checks its answers",
	"POST /v1/cluster/remove":              "the matrix checks its answers",
	"POST /v1/cluster/leave":               "stops the node",
	"POST /v1/cluster/transfer-leadership": "the matrix checks its answers",
}

// TestResponsesCarryNoInternals calls every route of the route table on a
// node with a real worker, after a real ffmpeg job, and walks each answer
// (JSON bodies, event stream payloads, log text): none shows a hash, a
// path on the worker host, a create_index or a worker's incarnation.
func TestResponsesCarryNoInternals(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{worker: true})
	done := e.submit(`{"scenario":"240p30-h264","input":{"url":"testsrc://?duration=1"},"outputs":[{"url":"file:///out/leak.mp4"},{"url":"file:///out/leak.m3u8"}]}`)
	if j := e.waitState(done.ID, fsm.JobSucceeded, fsm.JobFailed); j.State != fsm.JobSucceeded {
		t.Fatalf("job %s: %+v\n%s", j.State, j.Error, j.Log)
	}
	running := e.submit(`{"scenario":"144p30-h264","input":{"url":"testsrc://?duration=600"},"outputs":[{"url":"file:///out/long.mp4"}]}`)
	e.waitState(running.ID, fsm.JobRunning)

	check := func(name, ctype string, body []byte) {
		t.Helper()
		allowed := documentedInternals[name]
		payloads := [][]byte{body}
		if strings.HasPrefix(ctype, "text/event-stream") {
			payloads = sseData(body)
		}
		for _, p := range payloads {
			for _, v := range server.FindInternals(p, allowed, e.dataDir) {
				t.Errorf("%s: %s in %s", name, v, p)
			}
		}
	}
	call := func(rk, path, body string) []byte {
		t.Helper()
		method, _, _ := strings.Cut(rk, " ")
		status, ctype, got := probeAll(t, e.url, e.token, method, path, body)
		if status >= 500 {
			t.Errorf("%s %s: status %d %s", method, path, status, got)
		}
		check(rk, ctype, got)
		return got
	}

	// The job actions in an order where each is allowed; the retry's new
	// job is canceled again.
	call("POST /v1/jobs/{id}/pause", "/v1/jobs/"+running.ID+"/pause", "")
	call("POST /v1/jobs/{id}/resume", "/v1/jobs/"+running.ID+"/resume", "")
	call("POST /v1/jobs/{id}/cancel", "/v1/jobs/"+running.ID+"/cancel", "")
	var retried server.Job
	if err := json.Unmarshal(call("POST /v1/jobs/{id}/retry", "/v1/jobs/"+running.ID+"/retry", ""), &retried); err != nil || retried.ID == "" {
		t.Fatalf("retry: %v", err)
	}
	call("POST /v1/jobs/{id}/cancel", "/v1/jobs/"+retried.ID+"/cancel", "")
	// A long poll that times out answers the job as well.
	call("GET /v1/jobs/{id}", fmt.Sprintf("/v1/jobs/%s?index=%d&wait=50ms", done.ID, 1<<40), "")

	var got server.Job
	if err := json.Unmarshal(call("GET /v1/jobs/{id}", "/v1/jobs/"+done.ID, ""), &got); err != nil {
		t.Fatal(err)
	}
	// Not vacuous: the answer has the results, and the log that named
	// the output's host path names it from the media root.
	if got.Result == nil || len(got.Result.Outputs) != 2 || got.Result.Outputs[1].URL != "file:///out/leak.m3u8" || got.Result.Outputs[1].SizeBytes == 0 {
		t.Errorf("result %+v, want both outputs by URL", got.Result)
	}
	if !strings.Contains(got.Log, "<media>/default/out/") {
		t.Errorf("the log does not name the outputs from <media>: %q", got.Log)
	}

	for _, rk := range e.srv.RouteKeys() {
		if _, skip := notProbedForInternals[rk]; skip {
			continue
		}
		method, pattern, _ := strings.Cut(rk, " ")
		switch {
		case strings.HasPrefix(pattern, "/v1/jobs/{id}/") && method == "POST":
			continue // called above, in order
		case strings.HasPrefix(pattern, "/v1/jobs/{id}") || pattern == "/jobs/{id}":
			call(rk, strings.ReplaceAll(pattern, "{id}", done.ID), "")
		case strings.HasPrefix(pattern, "/v1/workers/{id}"):
			call(rk, strings.ReplaceAll(pattern, "{id}", "w1"), "")
		case pattern == "/v1/jobs" && method == "POST":
			call(rk, pattern, queuedSpec)
		case strings.Contains(pattern, "{id}") && method == "GET":
			// Another kind's object: the first of its list.
			list, _, _ := strings.Cut(pattern, "/{id}")
			call(rk, strings.ReplaceAll(pattern, "{id}", firstID(t, e, list)), "")
		case method == "GET":
			call(rk, pattern, "")
		default:
			t.Logf("%s: not called here (a write whose body this test does not know); the isolation matrix checks its answers", rk)
		}
	}
}

// firstID returns the id of the first object a list route answers with,
// or a made-up one.
func firstID(t *testing.T, e *env, list string) string {
	t.Helper()
	_, _, body := probeAll(t, e.url, e.token, "GET", list, "")
	var v any
	json.Unmarshal(body, &v)
	var find func(v any) string
	find = func(v any) string {
		switch v := v.(type) {
		case map[string]any:
			if id, ok := v["id"].(string); ok {
				return id
			}
			for _, c := range v {
				if id := find(c); id != "" {
					return id
				}
			}
		case []any:
			for _, c := range v {
				if id := find(c); id != "" {
					return id
				}
			}
		}
		return ""
	}
	if id := find(v); id != "" {
		return id
	}
	return "none"
}

// probeAll sends one request with key and returns its status, content
// type and whole body (an event stream up to its end event).
func probeAll(t *testing.T, base, key, method, path, body string) (int, string, []byte) {
	t.Helper()
	return probeEvents(t, base, key, method, path, body, 0)
}

// probeEvents sends one request with key and returns its status, content
// type and body; of an event stream, its first events (all of them up to
// the end event if events is 0).
func probeEvents(t *testing.T, base, key, method, path, body string, events int) (int, string, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	ctype := resp.Header.Get("Content-Type")
	if strings.HasPrefix(ctype, "text/event-stream") {
		var b strings.Builder
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 4<<20)
		for n := 0; sc.Scan(); {
			line := sc.Text()
			if line == "" {
				if n++; n == events {
					break
				}
			}
			b.WriteString(line + "\n")
			if line == "event: end" {
				break
			}
		}
		return resp.StatusCode, ctype, []byte(b.String())
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, ctype, data
}

// sseData returns the data payloads of an event stream.
func sseData(stream []byte) [][]byte {
	var out [][]byte
	for line := range strings.Lines(string(stream)) {
		if d, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "data: "); ok {
			out = append(out, []byte(d))
		}
	}
	return out
}

// answerPayloads returns what of an answer is checked for leaks: an event
// stream's data payloads, else the whole body.
func answerPayloads(ctype, body string) [][]byte {
	if strings.HasPrefix(ctype, "text/event-stream") {
		return sseData([]byte(body))
	}
	return [][]byte{[]byte(body)}
}

// heartbeat keeps workers' leases fresh until the test ends, as running
// workers do, so that none goes down while a test compares answers.
func heartbeat(t *testing.T, e *env, ids ...string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	beat := func() {
		for _, id := range ids {
			e.node.Heartbeat(ctx, id)
		}
	}
	beat()
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				beat()
			}
		}
	}()
}

// readViews are the routes whose answers describe the whole installation
// (its applied index, its metrics), which checkCrossTenantLeaks does not
// compare; GET /metrics is checked for labels instead.
var readViews = map[string]bool{"GET /ready": true, "GET /metrics": true}

// checkCrossTenantLeaks checks what the matrix's look at single answers
// cannot see. Nothing a tenant reads through any GET route (lists,
// counts, pages, streams, long polls) changes when another tenant acts;
// a shared worker's load counts only the caller's tenant's jobs; and no
// metric names a tenant, a job, a worker, a user or a key.
func checkCrossTenantLeaks(t *testing.T, e *env, roles []fsm.Role, routes []string, own, other *tenantFixture) {
	ctx := context.Background()
	// A shared worker that only the other tenant's H.265 job can use.
	if _, err := e.srv.Workers().Register(ctx, &fsm.Worker{ID: "w-pool", Name: "w-pool", Incarnation: "1",
		Slots: 2, CPUs: 4, MemoryMB: 4096, Encoders: []string{"libx265"}}); err != nil {
		t.Fatal(err)
	}
	heartbeat(t, e, "w-pool")

	view := func() map[string]string {
		out := map[string]string{}
		for _, role := range roles {
			if role == fsm.RoleSuperAdmin {
				continue
			}
			for _, rk := range routes {
				method, pattern, _ := strings.Cut(rk, " ")
				if method != "GET" || readViews[rk] {
					continue
				}
				path := matrixPath(pattern, own, other)
				status, _, body := probe(t, e.url, own.keys[role], method, path, "")
				out[string(role)+" GET "+path] = fmt.Sprintf("%d %s", status, body)
			}
		}
		return out
	}
	before := view()
	ownJob, err := e.fsm.GetJob(ctx, own.job)
	if err != nil {
		t.Fatal(err)
	}
	// A long poll on the own job, open while the other tenant acts.
	polled := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s/v1/jobs/%s?index=%d&wait=2s", e.url, own.job, ownJob.ModifyIndex), nil)
		req.Header.Set("Authorization", "Bearer "+own.keys[fsm.RoleViewer])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			polled <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		polled <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()

	// The other tenant acts: a job on the shared worker, a job submitted
	// and canceled, its worker drained, a new dedicated worker.
	act := func(role fsm.Role, method, path, body string, want int) server.Job {
		t.Helper()
		var j server.Job
		if resp := e.doKey(other.keys[role], method, path, body, &j); resp.StatusCode != want {
			t.Fatalf("%s of %s: %s %s: status %d, want %d", role, other.id, method, path, resp.StatusCode, want)
		}
		return j
	}
	h := act(fsm.RoleOperator, "POST", "/v1/jobs", `{"scenario":"240p30-h265","input":{"url":"testsrc://?duration=5"},"outputs":[{"url":"file:///h.mp4"}]}`, http.StatusCreated)
	if j := e.waitState(h.ID, fsm.JobAssigned); j.WorkerID != "w-pool" {
		t.Fatalf("the other tenant's job went to %s, want w-pool", j.WorkerID)
	}
	q := act(fsm.RoleOperator, "POST", "/v1/jobs", queuedSpec, http.StatusCreated)
	act(fsm.RoleOperator, "POST", "/v1/jobs/"+q.ID+"/cancel", "", http.StatusOK)
	act(fsm.RoleTenantAdmin, "POST", "/v1/workers/"+other.worker+"/drain", "", http.StatusOK)
	w2 := fsm.Worker{ID: other.worker + "-2", TenantID: other.id, Name: other.worker + "-2", State: fsm.WorkerUp, Incarnation: "1"}
	if _, err := e.node.Apply(ctx, &fsm.RegisterWorker{Worker: w2, At: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	heartbeat(t, e, w2.ID)
	secrets := append(other.secrets(), h.ID, q.ID, w2.ID)

	after := view()
	for k, b := range before {
		if after[k] != b {
			t.Errorf("%s changed when tenant %s acted:\nbefore %s\nafter  %s", k, other.id, b, after[k])
		}
	}
	select {
	case got := <-polled:
		var j server.Job
		json.Unmarshal([]byte(strings.TrimPrefix(got, "200 ")), &j)
		if !strings.HasPrefix(got, "200 ") || j.ID != own.job || j.ModifyIndex != ownJob.ModifyIndex {
			t.Errorf("the long poll on the own job answered %s, want the unchanged job", got)
		}
		for _, s := range secrets {
			if strings.Contains(got, s) {
				t.Errorf("the long poll on the own job shows %q of %s: %s", s, other.id, got)
			}
		}
	case <-time.After(30 * time.Second):
		t.Error("the long poll did not answer")
	}

	// The shared worker's load: each tenant counts its own jobs there.
	for _, c := range []struct {
		key  string
		want int
	}{{own.keys[fsm.RoleViewer], 0}, {other.keys[fsm.RoleViewer], 1}, {own.keys[fsm.RoleSuperAdmin], 1}} {
		var w server.Worker
		e.doKey(c.key, "GET", "/v1/workers/w-pool", nil, &w)
		var l server.WorkerList
		e.doKey(c.key, "GET", "/v1/workers", nil, &l)
		for _, lw := range l.Workers {
			if lw.ID == w.ID && lw.ActiveJobs != w.ActiveJobs {
				t.Errorf("w-pool's active_jobs: %d in the list, %d alone", lw.ActiveJobs, w.ActiveJobs)
			}
		}
		if w.ActiveJobs != c.want {
			t.Errorf("key %s sees w-pool with %d active jobs, want %d", keyID(c.key), w.ActiveJobs, c.want)
		}
	}

	// Metrics are for a super-admin (metrics.view): their per-tenant
	// series name tenants, and nothing below a tenant: no job, worker,
	// user or key (routes are labeled by pattern, not by path).
	metrics := e.metricsText()
	if !strings.Contains(metrics, `route="GET /v1/jobs/{id}"`) {
		t.Errorf("metrics lack the route label of GET /v1/jobs/{id}")
	}
	for _, s := range append(append(secrets, own.secrets()...), "w-pool", "w-shared") {
		if s != "" && s != own.id && s != other.id && strings.Contains(metrics, s) {
			t.Errorf("GET /metrics shows %q", s)
		}
	}
}
