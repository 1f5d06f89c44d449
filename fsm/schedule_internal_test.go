package fsm

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDemandCountsEveryCodec: a demand counts renditions per video codec
// in a fixed array, with one slot left for unknown codecs.
func TestDemandCountsEveryCodec(t *testing.T) {
	if n, slots := len(videoCodecs), len(demand{}.renditions)-1; n > slots {
		t.Fatalf("%d video codecs, but a demand counts renditions of only %d", n, slots)
	}
	j := &Job{Plan: Plan{Outputs: []Rendition{{Video: VideoParams{Codec: "h264"}}, {Video: VideoParams{Codec: "vp9"}}, {Video: VideoParams{Codec: "h264"}}}}}
	w := &Worker{Encoders: []string{"libx264", "libvpx-vp9", "h264_nvenc"}, EncoderSessions: map[string]int{HardwareNVENC: 2}}
	d := demandOf(j)
	if need, ok := d.sessions(w); !ok || need != (sessions{}) {
		t.Errorf("software ladder: sessions %v, %v; want none, true", need, ok)
	}
	j.Plan.Hardware = HardwareNVENC
	d = demandOf(j)
	if _, ok := d.sessions(w); ok {
		t.Errorf("nvenc ladder with vp9: capable, want not (vp9 has no NVENC encoder)")
	}
	j.Plan.Outputs[1].Video.Codec = "h264"
	d = demandOf(j)
	if need, ok := d.sessions(w); !ok || need != (sessions{3}) {
		t.Errorf("three nvenc renditions: sessions %v, %v; want [3 0 0], true", need, ok)
	}
	j.Plan.Outputs[1].Video.Codec = "mpeg2"
	d = demandOf(j)
	if _, ok := d.sessions(w); ok {
		t.Errorf("unknown codec: capable, want not")
	}
}

// This file keeps, for tests only, the scheduler as it was before passes
// remembered demands that fit nowhere and kept workers ordered by free
// slots: every queued job it reaches is asked of every worker. It is the
// plain statement of Schedule's order; TestScheduleMatchesReference checks
// that the fast Schedule decides exactly the same.

// ScheduleReference is Schedule by the reference algorithm.
func (f *FSM) ScheduleReference(now time.Time, fair *Fairness, limit int) *Decisions {
	f.mu.RLock()
	defer f.mu.RUnlock()
	d := &Decisions{}
	wake := func(t time.Time) {
		if d.Wake.IsZero() || t.Before(d.Wake) {
			d.Wake = t
		}
	}
	workers := make([]*Worker, 0, len(f.workers))
	for _, w := range f.workers {
		if w.State == WorkerUp {
			workers = append(workers, w)
		}
	}
	slices.SortFunc(workers, func(a, b *Worker) int { return strings.Compare(a.ID, b.ID) })
	expired := map[string]bool{}
	f.idx.deadlines.Ascend(func(it ditem) bool {
		if it.at.After(now) {
			wake(it.at)
			return false
		}
		dm := demandOf(f.jobs[it.id])
		code := CodeAcquireTimeout
		if !slices.ContainsFunc(workers, func(w *Worker) bool { return capable(w, &dm) }) {
			code = CodeNoCapableWorker
		}
		d.Expire = append(d.Expire, &ExpireJob{JobID: it.id, Code: code, At: now})
		expired[it.id] = true
		return true
	})
	used := make(map[string]usage, len(workers))
	free := 0
	for _, w := range workers {
		used[w.ID] = f.usage(w)
		free += max(0, w.Slots-used[w.ID].jobs)
	}
	for _, c := range classes {
		if free == 0 || len(d.Assign) >= limit {
			break
		}
		tenants := fair.order(c, f.idx.queued[c])
		// Each tenant's queued jobs of class c in submission order, and
		// how far the tenant's walk has come.
		queue := map[string][]qitem{}
		pos := map[string]int{}
		for _, t := range tenants {
			f.idx.queued[c][t].Ascend(func(it qitem) bool { queue[t] = append(queue[t], it); return true })
		}
		for len(tenants) > 0 && free > 0 && len(d.Assign) < limit {
			var next []string
			for _, t := range tenants {
				if free == 0 || len(d.Assign) >= limit {
					break
				}
				var job *Job
				var best *Worker
				for best == nil && pos[t] < len(queue[t]) {
					j := f.jobs[queue[t][pos[t]].id]
					pos[t]++
					if expired[j.ID] {
						continue
					}
					if j.NotBefore.After(now) {
						wake(j.NotBefore)
						continue
					}
					dm := demandOf(j)
					bestFree := -1
					for _, w := range workers {
						if n := w.Slots - used[w.ID].jobs; n > bestFree && fits(w, &dm, used[w.ID]) {
							best, bestFree = w, n
						}
					}
					job = j
				}
				if best == nil {
					continue
				}
				d.Assign = append(d.Assign, &AssignJob{JobID: job.ID, WorkerID: best.ID, Attempt: job.Attempt + 1, At: now})
				dm := demandOf(job)
				used[best.ID] = used[best.ID].add(best, &dm)
				free--
				fair.last[c] = t
				next = append(next, t)
			}
			tenants = next
		}
	}
	return d
}

// Clone returns a copy of the rotation.
func (fr *Fairness) Clone() *Fairness { return &Fairness{last: maps.Clone(fr.last)} }

// Equal reports whether two rotations are at the same place.
func (fr *Fairness) Equal(o *Fairness) bool { return maps.Equal(fr.last, o.last) }
