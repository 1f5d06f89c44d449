package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestForwardedWritesShareCalls sends 200 writes at once through a
// follower, with a duplicate the FSM refuses and two commands the leader
// refuses before the log among them. They reach the leader in fewer
// calls than writes, each gets its own answer (the valid ones readable on
// the follower as soon as they return), and the leader's log holds one
// entry per write it accepted.
func TestForwardedWritesShareCalls(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	nodes := startThree(t, clustertest.Options{})
	leader, follower := nodes[0], nodes[1]
	leader.Apply(createTenant("acme"))
	last, term := leader.Node.RaftForTest().LastIndex(), leader.Node.RaftForTest().CurrentTerm()

	nulName := submitCmd(t, "nul-name")
	nulName.Job.Spec.Name = "x\x00y"
	poison, err := fsm.Encode(nulName)
	if err != nil {
		t.Fatal(err)
	}
	const valid = 200
	errs := make([]error, valid+3)
	resps := make([]any, valid+3)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			<-start
			switch {
			case i < valid:
				id := fmt.Sprintf("t-%d", i)
				resps[i], errs[i] = follower.Node.Apply(ctx, createTenant(id))
				if _, ok := follower.FSM.Tenant(id); errs[i] == nil && !ok {
					t.Errorf("tenant %s created through the follower is not readable there when Apply returns", id)
				}
			case i == valid:
				resps[i], errs[i] = follower.Node.Apply(ctx, createTenant("acme"))
			case i == valid+1:
				resps[i], _, errs[i] = follower.Node.ForwardBatchedForTest(ctx, poison)
			default:
				resps[i], _, errs[i] = follower.Node.ForwardBatchedForTest(ctx, []byte{99, '{', '}'})
			}
		})
	}
	close(start)
	wg.Wait()

	for i := range valid {
		tn, ok := resps[i].(*fsm.Tenant)
		if errs[i] != nil || !ok || tn.ID != fmt.Sprintf("t-%d", i) {
			t.Fatalf("write %d: %#v, %v; want tenant t-%d", i, resps[i], errs[i], i)
		}
	}
	wantCode(t, "duplicate tenant", errs[valid], fsm.CodeAlreadyExists)
	wantCode(t, "NUL in a name", errs[valid+1], fsm.CodeInvalidArgument)
	wantCode(t, "unknown type 99", errs[valid+2], fsm.CodeUnknownCommand)
	// One entry per accepted write: the 200 tenants and the refused
	// duplicate, which the FSM refused in the log (unless a leader change
	// added its own entry or made a write go twice).
	if got := leader.Node.RaftForTest().LastIndex(); leader.Node.RaftForTest().CurrentTerm() == term && got != last+valid+1 {
		t.Errorf("the leader's log grew by %d entries, want %d", got-last, valid+1)
	}
	calls, writes := follower.Node.ForwardCallsForTest()
	if writes != valid+3 || calls >= valid+3 || calls == 0 {
		t.Errorf("%d writes forwarded in %d calls; want %d writes in fewer calls", int(writes), calls, valid+3)
	}
}

// TestForwardWithoutApplyMany: a leader from before /rpc/apply-many (a
// rolling upgrade) answers it 404; a follower's writes then go one per
// call, with the same results.
func TestForwardWithoutApplyMany(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	nodes := startThree(t, clustertest.Options{})
	leader, follower := nodes[0], nodes[1]
	leader.Node.WithoutApplyManyForTest()
	leader.Apply(createTenant("acme"))

	v, err := follower.Node.Apply(ctx, createTenant("beta"))
	if tn, ok := v.(*fsm.Tenant); err != nil || !ok || tn.ID != "beta" {
		t.Fatalf("write through the follower: %#v, %v", v, err)
	}
	if _, ok := follower.FSM.Tenant("beta"); !ok {
		t.Error("tenant beta is not readable on the follower when Apply returns")
	}
	_, err = follower.Node.Apply(ctx, createTenant("acme"))
	wantCode(t, "duplicate tenant", err, fsm.CodeAlreadyExists)
	if calls, _ := follower.Node.ForwardCallsForTest(); calls == 0 {
		t.Error("the follower did not try /rpc/apply-many first")
	}
}

// TestOutcomeOnlyWrites: a write marked OutcomeOnly answers no value,
// through the leader and through a follower, is readable where it
// returned, and is refused as any write is; writes without the mark,
// forwarded along with marked ones, still answer their values. (That a
// follower's call then carries no values is what the placements
// benchmark measures, BENCHMARKS.md 9e.)
func TestOutcomeOnlyWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	nodes := startThree(t, clustertest.Options{})
	for _, n := range nodes[:2] { // the leader, then a follower
		id := "oo-" + n.Node.ID()
		v, err := n.Node.Apply(cluster.OutcomeOnly(ctx), createTenant(id))
		if err != nil || v != nil {
			t.Fatalf("%s: outcome-only write = %#v, %v; want nil, nil", n.Node.ID(), v, err)
		}
		if _, ok := n.FSM.Tenant(id); !ok {
			t.Errorf("%s: tenant %s is not readable where its write returned", n.Node.ID(), id)
		}
		_, err = n.Node.Apply(cluster.OutcomeOnly(ctx), createTenant(id))
		wantCode(t, n.Node.ID()+": a repeated outcome-only write", err, fsm.CodeAlreadyExists)
	}
	follower := nodes[1]
	const writes = 100
	resps, errs := make([]any, writes), make([]error, writes)
	var wg sync.WaitGroup
	for i := range writes {
		wg.Go(func() {
			wctx := ctx
			if i%2 == 0 {
				wctx = cluster.OutcomeOnly(ctx)
			}
			resps[i], errs[i] = follower.Node.Apply(wctx, createTenant(fmt.Sprintf("mixed-%d", i)))
		})
	}
	wg.Wait()
	for i := range writes {
		tn, isTenant := resps[i].(*fsm.Tenant)
		if errs[i] != nil || i%2 == 0 && resps[i] != nil || i%2 == 1 && (!isTenant || tn.ID != fmt.Sprintf("mixed-%d", i)) {
			t.Errorf("write %d (outcome only: %v) = %#v, %v", i, i%2 == 0, resps[i], errs[i])
		}
	}
}
