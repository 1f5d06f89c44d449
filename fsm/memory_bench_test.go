package fsm_test

import (
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// BenchmarkJobMemory measures the heap an FSM keeps per job: it submits
// FFRTMP_BENCH_JOBS jobs (default 20,000) as the API's batch endpoint
// does (SubmitJobs entries of 1,000 items, each with an actor; UUIDv7
// IDs; the 720p30-h264 testsrc job of docs/BENCHMARKS.md section 12),
// measures the live heap after a collection, then cancels every job and
// measures again: live bytes per queued job, and what a finished job
// leaves in memory. With FFRTMP_BENCH_HEAPPROFILE=path it writes the heap
// profile with every job queued to path, and with every job finished to
// path.finished (go tool pprof -sample_index inuse_space). Run it with -benchtime 1x.
func BenchmarkJobMemory(b *testing.B) {
	n := benchJobs(b, 20_000, 1000)
	for range b.N {
		f, st, at, logOf := benchFSM(b)
		apply := func(c fsm.Command, a *fsm.Actor) []any { return f.ApplyBatch([]*raft.Log{logOf(c, a)}) }
		apply(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "tenant-1", CreatedAt: at}}, nil)
		spec := fsm.JobSpec{Name: "rss", Scenario: "720p30-h264", Queue: fsm.QueueBatch, Priority: fsm.PriorityLow,
			Input: fsm.Input{URL: "testsrc://?duration=5"}, Outputs: []fsm.Output{{URL: "file:///bench/rss.mp4"}},
			AcquireTimeout: fsm.Duration(24 * time.Hour)}
		plan, err := spec.Compile(fsm.Policy{})
		if err != nil {
			b.Fatal(err)
		}
		actor := func(action string) *fsm.Actor {
			return &fsm.Actor{User: "bench", KeyID: "key-1", Role: fsm.RoleTenantAdmin, TenantID: "tenant-1", Action: action, Tenant: "tenant-1"}
		}
		ids := make([]string, n) // made before the first measurement
		for i := range ids {
			u, err := uuid.NewV7()
			if err != nil {
				b.Fatal(err)
			}
			ids[i] = u.String()
		}
		heap0 := liveHeap()
		for done := 0; done < n; {
			var c fsm.SubmitJobs
			for ; done < n && len(c.Items) < fsm.MaxSubmitBatch; done++ {
				c.Items = append(c.Items, fsm.SubmitItem{Job: fsm.Job{ID: ids[done], TenantID: "tenant-1", Spec: spec, Plan: *plan, SubmittedAt: at}, Actor: actor("submitJob")})
			}
			res := apply(&c, nil)[0]
			if r, ok := res.(*fsm.SubmitJobsResult); !ok {
				b.Fatalf("apply: %v", res)
			} else if _, ok := r.Results[0].(*fsm.Job); !ok {
				b.Fatalf("apply: %v", r.Results[0])
			}
		}
		f.Flush() // the last batch is no longer pending
		queued := liveHeap()
		profile := os.Getenv("FFRTMP_BENCH_HEAPPROFILE")
		writeHeapProfile(b, profile)
		for i := 0; i < n; i += 512 { // Raft's MaxAppendEntries
			var logs []*raft.Log
			for _, id := range ids[i:min(i+512, n)] {
				logs = append(logs, logOf(&fsm.CancelJob{JobID: id, At: at}, actor("cancelJob")))
			}
			for k, r := range f.ApplyBatch(logs) {
				if _, ok := r.(*fsm.Job); !ok {
					b.Fatalf("cancel %s: %v", ids[i+k], r)
				}
			}
		}
		f.Flush() // the last batch is no longer pending
		finished := liveHeap()
		if profile != "" {
			writeHeapProfile(b, profile+".finished")
		}
		b.ReportMetric(float64(queued-heap0)/float64(n), "live_B/queued_job")
		b.ReportMetric(float64(finished-heap0)/float64(n), "live_B/finished_job")
		runtime.KeepAlive(f)
		runtime.KeepAlive(ids)
		if err := st.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// writeHeapProfile writes the heap profile to path, if not "".
func writeHeapProfile(b *testing.B, path string) {
	if path == "" {
		return
	}
	out, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	if err := pprof.Lookup("heap").WriteTo(out, 0); err != nil {
		b.Fatal(err)
	}
}

// liveHeap returns the bytes of live heap objects after a collection.
func liveHeap() int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
