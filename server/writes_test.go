package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
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

// resendAfterFinish is a raft whose every submit is applied, then the job
// canceled (it finished), then the same submit applied again: what a
// follower sees when a leader change lost the first try's answer
// (cluster/retry.go sends it again) and the job ended before the resend.
type resendAfterFinish struct{ server.Raft }

func (r resendAfterFinish) again(ctx context.Context, c *fsm.SubmitJob) (any, error) {
	if _, err := r.Raft.Apply(ctx, c); err != nil {
		return nil, err
	}
	if _, err := r.Raft.Apply(ctx, &fsm.CancelJob{JobID: c.Job.ID}); err != nil {
		return nil, err
	}
	return r.Raft.Apply(ctx, c)
}

func (r resendAfterFinish) Apply(ctx context.Context, c fsm.Command) (any, error) {
	if sj, ok := c.(*fsm.SubmitJob); ok {
		return r.again(ctx, sj)
	}
	return r.Raft.Apply(ctx, c)
}

func (r resendAfterFinish) SubmitAll(ctx context.Context, cmds []*fsm.SubmitJob) ([]any, []error) {
	resps, errs := make([]any, len(cmds)), make([]error, len(cmds))
	for i, c := range cmds {
		resps[i], errs[i] = r.again(ctx, c)
	}
	return resps, errs
}

// TestResentSubmitOfAFinishedJobAnswersTheJob: a submit whose first try
// created the job answers with that job, not already_exists, when the
// resend reaches the leader after the job has finished; single and batch.
func TestResentSubmitOfAFinishedJobAnswersTheJob(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	_, hs := serveWith(t, e, resendAfterFinish{e.node})
	post := func(path, body string) (*http.Response, []byte) {
		req, _ := http.NewRequest("POST", hs.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, body := post("/v1/jobs", queuedSpec)
	var j server.Job
	if err := json.Unmarshal(body, &j); err != nil || resp.StatusCode != http.StatusCreated || j.State != fsm.JobCanceled {
		t.Errorf("single submit: %d %s, want 201 with the job (canceled since)", resp.StatusCode, body)
	}
	resp, body = post("/v1/jobs/batch", `{"items":[{"spec":`+queuedSpec+`}]}`)
	var br server.BatchSubmitResponse
	if err := json.Unmarshal(body, &br); err != nil || resp.StatusCode != http.StatusOK || len(br.Items) != 1 ||
		br.Items[0].Status != http.StatusCreated || br.Items[0].Job == nil {
		t.Errorf("batch submit: %d %s, want one item 201 with its job", resp.StatusCode, body)
	}
}
