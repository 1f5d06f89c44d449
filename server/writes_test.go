package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// TestWritesDoNotJudgeFromAStaleNode: a write whose answer depends on
// state this node may not have caught up with (a job or tenant it does
// not have, a job it holds as queued that may be canceled by now, a
// replayed submit's job as it is now) catches up with the leader before
// it answers; while no leader can be reached it answers 503 unavailable,
// never a refusal judged from its own state.
func TestWritesDoNotJudgeFromAStaleNode(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	queued := e.submit(queuedSpec)
	key, _ := uuid.NewV7()
	req, _ := http.NewRequest("POST", e.url+"/v1/jobs", strings.NewReader(queuedSpec))
	req.Header.Set("Authorization", "Bearer "+e.token)
	req.Header.Set("Idempotency-Key", key.String())
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("submit with a key: %v %v", err, resp)
	}
	_, hs := serveWith(t, e, leaderlessRaft{e.node})
	missing := "0190a0a0-0000-7000-8000-000000000000"
	for _, c := range []struct{ what, path, key string }{
		{"cancel of a job this node does not have", "/v1/jobs/" + missing + "/cancel", ""},
		{"retry of a job this node does not have", "/v1/jobs/" + missing + "/retry", ""},
		{"retry of a job this node holds as queued", "/v1/jobs/" + queued.ID + "/retry", ""},
		{"submit into a tenant this node does not have", "/v1/jobs?tenant=elsewhere", ""},
		{"a replayed submit", "/v1/jobs", key.String()},
	} {
		body := ""
		if strings.HasPrefix(c.path, "/v1/jobs?") || c.path == "/v1/jobs" {
			body = queuedSpec
		}
		req, _ := http.NewRequest("POST", hs.URL+c.path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.token)
		if c.key != "" {
			req.Header.Set("Idempotency-Key", c.key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s without a leader: %d, want 503 with Retry-After", c.what, resp.StatusCode)
		}
	}
}
