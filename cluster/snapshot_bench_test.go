package cluster_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
)

// BenchmarkSnapshotHistory measures what a Raft snapshot costs the leader
// when the bolt store holds a history of finished jobs: FFRTMP_BENCH_JOBS
// of them (100,000 by default; 1000000 for the documented result),
// written straight into the state file in batches of 10,000. It starts a
// one-node cluster on that file and times Node.Snapshot, which returns
// when Raft has taken the snapshot, persisted it and compacted its log:
// the leader's wall time and the process CPU time, and the bytes the
// snapshot occupies in raft/snapshots. For comparison it also times a
// full copy of the state (Node.Backup to io.Discard), which is what a
// follower's InstallSnapshot or a backup reads. Run it with -benchtime 1x.
func BenchmarkSnapshotHistory(b *testing.B) {
	n := 100_000
	if v := os.Getenv("FFRTMP_BENCH_JOBS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 10_000 {
			b.Fatalf("FFRTMP_BENCH_JOBS=%q: want a number of jobs, at least 10000", v)
		}
	}
	dir := b.TempDir()
	start := time.Now()
	writeHistory(b, filepath.Join(dir, "state.db"), n)
	info, err := os.Stat(filepath.Join(dir, "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("wrote %d finished jobs in %s: a state file of %d MiB", n, time.Since(start).Round(time.Second), info.Size()>>20)
	node := clustertest.Start(b, clustertest.Options{Dir: dir, Bootstrap: true})
	b.ResetTimer()
	for range b.N {
		// A snapshot needs an entry after the last one. (The FSM skips
		// it: the history was written at higher indexes than Raft's.)
		b.StopTimer()
		node.Apply(createTenant(fmt.Sprintf("bench-%d", time.Now().UnixNano())))
		b.StartTimer()
		wall, cpu := measure(func() {
			if err := node.Node.Snapshot(); err != nil {
				b.Fatalf("Snapshot: %v", err)
			}
		})
		b.ReportMetric(wall.Seconds(), "snapshot_s")
		b.ReportMetric(cpu.Seconds(), "snapshot_cpu_s")
		b.ReportMetric(float64(dirSize(b, filepath.Join(dir, "raft", "snapshots"))), "snapshots_bytes")
		wall, cpu = measure(func() {
			if err := node.Node.Backup(context.Background(), io.Discard); err != nil {
				b.Fatalf("Backup: %v", err)
			}
		})
		b.ReportMetric(wall.Seconds(), "full_copy_s")
		b.ReportMetric(cpu.Seconds(), "full_copy_cpu_s")
	}
}

// writeHistory writes n finished jobs of 10 tenants into a new bolt state
// file at path.
func writeHistory(b *testing.B, path string, n int) {
	st, err := bolt.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	batch := &fsm.Batch{Index: 1}
	for i := range 10 {
		batch.Tenants = append(batch.Tenants, &fsm.Tenant{ID: fmt.Sprintf("tenant-%d", i), Name: "t", CreatedAt: at, Meta: fsm.Meta{CreateIndex: 1, ModifyIndex: 1}})
	}
	if err := st.Commit(ctx, batch); err != nil {
		b.Fatal(err)
	}
	spec := fsm.JobSpec{Scenario: "720p30-h264", Input: fsm.Input{URL: "testsrc://?duration=5"}, Outputs: []fsm.Output{{URL: "file:///a.mp4"}}}
	plan, err := spec.Compile(fsm.Policy{})
	if err != nil {
		b.Fatal(err)
	}
	const size = 10_000
	for i := 0; i < n; i += size {
		batch := &fsm.Batch{Index: uint64(2 + i/size)}
		for k := i; k < min(i+size, n); k++ {
			sub := at.Add(time.Duration(k) * time.Second)
			batch.Jobs = append(batch.Jobs, &fsm.Job{
				ID: fmt.Sprintf("%08x-0000-7000-8000-000000000000", k), TenantID: fmt.Sprintf("tenant-%d", k%10),
				Spec: spec, Plan: *plan, State: fsm.JobSucceeded, WorkerID: "w1", Attempt: 1,
				SubmittedAt: sub, QueuedAt: sub, AssignedAt: sub.Add(time.Second), StartedAt: sub.Add(2 * time.Second), FinishedAt: sub.Add(time.Minute),
				Meta: fsm.Meta{CreateIndex: batch.Index, ModifyIndex: batch.Index},
			})
		}
		if err := st.Commit(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
}

// measure returns the wall and process CPU time fn takes.
func measure(fn func()) (wall, cpu time.Duration) {
	cpuTime := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start, c0 := time.Now(), cpuTime()
	fn()
	return time.Since(start), cpuTime() - c0
}

// dirSize returns the bytes of the files under dir.
func dirSize(b *testing.B, dir string) int64 {
	var total int64
	err := filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			total += info.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return total
}
