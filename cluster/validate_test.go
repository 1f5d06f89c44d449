package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// submitCmd returns a valid SubmitJob of tenant acme.
func submitCmd(t *testing.T, id string) *fsm.SubmitJob {
	t.Helper()
	s := fsm.JobSpec{Scenario: "720p30-h264", Input: fsm.Input{URL: "testsrc://?duration=1"}, Outputs: []fsm.Output{{URL: "file:///" + id + ".mp4"}}}
	plan, err := s.Compile(fsm.Policy{})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return &fsm.SubmitJob{Job: fsm.Job{ID: id, TenantID: "acme", Spec: s, Plan: *plan, SubmittedAt: t0}}
}

// TestLeaderRefusesPoisonBeforeTheLog sends, from a follower through the
// leader's /rpc/apply (as a forwarded write travels), every kind of entry
// that once stopped the cluster. Each gets a typed refusal, the leader's
// log does not grow, and a valid submit afterwards applies on all nodes.
func TestLeaderRefusesPoisonBeforeTheLog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	nodes := startThree(t, clustertest.Options{})
	n1 := nodes[0]
	n1.Apply(createTenant("acme"))

	nilRetries := submitCmd(t, "nil-retries")
	nilRetries.Job.Spec.MaxRetries = nil
	nulName := submitCmd(t, "nul-name")
	nulName.Job.Spec.Name = "x\x00y"
	encode := func(c fsm.Command) []byte {
		data, err := fsm.Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	for _, tc := range []struct {
		name string
		data []byte
		code fsm.Code
	}{
		{"type 5 body x", []byte{byte(fsm.SubmitJobType), 'x'}, fsm.CodeInvalidArgument},
		{"nil max_retries", encode(nilRetries), fsm.CodeInvalidArgument},
		{"NUL in name", encode(nulName), fsm.CodeInvalidArgument},
		{"unknown type 99", []byte{99, '{', '}'}, fsm.CodeUnknownCommand},
	} {
		last := n1.Node.RaftForTest().LastIndex()
		_, _, err := nodes[1].Node.ForwardForTest(ctx, n1.Addr, tc.data)
		wantCode(t, tc.name+" forwarded", err, tc.code)
		if got := n1.Node.RaftForTest().LastIndex(); got != last {
			t.Errorf("%s: the leader's log grew from %d to %d", tc.name, last, got)
		}
	}
	// The leader refuses what it proposes itself, and a follower's Apply
	// gets the leader's typed error, as its client would.
	last := n1.Node.RaftForTest().LastIndex()
	_, err := n1.Node.Apply(ctx, nulName)
	wantCode(t, "Apply of a NUL name on the leader", err, fsm.CodeInvalidArgument)
	_, err = nodes[2].Node.Apply(ctx, nulName)
	wantCode(t, "Apply of a NUL name on a follower", err, fsm.CodeInvalidArgument)
	_, errs := n1.Node.ApplyAll(ctx, []fsm.Command{nilRetries})
	wantCode(t, "ApplyAll of nil max_retries", errs[0], fsm.CodeInvalidArgument)
	if got := n1.Node.RaftForTest().LastIndex(); got != last {
		t.Errorf("refused local proposals grew the leader's log from %d to %d", last, got)
	}

	ok, err := nodes[1].Node.Apply(ctx, submitCmd(t, "after"))
	if err != nil {
		t.Fatalf("valid submit after the refusals: %v", err)
	}
	index := ok.(*fsm.Job).CreateIndex
	for _, n := range nodes {
		clustertest.WaitFor(t, n.FSM, 10*time.Second, n.ID+" to apply the valid submit", func() bool {
			j, found := n.FSM.ActiveJob("after")
			return found && j.CreateIndex == index
		})
	}
}
