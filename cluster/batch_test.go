package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestGroupCommitThroughEveryNode: concurrent submits through all three
// nodes, each with its own actor, against a tenant whose max_jobs admits
// only some: each caller gets its own job or its own quota_exceeded,
// exactly max_jobs jobs exist on every node, and every node's audit log
// has one record per submit with that submit's actor and result.
func TestGroupCommitThroughEveryNode(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := startThree(t, clustertest.Options{})
	const perNode, limit = 20, 25
	nodes[0].Apply(createTenant("acme"))
	nodes[0].Apply(&fsm.UpdateTenant{ID: "acme", MaxJobs: new(limit), At: t0})

	type outcome struct {
		job *fsm.Job
		err error
	}
	var mu sync.Mutex
	got := map[string]outcome{}
	var wg sync.WaitGroup
	for ni, n := range nodes {
		for k := range perNode {
			id := fmt.Sprintf("01956a3c-0000-7000-8000-%012d", ni*100+k)
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := &fsm.Actor{User: "user-" + id, Action: "submitJob", RequestID: "req-" + id}
				v, err := n.Node.Apply(fsm.WithActor(ctx, a), submitCmd(t, id))
				j, _ := v.(*fsm.Job)
				mu.Lock()
				got[id] = outcome{j, err}
				mu.Unlock()
			}()
		}
	}
	wg.Wait()

	ok := 0
	for id, o := range got {
		switch {
		case o.err == nil:
			if o.job == nil || o.job.ID != id || o.job.State != fsm.JobQueued {
				t.Fatalf("%s: acknowledged with %+v, want its own queued job", id, o.job)
			}
			ok++
		case fsm.ErrorCode(o.err) != fsm.CodeQuotaExceeded:
			t.Fatalf("%s: %v, want a job or quota_exceeded", id, o.err)
		}
	}
	if ok != limit {
		t.Fatalf("%d submits acknowledged, want exactly max_jobs = %d", ok, limit)
	}
	last := nodes[0].FSM.Flush() // the leader applied every acknowledged submit
	for _, n := range nodes {
		clustertest.WaitFor(t, n.FSM, 30*time.Second, "node "+n.ID+" catches up", func() bool {
			return n.FSM.Index() >= last
		})
	}
	for _, n := range nodes {
		byState, _ := n.FSM.Counts()
		if byState[fsm.JobQueued] != limit {
			t.Errorf("node %s holds %d queued jobs, want %d", n.ID, byState[fsm.JobQueued], limit)
		}
		for id, o := range got {
			_, found := n.FSM.ActiveJob(id)
			if found != (o.err == nil) {
				t.Errorf("node %s: job %s present = %v, but its submit answered %v", n.ID, id, found, o.err)
			}
		}
		records := map[string]*fsm.AuditRecord{}
		n.FSM.Flush() // the store has what memory has
		if err := n.Store.ScanAudit(ctx, 0, func(r *fsm.AuditRecord) error {
			if r.Action == "submitJob" {
				if records[r.RequestID] != nil {
					t.Errorf("node %s: two audit records for %s", n.ID, r.RequestID)
				}
				records[r.RequestID] = r
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(records) != len(got) {
			t.Errorf("node %s: %d submit records, want %d", n.ID, len(records), len(got))
		}
		for id, o := range got {
			r := records["req-"+id]
			want := fsm.ResultOK
			if o.err != nil {
				want = fsm.CodeQuotaExceeded
			}
			if r == nil || r.User != "user-"+id || r.Result != want || (o.err == nil && r.Target != id) {
				t.Errorf("node %s: record of %s = %+v, want user-%s with result %s", n.ID, id, r, id, want)
			}
		}
		if v, err := n.FSM.VerifyAudit(ctx); err != nil || !v.OK {
			t.Errorf("node %s: VerifyAudit = %+v, %v", n.ID, v, err)
		}
	}
}

// TestSubmitAllPerItemResults: one SubmitAll through a follower with a
// valid job, one that fails validation, one for a tenant that does not
// exist and a repeat of the first ID: each item answers for itself.
func TestSubmitAllPerItemResults(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := startThree(t, clustertest.Options{})
	nodes[0].Apply(createTenant("acme"))
	follower := nodes[2]
	good := submitCmd(t, "01956a3c-0000-7000-8000-000000000001")
	invalid := &fsm.SubmitJob{Job: fsm.Job{ID: "01956a3c-0000-7000-8000-000000000002", TenantID: "acme"}}
	stranger := submitCmd(t, "01956a3c-0000-7000-8000-000000000003")
	stranger.Job.TenantID = "nobody"
	again := submitCmd(t, good.Job.ID)
	resps, errs := follower.Node.SubmitAll(ctx, []*fsm.SubmitJob{good, invalid, stranger, again})
	if j, ok := resps[0].(*fsm.Job); !ok || errs[0] != nil || j.ID != good.Job.ID {
		t.Errorf("item 0: %v, %v; want its job", resps[0], errs[0])
	}
	wantCode(t, "item 1 (no compiled spec)", errs[1], fsm.CodeInvalidArgument)
	wantCode(t, "item 2 (unknown tenant)", errs[2], fsm.CodeNotFound)
	wantCode(t, "item 3 (the same ID again)", errs[3], fsm.CodeAlreadyExists)
	// The follower answered without waiting for its own apply; a read
	// there passes its read barrier first, and then holds the job.
	if err := follower.Node.ReadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := follower.FSM.ActiveJob(good.Job.ID); !ok {
		t.Errorf("the follower does not hold the job it acknowledged after a read barrier")
	}
}
