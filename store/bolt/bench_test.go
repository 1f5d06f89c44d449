package bolt_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
	"github.com/ffrtmp/ffrtmp/store/storetest"
)

// BenchmarkCommitJobUpdates times what a busy cluster's stores do most:
// Commit of batches that rewrite stored active jobs (a worker's start,
// progress and finish reports each write the whole job). 1,000 jobs of
// the 720p30-h264 scenario are stored; each op commits one batch of 100
// of them, each a newer version. It reports updates/s and the bytes the
// process wrote per commit (wchar of /proc/self/io: bolt's page writes).
func BenchmarkCommitJobUpdates(b *testing.B) {
	st, err := bolt.Open(filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	spec := fsm.JobSpec{Scenario: "720p30-h264", Input: fsm.Input{URL: "testsrc://?duration=1"},
		Outputs: []fsm.Output{{URL: "file:///out.mp4"}}, Queue: fsm.QueueDefault, Priority: fsm.PriorityMedium}
	plan, err := spec.Compile(fsm.Policy{})
	if err != nil {
		b.Fatal(err)
	}
	const stored, perBatch = 1000, 100
	jobs := make([]*fsm.Job, stored)
	for i := range jobs {
		jobs[i] = &fsm.Job{ID: fmt.Sprintf("01956a3c-0000-7000-8000-%012d", i), TenantID: "acme", Spec: spec, Plan: *plan,
			State: fsm.JobRunning, Attempt: 1, WorkerID: "w1", SubmittedAt: t0, QueuedAt: t0, AssignedAt: t0, StartedAt: t0,
			Progress: &fsm.Progress{Percent: 10, UpdatedAt: t0}, Meta: fsm.Meta{CreateIndex: 1, ModifyIndex: 1}}
	}
	ctx := context.Background()
	if err := st.Commit(ctx, &fsm.Batch{Index: 1, Jobs: jobs}); err != nil {
		b.Fatal(err)
	}
	index := uint64(1)
	written := storetest.Written(b)
	for b.Loop() {
		index++
		batch := &fsm.Batch{Index: index, Jobs: make([]*fsm.Job, perBatch)}
		for i := range batch.Jobs {
			j := *jobs[(int(index)*perBatch+i)%stored]
			j.Progress = &fsm.Progress{Percent: float64(index % 100), UpdatedAt: t0}
			j.ModifyIndex = index
			batch.Jobs[i] = &j
		}
		if err := st.Commit(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*perBatch)/b.Elapsed().Seconds(), "updates/s")
	b.ReportMetric(float64(storetest.Written(b)-written)/float64(b.N), "written-B/commit")
}
