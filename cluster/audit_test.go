package cluster_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestActorTravelsThroughForwarding: a command applied on a follower with
// an actor in its context is forwarded in its envelope, and every node's
// FSM writes the same audit record; a command without one writes none.
func TestActorTravelsThroughForwarding(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	leader := clustertest.Start(t, clustertest.Options{ID: "a1", Bootstrap: true})
	follower := clustertest.Start(t, clustertest.Options{ID: "a2"})
	if err := follower.Node.JoinCluster(ctx, []string{leader.Node.Addr()}); err != nil {
		t.Fatal(err)
	}
	a := &fsm.Actor{User: "ann", KeyID: "k1", Role: fsm.RoleSuperAdmin, TenantID: "default", RequestID: "req-1",
		Source: "192.0.2.1:1", Action: "createTenant"}
	if _, err := follower.Node.Apply(fsm.WithActor(ctx, a), createTenant("acme")); err != nil {
		t.Fatal(err)
	}
	if _, err := follower.Node.Apply(ctx, createTenant("globex")); err != nil {
		t.Fatal(err)
	}
	if _, err := leader.Node.Apply(fsm.WithActor(ctx, a), createTenant("acme")); fsm.ErrorCode(err) != fsm.CodeAlreadyExists {
		t.Fatalf("second create: %v, want already_exists", err)
	}
	last := leader.FSM.Flush()
	clustertest.WaitFor(t, follower.FSM, 30*time.Second, "the follower applies the last entry", func() bool {
		return follower.FSM.Index() >= last
	})
	var chains []string
	for _, n := range []*clustertest.Node{leader, follower} {
		var recs []*fsm.AuditRecord
		if err := n.Store.ScanAudit(ctx, 0, func(r *fsm.AuditRecord) error { recs = append(recs, r); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(recs) != 2 || recs[0].Target != "acme" || recs[0].Tenant != "acme" || recs[0].Result != fsm.ResultOK ||
			recs[0].RequestID != "req-1" || recs[1].Result != fsm.CodeAlreadyExists {
			t.Fatalf("node %s records: %+v, want acme ok then already_exists", n.ID, recs)
		}
		v, err := n.FSM.VerifyAudit(ctx)
		if err != nil || !v.OK || v.Checked != 2 {
			t.Fatalf("node %s: VerifyAudit = %+v, %v", n.ID, v, err)
		}
		b, _ := json.Marshal(recs)
		chains = append(chains, string(b))
	}
	if chains[0] != chains[1] {
		t.Errorf("the nodes' chains differ:\n%s\n%s", chains[0], chains[1])
	}
}
