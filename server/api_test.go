package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
	"github.com/ffrtmp/ffrtmp/store/bolt"
	"github.com/ffrtmp/ffrtmp/worker"
)

// env is one in-process node: bolt store, FSM, single-node Raft over TCP
// on loopback, the scheduler, and the API behind an httptest server.
type env struct {
	t       *testing.T
	srv     *server.Server
	fsm     *fsm.FSM
	node    *cluster.Node
	url     string
	token   string
	dataDir string
}

type envOpts struct {
	worker bool
	now    func() time.Time
	log    *slog.Logger // default testLogger
}

func setup(t *testing.T, opts envOpts) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	metrics := server.NewMetrics()
	f, err := fsm.New(context.Background(), fsm.Config{Store: st, Observer: metrics})
	if err != nil {
		t.Fatal(err)
	}
	sched := &cluster.Scheduler{FSM: f, Logger: testLogger(t)}
	node, err := cluster.New(cluster.Config{
		TLS:    clustertest.PeerTLS(t),
		NodeID: "n1", DataDir: filepath.Join(dir, "raft"), RaftAddr: "127.0.0.1:0", Bootstrap: true,
		FSM: f, Logger: testLogger(t), LeaderLoop: sched.Run,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		node.Shutdown()
		st.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := node.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	logs := &logRouter{}
	if opts.log == nil {
		opts.log = testLogger(t)
	}
	srv, err := server.New(server.Config{
		FSM: f, Raft: node, Metrics: metrics, Logger: opts.log, Now: opts.now, Logs: logs,
		Policy: fsm.Policy{AllowedHosts: []string{"127.0.0.1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The leader loop starts after a barrier; bootstrap waits for leadership.
	var token string
	for {
		token, err = srv.Bootstrap(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("bootstrap: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	e := &env{t: t, srv: srv, fsm: f, node: node, url: hs.URL, token: token, dataDir: dir}
	if opts.worker {
		wctx, stop := context.WithCancel(context.Background())
		w := worker.New(worker.Config{
			ID: "w1", Slots: 2, MediaRoot: filepath.Join(dir, "media"), Control: srv.Workers(),
			Logger: testLogger(t), ProgressInterval: 200 * time.Millisecond, KillGrace: 2 * time.Second,
		})
		logs.w.Store(w)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := w.Run(wctx); err != nil {
				t.Errorf("worker: %v", err)
			}
		}()
		t.Cleanup(func() {
			stop()
			<-done
		})
		e.waitFor(func() bool { _, ok := f.Worker("w1"); return ok }, "worker registered")
	}
	return e
}

// workerToken creates a worker token for tenant ("" for the shared pool)
// and returns its text.
func (e *env) workerToken(tenant string) string {
	e.t.Helper()
	text, wt := server.NewWorkerToken(tenant, "test", "test", time.Now().UTC())
	if _, err := e.node.Apply(context.Background(), &fsm.CreateWorkerToken{Token: wt}); err != nil {
		e.t.Fatal(err)
	}
	return text
}

// logRouter serves live logs from the worker created after the server.
type logRouter struct{ w atomic.Pointer[worker.Worker] }

func (l *logRouter) JobLog(ctx context.Context, workerID, jobID string) (string, error) {
	if w := l.w.Load(); w != nil {
		return w.JobLog(ctx, workerID, jobID)
	}
	return "", fmt.Errorf("no worker")
}

// testLogger logs warnings and errors to t.Log until the test ends. A
// server's background work outlives a test (the key-use flush retries a
// proposal for up to a minute when there is no leader): later lines are
// dropped, since t.Log after the end panics.
func testLogger(t *testing.T) *slog.Logger { return clustertest.LoggerAt(t, slog.LevelWarn) }

// do sends a request with the env's key and decodes a JSON response.
func (e *env) do(method, path string, body any, out any) *http.Response {
	e.t.Helper()
	return e.doKey(e.token, method, path, body, out)
}

func (e *env) doKey(key, method, path string, body any, out any) *http.Response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, _ := json.Marshal(b)
		rd = bytes.NewReader(js)
	}
	req, _ := http.NewRequest(method, e.url+path, rd)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
	return resp
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (e *env) submit(spec string) *fsm.Job {
	e.t.Helper()
	var j fsm.Job
	if resp := e.do("POST", "/v1/jobs", spec, &j); resp.StatusCode != http.StatusCreated {
		e.t.Fatalf("submit: status %d", resp.StatusCode)
	}
	return &j
}

// waitFor polls cond until it holds, failing the test after a deadline.
func (e *env) waitFor(cond func() bool, what string) {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		_, ch := e.fsm.Watch()
		select {
		case <-ch:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (e *env) waitState(id string, states ...fsm.JobState) *fsm.Job {
	e.t.Helper()
	var j *fsm.Job
	e.waitFor(func() bool {
		var err error
		j, err = e.fsm.GetJob(context.Background(), id)
		if err != nil {
			return false
		}
		for _, s := range states {
			if j.State == s {
				return true
			}
		}
		return false
	}, fmt.Sprintf("job %s in %v", id, states))
	return j
}

const queuedSpec = `{"scenario":"720p30-h264","input":{"url":"testsrc://?duration=5"},"outputs":[{"url":"file:///a.mp4"}]}`

func TestSubmitGetList(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	j := e.submit(queuedSpec)
	if j.State != fsm.JobQueued || j.TenantID != "default" || j.Plan.Outputs[0].Video.Width != 1280 {
		t.Fatalf("submitted job = %+v", j)
	}
	var got fsm.Job
	resp := e.do("GET", "/v1/jobs/"+j.ID, nil, &got)
	if resp.StatusCode != 200 || got.ID != j.ID || resp.Header.Get("X-Ffrtmp-Index") == "" {
		t.Fatalf("get: status %d, job %+v", resp.StatusCode, got)
	}
	for range 4 {
		e.submit(queuedSpec)
	}
	var page fsm.JobPage
	e.do("GET", "/v1/jobs?limit=3", nil, &page)
	if len(page.Jobs) != 3 || page.Next == "" {
		t.Fatalf("first page: %d jobs, next %q", len(page.Jobs), page.Next)
	}
	var page2 fsm.JobPage
	e.do("GET", "/v1/jobs?limit=3&after="+page.Next, nil, &page2)
	if len(page2.Jobs) != 2 || page2.Next != "" {
		t.Fatalf("second page: %d jobs, next %q", len(page2.Jobs), page2.Next)
	}
	if page2.Jobs[1].ID != j.ID {
		t.Fatalf("oldest job last: got %s, want %s", page2.Jobs[1].ID, j.ID)
	}
	var filtered fsm.JobPage
	e.do("GET", "/v1/jobs?state=succeeded", nil, &filtered)
	if len(filtered.Jobs) != 0 {
		t.Fatalf("state filter: got %d jobs, want 0", len(filtered.Jobs))
	}
}

// TestBadInputChangesNothing checks that every kind of bad request gets a
// typed 4xx error and stores nothing.
func TestBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	big := `{"name":"` + strings.Repeat("x", 10<<20) + `"}`
	cases := []struct {
		name, key, body string
		status          int
		code            string
	}{
		{"file outside tenant area", e.token, `{"scenario":"720p30-h264","input":{"url":"file:///etc/passwd"},"outputs":[{"url":"file:///a.mp4"}]}`, 403, "url_not_allowed"},
		{"dot-dot path", e.token, `{"scenario":"720p30-h264","input":{"url":"file:///../../etc/x.mp4"},"outputs":[{"url":"file:///a.mp4"}]}`, 403, "url_not_allowed"},
		{"unknown scenario", e.token, `{"scenario":"721p30-h264","input":{"url":"testsrc://"},"outputs":[{"url":"file:///a.mp4"}]}`, 400, "unknown_scenario"},
		{"unknown field", e.token, `{"scenario":"720p30-h264","input":{"url":"testsrc://"},"outputs":[{"url":"file:///a.mp4"}],"args":["-i","x"]}`, 400, "unknown_field"},
		{"malformed json", e.token, `{"scenario":`, 400, "malformed_json"},
		{"trailing data", e.token, queuedSpec + `{}`, 400, "malformed_json"},
		{"wrong type", e.token, `{"scenario":5}`, 400, "malformed_json"},
		{"empty body", e.token, ``, 400, "malformed_json"},
		{"10 MB body", e.token, big, 413, "body_too_large"},
		{"host not allowed", e.token, `{"scenario":"720p30-h264","input":{"url":"rtmp://example.com/live/x"},"outputs":[{"url":"file:///a.mp4"}]}`, 403, "url_not_allowed"},
		{"bad scheme", e.token, `{"scenario":"720p30-h264","input":{"url":"concat:a|b"},"outputs":[{"url":"file:///a.mp4"}]}`, 400, "invalid_url"},
		{"no key", "", queuedSpec, 401, "unauthenticated"},
		{"wrong key", "ffk_0011223344556677_notthesecret", queuedSpec, 401, "unauthenticated"},
		{"garbage key", "hello", queuedSpec, 401, "unauthenticated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ae apiError
			resp := e.doKey(tc.key, "POST", "/v1/jobs", tc.body, &ae)
			if resp.StatusCode != tc.status || ae.Error.Code != tc.code || ae.Error.Message == "" {
				t.Fatalf("got %d %q (%s), want %d %q", resp.StatusCode, ae.Error.Code, ae.Error.Message, tc.status, tc.code)
			}
		})
	}
	var page fsm.JobPage
	e.do("GET", "/v1/jobs", nil, &page)
	if len(page.Jobs) != 0 {
		t.Fatalf("bad requests stored %d jobs", len(page.Jobs))
	}
}

func TestExpiredAndRevokedKeys(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	e := setup(t, envOpts{now: func() time.Time { return now }})
	ctx := context.Background()
	tok, key := server.NewAPIKey("default", "bob", fsm.RoleViewer, now.Add(-2*time.Hour), time.Hour)
	if _, err := e.node.Apply(ctx, &fsm.CreateAPIKey{Key: key}); err != nil {
		t.Fatal(err)
	}
	var ae apiError
	if resp := e.doKey(tok, "GET", "/v1/jobs", nil, &ae); resp.StatusCode != 401 || !strings.Contains(ae.Error.Message, "expired") {
		t.Fatalf("expired key: %d %+v", resp.StatusCode, ae)
	}
	tok2, key2 := server.NewAPIKey("default", "carol", fsm.RoleViewer, now, 0)
	if _, err := e.node.Apply(ctx, &fsm.CreateAPIKey{Key: key2}); err != nil {
		t.Fatal(err)
	}
	if resp := e.doKey(tok2, "GET", "/v1/jobs", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("viewer read: %d", resp.StatusCode)
	}
	if resp := e.doKey(tok2, "POST", "/v1/jobs", queuedSpec, &ae); resp.StatusCode != 403 || ae.Error.Code != "permission_denied" {
		t.Fatalf("viewer submit: %d %+v", resp.StatusCode, ae)
	}
	if _, err := e.node.Apply(ctx, &fsm.RevokeAPIKey{ID: key2.ID, At: now}); err != nil {
		t.Fatal(err)
	}
	if resp := e.doKey(tok2, "GET", "/v1/jobs", nil, nil); resp.StatusCode != 401 {
		t.Fatalf("revoked key: %d", resp.StatusCode)
	}
}

func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	ctx := context.Background()
	if _, err := e.node.Apply(ctx, &fsm.CreateTenant{Tenant: fsm.Tenant{ID: "acme", Name: "acme"}}); err != nil {
		t.Fatal(err)
	}
	tok, key := server.NewAPIKey("acme", "ann", fsm.RoleOperator, time.Now().UTC(), 0)
	if _, err := e.node.Apply(ctx, &fsm.CreateAPIKey{Key: key}); err != nil {
		t.Fatal(err)
	}
	j := e.submit(queuedSpec) // tenant default
	var ae apiError
	if resp := e.doKey(tok, "GET", "/v1/jobs/"+j.ID, nil, &ae); resp.StatusCode != 404 || ae.Error.Code != "not_found" {
		t.Fatalf("other tenant's job: %d %+v", resp.StatusCode, ae)
	}
	if resp := e.doKey(tok, "POST", "/v1/jobs/"+j.ID+"/cancel", nil, &ae); resp.StatusCode != 404 {
		t.Fatalf("cancel other tenant's job: %d", resp.StatusCode)
	}
	if resp := e.doKey(tok, "POST", "/v1/jobs?tenant=default", queuedSpec, &ae); resp.StatusCode != 403 || ae.Error.Code != "permission_denied" {
		t.Fatalf("naming another tenant: %d %+v", resp.StatusCode, ae)
	}
	var mine fsm.Job
	if resp := e.doKey(tok, "POST", "/v1/jobs", queuedSpec, &mine); resp.StatusCode != 201 || mine.TenantID != "acme" {
		t.Fatalf("own submit: %d tenant %q", resp.StatusCode, mine.TenantID)
	}
	var page fsm.JobPage
	e.doKey(tok, "GET", "/v1/jobs", nil, &page)
	if len(page.Jobs) != 1 || page.Jobs[0].ID != mine.ID {
		t.Fatalf("acme sees %d jobs", len(page.Jobs))
	}
	var all fsm.JobPage
	e.do("GET", "/v1/jobs", nil, &all) // super-admin sees every tenant
	if len(all.Jobs) != 2 {
		t.Fatalf("super-admin sees %d jobs, want 2", len(all.Jobs))
	}
}

func TestTransitionsOnQueuedJobs(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	j := e.submit(queuedSpec)
	var ae apiError
	if resp := e.do("POST", "/v1/jobs/"+j.ID+"/pause", nil, &ae); resp.StatusCode != 409 || ae.Error.Code != "invalid_transition" {
		t.Fatalf("pause queued job: %d %+v", resp.StatusCode, ae)
	}
	var c fsm.Job
	if resp := e.do("POST", "/v1/jobs/"+j.ID+"/cancel", nil, &c); resp.StatusCode != 200 || c.State != fsm.JobCanceled {
		t.Fatalf("cancel: %d %s", resp.StatusCode, c.State)
	}
	if resp := e.do("POST", "/v1/jobs/"+j.ID+"/cancel", nil, &ae); resp.StatusCode != 409 {
		t.Fatalf("cancel twice: %d", resp.StatusCode)
	}
	if resp := e.do("POST", "/v1/jobs/"+j.ID+"/resume", nil, &ae); resp.StatusCode != 409 {
		t.Fatalf("resume canceled: %d", resp.StatusCode)
	}
	var r fsm.Job
	if resp := e.do("POST", "/v1/jobs/"+j.ID+"/retry", nil, &r); resp.StatusCode != 201 || r.RetryOf != j.ID || r.State != fsm.JobQueued || r.ID == j.ID {
		t.Fatalf("retry: %d %+v", resp.StatusCode, r)
	}
	var orig fsm.Job
	e.do("GET", "/v1/jobs/"+j.ID, nil, &orig)
	if orig.State != fsm.JobCanceled {
		t.Fatalf("retry changed the original: %s", orig.State)
	}
	if resp := e.do("POST", "/v1/jobs/"+r.ID+"/retry", nil, &ae); resp.StatusCode != 409 {
		t.Fatalf("retry of a queued job: %d", resp.StatusCode)
	}
	if resp := e.do("GET", "/v1/jobs/not%20a%20job%20id", nil, &ae); resp.StatusCode != 400 {
		t.Fatalf("malformed id: %d", resp.StatusCode)
	}
	if resp := e.do("GET", "/v1/jobs/01a21f5d-e989-755a-85c1-5ed848c98b1a", nil, &ae); resp.StatusCode != 404 {
		t.Fatalf("unknown id: %d", resp.StatusCode)
	}
}

func TestLongPoll(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	j := e.submit(queuedSpec)
	done := make(chan fsm.Job, 1)
	go func() {
		var got fsm.Job
		e.do("GET", fmt.Sprintf("/v1/jobs/%s?index=%d&wait=30s", j.ID, j.ModifyIndex), nil, &got)
		done <- got
	}()
	// The request blocks until the job changes.
	select {
	case got := <-done:
		t.Fatalf("long poll returned before a change: %+v", got.State)
	case <-time.After(300 * time.Millisecond):
	}
	e.do("POST", "/v1/jobs/"+j.ID+"/cancel", nil, nil)
	select {
	case got := <-done:
		if got.State != fsm.JobCanceled {
			t.Fatalf("long poll got state %s", got.State)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("long poll did not return after the change")
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	if resp := e.doKey("", "GET", "/health", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("health: %d", resp.StatusCode)
	}
	var ready struct {
		Ready bool `json:"ready"`
	}
	if resp := e.doKey("", "GET", "/ready", nil, &ready); resp.StatusCode != 200 || !ready.Ready {
		t.Fatalf("ready: %d %+v", resp.StatusCode, ready)
	}
	e.submit(queuedSpec)
	body := e.metricsText()
	if resp, _ := get(t, e.url+"/metrics", ""); resp != http.StatusUnauthorized {
		t.Errorf("metrics without a key: %d, want 401", resp)
	}
	for _, want := range []string{`ffrtmp_jobs{state="queued"} 1`, `ffrtmp_queue_depth{queue="default"} 1`, "ffrtmp_job_wait_seconds_bucket", `ffrtmp_http_requests_total{code="201",route="POST /v1/jobs"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestRunningJobLifecycle runs real ffmpeg through the in-process worker:
// progress events stream, pause stops the process, resume continues it,
// cancel ends it and the job stays canceled.
func TestRunningJobLifecycle(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{worker: true})
	j := e.submit(`{"scenario":"360p30-h264","input":{"url":"testsrc://?duration=600"},"outputs":[{"url":"file:///long.mp4"}]}`)

	// Progress arrives on the event stream.
	req, _ := http.NewRequest("GET", e.url+"/v1/jobs/"+j.ID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var progressed bool
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev fsm.Job
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.State == fsm.JobRunning && ev.Progress != nil && ev.Progress.Percent > 0 && ev.Progress.Frame > 0 {
			progressed = true
			break
		}
	}
	resp.Body.Close()
	if !progressed {
		t.Fatal("no progress event for the running job")
	}

	var p fsm.Job
	if r := e.do("POST", "/v1/jobs/"+j.ID+"/pause", nil, &p); r.StatusCode != 200 || p.State != fsm.JobPaused {
		t.Fatalf("pause: %d %s", r.StatusCode, p.State)
	}
	// Other tests of this package run ffmpeg writing a long.mp4 of their
	// own at the same time: find this one by its full path.
	pid := ffmpegPID(t, filepath.Join(e.dataDir, "media", "default", ".long.mp4.part"))
	e.waitFor(func() bool { return procState(pid) == "T" }, "ffmpeg stopped (SIGSTOP)")
	e.do("POST", "/v1/jobs/"+j.ID+"/resume", nil, &p)
	e.waitFor(func() bool { s := procState(pid); return s == "S" || s == "R" }, "ffmpeg continued")

	var logText string
	e.waitFor(func() bool {
		req, _ := http.NewRequest("GET", e.url+"/v1/jobs/"+j.ID+"/logs", nil)
		req.Header.Set("Authorization", "Bearer "+e.token)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		logText = string(b)
		return r.StatusCode == 200 && strings.Contains(logText, "libx264")
	}, "live log mentions the encoder")

	if r := e.do("POST", "/v1/jobs/"+j.ID+"/cancel", nil, &p); r.StatusCode != 200 || p.State != fsm.JobCanceled {
		t.Fatalf("cancel: %d %s", r.StatusCode, p.State)
	}
	e.waitFor(func() bool { return procState(pid) == "" }, "ffmpeg exits after cancel")
	got := e.waitState(j.ID, fsm.JobCanceled)
	if got.State != fsm.JobCanceled {
		t.Fatalf("state %s", got.State)
	}
	if _, err := os.Stat(filepath.Join(e.dataDir, "media", "default", "long.mp4")); !os.IsNotExist(err) {
		t.Fatalf("canceled job left an output: %v", err)
	}
}

func ffmpegPID(t *testing.T, needle string) int {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, ent := range entries {
		var pid int
		if _, err := fmt.Sscanf(ent.Name(), "%d", &pid); err != nil {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if bytes.HasPrefix(cmd, []byte("ffmpeg")) || bytes.Contains(cmd, []byte("/ffmpeg\x00")) {
			if bytes.Contains(cmd, []byte(needle)) {
				return pid
			}
		}
	}
	t.Fatalf("no ffmpeg process writing %s", needle)
	return 0
}

// procState returns the process state letter, "" if it is gone (or a
// zombie).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	if st := s[i+2 : i+3]; st != "Z" {
		return st
	}
	return ""
}

func TestTranscodeSucceedsWithProbe(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{worker: true})
	j := e.submit(`{"scenario":"240p30-h264","input":{"url":"testsrc://?duration=2"},"outputs":[{"url":"file:///out/a.mp4"},{"url":"file:///out/a.webm","video":{"codec":"vp9","height":144}}]}`)
	got := e.waitState(j.ID, fsm.JobSucceeded, fsm.JobFailed)
	if got.State != fsm.JobSucceeded {
		t.Fatalf("job %s: %+v\n%s", got.State, got.Error, got.Log)
	}
	if len(got.Result.Outputs) != 2 {
		t.Fatalf("outputs: %+v", got.Result)
	}
	want := []struct {
		codec string
		w, h  int
	}{{"h264", 426, 240}, {"vp9", 256, 144}}
	for i, o := range got.Result.Outputs {
		if o.Codec != want[i].codec || o.Width != want[i].w || o.Height != want[i].h || o.DurationSec < 1.8 || o.DurationSec > 2.3 {
			t.Errorf("output %d = %+v, want %+v about 2s", i, o, want[i])
		}
		// The worker renames an output into place once the cluster
		// accepted its finish, a moment after the job turned succeeded.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			_, err := os.Stat(o.Path)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("output %d: %v", i, err)
				break
			}
		}
	}
}

// TestWorkerFinishIsIdempotent: the heartbeat names the lease, and a
// finish report repeated after it was applied (its first answer lost) is
// accepted again, since the worker publishes outputs only on acceptance;
// a report for another attempt is still refused as stale.
func TestWorkerFinishIsIdempotent(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	ws := e.srv.Workers()
	ctx := context.Background()
	if _, err := ws.Register(ctx, &fsm.Worker{ID: "w1", Incarnation: "a", Slots: 2, CPUs: 4, MemoryMB: 4096,
		Encoders: []string{"libx264", "aac"}}); err != nil {
		t.Fatal(err)
	}
	if lease, err := ws.Heartbeat(ctx, "w1"); err != nil || lease != cluster.DefaultWorkerLease {
		t.Fatalf("Heartbeat = %v, %v; want the lease %v", lease, err, cluster.DefaultWorkerLease)
	}
	j := e.submit(`{"scenario":"240p30-h264","input":{"url":"testsrc://?duration=1"},"outputs":[{"url":"file:///x.mp4"}]}`)
	j = e.waitState(j.ID, fsm.JobAssigned)
	r := fsm.Report{JobID: j.ID, WorkerID: "w1", Attempt: j.Attempt}
	if err := ws.Start(ctx, r); err != nil {
		t.Fatal(err)
	}
	fin := &fsm.FinishJob{Report: r, Result: &fsm.Result{Outputs: []fsm.OutputResult{{URL: "file:///x.mp4"}}}}
	for i := range 2 {
		if err := ws.Finish(ctx, fin); err != nil {
			t.Fatalf("finish #%d: %v", i+1, err)
		}
	}
	// A node that cannot catch up with a leader cannot tell a repeat from
	// a stale report: it answers unavailable (the worker asks again),
	// never stale_attempt (the worker would discard the outputs).
	lost, _ := serveWith(t, e, leaderlessRaft{e.node})
	if err := lost.Workers().Finish(ctx, fin); err == nil || fsm.ErrorCode(err) == fsm.CodeStaleAttempt || !errors.Is(err, cluster.ErrNoLeader) {
		t.Errorf("finish repeated without a leader: %v, want no leader", err)
	}
	stale := &fsm.FinishJob{Report: fsm.Report{JobID: j.ID, WorkerID: "w1", Attempt: j.Attempt + 1}, Result: fin.Result}
	if err := ws.Finish(ctx, stale); fsm.ErrorCode(err) != fsm.CodeStaleAttempt {
		t.Errorf("finish of another attempt: %v, want stale_attempt", err)
	}
	if got := e.waitState(j.ID, fsm.JobSucceeded); got.Attempt != j.Attempt {
		t.Errorf("job %+v, want succeeded attempt %d", got, j.Attempt)
	}
}
