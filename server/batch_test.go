package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// batchItem is one item of a POST /v1/jobs/batch body.
func batchItem(key, spec string) string {
	if key == "" {
		return `{"spec":` + spec + `}`
	}
	return `{"idempotency_key":"` + key + `","spec":` + spec + `}`
}

func batchBody(items ...string) string { return `{"items":[` + strings.Join(items, ",") + `]}` }

// postBatch posts a batch and returns its per-item results.
func postBatch(t *testing.T, e *env, path, body string) []server.BatchSubmitResult {
	t.Helper()
	var out server.BatchSubmitResponse
	if resp := e.do("POST", path, body, &out); resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: status %d", path, resp.StatusCode)
	}
	return out.Items
}

// wantItem fails unless res has the given status and, for an error, code.
func wantItem(t *testing.T, what string, res server.BatchSubmitResult, status int, code fsm.Code) {
	t.Helper()
	got := fmt.Sprint(res.Status)
	if res.Error != nil {
		got += " " + string(res.Error.Code)
	}
	want := fmt.Sprint(status)
	if code != "" {
		want += " " + string(code)
	}
	if got != want || (res.Error == nil) != (res.Job != nil) {
		t.Errorf("%s: %s (job %v, error %v), want %s", what, got, res.Job, res.Error, want)
	}
}

// TestBatchSubmitPerItem: each item of a batch gets its own result; a
// refused item fails alone; an idempotency key replays per item, also
// twice in one request; every queued job exists once.
func TestBatchSubmitPerItem(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	key := uuid.Must(uuid.NewV7()).String()
	other := `{"scenario":"480p30-h264","input":{"url":"testsrc://?duration=5"},"outputs":[{"url":"file:///b.mp4"}]}`
	unknown := `{"scenario":"721p30-h264","input":{"url":"testsrc://"},"outputs":[{"url":"file:///a.mp4"}]}`
	body := batchBody(batchItem(key, queuedSpec), batchItem("", queuedSpec), batchItem("", unknown),
		batchItem("not-a-uuid", queuedSpec), batchItem("", `{"scenario":"720p30-h264","args":["-i"]}`))
	first := postBatch(t, e, "/v1/jobs/batch", body)
	if len(first) != 5 {
		t.Fatalf("%d results for 5 items", len(first))
	}
	wantItem(t, "keyed item", first[0], http.StatusCreated, "")
	wantItem(t, "item without a key", first[1], http.StatusCreated, "")
	wantItem(t, "unknown scenario", first[2], http.StatusBadRequest, fsm.CodeUnknownScenario)
	wantItem(t, "malformed key", first[3], http.StatusBadRequest, fsm.CodeInvalidArgument)
	wantItem(t, "unknown field", first[4], http.StatusBadRequest, server.CodeUnknownField)
	if first[0].Job.ID != key || first[0].Job.State != fsm.JobQueued {
		t.Errorf("keyed item: job %+v, want ID %s queued", first[0].Job, key)
	}

	// The same request again: the keyed item replays (200, same job),
	// the other is a new job.
	again := postBatch(t, e, "/v1/jobs/batch", body)
	wantItem(t, "keyed item again", again[0], http.StatusOK, "")
	wantItem(t, "item without a key again", again[1], http.StatusCreated, "")
	if again[0].Job.ID != key || again[1].Job.ID == first[1].Job.ID {
		t.Errorf("replay: jobs %s and %s; want %s and a new one", again[0].Job.ID, again[1].Job.ID, key)
	}

	// One new key twice in one request: one job, answered to both; a
	// key reused with another spec conflicts.
	twice := uuid.Must(uuid.NewV7()).String()
	dup := postBatch(t, e, "/v1/jobs/batch", batchBody(batchItem(twice, queuedSpec), batchItem(twice, queuedSpec), batchItem(key, other)))
	if dup[0].Job == nil || dup[1].Job == nil || dup[0].Job.ID != twice || dup[1].Job.ID != twice ||
		dup[0].Status+dup[1].Status != http.StatusCreated+http.StatusOK {
		t.Errorf("one key twice: %+v and %+v, want one 201 and one 200 with job %s", dup[0], dup[1], twice)
	}
	wantItem(t, "key reused with another spec", dup[2], http.StatusConflict, fsm.CodeAlreadyExists)

	var page fsm.JobPage
	e.do("GET", "/v1/jobs?limit=100", nil, &page)
	seen := map[string]int{}
	for _, j := range page.Jobs {
		seen[j.ID]++
	}
	if len(page.Jobs) != 4 || seen[key] != 1 || seen[twice] != 1 {
		t.Errorf("stored jobs: %v, want 4, with %s and %s once each", seen, key, twice)
	}

	// Each item that reached the log has its own audit record.
	records := 0
	if err := e.fsm.Store().ScanAudit(context.Background(), 0, func(r *fsm.AuditRecord) error {
		if r.Action == "submitJobs" {
			records++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if records != 5 { // 2 + 1 + the pair sharing one key (one ok, one already_exists)
		t.Errorf("%d submitJobs audit records, want 5", records)
	}
}

// TestBatchSubmitQuotaAndBounds: items past a tenant's max_jobs are
// refused one by one with quota_exceeded while the others queue; an
// empty or oversized batch is refused whole.
func TestBatchSubmitQuotaAndBounds(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	if _, err := e.node.Apply(context.Background(), &fsm.UpdateTenant{ID: "default", MaxJobs: new(3), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var items []string
	for range 5 {
		items = append(items, batchItem("", queuedSpec))
	}
	res := postBatch(t, e, "/v1/jobs/batch", batchBody(items...))
	for i, r := range res {
		if i < 3 {
			wantItem(t, fmt.Sprintf("item %d", i), r, http.StatusCreated, "")
		} else {
			wantItem(t, fmt.Sprintf("item %d", i), r, http.StatusTooManyRequests, fsm.CodeQuotaExceeded)
			if r.Error.Details == nil || r.Error.Details.Quota != "max_jobs" {
				t.Errorf("item %d: details %+v, want max_jobs", i, r.Error.Details)
			}
		}
	}

	var ae struct {
		Error fsm.Error `json:"error"`
	}
	for _, tc := range []struct {
		name, body string
	}{
		{"no items", `{"items":[]}`},
		{"too many items", batchBody(strings.Split(strings.Repeat(batchItem("", queuedSpec)+"\x00", fsm.MaxSubmitBatch+1), "\x00")[:fsm.MaxSubmitBatch+1]...)},
	} {
		resp := e.do("POST", "/v1/jobs/batch", tc.body, &ae)
		if resp.StatusCode != http.StatusBadRequest || ae.Error.Code != fsm.CodeInvalidArgument {
			t.Errorf("%s: status %d %+v, want 400 invalid_argument", tc.name, resp.StatusCode, ae.Error)
		}
	}
	if resp := e.do("POST", "/v1/jobs/batch", `{"items":`, &ae); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("malformed body: status %d", resp.StatusCode)
	}
}
