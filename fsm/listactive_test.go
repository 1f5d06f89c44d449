package fsm_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestListActiveJobsMatchesStore: listing active states from memory pages
// exactly as the store does (newest first, by tenant, state and queue,
// with the after cursor), and a listing naming a terminal state or no
// state is left to the store.
func TestListActiveJobsMatchesStore(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.tenant("t2")
	n.worker(fsm.Worker{ID: "w1", Slots: 100, Encoders: x264})
	for i := range 30 {
		s := spec("720p30-h264")
		if i%3 == 0 {
			s.Queue = fsm.QueueBatch
		}
		id := fmt.Sprintf("j%02d", i)
		n.submit(id, []string{"t1", "t2"}[i%2], s, at(time.Duration(i)*time.Second))
		switch i % 5 {
		case 1:
			n.run(id, "w1", at(time.Minute))
		case 2:
			n.job(&fsm.AssignJob{JobID: id, WorkerID: "w1", Attempt: 1, At: at(time.Minute)})
		case 3:
			n.job(&fsm.CancelJob{JobID: id, At: at(time.Minute)})
		}
	}
	ids := func(p *fsm.JobPage) []string {
		var out []string
		for _, j := range p.Jobs {
			out = append(out, j.ID)
		}
		return append(out, "next="+p.Next)
	}
	for _, states := range [][]fsm.JobState{{fsm.JobQueued}, {fsm.JobRunning, fsm.JobAssigned}, {fsm.JobQueued, fsm.JobAssigned, fsm.JobRunning, fsm.JobPaused}} {
		for _, tenant := range []string{"", "t1", "t2"} {
			for _, queue := range []fsm.Queue{"", fsm.QueueBatch} {
				for _, limit := range []int{1, 4, 1000} {
					p := &fsm.ListJobsParams{TenantID: tenant, States: states, Queue: queue, Limit: limit}
					for range 40 {
						got, index, ok := n.f.ListActiveJobs(p)
						want, err := n.st.ListJobs(context.Background(), p)
						if !ok || err != nil || index != n.last {
							t.Fatalf("%+v: ok %v, index %d (want %d), store error %v", p, ok, index, n.last, err)
						}
						if g, w := ids(got), ids(want); !slices.Equal(g, w) {
							t.Fatalf("%+v:\nmemory %v\nstore  %v", p, g, w)
						}
						if want.Next == "" {
							break
						}
						p.After = want.Next
					}
				}
			}
		}
	}
	for _, states := range [][]fsm.JobState{nil, {fsm.JobCanceled}, {fsm.JobQueued, fsm.JobSucceeded}} {
		if _, _, ok := n.f.ListActiveJobs(&fsm.ListJobsParams{States: states, Limit: 10}); ok {
			t.Errorf("states %v: answered from memory", states)
		}
	}
}
