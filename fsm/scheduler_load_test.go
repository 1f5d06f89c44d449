package fsm_test

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestSchedulerSyntheticLoad loads the scheduler with 1,000 synthetic
// workers (registrations only, see synthetic) and 10,000 queued jobs from
// 20 tenants, and runs the leader's loop — Schedule, apply the
// assignments, the synthetic executor finishes a random subset of the
// running jobs — until every job succeeded. It checks, after every batch:
// no worker holds more jobs, CPU, memory or encoder sessions than it has;
// no job is assigned twice (every job runs once, as attempt 1); a class
// is served only when no job of a better class could be placed (live
// before default before batch, high before low); and within a class the
// tenants with work left got turns that differ by at most one.
//
// Under the race detector, which makes it about six times slower (15 s
// for 10,000 jobs alone on a loaded 2-CPU machine), it runs 2,500 jobs on
// the same 1,000 workers: what the race detector looks for does not
// depend on the depth of the queue, and the package's race run stays
// short. The full 10,000 run without it.
func TestSchedulerSyntheticLoad(t *testing.T) {
	t.Parallel()
	jobs := 10_000
	if raceEnabled {
		jobs = 2_500
	}
	runSyntheticLoad(t, 1_000, jobs)
}

// loadWorker is a synthetic worker and what the test knows it holds.
type loadWorker struct {
	w        fsm.Worker
	jobs     map[string]*fsm.Job
	milliCPU int64
	memoryMB int
	sessions map[string]int
}

func (lw *loadWorker) hold(j *fsm.Job, sign int) {
	if sign > 0 {
		lw.jobs[j.ID] = j
	} else {
		delete(lw.jobs, j.ID)
	}
	lw.milliCPU += int64(sign) * int64(math.Round(j.Spec.Resources.CPU*1000))
	lw.memoryMB += sign * j.Spec.Resources.MemoryMB
	for k, n := range encoderSessions(&lw.w, j) {
		lw.sessions[k] += sign * n
	}
}

// encoderSessions returns the hardware sessions j opens on w, by kind,
// or nil if w cannot encode some rendition.
func encoderSessions(w *fsm.Worker, j *fsm.Job) map[string]int {
	out := map[string]int{}
	for _, r := range j.Plan.Outputs {
		e := w.EncoderFor(r.Video.Codec, j.Plan.Hardware)
		if e == "" {
			return nil
		}
		if k := fsm.EncoderHardware(e); k != "" {
			out[k]++
		}
	}
	return out
}

// fitsNow is the test's own statement of whether lw can take j now.
func (lw *loadWorker) fitsNow(j *fsm.Job) bool {
	w := &lw.w
	if w.TenantID != "" && w.TenantID != j.TenantID || len(lw.jobs) >= w.Slots {
		return false
	}
	need := encoderSessions(w, j)
	if need == nil {
		return false
	}
	for k, n := range need {
		if lw.sessions[k]+n > w.EncoderSessions[k] {
			return false
		}
	}
	r := j.Spec.Resources
	if r.CPU > 0 && lw.milliCPU+int64(math.Round(r.CPU*1000)) > int64(w.CPUs)*1000 {
		return false
	}
	return r.MemoryMB == 0 || lw.memoryMB+r.MemoryMB <= w.MemoryMB
}

// classRank orders dispatch classes: 0 is live/high, 8 batch/low.
func classRank(j *fsm.Job) int {
	return slices.Index(fsm.Queues, j.Spec.Queue)*len(fsm.Priorities) + slices.Index(fsm.Priorities, j.Spec.Priority)
}

