package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode"

	"github.com/google/uuid"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

func TestWrongMethodGets405WithAllow(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	for _, tc := range []struct{ method, path, allow string }{
		{"DELETE", "/v1/jobs", "POST, GET, HEAD"},
		{"PUT", "/health", "GET, HEAD"},
		{"GET", "/v1/jobs/0190b6a0-0000-7000-8000-000000000000/cancel", "POST"},
		{"POST", "/v1/workers/w1", "GET, HEAD"},
	} {
		var ae apiError
		resp := e.do(tc.method, tc.path, nil, &ae)
		if resp.StatusCode != http.StatusMethodNotAllowed || ae.Error.Code != "method_not_allowed" {
			t.Errorf("%s %s: got %d %q, want 405 method_not_allowed", tc.method, tc.path, resp.StatusCode, ae.Error.Code)
		}
		if got := resp.Header.Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, got, tc.allow)
		}
	}
	var ae apiError
	if resp := e.do("GET", "/v1/nothing", nil, &ae); resp.StatusCode != http.StatusNotFound || ae.Error.Code != "not_found" {
		t.Errorf("GET /v1/nothing: got %d %q, want 404 not_found", resp.StatusCode, ae.Error.Code)
	}
}

func TestUnauthenticatedNamesBearer(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	for _, key := range []string{"", "garbage", "ffk_0011223344556677_wrong"} {
		var ae apiError
		resp := e.doKey(key, "GET", "/v1/jobs", nil, &ae)
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("key %q: got %d, WWW-Authenticate %q; want 401 and Bearer", key, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
}

// cleanError fails unless a message is short and has no control
// characters.
func cleanError(t *testing.T, what, msg string, maxRunes int) {
	t.Helper()
	if strings.ContainsFunc(msg, unicode.IsControl) {
		t.Errorf("%s: message %q holds a control character", what, msg)
	}
	if n := len([]rune(msg)); n > maxRunes {
		t.Errorf("%s: message is %d runes, want at most %d: %q", what, n, maxRunes, msg)
	}
}

func TestEchoedValuesAreCutAndEscaped(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	hostile := strings.Repeat("a", 500) + "\x1b[31m\x00"
	for _, path := range []string{
		"/v1/jobs/" + url.PathEscape("\x1b[2J"+hostile),
		"/v1/workers/" + url.PathEscape("\x1b[2J"+hostile),
		"/v1/jobs?state=" + url.QueryEscape("\x1b[2J"+hostile),
		"/v1/" + url.PathEscape("\x1b[2J"+hostile),
		"/v1/jobs?queue=" + url.QueryEscape(hostile),
	} {
		var ae apiError
		resp := e.do("GET", path, nil, &ae)
		if resp.StatusCode < 400 || ae.Error.Message == "" {
			t.Fatalf("GET %s: status %d, want a typed error", path, resp.StatusCode)
		}
		cleanError(t, path[:12], ae.Error.Message, 200)
		if !strings.Contains(ae.Error.Message, "…") {
			t.Errorf("GET %s: message %q does not show that the value was cut", path[:12], ae.Error.Message)
		}
	}
}

// TestDomainErrorsCutEchoedValues: a value that Compile or validation
// echoes is cut too, whichever package wrote the message.
func TestDomainErrorsCutEchoedValues(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	long := strings.Repeat("x", 1000)
	for _, body := range []string{
		`{"scenario":"` + long + `","input":{"url":"testsrc://"},"outputs":[{"url":"file:///a.mp4"}]}`,
		`{"scenario":"720p30-h264","input":{"url":"rtmp://` + long + `/live"},"outputs":[{"url":"file:///a.mp4"}]}`,
		`{"scenario":"720p30-h264","input":{"url":"file:///` + long + `.exe"},"outputs":[{"url":"file:///a.mp4"}]}`,
	} {
		var ae apiError
		resp := e.do("POST", "/v1/jobs", body, &ae)
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Fatalf("status %d, want a 4xx", resp.StatusCode)
		}
		cleanError(t, string(ae.Error.Code), ae.Error.Message, 300)
		if !strings.Contains(ae.Error.Message, "x…") {
			t.Errorf("message %q does not show the cut value", ae.Error.Message)
		}
	}
}

func TestJSONErrorsShowNoGoTypes(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	for _, tc := range []struct{ body, want string }{
		{`[]`, "the body must be an object"},
		{`"x"`, "the body must be an object"},
		{`{"outputs":{}}`, `field "outputs" must be an array`},
		{`{"resources":{"cpu":"x"}}`, `field "resources.cpu" must be a number`},
		{`{"max_retries":1.5}`, `field "max_retries" must be an integer`},
		{`{"video":[]}`, `field "video" must be an object`},
		{`{"timeout":5}`, "duration"},
	} {
		var ae apiError
		resp := e.do("POST", "/v1/jobs", tc.body, &ae)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(ae.Error.Message, tc.want) {
			t.Errorf("body %s: got %d %q, want 400 with %q", tc.body, resp.StatusCode, ae.Error.Message, tc.want)
		}
		if strings.Contains(ae.Error.Message, "fsm.") || strings.Contains(ae.Error.Message, "Go ") {
			t.Errorf("body %s: message %q names a Go type", tc.body, ae.Error.Message)
		}
	}
}

// TestSubmitRefusesWhatWouldFailLate replays the reproductions
// through the API: each is refused at submit with a typed 400, and
// nothing is stored.
func TestSubmitRefusesWhatWouldFailLate(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	job := func(extra string) string {
		return `{"scenario":"720p30-h264","input":{"url":"testsrc://?duration=1"},"outputs":[{"url":"file:///a.mp4"}]` + extra + `}`
	}
	for _, tc := range []struct{ name, body, code string }{
		{"NUL in name", job(`,"name":"x\u0000y"`), "invalid_argument"},
		{"ANSI escape in name", job(`,"name":"\u001b[31mred"`), "invalid_argument"},
		{"C1 control in name", job(`,"name":"a\u009bb"`), "invalid_argument"},
		{"percent-encoded NUL in a file URL", `{"scenario":"720p30-h264","input":{"url":"file:///in%00x.mp4"},"outputs":[{"url":"file:///a.mp4"}]}`, "invalid_url"},
		{"percent-encoded NUL in an rtmp URL", `{"scenario":"720p30-h264","input":{"url":"rtmp://127.0.0.1/live/a%00b"},"outputs":[{"url":"file:///a.mp4"}]}`, "invalid_argument"},
		{"300-character file name", `{"scenario":"720p30-h264","input":{"url":"testsrc://"},"outputs":[{"url":"file:///` + strings.Repeat("n", 300) + `.mp4"}]}`, "invalid_url"},
		{"fps 0", job(`,"video":{"fps":0}`), "invalid_argument"},
		{"output fps 0", `{"scenario":"720p30-h264","input":{"url":"testsrc://"},"outputs":[{"url":"file:///a.mp4","video":{"fps":0}}]}`, "invalid_argument"},
		{"timeout 100000h", job(`,"timeout":"100000h"`), "invalid_argument"},
		{"acquire_timeout 100000h", job(`,"acquire_timeout":"100000h"`), "invalid_argument"},
		{"name too long", job(`,"name":"` + strings.Repeat("x", fsm.MaxNameLen+1) + `"`), "invalid_argument"},
	} {
		var ae apiError
		resp := e.do("POST", "/v1/jobs", tc.body, &ae)
		if resp.StatusCode != http.StatusBadRequest || ae.Error.Code != tc.code {
			t.Errorf("%s: got %d %q (%s), want 400 %s", tc.name, resp.StatusCode, ae.Error.Code, ae.Error.Message, tc.code)
		}
		cleanError(t, tc.name, ae.Error.Message, 300)
	}
	var page fsm.JobPage
	e.do("GET", "/v1/jobs", nil, &page)
	if len(page.Jobs) != 0 {
		t.Fatalf("refused submits stored %d jobs", len(page.Jobs))
	}
	// Unicode that every store keeps is fine in a name.
	var j fsm.Job
	if resp := e.do("POST", "/v1/jobs", job(`,"name":"Ünïcode 名前 🎬 e\u0301"`), &j); resp.StatusCode != http.StatusCreated || j.Spec.Name != "Ünïcode 名前 🎬 e\u0301" {
		t.Fatalf("unicode name: status %d, name %q", resp.StatusCode, j.Spec.Name)
	}
}

// racingRaft answers a submit as a node whose concurrent twin won the
// race would: already_exists. With apply set it first applies the submit
// (the twin's job exists); without, the job is not visible here at all.
type racingRaft struct {
	server.Raft
	apply bool
}

func (r *racingRaft) Apply(ctx context.Context, c fsm.Command) (any, error) {
	if sj, ok := c.(*fsm.SubmitJob); ok {
		if r.apply {
			if _, err := r.Raft.Apply(ctx, c); err != nil {
				return nil, err
			}
		}
		return nil, fsm.Errorf(fsm.CodeAlreadyExists, "job %q already exists", sj.Job.ID)
	}
	return r.Raft.Apply(ctx, c)
}

// TestIdempotentSubmitRaceAnswersJobOrTypedError: a submit whose key won
// elsewhere answers the job (200) if it can be read, else the typed
// already_exists, never a 500.
func TestIdempotentSubmitRaceAnswersJobOrTypedError(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	for _, visible := range []bool{true, false} {
		srv, err := server.New(server.Config{FSM: e.fsm, Raft: &racingRaft{Raft: e.node, apply: visible}, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv)
		t.Cleanup(hs.Close)
		req, _ := http.NewRequest("POST", hs.URL+"/v1/jobs", strings.NewReader(queuedSpec))
		req.Header.Set("Authorization", "Bearer "+e.token)
		key := uuid.Must(uuid.NewV7()).String()
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := http.StatusConflict
		if visible {
			want = http.StatusOK
		}
		if resp.StatusCode != want {
			t.Errorf("job visible %v: status %d, want %d", visible, resp.StatusCode, want)
		}
		if visible && resp.Header.Get("Location") != "/v1/jobs/"+key {
			t.Errorf("replay Location %q, want /v1/jobs/%s", resp.Header.Get("Location"), key)
		}
	}
}

// TestWorkerProtocolRefusesPoisonBeforeTheLog: the worker protocol's
// writes go through the same check as the API's: a report a store could
// not keep, or one Apply would choke on, is a typed 400 and the log does
// not grow.
func TestWorkerProtocolRefusesPoisonBeforeTheLog(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	mux := http.NewServeMux()
	e.srv.MountWorkerRPC(func(pattern string, h http.Handler) { mux.Handle(pattern, h) })
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	post := func(token, path, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", hs.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	// w1's token (bound by w1's registration) and a fresh one.
	bound, fresh := e.workerToken(""), e.workerToken("")
	if resp := post(bound, "/rpc/worker/register", `{"id":"w1","name":"w1","slots":1,"incarnation":"1"}`); resp.StatusCode != 200 {
		t.Fatalf("register w1: %d", resp.StatusCode)
	}
	last := func() string { return e.node.Stats()["last_log_index"] }
	before := last()
	for _, tc := range []struct{ token, path, body string }{
		{bound, "/rpc/worker/finish", `{"job_id":"j1","worker_id":"w1","attempt":1,"log":"a\u0000b"}`},
		{bound, "/rpc/worker/finish", `{"job_id":"j1","worker_id":"w1","attempt":1,"error":{"code":"ffmpeg_error","message":"\u001b[2J"}}`},
		{bound, "/rpc/worker/start", `{"job_id":"j1","worker_id":"w1","attempt":0}`},
		{fresh, "/rpc/worker/register", `{"id":"w9","name":"evil\u009b","slots":1}`},
		{fresh, "/rpc/worker/register", `{"id":"","slots":1}`},
	} {
		resp := post(tc.token, tc.path, tc.body)
		var ae apiError
		json.NewDecoder(resp.Body).Decode(&ae)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || ae.Error.Code != "invalid_argument" {
			t.Errorf("POST %s %s: got %d %q (%s), want 400 invalid_argument", tc.path, tc.body, resp.StatusCode, ae.Error.Code, ae.Error.Message)
		}
	}
	if after := last(); after != before {
		t.Errorf("refused worker reports grew the log from %s to %s", before, after)
	}
}
