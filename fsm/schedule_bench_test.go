package fsm_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// benchPlacements is the leader's bound on assignments per pass
// (cluster.maxPlacements).
const benchPlacements = 512

// BenchmarkSchedule measures placements per second of the scheduler on a
// synthetic cluster (see synthetic) with a deep queue, in two workloads:
//
//   - software: every worker can run every job;
//   - gpu-backlog: half the tenants submit only NVENC jobs, 10% of the
//     workers have NVENC and all their sessions are held by running jobs,
//     so every NVENC job is passed over while the software jobs of the
//     other tenants flow.
//
// Each iteration is one scheduling pass at up to 512 placements, as the
// leader runs it: "schedule" times fsm.Schedule alone; "schedule+apply"
// also times one ApplyBatch of the assignments on a bolt store (no Raft).
// Between iterations, untimed, the synthetic executor finishes the jobs
// just assigned and the same tenants submit as many new jobs of the same
// kinds, so the queue stays at its depth.
func BenchmarkSchedule(b *testing.B) {
	for _, mix := range []string{"software", "gpu-backlog"} {
		for _, workers := range []int{100, 1000} {
			for _, queued := range []int{10_000, 100_000} {
				b.Run(fmt.Sprintf("mix=%s/workers=%d/queued=%d", mix, workers, queued), func(b *testing.B) {
					s := benchCluster(b, mix, workers, queued)
					b.Run("schedule", func(b *testing.B) { benchPasses(b, s, false) })
					b.Run("schedule+apply", func(b *testing.B) { benchPasses(b, s, true) })
				})
			}
		}
	}
}

func benchPasses(b *testing.B, s *synthetic, timeApply bool) {
	placements := 0
	for b.Loop() {
		d := s.f.Schedule(s.now, s.fair, benchPlacements)
		if len(d.Assign) == 0 {
			b.Fatal("the scheduler placed nothing")
		}
		placements += len(d.Assign)
		if !timeApply {
			b.StopTimer()
		}
		s.applyAll(assignCmds(d))
		if timeApply {
			b.StopTimer()
		}
		s.applyAll(finishCmds(d.Assign, s.now))
		again := make([]string, len(d.Assign))
		for i, a := range d.Assign {
			again[i] = s.kindOf[a.JobID]
			delete(s.kindOf, a.JobID)
		}
		s.applyAll(s.submitCmds(again))
		b.StartTimer()
	}
	b.ReportMetric(float64(placements)/b.Elapsed().Seconds(), "placements/s")
	b.ReportMetric(float64(placements)/float64(b.N), "placements/op")
}

// benchCluster builds a synthetic cluster of 20 tenants, workers workers
// of 4 slots and queued queued jobs spread over every queue and priority.
func benchCluster(b *testing.B, mix string, workers, queued int) *synthetic {
	b.Helper()
	tenants := make([]string, 20)
	for i := range tenants {
		tenants[i] = fmt.Sprintf("t%02d", i)
	}
	s := newSynthetic(b, 1, tenants)
	s.now = t0.Add(time.Minute)
	var gpus []string
	ws := make([]fsm.Worker, workers)
	for i := range ws {
		ws[i] = fsm.Worker{ID: fmt.Sprintf("w%04d", i), Slots: 4, CPUs: 8, MemoryMB: 16384, Encoders: []string{"libx264", "libx265"}}
		if mix == "gpu-backlog" && i%10 == 0 {
			ws[i].Encoders = append(ws[i].Encoders, "h264_nvenc")
			ws[i].EncoderSessions = map[string]int{fsm.HardwareNVENC: 2}
			gpus = append(gpus, ws[i].ID)
		}
	}
	s.workers(ws)

	var kinds []string // one per tenant, class by class
	for _, tn := range tenants {
		for _, q := range fsm.Queues {
			for _, p := range fsm.Priorities {
				sp := spec("720p30-h264")
				sp.Queue, sp.Priority = q, p
				sp.Resources = fsm.Resources{CPU: 1, MemoryMB: 512}
				sp.AcquireTimeout = fsm.Duration(24 * time.Hour)
				if mix == "gpu-backlog" && tn < "t10" {
					sp.Hardware = fsm.HardwareNVENC
				}
				name := fmt.Sprintf("%s/%s/%s", tn, q, p)
				s.kind(name, tn, sp)
				kinds = append(kinds, name)
			}
		}
	}
	// Hold every NVENC session with jobs that never finish.
	if len(gpus) > 0 {
		pin := make([]string, 2*len(gpus))
		for i := range pin {
			pin[i] = kinds[0]
		}
		subs := s.submitCmds(pin)
		s.applyAll(subs)
		var assign []fsm.Command
		for i, c := range subs {
			assign = append(assign, &fsm.AssignJob{JobID: c.(*fsm.SubmitJob).Job.ID, WorkerID: gpus[i/2], Attempt: 1, At: s.now})
		}
		s.applyAll(assign)
	}
	names := make([]string, queued)
	for i := range names {
		names[i] = kinds[s.r.IntN(len(kinds))]
	}
	s.applyAll(s.submitCmds(names))
	return s
}

// BenchmarkScheduleFull times a pass on a cluster whose slots are all
// taken but for a few: the steady state under a deep queue, where each
// finish frees a slot and wakes the scheduler for it. 1,000 workers of 4
// slots are filled from 100,000 queued jobs; then each iteration finishes
// the 10 oldest running jobs and submits 10 more (untimed) and times the
// pass that places 10 jobs into the freed slots.
func BenchmarkScheduleFull(b *testing.B) {
	s := benchCluster(b, "software", 1000, 100_000)
	var running []*fsm.AssignJob // oldest first
	for {
		d := s.f.Schedule(s.now, s.fair, benchPlacements)
		if len(d.Assign) == 0 {
			break
		}
		s.applyAll(assignCmds(d))
		running = append(running, d.Assign...)
	}
	const freed = 10
	for b.Loop() {
		b.StopTimer()
		done := running[:freed]
		running = running[freed:]
		s.applyAll(finishCmds(done, s.now))
		again := make([]string, freed)
		for i, a := range done {
			again[i] = s.kindOf[a.JobID]
			delete(s.kindOf, a.JobID)
		}
		s.applyAll(s.submitCmds(again))
		b.StartTimer()
		d := s.f.Schedule(s.now, s.fair, benchPlacements)
		b.StopTimer()
		if len(d.Assign) != freed {
			b.Fatalf("placed %d jobs into %d free slots", len(d.Assign), freed)
		}
		s.applyAll(assignCmds(d))
		running = append(running, d.Assign...)
		b.StartTimer()
	}
}
