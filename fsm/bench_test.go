package fsm_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
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
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
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
	return f
}
