package fsm_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestScheduleMatchesReference: on random clusters (dedicated, drained and
// down workers, hardware encoders and sessions, CPU and memory, backoffs
// and acquire timeouts) the scheduler decides exactly what the reference
// algorithm decides — the same assignments in the same order, expirations,
// wake time and rotation — pass after pass as the state moves.
func TestScheduleMatchesReference(t *testing.T) {
	t.Parallel()
	seeds := 40
	if testing.Short() {
		seeds = 10
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			checkScheduleMatchesReference(t, uint64(seed))
		})
	}
}

func checkScheduleMatchesReference(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 7))
	n := newNode(t)
	tenants := []string{"t1", "t2", "t3", "t4"}
	for _, tn := range tenants {
		n.tenant(tn)
	}
	encoders := []string{"libx264", "libx265", "libvpx-vp9", "libsvtav1", "h264_nvenc", "hevc_nvenc", "h264_qsv", "vp9_qsv", "hevc_vaapi"}
	var workerIDs []string
	for i := range 1 + r.IntN(25) {
		w := fsm.Worker{ID: fmt.Sprintf("w%02d", i), Slots: r.IntN(5), CPUs: pick(r, 0, 2, 4), MemoryMB: pick(r, 0, 2048, 4096)}
		for _, e := range encoders {
			if r.IntN(3) > 0 {
				w.Encoders = append(w.Encoders, e)
			}
		}
		w.EncoderSessions = map[string]int{}
		for _, k := range fsm.HardwareKinds {
			if r.IntN(2) == 0 {
				w.EncoderSessions[k] = r.IntN(4)
			}
		}
		if r.IntN(6) == 0 {
			w.TenantID = pick(r, tenants...)
		}
		n.worker(w)
		workerIDs = append(workerIDs, w.ID)
	}
	now := t0
	jobs := 0
	submit := func(count int) {
		for range count {
			s := spec(pick(r, "720p30-h264", "720p30-h264", "480p30-h265", "360p25-vp9", "480p30-av1"))
			if r.IntN(5) == 0 {
				s.Outputs = append(s.Outputs, fsm.Output{URL: "file:///low.mkv", Video: &fsm.VideoParams{Codec: pick(r, "h264", "h265"), Height: 360}})
			}
			s.Hardware = pick(r, "", "", "", "software", "nvenc", "qsv", "vaapi")
			if _, err := s.Compile(fsm.Policy{}); err != nil {
				s.Hardware = ""
			}
			s.Queue = pick(r, fsm.Queues...)
			s.Priority = pick(r, fsm.Priorities...)
			s.Resources = fsm.Resources{CPU: pick(r, 0, 0, 0.5, 1, 2, 3), MemoryMB: pick(r, 0, 0, 512, 1500, 3000)}
			s.AcquireTimeout = fsm.Duration(time.Duration(30+r.IntN(600)) * time.Second)
			n.submit(fmt.Sprintf("j%04d", jobs), pick(r, "t1", "t1", "t1", "t2", "t3", "t4"), s, now)
			jobs++
			now = now.Add(time.Duration(r.IntN(3000)) * time.Millisecond)
		}
	}
	submit(r.IntN(150))

	fair := fsm.NewFairness()
	for step := range 25 {
		limit := pick(r, 1, 3, 10, 100)
		ref := fair.Clone()
		got := n.f.Schedule(now, fair, limit)
		want := n.f.ScheduleReference(now, ref, limit)
		if g, w := mustJSON(t, got), mustJSON(t, want); g != w {
			t.Fatalf("step %d at %v, limit %d:\nSchedule  %s\nreference %s", step, now, limit, g, w)
		}
		if !fair.Equal(ref) {
			t.Fatalf("step %d: the rotations differ", step)
		}
		var cmds []fsm.Command
		for _, e := range got.Expire {
			cmds = append(cmds, e)
		}
		cmds = append(cmds, assignCmds(got)...)
		if len(cmds) == 0 {
			cmds = append(cmds, &fsm.CreateTenant{Tenant: fsm.Tenant{ID: fmt.Sprintf("idle-%d", step)}})
		}
		for i, resp := range n.apply(cmds...) {
			if err, ok := resp.(error); ok {
				t.Fatalf("step %d: apply %T %+v: refused: %v", step, cmds[i], cmds[i], err)
			}
		}
		// The synthetic executor ends some attempts, well or badly, and
		// the operator drains, undrains or loses a worker now and then.
		now = now.Add(time.Duration(r.IntN(20)) * time.Second)
		cmds = cmds[:0]
		for _, id := range workerIDs {
			for _, j := range n.f.WorkerJobs(id) {
				rep := fsm.Report{JobID: j.ID, WorkerID: j.WorkerID, Attempt: j.Attempt}
				switch r.IntN(7) {
				case 0:
					cmds = append(cmds, &fsm.FinishJob{Report: rep, At: now})
				case 1:
					cmds = append(cmds, &fsm.FinishJob{Report: rep, At: now, Error: &fsm.Error{Code: fsm.CodeFFmpeg}, Retryable: true})
				case 2:
					cmds = append(cmds, &fsm.StartJob{Report: rep, At: now})
				case 3:
					// ffmpeg exited: the slot frees before the finish.
					cmds = append(cmds, &fsm.ExitJob{Report: rep, At: now})
				}
			}
			switch r.IntN(40) {
			case 0:
				cmds = append(cmds, &fsm.DrainWorker{WorkerID: id, Drain: true, At: now})
			case 1:
				cmds = append(cmds, &fsm.DrainWorker{WorkerID: id, Drain: false, At: now})
			case 2:
				cmds = append(cmds, &fsm.MarkWorkerDown{WorkerID: id, Reason: "synthetic", At: now})
			}
		}
		if len(cmds) > 0 {
			n.apply(cmds...)
		}
		if r.IntN(4) == 0 {
			submit(r.IntN(30))
		}
	}
}
