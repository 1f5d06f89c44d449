package main

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestClusterGroupCommit starts three servers and submits through every
// node at once: single submits from 16 clients per node and, at the same
// time, batches of 100 specs per node through POST /v1/jobs/batch. Every
// acknowledged job must exist exactly once on every node, nothing else
// may exist, and the leader's group commit must have proposed every
// submit exactly once in fewer entries than submits.
func TestClusterGroupCommit(t *testing.T) {
	c := newTestCluster(t, 3)
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", "http://"+c.nodes[0].httpAddr, "--cluster-key-file", c.keyFile)
	spec := &fsm.JobSpec{Scenario: "240p30-h264", Queue: fsm.QueueBatch,
		Input: fsm.Input{URL: "testsrc://?duration=1"}, Outputs: []fsm.Output{{URL: "file:///group.mp4"}}}
	const clients, perClient, batches, batchSize = 16, 20, 2, 100
	var (
		mu    sync.Mutex
		acked = map[string]int{}
		wg    sync.WaitGroup
	)
	ack := func(id string) {
		mu.Lock()
		acked[id]++
		mu.Unlock()
	}
	ctx := context.Background()
	for _, s := range c.nodes {
		client, err := cli.NewClient("http://"+s.httpAddr, c.key())
		if err != nil {
			t.Fatal(err)
		}
		for w := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perClient {
					j, err := client.SubmitJob(ctx, spec)
					if err != nil {
						t.Errorf("%s client %d submit %d: %v", s.id, w, i, err)
						return
					}
					ack(j.ID)
				}
			}()
		}
		for b := range batches {
			wg.Add(1)
			go func() {
				defer wg.Done()
				specs := make([]*fsm.JobSpec, batchSize)
				for i := range specs {
					specs[i] = spec
				}
				res, err := client.SubmitJobs(ctx, specs)
				if err != nil {
					t.Errorf("%s batch %d: %v", s.id, b, err)
					return
				}
				for i, r := range res {
					if r.Status != http.StatusCreated || r.Job == nil {
						t.Errorf("%s batch %d item %d: %+v, want 201", s.id, b, i, r)
						continue
					}
					ack(r.Job.ID)
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	total := len(c.nodes) * (clients*perClient + batches*batchSize)
	if len(acked) != total {
		t.Fatalf("%d distinct jobs acknowledged, want %d", len(acked), total)
	}
	for id, n := range acked {
		if n != 1 {
			t.Fatalf("job %s acknowledged %d times", id, n)
		}
	}
	for _, s := range c.nodes {
		got := listAll(t, "http://"+s.httpAddr, c.key())
		if len(got) != total {
			t.Errorf("%s lists %d jobs, want %d", s.id, len(got), total)
		}
		for id := range acked {
			if got[id] != 1 {
				t.Errorf("%s: acknowledged job %s listed %d times", s.id, id, got[id])
				break
			}
		}
	}
	entries, items := batchMetric(t, c.leader(), c.key())
	t.Logf("leader proposed %d submits in %d entries", items, entries)
	if items != total || entries >= items {
		t.Errorf("the leader proposed %d submits in %d entries; want all %d, in fewer entries than submits", items, entries, total)
	}
}

// batchMetric reads the count and sum of ffrtmp_raft_submit_batch_items
// from a node's /metrics: the batch entries it proposed and their submits.
func batchMetric(t *testing.T, s *serverProc, key string) (count, sum int) {
	t.Helper()
	c, err := metricValue(s, key, "ffrtmp_raft_submit_batch_items_count")
	if err != nil || c == 0 {
		t.Fatalf("no ffrtmp_raft_submit_batch_items on %s (%v)", s.id, err)
	}
	m, err := metricValue(s, key, "ffrtmp_raft_submit_batch_items_sum")
	if err != nil {
		t.Fatal(err)
	}
	return int(c), int(m)
}
