package fsm_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestBoltCommitSkipsOnlyStaleObjects: the store's Commit writes each
// object only if it is newer than the stored version; an older object in a
// batch must be skipped, not end the batch.
func TestBoltCommitSkipsOnlyStaleObjects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := openStore(t)
	a := &fsm.Job{ID: "a", TenantID: "t1", State: fsm.JobQueued, Meta: fsm.Meta{CreateIndex: 1, ModifyIndex: 1}}
	if err := st.Commit(ctx, &fsm.Batch{Index: 1, Jobs: []*fsm.Job{a}}); err != nil {
		t.Fatal(err)
	}
	b := &fsm.Job{ID: "b", TenantID: "t1", State: fsm.JobQueued, Meta: fsm.Meta{CreateIndex: 2, ModifyIndex: 2}}
	// a is unchanged since index 1 (as when another node already wrote it).
	if err := st.Commit(ctx, &fsm.Batch{Index: 2, Jobs: []*fsm.Job{a, b}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetJob(ctx, "b"); err != nil {
		t.Errorf("GetJob(b): %v, want the job committed at index 2", err)
	}
	s, err := st.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Index != 2 {
		t.Errorf("stored index = %d, want 2", s.Index)
	}
}

// TestStoreGetJobNotFound: an unknown job is fsm.ErrNotFound from the FSM
// as from the store.
func TestStoreGetJobNotFound(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	if _, err := n.f.GetJob(context.Background(), "nope"); !errors.Is(err, fsm.ErrNotFound) {
		t.Errorf("GetJob(nope): got %v, want fsm.ErrNotFound", err)
	}
}

// TestListJobsTenantPrefix: a tenant whose ID is a prefix of another's
// lists only its own jobs, on every page.
func TestListJobsTenantPrefix(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.tenant("t10")
	n.tenant("t")
	var want1, want10 []string
	for i := range 9 {
		id := fmt.Sprintf("j%02d", i)
		switch i % 3 {
		case 0:
			n.submit(id, "t1", spec("720p30-h264"), at(0))
			want1 = append([]string{id}, want1...)
		case 1:
			n.submit(id, "t10", spec("720p30-h264"), at(0))
			want10 = append([]string{id}, want10...)
		default:
			n.submit(id, "t", spec("720p30-h264"), at(0))
		}
	}
	ids := func(jobs []*fsm.Job) []string {
		var out []string
		for _, j := range jobs {
			out = append(out, j.ID)
		}
		return out
	}
	for _, limit := range []int{1, 2, 100} {
		if got := ids(listAllJobs(t, n.f.Store(), "t1", limit)); !slices.Equal(got, want1) {
			t.Errorf("jobs of t1 (pages of %d) = %v, want %v", limit, got, want1)
		}
		if got := ids(listAllJobs(t, n.f.Store(), "t10", limit)); !slices.Equal(got, want10) {
			t.Errorf("jobs of t10 (pages of %d) = %v, want %v", limit, got, want10)
		}
		if got := len(listAllJobs(t, n.f.Store(), "", limit)); got != 9 {
			t.Errorf("all jobs (pages of %d): got %d, want 9", limit, got)
		}
	}
	p, err := n.f.Store().ListJobs(context.Background(), &fsm.ListJobsParams{TenantID: "t1", States: []fsm.JobState{fsm.JobQueued}, Queue: fsm.QueueBatch, Limit: 10})
	if err != nil || len(p.Jobs) != 0 || p.Next != "" {
		t.Errorf("jobs of t1 in the batch queue = %+v, %v; want none", p, err)
	}
}
