package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestWorkerClientFailsOverOn503 checks that a worker moves on to another
// server when one answers 503 (it has no leader, or cannot serve now),
// not only when one cannot be reached, and that a refusal is final.
func TestWorkerClientFailsOverOn503(t *testing.T) {
	t.Parallel()
	cut := clustertest.Start(t, clustertest.Options{ID: "cut", Bootstrap: true})
	good := clustertest.Start(t, clustertest.Options{ID: "good", Bootstrap: true})
	var asked503, askedGood atomic.Int32
	cut.Node.HandleWorkerRPC("POST /rpc/worker/heartbeat", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked503.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":{"code":"unavailable","message":"the cluster has no leader right now; retry"}}`))
	}))
	good.Node.HandleWorkerRPC("POST /rpc/worker/heartbeat", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		askedGood.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"lease_ms":9000}`))
	}))
	good.Node.HandleWorkerRPC("POST /rpc/worker/start", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"error":{"code":"stale_attempt","message":"job j: report for attempt 1"}}`))
	}))

	c := cluster.NewWorkerClient(clustertest.WorkerTLS(t), "ffw_test", func() []string { return []string{cut.Node.Addr(), good.Node.Addr()} })
	c.StartAtForTest(0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lease, err := c.Heartbeat(ctx, "w1")
	if err != nil {
		t.Fatalf("heartbeat with one server answering 503: %v", err)
	}
	if lease != 9*time.Second || asked503.Load() != 1 || askedGood.Load() != 1 {
		t.Fatalf("lease %s, 503 server asked %d times, good server %d times; want 9s, 1, 1", lease, asked503.Load(), askedGood.Load())
	}
	// The client now starts with the server that answered.
	if _, err := c.Heartbeat(ctx, "w1"); err != nil || asked503.Load() != 1 {
		t.Fatalf("second heartbeat: %v, 503 server asked %d times, want once", err, asked503.Load())
	}
	// A refusal from the server that answers is final, not a reason to
	// ask the next one.
	before := asked503.Load()
	if err := c.Start(ctx, fsm.Report{JobID: "j", WorkerID: "w1", Attempt: 1}); err == nil || asked503.Load() != before {
		t.Fatalf("start refused as stale: got %v, 503 server asked again: %v", err, asked503.Load() != before)
	}
}

// TestWorkerClientsSpreadOverServers: every worker gets the same sorted
// server list, and workers start at random places in it, so that they do
// not all call the first server.
func TestWorkerClientsSpreadOverServers(t *testing.T) {
	t.Parallel()
	nodes := []*clustertest.Node{
		clustertest.Start(t, clustertest.Options{ID: "a", Bootstrap: true}),
		clustertest.Start(t, clustertest.Options{ID: "b", Bootstrap: true}),
	}
	asked := make([]atomic.Int32, len(nodes))
	var addrs []string
	for i, n := range nodes {
		n.Node.HandleWorkerRPC("POST /rpc/worker/heartbeat", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			asked[i].Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"lease_ms":9000}`))
		}))
		addrs = append(addrs, n.Node.Addr())
	}
	const workers = 40
	for range workers {
		c := cluster.NewWorkerClient(clustertest.WorkerTLS(t), "ffw_test", func() []string { return addrs })
		if _, err := c.Heartbeat(t.Context(), "w1"); err != nil {
			t.Fatal(err)
		}
	}
	// All 40 on one server by chance: 2 in 2^40.
	if asked[0].Load() == 0 || asked[1].Load() == 0 {
		t.Fatalf("heartbeats of %d new workers: %d to the first server, %d to the second; want both used", workers, asked[0].Load(), asked[1].Load())
	}
}

// TestWorkerClientTokenRefused: a server's 401 is final and reaches the
// OnTokenRefused hook, which ends a worker whose token was revoked; other
// refusals do not.
func TestWorkerClientTokenRefused(t *testing.T) {
	t.Parallel()
	n := clustertest.Start(t, clustertest.Options{ID: "n1", Bootstrap: true})
	n.Node.HandleWorkerRPC("POST /rpc/worker/heartbeat", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":{"code":"unauthenticated","message":"worker token t1 has been revoked"}}`))
	}))
	n.Node.HandleWorkerRPC("POST /rpc/worker/start", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"error":{"code":"stale_attempt","message":"job j: report for attempt 1"}}`))
	}))
	c := cluster.NewWorkerClient(clustertest.WorkerTLS(t), "ffw_test", func() []string { return []string{n.Node.Addr()} })
	var refused atomic.Int32
	c.OnTokenRefused(func(error) { refused.Add(1) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Start(ctx, fsm.Report{JobID: "j", WorkerID: "w1", Attempt: 1}); err == nil || refused.Load() != 0 {
		t.Fatalf("a stale report: %v, hook called %d times; want a refusal and no call", err, refused.Load())
	}
	var fe *fsm.Error
	if _, err := c.Heartbeat(ctx, "w1"); !errors.As(err, &fe) || fe.Code != "unauthenticated" || refused.Load() != 1 {
		t.Fatalf("a refused token: %v, hook called %d times; want unauthenticated and one call", err, refused.Load())
	}
}

// TestAssignmentsAnswerSendsStartedJobsBrief: an assigned job goes whole,
// so the worker can start it; a running or paused one goes without its
// spec and plan, and decodes to what the worker reads of it.
func TestAssignmentsAnswerSendsStartedJobsBrief(t *testing.T) {
	t.Parallel()
	var jobs []*fsm.Job
	for _, state := range []fsm.JobState{fsm.JobAssigned, fsm.JobRunning, fsm.JobPaused} {
		j := newJob(t, "acme", "720p30-h264", 0)
		j.State, j.Attempt, j.WorkerID, j.AssignedAt = state, 2, "w1", t0
		jobs = append(jobs, &j)
	}
	data, err := json.Marshal(cluster.AssignmentsAnswer(jobs, 42))
	if err != nil {
		t.Fatal(err)
	}
	var got cluster.AssignmentsResponse
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if got.Index != 42 || len(got.Jobs) != 3 {
		t.Fatalf("decoded %d jobs at index %d, want 3 at 42", len(got.Jobs), got.Index)
	}
	whole, _ := json.Marshal(jobs[0])
	if back, _ := json.Marshal(got.Jobs[0]); !bytes.Equal(back, whole) {
		t.Errorf("assigned job changed on the wire:\n got %s\nwant %s", back, whole)
	}
	for i, j := range got.Jobs[1:] {
		want := jobs[i+1]
		brief := fsm.Job{ID: want.ID, TenantID: want.TenantID, State: want.State, Attempt: want.Attempt, WorkerID: want.WorkerID}
		if !reflect.DeepEqual(*j, brief) {
			t.Errorf("%s job decoded as %+v, want only %+v", want.State, *j, brief)
		}
	}
	if n := bytes.Count(data, []byte(`"spec"`)); n != 1 {
		t.Errorf("the answer holds %d specs, want 1 (the assigned job's)", n)
	}
}
