package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestClusterMembersHealthAgrees: /v1/cluster/members does not ask the
// members, so it says nothing of their health; it never calls the healthy
// leader unhealthy while /v1/cluster/status calls it healthy.
func TestClusterMembersHealthAgrees(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	var members, status struct {
		Members []map[string]json.RawMessage `json:"members"`
	}
	if resp := e.do("GET", "/v1/cluster/members", nil, &members); resp.StatusCode != http.StatusOK {
		t.Fatalf("members: status %d", resp.StatusCode)
	}
	if resp := e.do("GET", "/v1/cluster/status", nil, &status); resp.StatusCode != http.StatusOK {
		t.Fatalf("status: status %d", resp.StatusCode)
	}
	if len(members.Members) != 1 || len(status.Members) != 1 {
		t.Fatalf("members %d, status %d; want the one node in each", len(members.Members), len(status.Members))
	}
	if string(members.Members[0]["leader"]) != "true" {
		t.Fatalf("members: %s is not the leader", members.Members[0]["id"])
	}
	if h, ok := members.Members[0]["healthy"]; ok {
		t.Errorf("members (no status asked) says healthy: %s, want no health claim", h)
	}
	if h := string(status.Members[0]["healthy"]); h != "true" {
		t.Errorf("status says the leader's healthy: %q, want true", h)
	}
}

// TestSkewedNodeClockChangesNothing: a node whose clock is 10 minutes
// behind or ahead submits jobs; they carry the leader's time, a job no
// worker can run does not expire at once, and a runnable one runs.
func TestSkewedNodeClockChangesNothing(t *testing.T) {
	t.Parallel()
	for _, skew := range []time.Duration{-10 * time.Minute, 10 * time.Minute} {
		t.Run(skew.String(), func(t *testing.T) {
			t.Parallel()
			e := setup(t, envOpts{worker: true, now: func() time.Time { return time.Now().UTC().Add(skew) }})
			before := time.Now()
			// NVENC: the in-process worker cannot run it. Its default
			// acquire timeout is 10 minutes.
			stuck := e.submit(`{"scenario":"720p30-h264","hardware":"nvenc","input":{"url":"testsrc://?duration=1"},"outputs":[{"url":"file:///nv.mp4"}]}`)
			after := time.Now()
			if stuck.SubmittedAt.Before(before) || stuck.SubmittedAt.After(after) {
				t.Errorf("submitted_at %v through a node %v off; want the leader's time, between %v and %v", stuck.SubmittedAt, skew, before, after)
			}
			runs := e.submit(`{"scenario":"240p30-h264","input":{"url":"testsrc://?duration=1"},"outputs":[{"url":"file:///ok.mp4"}]}`)
			if j := e.waitState(runs.ID, fsm.JobSucceeded, fsm.JobFailed); j.State != fsm.JobSucceeded {
				t.Fatalf("runnable job: %s %+v, want succeeded", j.State, j.Error)
			}
			// The scheduler has passed over the stuck job many times since.
			j, err := e.fsm.GetJob(context.Background(), stuck.ID)
			if err != nil {
				t.Fatal(err)
			}
			if j.State != fsm.JobQueued {
				t.Errorf("job no worker can run, submitted through a node %v off: %s %+v; want still queued", skew, j.State, j.Error)
			}
		})
	}
}
