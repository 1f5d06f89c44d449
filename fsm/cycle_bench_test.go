package fsm_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// BenchmarkJobCycle measures what every node spends applying one job's
// whole life on a bbolt store: submitted (in SubmitJobs entries of 256),
// assigned, started, one progress report, exited and finished, one entry
// each, delivered to the FSM in batches of 512 (MaxAppendEntries) as Raft
// does under load. It reports the jobs/s and the process's CPU time per
// job (cpu-µs/job); nodes that share one machine's CPUs each spend that
// on every job, which bounds the placements/s of such a cluster.
func BenchmarkJobCycle(b *testing.B) {
	f := boltFSM(b)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	index := uint64(0)
	var logs []*raft.Log
	add := func(c fsm.Command) {
		data, err := fsm.Encode(c)
		if err != nil {
			b.Fatal(err)
		}
		index++
		logs = append(logs, &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: at})
	}
	apply := func() {
		defer f.Flush()
		for i := 0; i < len(logs); i += 512 {
			for _, r := range f.ApplyBatch(logs[i:min(i+512, len(logs))]) {
				if err, ok := r.(error); ok {
					b.Fatalf("apply: %v", err)
				}
			}
		}
		logs = logs[:0]
	}
	add(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "t", CreatedAt: at}})
	const workers = 100
	for w := range workers {
		add(&fsm.RegisterWorker{At: at, Worker: fsm.Worker{
			ID: fmt.Sprintf("w%03d", w), Name: "w", State: fsm.WorkerUp, Incarnation: "1",
			Slots: 1 << 20, CPUs: 8, MemoryMB: 1 << 20, Encoders: []string{"libx264"},
		}})
	}
	apply()
	spec := fsm.JobSpec{Scenario: "720p30-h264", Input: fsm.Input{URL: "testsrc://?duration=5"}, Outputs: []fsm.Output{{URL: "file:///a.mp4"}}}
	plan, err := spec.Compile(fsm.Policy{})
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = fmt.Sprintf("job-%09d", i)
	}
	for lo := 0; lo < b.N; lo += 256 {
		c := &fsm.SubmitJobs{}
		for _, id := range ids[lo:min(lo+256, b.N)] {
			c.Items = append(c.Items, fsm.SubmitItem{Job: fsm.Job{ID: id, TenantID: "t", Spec: spec, Plan: *plan, SubmittedAt: at}})
		}
		add(c)
	}
	for i, id := range ids {
		r := fsm.Report{JobID: id, WorkerID: fmt.Sprintf("w%03d", i%workers), Attempt: 1}
		add(&fsm.AssignJob{JobID: id, WorkerID: r.WorkerID, Attempt: 1, At: at})
		add(&fsm.StartJob{Report: r, At: at})
		add(&fsm.ProgressJob{Report: r, Progress: fsm.Progress{Percent: 50, Frame: 75, FPS: 30, Speed: 1, OutTimeMS: 2500, UpdatedAt: at}})
		add(&fsm.ExitJob{Report: r, At: at})
		add(&fsm.FinishJob{Report: r, At: at, Result: &fsm.Result{Outputs: []fsm.OutputResult{{URL: "file:///a.mp4", Codec: "h264", Width: 1280, Height: 720, FPS: 30, DurationSec: 5, SizeBytes: 1 << 20}}}})
	}
	cpu0 := processCPU()
	b.ResetTimer()
	apply()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/job")
	if j, err := f.GetJob(context.Background(), ids[b.N-1]); err != nil || j.State != fsm.JobSucceeded {
		b.Fatalf("last job = %+v, %v, want succeeded", j, err)
	}
}
