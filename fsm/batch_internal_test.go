package fsm

import (
	"fmt"
	"strings"
	"testing"
)

// TestDecodeSubmitJobsPresized: decoding a SubmitJobs entry fills items
// that were sized for it (capacity = the entry's items, so no item is
// copied by a growing slice), with the same items as the command
// encoded; a body that claims more items than a batch may hold is sized
// to MaxSubmitBatch at most.
func TestDecodeSubmitJobsPresized(t *testing.T) {
	for _, n := range []int{1, 2, 13, 100} {
		c := &SubmitJobs{}
		for i := range n {
			c.Items = append(c.Items, SubmitItem{Job: Job{ID: fmt.Sprintf("j%d", i), TenantID: "acme", Spec: JobSpec{Name: `{"job":` + "x"}},
				Actor: &Actor{User: "ann", Action: "submitJob"}})
		}
		data, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		e := decodeEntry(7, data)
		got, ok := e.cmd.(*SubmitJobs)
		if e.bad != "" || !ok {
			t.Fatalf("%d items: decoded %T, %s", n, e.cmd, e.bad)
		}
		if len(got.Items) != n || cap(got.Items) != n {
			t.Errorf("%d items: decoded %d with capacity %d", n, len(got.Items), cap(got.Items))
		}
		for i := range got.Items {
			if got.Items[i].Job.ID != c.Items[i].Job.ID || got.Items[i].Job.Spec.Name != c.Items[i].Job.Spec.Name || got.Items[i].Actor.User != "ann" {
				t.Errorf("%d items: item %d decoded as %+v", n, i, got.Items[i])
			}
		}
	}
	var s SubmitJobs
	s.presize([]byte(strings.Repeat(`{"job":`, MaxSubmitBatch+5)))
	if cap(s.Items) != MaxSubmitBatch {
		t.Errorf("a body of %d item starts sized %d items", MaxSubmitBatch+5, cap(s.Items))
	}
}
