package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// quotaSubmit posts a job for tenant to node addr with key and returns
// the status and the decoded error, if any.
func quotaSubmit(addr, key, tenant, spec string) (int, *fsm.Error, error) {
	req, err := http.NewRequest("POST", "http://"+addr+"/v1/jobs?tenant="+url.QueryEscape(tenant), strings.NewReader(spec))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	cl := http.Client{Timeout: 30 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusCreated {
		return resp.StatusCode, nil, nil
	}
	var e struct{ Error *fsm.Error }
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil {
		return resp.StatusCode, nil, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return resp.StatusCode, e.Error, nil
}

// TestQuotasAcrossNodes checks that quotas hold across a real three-node
// cluster: 50 concurrent submits spread over the nodes against max_jobs 10
// are accepted exactly 10 times, the rest refused with the limit and the
// usage; and with max_concurrent_jobs 1 a worker with two slots never
// runs two of the tenant's jobs at once, while the shared pool stays open
// to other tenants.
func TestQuotasAcrossNodes(t *testing.T) {
	c, client := startInitialized(t, 3)
	key := c.key()
	all := c.addrs(c.nodes...)
	// The upgrade path's first command works on a fresh cluster, twice.
	for range 2 {
		c.mustCLI("--addr", all, "tenants", "create", "--name", "default", "--migrate-existing")
	}
	c.mustCLI("--addr", all, "tenants", "create", "--name", "tenmax", "--max-jobs", "10")
	c.mustCLI("--addr", all, "tenants", "create", "--name", "onebyone", "--max-concurrent-jobs", "1")

	// max_jobs: 50 submits at once, round-robin over the three nodes.
	spec := `{"scenario":"240p30-h264","queue":"batch","input":{"url":"testsrc://?duration=1"},"outputs":[{"url":"file:///q.mp4"}]}`
	type result struct {
		status int
		err    *fsm.Error
		fail   error
	}
	results := make([]result, 50)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			s, e, err := quotaSubmit(c.nodes[i%3].httpAddr, key, "tenmax", spec)
			results[i] = result{s, e, err}
		}()
	}
	close(start)
	wg.Wait()
	accepted, refused := 0, 0
	for i, r := range results {
		switch {
		case r.fail != nil:
			t.Errorf("submit %d via %s: %v", i, c.nodes[i%3].id, r.fail)
		case r.status == http.StatusCreated:
			accepted++
		case r.status == http.StatusTooManyRequests && r.err.Code == fsm.CodeQuotaExceeded:
			refused++
			if d := r.err.Details; d == nil || d.Quota != "max_jobs" || d.Limit != 10 || d.Usage != 10 {
				t.Errorf("submit %d: refusal details %+v, want max_jobs limit 10 usage 10", i, d)
			}
		default:
			t.Errorf("submit %d via %s: status %d %v", i, c.nodes[i%3].id, r.status, r.err)
		}
	}
	if accepted != 10 || refused != 40 {
		t.Fatalf("accepted %d, refused %d; want 10 and 40", accepted, refused)
	}
	var use struct {
		Jobs struct{ Limit, Usage float64 }
	}
	if err := json.Unmarshal([]byte(c.mustCLI("--addr", all, "tenants", "usage", "tenmax", "-o", "json")), &use); err != nil {
		t.Fatal(err)
	}
	if use.Jobs.Limit != 10 || use.Jobs.Usage != 10 {
		t.Errorf("usage %+v, want 10 of 10 jobs", use.Jobs)
	}
	// Keep the shared worker for what follows.
	c.mustCLI("--addr", all, "tenants", "update", "tenmax", "--disable")

	// max_concurrent_jobs 1 on a worker with two slots running real
	// ffmpeg; a job of another tenant takes the second slot meanwhile.
	c.addWorker(1)
	waitWorkers(t, client, 1)
	ctx := context.Background()
	runSpec := func(name string) *fsm.JobSpec {
		return &fsm.JobSpec{Scenario: "240p30-h264", Input: fsm.Input{URL: "testsrc://?duration=2"},
			Outputs: []fsm.Output{{URL: "file:///" + name + ".mp4"}}}
	}
	var ids []string
	for i := range 4 {
		j, err := client.ForTenant("onebyone").SubmitJob(ctx, runSpec(fmt.Sprintf("one-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	other, err := client.SubmitJob(ctx, runSpec("other"))
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, other.ID)
	maxHeld, maxRunning, overlapped := 0, 0, false
	waitForCond(t, 60*time.Second, "every job finished", func() bool {
		held, running, done := 0, 0, 0
		otherActive := false
		for _, id := range ids {
			j, err := client.GetJob(ctx, id)
			if err != nil {
				t.Fatalf("get job %s: %v", id, err)
			}
			switch {
			case j.State.Terminal():
				if j.State != fsm.JobSucceeded {
					t.Fatalf("job %s: %s %+v", id, j.State, j.Error)
				}
				done++
			case j.TenantID == "onebyone" && j.State != fsm.JobQueued:
				held++
				if j.State == fsm.JobRunning {
					running++
				}
			case j.TenantID != "onebyone" && j.State != fsm.JobQueued:
				otherActive = true
			}
		}
		maxHeld, maxRunning = max(maxHeld, held), max(maxRunning, running)
		overlapped = overlapped || (otherActive && held > 0)
		return done == len(ids)
	})
	if maxHeld != 1 || maxRunning > 1 {
		t.Errorf("tenant onebyone held up to %d workers' slots (%d running), want at most 1", maxHeld, maxRunning)
	}
	// The shared pool stays open to others: the worker's second slot ran
	// another tenant's job while onebyone held the first.
	if !overlapped {
		t.Error("no other tenant's job was seen running beside one of onebyone's")
	}
}