func runSyntheticLoad(t *testing.T, workers, total int) {
	tenants := make([]string, 20)
	for i := range tenants {
		tenants[i] = fmt.Sprintf("t%02d", i)
	}
	s := newSynthetic(t, 42, tenants)
	r := s.r

	// Workers: 1 to 4 slots; every tenth has NVENC with 2 or 3 sessions;
	// every fiftieth is dedicated to one tenant.
	lws := map[string]*loadWorker{}
	var ws []fsm.Worker
	for i := range workers {
		w := fsm.Worker{ID: fmt.Sprintf("w%04d", i), Slots: 1 + r.IntN(4), CPUs: 8, MemoryMB: 16384, Encoders: []string{"libx264", "libx265"}}
		if i%10 == 0 {
			w.Encoders = append(w.Encoders, "h264_nvenc", "hevc_nvenc")
			w.EncoderSessions = map[string]int{fsm.HardwareNVENC: 2 + r.IntN(2)}
		}
		if i%50 == 7 {
			w.TenantID = tenants[r.IntN(len(tenants))]
		}
		ws = append(ws, w)
		lws[w.ID] = &loadWorker{w: w, jobs: map[string]*fsm.Job{}, sessions: map[string]int{}}
	}
	s.workers(ws)

	// Jobs: every tenant the same number, in random interleaving; one in
	// ten live, six default, three batch; one in twelve on NVENC; one in
	// ten a two-rendition ladder.
	var names []string
	for i := range total {
		tn := tenants[i%len(tenants)]
		sp := spec(pick(r, "720p30-h264", "720p30-h264", "1080p30-h264", "480p30-h265"))
		sp.Queue = pick(r, fsm.QueueLive, fsm.QueueDefault, fsm.QueueDefault, fsm.QueueDefault, fsm.QueueDefault,
			fsm.QueueDefault, fsm.QueueDefault, fsm.QueueBatch, fsm.QueueBatch, fsm.QueueBatch)
		sp.Priority = pick(r, fsm.Priorities...)
		sp.Resources = fsm.Resources{CPU: pick(r, 0, 0.5, 1, 2), MemoryMB: pick(r, 0, 512, 1024)}
		sp.AcquireTimeout = fsm.Duration(24 * time.Hour)
		if r.IntN(12) == 0 {
			sp.Hardware = fsm.HardwareNVENC
		}
		if r.IntN(10) == 0 {
			sp.Outputs = append(sp.Outputs, fsm.Output{URL: "file:///low.mp4", Video: &fsm.VideoParams{Codec: "h264", Height: 360}})
		}
		name := fmt.Sprintf("k%05d", i)
		s.kind(name, tn, sp)
		names = append(names, name)
	}
	r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	queued := map[string]*fsm.Job{}
	for _, resp := range s.applyAll(s.submitCmds(names)) {
		j := resp.(*fsm.Job)
		queued[j.ID] = j
	}

	assigned := map[string]bool{}
	succeeded := 0
	s.now = t0.Add(time.Minute)
	for round := 1; succeeded < total; round++ {
		if round > 10*total {
			t.Fatalf("round %d: %d of %d jobs succeeded; the loop does not end", round, succeeded, total)
		}
		d := s.f.Schedule(s.now, s.fair, benchPlacements)
		if len(d.Expire) != 0 {
			t.Fatalf("round %d: %d expirations, want none", round, len(d.Expire))
		}
		worst := -1
		perClass := map[int]map[string]int{} // class → tenant → assignments
		for _, a := range d.Assign {
			if assigned[a.JobID] || a.Attempt != 1 {
				t.Fatalf("round %d: job %s assigned again (attempt %d)", round, a.JobID, a.Attempt)
			}
			assigned[a.JobID] = true
			j := queued[a.JobID]
			c := classRank(j)
			if c < worst {
				t.Fatalf("round %d: job %s of class %d assigned after class %d", round, j.ID, c, worst)
			}
			worst = c
			if perClass[c] == nil {
				perClass[c] = map[string]int{}
			}
			perClass[c][j.TenantID]++
		}
		for i, resp := range s.applyAll(assignCmds(d)) {
			j, ok := resp.(*fsm.Job)
			if !ok || j.State != fsm.JobAssigned || j.Attempt != 1 {
				t.Fatalf("round %d: assignment %+v: response %+v", round, d.Assign[i], resp)
			}
			delete(queued, j.ID)
			lws[j.WorkerID].hold(j, +1)
		}
		checkLoad(t, s, lws, round)

		// Live before default before batch: a job of a better class than
		// one assigned this round is still queued only if no worker can
		// take it. Round robin: within a class, the tenants that still
		// have a job some worker can take got turns within one of each
		// other (in the first round, every tenant).
		placeable := map[string]bool{}
		for _, j := range queued {
			c := classRank(j)
			if c > worst {
				continue
			}
			for _, lw := range lws {
				if lw.fitsNow(j) {
					if c < worst {
						t.Fatalf("round %d: job %s of class %d stays queued although worker %s can take it, while class %d was served", round, j.ID, c, lw.w.ID, worst)
					}
					placeable[j.TenantID] = true
					break
				}
			}
		}
		if served := perClass[worst]; len(placeable) > 0 {
			lo, hi := math.MaxInt, 0
			for tn := range placeable {
				lo, hi = min(lo, served[tn]), max(hi, served[tn])
			}
			if hi-lo > 1 {
				t.Fatalf("round %d: class %d: tenants with placeable jobs got %v turns, more than one apart", round, worst, served)
			}
		}
		if round == 1 {
			if len(d.Assign) != benchPlacements {
				t.Fatalf("round 1 placed %d jobs, want the limit %d", len(d.Assign), benchPlacements)
			}
			for c, served := range perClass {
				lo, hi := math.MaxInt, 0
				for _, tn := range tenants {
					lo, hi = min(lo, served[tn]), max(hi, served[tn])
				}
				if c == worst && hi-lo > 1 {
					t.Fatalf("round 1: class %d: per-tenant assignments %v differ by more than one", c, served)
				}
			}
		}

		// The synthetic executor finishes about a third of what runs.
		s.now = s.now.Add(time.Second)
		var done []*fsm.AssignJob
		for _, id := range slices.Sorted(maps.Keys(lws)) {
			lw := lws[id]
			for _, jid := range slices.Sorted(maps.Keys(lw.jobs)) {
				if r.IntN(3) == 0 {
					j := lw.jobs[jid]
					done = append(done, &fsm.AssignJob{JobID: j.ID, WorkerID: id, Attempt: j.Attempt})
				}
			}
		}
		running := 0
		for _, lw := range lws {
			running += len(lw.jobs)
		}
		if running == 0 && len(d.Assign) == 0 {
			t.Fatalf("round %d: nothing assigned and nothing running with %d jobs queued, %d of %d succeeded", round, len(queued), succeeded, total)
		}
		for _, resp := range s.applyAll(finishCmds(done, s.now)) {
			j := resp.(*fsm.Job)
			if j.State != fsm.JobSucceeded || j.Attempt != 1 {
				t.Fatalf("round %d: finished job %s: state %s attempt %d", round, j.ID, j.State, j.Attempt)
			}
			lws[j.WorkerID].hold(lws[j.WorkerID].jobs[j.ID], -1)
			succeeded++
		}
		checkLoad(t, s, lws, round)
	}
	for i := range total {
		id := fmt.Sprintf("job-%07d", i)
		if j := s.get(id); j.State != fsm.JobSucceeded || j.Attempt != 1 || j.Retries != 0 {
			t.Fatalf("job %s: state %s attempt %d retries %d, want succeeded once", id, j.State, j.Attempt, j.Retries)
		}
	}
}

// checkLoad checks that the FSM's view of every worker matches the test's
// and that no worker holds more than it has.
func checkLoad(t *testing.T, s *synthetic, lws map[string]*loadWorker, round int) {
	t.Helper()
	for id, lw := range lws {
		w := &lw.w
		if got := s.f.WorkerLoad(id); got != len(lw.jobs) {
			t.Fatalf("round %d: worker %s: WorkerLoad %d, the test counts %d", round, id, got, len(lw.jobs))
		}
		if len(lw.jobs) > w.Slots || lw.milliCPU > int64(w.CPUs)*1000 || lw.memoryMB > w.MemoryMB {
			t.Fatalf("round %d: worker %s holds %d jobs, %d millicores, %d MB; has %d slots, %d CPUs, %d MB",
				round, id, len(lw.jobs), lw.milliCPU, lw.memoryMB, w.Slots, w.CPUs, w.MemoryMB)
		}
		for k, n := range lw.sessions {
			if n > w.EncoderSessions[k] {
				t.Fatalf("round %d: worker %s holds %d %s sessions of %d", round, id, n, k, w.EncoderSessions[k])
			}
		}
	}
}
