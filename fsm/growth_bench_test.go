package fsm_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
)

// benchJobs is how many jobs a benchmark submits: def by default,
// FFRTMP_BENCH_JOBS to change it (no fewer than least).
func benchJobs(b *testing.B, def, least int) int {
	n := def
	if v := os.Getenv("FFRTMP_BENCH_JOBS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < least {
			b.Fatalf("FFRTMP_BENCH_JOBS=%q: want a number of jobs, at least %d", v, least)
		}
	}
	return n
}

// benchFSM returns an FSM on a new bbolt store, the store, the time every
// entry is stamped with, and logOf, which makes the next log entry of c
// with actor a.
func benchFSM(b *testing.B) (f *fsm.FSM, st *bolt.Store, at time.Time, logOf func(c fsm.Command, a *fsm.Actor) *raft.Log) {
	b.Helper()
	st, err := bolt.Open(filepath.Join(b.TempDir(), "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	f, err = fsm.New(context.Background(), fsm.Config{Store: st, AuditKey: testAuditKey})
	if err != nil {
		b.Fatal(err)
	}
	at = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	index := uint64(0)
	logOf = func(c fsm.Command, a *fsm.Actor) *raft.Log {
		data, err := fsm.EncodeAs(c, a)
		if err != nil {
			b.Fatal(err)
		}
		index++
		return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: at}
	}
	return f, st, at, logOf
}

// BenchmarkSubmitGrowth submits FFRTMP_BENCH_JOBS jobs (default 100,000) to an FSM on a bbolt
// store as the API does under load: SubmitJob entries with an actor (so
// each also writes an audit record), UUIDv7 job IDs, 4 tenants, 512
// entries per ApplyBatch (Raft's MaxAppendEntries in cluster; the last
// batch of a window is smaller, so that windows are exact). No worker
// takes them, so every job stays queued. It reports the apply rate and
// the process CPU time per job (which the machine's other work disturbs
// less than the rate) of the first and of the last 10,000 jobs, and the
// ratio of the rates, and the medians of both over the first and the
// last ten windows: a store or an index whose cost grows with the number
// of jobs shows in them. Only ApplyBatch is timed (encoding the
// entries is the proposer's work). With FFRTMP_BENCH_PROGRESS set it
// prints every 100,000th job's window on stderr. With
// FFRTMP_BENCH_CPUPROFILE=prefix it writes a CPU profile of the second
// and of the last window to prefix-<jobs before it>.pprof (run without
// -cpuprofile), to compare what the cost of a submit is made of early and
// late. Run it with -benchtime 1x.
func BenchmarkSubmitGrowth(b *testing.B) {
	const window, batch, tenants = 10_000, 512, 4
	n := benchJobs(b, 100_000, 20_000) // 1000000 for the documented result
	progress := os.Getenv("FFRTMP_BENCH_PROGRESS") != ""
	prof := os.Getenv("FFRTMP_BENCH_CPUPROFILE")
	var stopProfile func()
	for range b.N {
		f, st, at, logOf := benchFSM(b)
		for t := range tenants {
			f.ApplyBatch([]*raft.Log{logOf(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: fmt.Sprintf("tenant-%d", t), CreatedAt: at}}, nil)})
		}
		spec := fsm.JobSpec{Scenario: "720p30-h264", Input: fsm.Input{URL: "testsrc://?duration=5"}, Outputs: []fsm.Output{{URL: "file:///a.mp4"}}}
		plan, err := spec.Compile(fsm.Policy{})
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		b.StopTimer()
		type sample struct{ rate, cpuPerJob float64 }
		var wall, cpu time.Duration // in ApplyBatch, over the current window
		var windows []sample
		logs := make([]*raft.Log, 0, batch)
		for done := 0; done < n; {
			logs = logs[:0]
			for range min(batch, n-done, window-done%window) {
				u, err := uuid.NewV7()
				if err != nil {
					b.Fatal(err)
				}
				tenant := fmt.Sprintf("tenant-%d", done%tenants)
				a := &fsm.Actor{User: "bench", KeyID: "key-1", Role: fsm.RoleTenantAdmin, TenantID: tenant, Action: "submitJob", Tenant: tenant}
				logs = append(logs, logOf(&fsm.SubmitJob{Job: fsm.Job{ID: u.String(), TenantID: tenant, Spec: spec, Plan: *plan, SubmittedAt: at}}, a))
				done++
			}
			if prof != "" && (done-len(logs))%window == 0 {
				w := (done - 1) / window
				if w == 1 || done > n-window {
					stopProfile = startProfile(b, fmt.Sprintf("%s-%07d.pprof", prof, w*window))
				}
			}
			b.StartTimer()
			start, cpuStart := time.Now(), processCPU()
			resps := f.ApplyBatch(logs)
			f.Flush() // its commit, timed with it
			wall += time.Since(start)
			cpu += processCPU() - cpuStart
			b.StopTimer()
			if _, ok := resps[0].(*fsm.Job); !ok {
				b.Fatalf("apply: %v", resps[0])
			}
			if done%window == 0 {
				if stopProfile != nil {
					stopProfile()
					stopProfile = nil
				}
				s := sample{window / wall.Seconds(), float64(cpu.Microseconds()) / window}
				windows = append(windows, s)
				wall, cpu = 0, 0
				if progress && (len(windows)%10 == 0 || len(windows) == 1) {
					fmt.Fprintf(os.Stderr, "%8d jobs: %6.0f jobs/s, %5.0f µs CPU/job over the last %d\n", done, s.rate, s.cpuPerJob, window)
				}
			}
		}
		first, last := windows[0], windows[len(windows)-1]
		b.ReportMetric(first.rate, "first10k_jobs/s")
		b.ReportMetric(last.rate, "last10k_jobs/s")
		b.ReportMetric(last.rate/first.rate, "last/first")
		b.ReportMetric(first.cpuPerJob, "first10k_cpu_µs/job")
		b.ReportMetric(last.cpuPerJob, "last10k_cpu_µs/job")
		// The medians of the first and the last ten windows, which one
		// window's disturbance (a garbage collection, the machine's
		// other work) moves less.
		k := min(10, len(windows)/2)
		median := func(ws []sample, of func(sample) float64) float64 {
			v := make([]float64, len(ws))
			for i, w := range ws {
				v[i] = of(w)
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		rate := func(w sample) float64 { return w.rate }
		cpuOf := func(w sample) float64 { return w.cpuPerJob }
		b.ReportMetric(median(windows[:k], rate), "first_median_jobs/s")
		b.ReportMetric(median(windows[len(windows)-k:], rate), "last_median_jobs/s")
		b.ReportMetric(median(windows[:k], cpuOf), "first_median_cpu_µs/job")
		b.ReportMetric(median(windows[len(windows)-k:], cpuOf), "last_median_cpu_µs/job")
		if err := st.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// startProfile starts a CPU profile into path and returns what stops it.
func startProfile(b *testing.B, path string) func() {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// processCPU returns the CPU time the process has used (user and system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
