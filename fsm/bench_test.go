package fsm_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
	"github.com/ffrtmp/ffrtmp/store/storetest"
)

// BenchmarkApplySubmit measures FSM apply throughput of SubmitJob entries
// on a bbolt store, one entry per batch (the baseline: one fsync each)
// and in batches as Raft delivers them under load.
func BenchmarkApplySubmit(b *testing.B) {
	for _, batch := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			f := boltFSM(b)
			at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			index := uint64(1)
			apply := func(c fsm.Command) {
				data, err := fsm.Encode(c)
				if err != nil {
					b.Fatal(err)
				}
				f.ApplyBatch([]*raft.Log{{Index: index, Term: 1, Type: raft.LogCommand, Data: data}})
				index++
			}
			apply(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "t", CreatedAt: at}})
			spec := fsm.JobSpec{Scenario: "720p30-h264", Input: fsm.Input{URL: "testsrc://?duration=5"}, Outputs: []fsm.Output{{URL: "file:///a.mp4"}}}
			plan, err := spec.Compile(fsm.Policy{})
			if err != nil {
				b.Fatal(err)
			}
			logs := make([]*raft.Log, 0, b.N)
			for i := range b.N {
				data, err := fsm.Encode(&fsm.SubmitJob{Job: fsm.Job{
					ID: fmt.Sprintf("job-%09d", i), TenantID: "t", Spec: spec, Plan: *plan, SubmittedAt: at,
				}})
				if err != nil {
					b.Fatal(err)
				}
				logs = append(logs, &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data})
				index++
			}
			b.ResetTimer()
			for i := 0; i < len(logs); i += batch {
				resps := f.ApplyBatch(logs[i:min(i+batch, len(logs))])
				if _, ok := resps[0].(*fsm.Job); !ok {
					b.Fatalf("apply: %v", resps[0])
				}
			}
			f.Flush()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
		})
	}
}

// BenchmarkApplySubmitEntries measures what every node spends applying
// submits as the write path proposes them: SubmitJobs entries of n
// items, each with an actor (so an audit record each) and a UUIDv7 ID,
// one entry per ApplyBatch (one store commit each), on a bbolt store.
// It reports the process's CPU time and the bytes it wrote per job: the
// difference between n=1 and larger entries is the cost of an entry
// (its commit), the rest that of an item.
func BenchmarkApplySubmitEntries(b *testing.B) {
	for _, n := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("items=%d", n), func(b *testing.B) {
			f := boltFSM(b)
			at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			index := uint64(0)
			next := func(c fsm.Command) *raft.Log { // stamped by the leader, as Raft does
				index++
				l := entry(b, index, c)
				l.AppendedAt = at
				return l
			}
			f.ApplyBatch([]*raft.Log{next(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "t", CreatedAt: at}})})
			spec := fsm.JobSpec{Name: "bench", Scenario: "240p30-h264", Input: fsm.Input{URL: "testsrc://?duration=1"}, Outputs: []fsm.Output{{URL: "file:///bench/out.mp4"}}}
			plan, err := spec.Compile(fsm.Policy{})
			if err != nil {
				b.Fatal(err)
			}
			actor := &fsm.Actor{User: "admin@localhost", KeyID: "f32f17c0c9d7f4e3", Role: fsm.RoleSuperAdmin, TenantID: "t",
				RequestID: "e20fd4ecdd471e39254fb454ead50b11", Source: "127.0.0.1:56388", Action: "submitJob"}
			var logs []*raft.Log
			for lo := 0; lo < b.N; lo += n {
				c := &fsm.SubmitJobs{}
				for range min(n, b.N-lo) {
					c.Items = append(c.Items, fsm.SubmitItem{Job: fsm.Job{ID: uuid.Must(uuid.NewV7()).String(), TenantID: "t", Spec: spec, Plan: *plan, SubmittedAt: at}, Actor: actor})
				}
				logs = append(logs, next(c))
			}
			written, cpu := storetest.Written(b), processCPU()
			b.ReportAllocs()
			b.ResetTimer()
			for _, l := range logs {
				r, ok := f.ApplyBatch([]*raft.Log{l})[0].(*fsm.SubmitJobsResult)
				if !ok {
					b.Fatalf("apply: %v", r)
				}
				if _, ok := r.Results[0].(*fsm.Job); !ok {
					b.Fatalf("apply: %v", r.Results[0])
				}
			}
			f.Flush()
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-cpu)/float64(time.Microsecond)/float64(b.N), "cpu-µs/job")
			b.ReportMetric(float64(storetest.Written(b)-written)/float64(b.N), "written-B/job")
		})
	}
}

// boltFSM returns an FSM on a new bbolt store.
func boltFSM(b *testing.B) *fsm.FSM {
	b.Helper()
	st, err := bolt.Open(filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	f, err := fsm.New(context.Background(), fsm.Config{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Flush() })
	return f
}
