// Package storetest is the conformance suite that every fsm.Store
// implementation runs, so that bolt and PostgreSQL behave the same to the
// FSM and to API readers.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Capabilities declare how a store differs from the others, so that each
// subtest checks the store's own contract rather than being skipped.
type Capabilities struct {
	// Peer is set for a store whose state is shared by every node (a
	// database): its snapshot carries only the applied index, and Restore
	// keeps the shared state, which is at or past the snapshot, and
	// refuses a database behind it with fsm.ErrStoreBehind. Peer opens
	// another node's store over the same shared state as st, and
	// registers its cleanup with t.Cleanup. Nil for a store whose
	// snapshot carries its whole state (each node has its own).
	Peer func(t *testing.T, st fsm.Store) fsm.Store
}

// Exercise runs the conformance suite against stores made by newStore.
// Each call must return a fresh, empty store and register its cleanup
// with t.Cleanup. newStore is called on the goroutine of the subtest that
// needs the store, with that subtest's t. Subtests run in parallel.
func Exercise(t *testing.T, caps Capabilities, newStore func(t *testing.T) fsm.Store) {
	t.Helper()
	ctx := context.Background()

	t.Run("LoadEmpty", func(t *testing.T) {
		t.Parallel()
		st := newStore(t)
		s := load(t, st)
		if s.Index != 0 || len(s.Tenants)+len(s.Keys)+len(s.Workers)+len(s.Jobs) != 0 {
			t.Errorf("Load of an empty store = %s, want index 0 and no objects", mustJSON(s))
		}
		page, err := st.ListJobs(ctx, &fsm.ListJobsParams{Limit: 10})
		if err != nil {
			t.Fatalf("ListJobs: %v", err)
		}
		if len(page.Jobs) != 0 || page.Next != "" {
			t.Errorf("ListJobs of an empty store = %d jobs, next %q; want none", len(page.Jobs), page.Next)
		}
	})

	t.Run("CommitThenLoad", func(t *testing.T) {
		t.Parallel()
		st := newStore(t)
		// A deleted tenant is a tombstone that Load returns, as a disabled
		// one: the FSM refuses what names it.
		gone, off := newTenant("gone", 2), newTenant("off", 2)
		gone.DeletedAt, off.Disabled = t0.AddDate(0, 0, 1), true
		b := &fsm.Batch{
			Index:   7,
			Tenants: []*fsm.Tenant{newTenant("acme", 1), newTenant("globex", 2), gone, off},
			Keys:    []*fsm.APIKey{newKey("k1", "acme", 3)},
			Workers: []*fsm.Worker{newWorker("w1", 4)},
		}
		for i, s := range fsm.JobStates {
			b.Jobs = append(b.Jobs, newJob(i+1, "acme", s, fsm.QueueDefault, 5+uint64(i%3)))
		}
		commit(t, st, b)

		want := &fsm.State{Index: 7, Tenants: b.Tenants, Keys: b.Keys, Workers: b.Workers}
		for _, j := range b.Jobs {
			if !j.State.Terminal() {
				want.Jobs = append(want.Jobs, j)
			}
		}
		assertSame(t, "Load after Commit", normalState(load(t, st)), normalState(want))
	})

	t.Run("EveryKind", func(t *testing.T) {
		// Every kind of fsm.Kinds is committed, loaded, snapshotted and
		// restored by the store's generic path: registering a kind is
		// all a store needs (and, for PostgreSQL, its table).
		t.Parallel()
		src := newStore(t)
		b := &fsm.Batch{Index: 5}
		for i, k := range fsm.Kinds {
			k.Add(b, sample(t, k, uint64(i+1)))
		}
		commit(t, src, b)
		assertKinds(t, "Load after Commit", load(t, src), b)

		var buf bytes.Buffer
		writeSnapshot(t, src, &buf)
		dst := newStore(t)
		if caps.Peer != nil {
			dst = caps.Peer(t, src)
		}
		if err := dst.Restore(ctx, &buf); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		assertKinds(t, "Load after Snapshot and Restore", load(t, dst), b)
	})

	exerciseAudit(t, caps, newStore)
	exerciseRetention(t, caps, newStore)

	t.Run("AwkwardRunes", func(t *testing.T) {
		t.Parallel()
		exerciseRunes(t, newStore(t))
	})

	t.Run("GetJob", func(t *testing.T) {
		t.Parallel()
		st := newStore(t)
		active := newJob(1, "acme", fsm.JobRunning, fsm.QueueDefault, 3)
		done := newJob(2, "acme", fsm.JobFailed, fsm.QueueBatch, 4)
		commit(t, st, &fsm.Batch{Index: 4, Tenants: []*fsm.Tenant{newTenant("acme", 1)}, Jobs: []*fsm.Job{active, done}})

		assertSame(t, "GetJob(active)", normJob(getJob(t, st, active.ID)), normJob(active))
		assertSame(t, "GetJob(terminal)", normJob(getJob(t, st, done.ID)), normJob(done))
		for _, id := range []string{jobID(99), "", "acme"} {
			j, err := st.GetJob(ctx, id)
			if !errors.Is(err, fsm.ErrNotFound) {
				t.Errorf("GetJob(%q) = %v, %v; want an error that is fsm.ErrNotFound", id, j, err)
			}
		}
	})

	t.Run("JobsExist", func(t *testing.T) {
		t.Parallel()
		st := newStore(t)
		active := newJob(1, "acme", fsm.JobQueued, fsm.QueueDefault, 3)
		done := newJob(2, "acme", fsm.JobSucceeded, fsm.QueueDefault, 4)
		commit(t, st, &fsm.Batch{Index: 4, Tenants: []*fsm.Tenant{newTenant("acme", 1)}, Jobs: []*fsm.Job{active, done}})

		got, err := st.JobsExist(ctx, []string{active.ID, jobID(99), done.ID, "", "acme"})
		if err != nil {
			t.Fatalf("JobsExist: %v", err)
		}
		want := map[string]uint64{active.ID: active.CreateIndex, done.ID: done.CreateIndex}
		assertSame(t, "JobsExist", got, want)
		if got, err := st.JobsExist(ctx, nil); err != nil || len(got) != 0 {
			t.Errorf("JobsExist(nil) = %v, %v; want an empty map", got, err)
		}
	})

	t.Run("CommitAtOrBelowIndexIsIgnored", func(t *testing.T) {
		t.Parallel()
		st := newStore(t)
		acme := newTenant("acme", 2)
		j := newJob(1, "acme", fsm.JobQueued, fsm.QueueDefault, 10)
		commit(t, st, &fsm.Batch{Index: 10, Tenants: []*fsm.Tenant{acme}, Workers: []*fsm.Worker{newWorker("w1", 3)}, Jobs: []*fsm.Job{j}})
		before := normalState(load(t, st))

		// An older batch: changed versions of stored objects (with modify
		// indexes above the stored ones, so only the batch index can stop
		// them) and objects the store has never seen.
		renamed := *acme
		renamed.Name, renamed.ModifyIndex = "Renamed", 5
		older := &fsm.Batch{
			Index:   5,
			Tenants: []*fsm.Tenant{&renamed, newTenant("initech", 5)},
			Keys:    []*fsm.APIKey{newKey("k-old", "acme", 5)},
			Workers: []*fsm.Worker{newWorker("w-old", 5)},
			Jobs:    []*fsm.Job{finish(j, fsm.JobCanceled, 11), newJob(2, "acme", fsm.JobQueued, fsm.QueueDefault, 5)},
		}
		commit(t, st, older)
		assertSame(t, "Load after committing an older batch", normalState(load(t, st)), before)

		// The same index again is also a replay.
		same := &fsm.Batch{Index: 10, Tenants: []*fsm.Tenant{newTenant("hooli", 10)}, Jobs: []*fsm.Job{newJob(3, "acme", fsm.JobQueued, fsm.QueueDefault, 10)}}
		commit(t, st, same)
		assertSame(t, "Load after committing a batch at the stored index", normalState(load(t, st)), before)

		for _, id := range []string{jobID(2), jobID(3)} {
			if got, err := st.GetJob(ctx, id); !errors.Is(err, fsm.ErrNotFound) {
				t.Errorf("GetJob(%s) after an ignored batch = %v, %v; want fsm.ErrNotFound", id, got, err)
			}
		}
		if got := getJob(t, st, j.ID); got.State != fsm.JobQueued {
			t.Errorf("job state after an ignored batch = %s, want queued", got.State)
		}
	})

	t.Run("ModifyIndexGuard", func(t *testing.T) {
		t.Parallel()
		st := newStore(t)
		acme, key, w := newTenant("acme", 10), newKey("k1", "acme", 10), newWorker("w1", 10)
		commit(t, st, &fsm.Batch{Index: 10, Tenants: []*fsm.Tenant{acme}, Keys: []*fsm.APIKey{key}, Workers: []*fsm.Worker{w}})

		// A newer batch carrying stale versions (modify index at or below
		// the stored one) next to genuinely new objects.
		staleTenant := *acme
		staleTenant.Name, staleTenant.ModifyIndex = "Stale", 8
		staleKey := *key
		staleKey.Revoked = true // same modify index: not newer
		staleWorker := *w
		staleWorker.State, staleWorker.ModifyIndex = fsm.WorkerDown, 9
		newer := &fsm.Batch{
			Index:   20,
			Tenants: []*fsm.Tenant{&staleTenant, newTenant("zeta", 20)},
			Keys:    []*fsm.APIKey{&staleKey, newKey("k2", "acme", 20)},
			Workers: []*fsm.Worker{&staleWorker, newWorker("w2", 20)},
		}
		commit(t, st, newer)

		want := &fsm.State{
			Index:   20,
			Tenants: []*fsm.Tenant{acme, newer.Tenants[1]},
			Keys:    []*fsm.APIKey{key, newer.Keys[1]},
			Workers: []*fsm.Worker{w, newer.Workers[1]},
		}
		assertSame(t, "Load after a batch with stale objects", normalState(load(t, st)), normalState(want))
	})

	t.Run("ModifyIndexGuardJobs", func(t *testing.T) {
		t.Parallel()
		st := newStore(t)
		a := newJob(1, "acme", fsm.JobRunning, fsm.QueueDefault, 10)
		commit(t, st, &fsm.Batch{Index: 10, Tenants: []*fsm.Tenant{newTenant("acme", 1)}, Jobs: []*fsm.Job{a}})

		// Job 1 arrives stale (its stored version is as new) and claims to
		// be finished; jobs 2 and 3 are new. IDs sort stale first.
		newer := &fsm.Batch{
			Index: 20,
			Jobs: []*fsm.Job{
				finish(a, fsm.JobSucceeded, 10),
				newJob(2, "acme", fsm.JobQueued, fsm.QueueDefault, 20),
				newJob(3, "acme", fsm.JobCanceled, fsm.QueueDefault, 19),
			},
		}
		commit(t, st, newer)

		s := load(t, st)
		if s.Index != 20 {
			t.Errorf("index after the batch = %d, want 20", s.Index)
		}
		assertSame(t, "active jobs after a batch with a stale job", normJobs(normalState(s).Jobs), normJobs([]*fsm.Job{a, newer.Jobs[1]}))
		assertSame(t, "GetJob(stale job)", normJob(getJob(t, st, a.ID)), normJob(a))
		for _, j := range newer.Jobs[1:] {
			got, err := st.GetJob(ctx, j.ID)
			if err != nil {
				t.Errorf("GetJob(%s) of a new job in the same batch: %v", j.ID, err)
				continue
			}
			assertSame(t, "GetJob(new job)", normJob(got), normJob(j))
		}
	})

	t.Run("TerminalJobLeavesActiveSet", func(t *testing.T) {
		t.Parallel()
		st := newStore(t)
		j := newJob(1, "acme", fsm.JobQueued, fsm.QueueDefault, 3)
		other := newJob(2, "acme", fsm.JobQueued, fsm.QueueDefault, 3)
		commit(t, st, &fsm.Batch{Index: 3, Tenants: []*fsm.Tenant{newTenant("acme", 1)}, Jobs: []*fsm.Job{j, other}})
		if got := ids(normalState(load(t, st)).Jobs); !slices.Equal(got, []string{j.ID, other.ID}) {
			t.Fatalf("active jobs = %v, want both", got)
		}

		running := with(j, 4, func(c *fsm.Job) { c.State, c.WorkerID, c.Attempt = fsm.JobRunning, "w1", 1 })
		commit(t, st, &fsm.Batch{Index: 4, Jobs: []*fsm.Job{running}})
		done := finish(running, fsm.JobSucceeded, 5)
		commit(t, st, &fsm.Batch{Index: 5, Jobs: []*fsm.Job{done}})

		s := load(t, st)
		if got := ids(s.Jobs); !slices.Equal(got, []string{other.ID}) {
			t.Errorf("active jobs after job 1 succeeded = %v, want only %s", got, other.ID)
		}
		if s.Index != 5 {
			t.Errorf("index = %d, want 5", s.Index)
		}
		assertSame(t, "GetJob(finished job)", normJob(getJob(t, st, j.ID)), normJob(done))
		page, err := st.ListJobs(ctx, &fsm.ListJobsParams{Limit: 10})
		if err != nil {
			t.Fatalf("ListJobs: %v", err)
		}
		assertSame(t, "ListJobs after a job finished", normJobs(page.Jobs), normJobs([]*fsm.Job{other, done}))
	})

	t.Run("ListJobs", func(t *testing.T) {
		t.Parallel()
		st := newStore(t)
		all := seedJobs(t, st)

		// byID is the store's content, newest first, as the reference.
		byID := slices.Clone(all)
		slices.Reverse(byID)

		t.Run("NewestFirst", func(t *testing.T) {
			page, err := st.ListJobs(ctx, &fsm.ListJobsParams{Limit: 1000})
			if err != nil {
				t.Fatalf("ListJobs: %v", err)
			}
			if page.Next != "" {
				t.Errorf("Next = %q on the only page, want \"\"", page.Next)
			}
			assertSame(t, "ListJobs(all)", normJobs(page.Jobs), normJobs(byID))
		})

		filters := []struct {
			name string
			p    fsm.ListJobsParams
			keep func(*fsm.Job) bool
		}{
			{"All", fsm.ListJobsParams{}, func(*fsm.Job) bool { return true }},
			{"Tenant/t0", fsm.ListJobsParams{TenantID: "t0"}, func(j *fsm.Job) bool { return j.TenantID == "t0" }},
			// t1 is a prefix of t10: neither may see the other's jobs.
			{"Tenant/t1", fsm.ListJobsParams{TenantID: "t1"}, func(j *fsm.Job) bool { return j.TenantID == "t1" }},
			{"Tenant/t10", fsm.ListJobsParams{TenantID: "t10"}, func(j *fsm.Job) bool { return j.TenantID == "t10" }},
			{"Tenant/unknown", fsm.ListJobsParams{TenantID: "t2"}, func(*fsm.Job) bool { return false }},
			{"State/queued", fsm.ListJobsParams{States: []fsm.JobState{fsm.JobQueued}}, func(j *fsm.Job) bool { return j.State == fsm.JobQueued }},
			{"States/running,failed,canceled", fsm.ListJobsParams{States: []fsm.JobState{fsm.JobRunning, fsm.JobFailed, fsm.JobCanceled}},
				func(j *fsm.Job) bool {
					return j.State == fsm.JobRunning || j.State == fsm.JobFailed || j.State == fsm.JobCanceled
				}},
			{"Queue/live", fsm.ListJobsParams{Queue: fsm.QueueLive}, func(j *fsm.Job) bool { return j.Spec.Queue == fsm.QueueLive }},
			{"Tenant+States+Queue", fsm.ListJobsParams{TenantID: "t1", States: []fsm.JobState{fsm.JobQueued, fsm.JobSucceeded, fsm.JobPaused}, Queue: fsm.QueueBatch},
				func(j *fsm.Job) bool {
					return j.TenantID == "t1" && j.Spec.Queue == fsm.QueueBatch &&
						(j.State == fsm.JobQueued || j.State == fsm.JobSucceeded || j.State == fsm.JobPaused)
				}},
		}
		for _, f := range filters {
			var want []*fsm.Job
			for _, j := range byID {
				if f.keep(j) {
					want = append(want, j)
				}
			}
			if f.name != "Tenant/unknown" && len(want) < 2 {
				t.Fatalf("fixture gives filter %s only %d jobs; it tests nothing", f.name, len(want))
			}
			for _, limit := range []int{1, 2, 3, 7, len(want), 1000} {
				if limit < 1 {
					continue
				}
				t.Run(fmt.Sprintf("%s/limit=%d", f.name, limit), func(t *testing.T) {
					p := f.p
					p.Limit = limit
					got := collectPages(t, st, p)
					assertSame(t, "jobs over all pages", ids(got), ids(want))
				})
			}
		}

		t.Run("LimitOutOfRange", func(t *testing.T) {
			for _, limit := range []int{0, -1, 1001} {
				if page, err := st.ListJobs(ctx, &fsm.ListJobsParams{Limit: limit}); err == nil {
					t.Errorf("ListJobs(limit %d) = %d jobs, nil error; want an error", limit, len(page.Jobs))
				}
			}
			for _, limit := range []int{1, 1000} {
				if _, err := st.ListJobs(ctx, &fsm.ListJobsParams{Limit: limit}); err != nil {
					t.Errorf("ListJobs(limit %d): %v", limit, err)
				}
			}
		})
	})

	t.Run("SnapshotRestore", func(t *testing.T) {
		t.Parallel()
		src := newStore(t)
		seedJobs(t, src)
		commit(t, src, &fsm.Batch{
			Index:   40,
			Keys:    []*fsm.APIKey{newKey("k1", "t0", 40)},
			Workers: []*fsm.Worker{newWorker("w1", 40)},
		})
		want := normalState(load(t, src))
		wantList := listAll(t, src)

		var buf bytes.Buffer
		writeSnapshot(t, src, &buf)

		if caps.Peer != nil {
			// Another node over the same database restores the
			// snapshot: it sees the shared state, and a database
			// behind the snapshot (an empty one) is refused unchanged.
			behind := newStore(t)
			if err := behind.Restore(ctx, bytes.NewReader(buf.Bytes())); !errors.Is(err, fsm.ErrStoreBehind) {
				t.Errorf("Restore into a database behind the snapshot = %v, want fsm.ErrStoreBehind", err)
			}
			if s := load(t, behind); s.Index != 0 || len(s.Tenants) != 0 {
				t.Errorf("refused Restore changed the store: index %d, %d tenants", s.Index, len(s.Tenants))
			}
			dst := caps.Peer(t, src)
			if err := dst.Restore(ctx, &buf); err != nil {
				t.Fatalf("Restore on a peer: %v", err)
			}
			assertSame(t, "Load after Restore on a peer", normalState(load(t, dst)), want)
			assertSame(t, "ListJobs after Restore on a peer", ids(listAll(t, dst)), ids(wantList))
			return
		}

		// The target holds other, newer-indexed state: Restore must replace
		// it all, not merge.
		dst := newStore(t)
		commit(t, dst, &fsm.Batch{
			Index:   99,
			Tenants: []*fsm.Tenant{newTenant("stale", 99)},
			Jobs:    []*fsm.Job{newJob(500, "stale", fsm.JobQueued, fsm.QueueDefault, 99), newJob(501, "stale", fsm.JobFailed, fsm.QueueDefault, 99)},
		})
		if err := dst.Restore(ctx, &buf); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		assertSame(t, "Load after Restore", normalState(load(t, dst)), want)
		assertSame(t, "ListJobs after Restore", ids(listAll(t, dst)), ids(wantList))
		if j, err := dst.GetJob(ctx, jobID(501)); !errors.Is(err, fsm.ErrNotFound) {
			t.Errorf("GetJob of a job only the target had = %v, %v; want fsm.ErrNotFound", j, err)
		}
		done := wantList[0]
		for _, j := range wantList {
			if j.State.Terminal() {
				done = j
				break
			}
		}
		assertSame(t, "GetJob(finished job) after Restore", normJob(getJob(t, dst, done.ID)), normJob(done))

		// The restored store carries on from the snapshot's index.
		commit(t, dst, &fsm.Batch{Index: want.Index, Tenants: []*fsm.Tenant{newTenant("replayed", want.Index)}})
		commit(t, dst, &fsm.Batch{Index: want.Index + 1, Tenants: []*fsm.Tenant{newTenant("next", want.Index+1)}})
		s := load(t, dst)
		if s.Index != want.Index+1 || len(s.Tenants) != len(want.Tenants)+1 {
			t.Errorf("after Restore and two commits: index %d with %d tenants; want index %d with %d tenants (the replayed batch ignored)",
				s.Index, len(s.Tenants), want.Index+1, len(want.Tenants)+1)
		}
	})

	t.Run("SnapshotIsPointInTime", func(t *testing.T) {
		t.Parallel()
		src := newStore(t)
		j := newJob(1, "acme", fsm.JobRunning, fsm.QueueDefault, 5)
		commit(t, src, &fsm.Batch{Index: 5, Tenants: []*fsm.Tenant{newTenant("acme", 1)}, Jobs: []*fsm.Job{j}})
		want := normalState(load(t, src))

		snap, err := src.Snapshot(ctx)
		if err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
		released := false
		defer func() {
			if !released {
				snap.Release()
			}
		}()
		// Commits that land between Snapshot and WriteTo, as Raft allows.
		commit(t, src, &fsm.Batch{
			Index:   6,
			Tenants: []*fsm.Tenant{newTenant("later", 6)},
			Jobs:    []*fsm.Job{finish(j, fsm.JobSucceeded, 6), newJob(2, "acme", fsm.JobQueued, fsm.QueueDefault, 6)},
		})
		commit(t, src, &fsm.Batch{Index: 7, Workers: []*fsm.Worker{newWorker("w-later", 7)}})

		var buf bytes.Buffer
		if _, err := snap.WriteTo(&buf); err != nil {
			t.Fatalf("WriteTo: %v", err)
		}
		snap.Release()
		released = true
		h, err := src.CheckSnapshot(ctx, bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatalf("CheckSnapshot: %v", err)
		}
		if h.Index != 5 {
			t.Errorf("snapshot header index = %d, want 5 (as of Snapshot)", h.Index)
		}

		if caps.Peer != nil {
			// The shared state is never rolled back: a peer that
			// restores the snapshot sees the later commits too.
			dst := caps.Peer(t, src)
			if err := dst.Restore(ctx, &buf); err != nil {
				t.Fatalf("Restore on a peer: %v", err)
			}
			if s := load(t, dst); s.Index != 7 || len(s.Tenants) != 2 || len(s.Workers) != 1 {
				t.Errorf("peer after Restore: index %d, %d tenants, %d workers; want the shared state 7, 2, 1", s.Index, len(s.Tenants), len(s.Workers))
			}
			return
		}

		dst := newStore(t)
		if err := dst.Restore(ctx, &buf); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		assertSame(t, "restored state (must be as of Snapshot, without later commits)", normalState(load(t, dst)), want)
		assertSame(t, "restored job 1", normJob(getJob(t, dst, j.ID)), normJob(j))
		if got, err := dst.GetJob(ctx, jobID(2)); !errors.Is(err, fsm.ErrNotFound) {
			t.Errorf("GetJob of a job committed after Snapshot = %v, %v; want fsm.ErrNotFound", got, err)
		}
		// The source itself kept the later commits.
		if s := load(t, src); s.Index != 7 || len(s.Tenants) != 2 || len(s.Workers) != 1 {
			t.Errorf("source after the later commits: index %d, %d tenants, %d workers; want 7, 2, 1", s.Index, len(s.Tenants), len(s.Workers))
		}
	})

	t.Run("SnapshotCheck", func(t *testing.T) {
		t.Parallel()
		st := newStore(t)
		seedJobs(t, st)
		want := normalState(load(t, st))
		var buf bytes.Buffer
		writeSnapshot(t, st, &buf)
		good := buf.Bytes()
		h, err := st.CheckSnapshot(ctx, bytes.NewReader(good))
		if err != nil {
			t.Fatalf("CheckSnapshot of a good snapshot: %v", err)
		}
		if h.Version != fsm.SnapshotVersion || h.Kind == "" || h.Index != want.Index {
			t.Fatalf("CheckSnapshot header = %+v, want version %d, a kind and index %d", h, fsm.SnapshotVersion, want.Index)
		}
		// The same payload under another store kind.
		_, payload, err := fsm.ReadSnapshot(bytes.NewReader(good), h.Kind)
		if err != nil {
			t.Fatal(err)
		}
		var other bytes.Buffer
		if _, err := fsm.WriteSnapshot(&other, fsm.SnapshotHeader{Kind: "other", Index: h.Index, Length: h.Length}, payload); err != nil {
			t.Fatal(err)
		}
		flip := func(off int) []byte {
			b := slices.Clone(good)
			b[off] ^= 0x10
			return b
		}
		cases := []struct {
			name, want string
			stream     []byte
		}{
			// Streams without the envelope go to the store's reader of
			// its format from before the envelope, whose words differ.
			{"Empty", "", nil},
			{"Garbage", "", []byte("hello, snapshot")},
			{"Truncated", "truncated", good[:len(good)/2]},
			{"NoChecksum", "checksum is missing", good[:len(good)-10]},
			{"PayloadBitFlip", "checksum mismatch", flip(len(good) - 40)},
			{"IndexBitFlip", "checksum mismatch", flip(len(good) - 32 - int(h.Length) - 9)},
			{"TrailingData", "after the checksum", append(slices.Clone(good), 0)},
			{"VersionBump", "version", flip(9)},
			{"WrongKind", `"other" store`, other.Bytes()},
		}
		for _, c := range cases {
			if _, err := st.CheckSnapshot(ctx, bytes.NewReader(c.stream)); !errors.Is(err, fsm.ErrBadSnapshot) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: CheckSnapshot = %v, want fsm.ErrBadSnapshot saying %q", c.name, err, c.want)
			}
			if err := st.Restore(ctx, bytes.NewReader(c.stream)); !errors.Is(err, fsm.ErrBadSnapshot) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: Restore = %v, want fsm.ErrBadSnapshot saying %q", c.name, err, c.want)
			}
			assertSame(t, c.name+": Load after the refused Restore", normalState(load(t, st)), want)
		}
		// Still writable, and the good snapshot still restores.
		commit(t, st, &fsm.Batch{Index: want.Index + 1, Tenants: []*fsm.Tenant{newTenant("after", want.Index+1)}})
		if err := st.Restore(ctx, bytes.NewReader(good)); err != nil {
			t.Fatalf("Restore of the good snapshot after the refusals: %v", err)
		}
	})

	t.Run("Ping", func(t *testing.T) {
		t.Parallel()
		st := newStore(t)
		if err := st.Ping(ctx); err != nil {
			t.Errorf("Ping: %v", err)
		}
	})

	t.Run("ConcurrentReadsDuringCommits", func(t *testing.T) {
		t.Parallel()
		st := newStore(t)
		commit(t, st, &fsm.Batch{Index: 1, Tenants: []*fsm.Tenant{newTenant("acme", 1)}})

		const batches = 60
		var committed atomic.Int64 // highest job number whose batch committed
		done := make(chan struct{})
		var wg sync.WaitGroup
		reader := func(r int) {
			defer wg.Done()
			var lastIndex uint64
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				n := int(committed.Load())
				switch (i + r) % 4 {
				case 0:
					page, err := st.ListJobs(ctx, &fsm.ListJobsParams{TenantID: "acme", Limit: 10})
					if err != nil {
						t.Errorf("ListJobs: %v", err)
						return
					}
					if !slices.IsSortedFunc(page.Jobs, func(a, b *fsm.Job) int { return strings.Compare(b.ID, a.ID) }) {
						t.Errorf("ListJobs page not newest first: %v", ids(page.Jobs))
					}
					if n > 0 && (len(page.Jobs) == 0 || page.Jobs[0].ID < jobID(n)) {
						t.Errorf("ListJobs after job %d committed starts at %v", n, ids(page.Jobs))
					}
				case 1:
					if n > 0 {
						if _, err := st.GetJob(ctx, jobID(n)); err != nil {
							t.Errorf("GetJob of committed job %d: %v", n, err)
						}
					}
				case 2:
					s, err := st.Load(ctx)
					if err != nil {
						t.Errorf("Load: %v", err)
						return
					}
					if s.Index < lastIndex {
						t.Errorf("Load index went back from %d to %d", lastIndex, s.Index)
					}
					lastIndex = s.Index
				case 3:
					snap, err := st.Snapshot(ctx)
					if err != nil {
						t.Errorf("Snapshot: %v", err)
						return
					}
					var buf bytes.Buffer
					_, err = snap.WriteTo(&buf)
					snap.Release()
					if err != nil {
						t.Errorf("WriteTo: %v", err)
					}
				}
			}
		}
		for r := range 4 {
			wg.Add(1)
			go reader(r)
		}
		var prev *fsm.Job
		for n := 1; n <= batches; n++ {
			j := newJob(n, "acme", fsm.JobQueued, fsm.QueueDefault, uint64(n+1))
			b := &fsm.Batch{Index: uint64(n + 1), Jobs: []*fsm.Job{j}}
			if prev != nil {
				b.Jobs = append(b.Jobs, finish(prev, fsm.JobSucceeded, uint64(n+1)))
			}
			if err := st.Commit(ctx, sortBatch(b)); err != nil {
				t.Errorf("Commit(%d): %v", b.Index, err)
				break
			}
			committed.Store(int64(n))
			prev = j
		}
		close(done)
		wg.Wait()

		s := load(t, st)
		if s.Index != batches+1 || len(s.Jobs) != 1 || s.Jobs[0].ID != jobID(batches) {
			t.Errorf("after %d batches: index %d, active %v; want index %d, active [%s]", batches, s.Index, ids(s.Jobs), batches+1, jobID(batches))
		}
		if got := len(listAll(t, st)); got != batches {
			t.Errorf("ListJobs lists %d jobs, want %d", got, batches)
		}
	})
}

// seedJobs commits three tenants ("t0", "t1" and "t10", one a prefix of
// another) and 30 jobs across them in every state and queue, in three
// batches, and returns the jobs in ID order.
func seedJobs(t *testing.T, st fsm.Store) []*fsm.Job {
	t.Helper()
	tenants := []string{"t0", "t1", "t10"}
	b := &fsm.Batch{Index: 9}
	for _, id := range tenants {
		b.Tenants = append(b.Tenants, newTenant(id, 9))
	}
	commit(t, st, b)
	var all []*fsm.Job
	for batch := range 3 {
		b := &fsm.Batch{Index: uint64(10 + batch)}
		for n := batch*10 + 1; n <= batch*10+10; n++ {
			j := newJob(n, tenants[n%3], fsm.JobStates[n%len(fsm.JobStates)], fsm.Queues[(n/3)%3], b.Index)
			b.Jobs = append(b.Jobs, j)
			all = append(all, j)
		}
		commit(t, st, b)
	}
	return all
}

func sortBatch(b *fsm.Batch) *fsm.Batch {
	slices.SortFunc(b.Jobs, func(x, y *fsm.Job) int { return strings.Compare(x.ID, y.ID) })
	return b
}

// collectPages follows Next from the first page to the last and returns
// every job seen, checking the paging contract on the way.
func collectPages(t *testing.T, st fsm.Store, p fsm.ListJobsParams) []*fsm.Job {
	t.Helper()
	var out []*fsm.Job
	seen := map[string]bool{}
	for pages := 1; ; pages++ {
		if pages > 1000 {
			t.Fatalf("more than 1000 pages: Next never became \"\" (last %q)", p.After)
		}
		page, err := st.ListJobs(context.Background(), &p)
		if err != nil {
			t.Fatalf("ListJobs(%+v): %v", p, err)
		}
		if len(page.Jobs) > p.Limit {
			t.Fatalf("page %d has %d jobs, limit %d", pages, len(page.Jobs), p.Limit)
		}
		for _, j := range page.Jobs {
			if seen[j.ID] {
				t.Fatalf("page %d repeats job %s", pages, j.ID)
			}
			seen[j.ID] = true
		}
		out = append(out, page.Jobs...)
		if page.Next == "" {
			if pages > 1 && len(page.Jobs) == 0 {
				t.Errorf("page %d is empty: the page before it should have had Next \"\"", pages)
			}
			return out
		}
		if len(page.Jobs) != p.Limit {
			t.Errorf("page %d has %d jobs and a Next cursor; a page before the last must be full (%d)", pages, len(page.Jobs), p.Limit)
		}
		if last := page.Jobs[len(page.Jobs)-1].ID; page.Next != last {
			t.Errorf("page %d: Next = %q, want the last job's ID %q", pages, page.Next, last)
		}
		p.After = page.Next
	}
}

// listAll returns every job in the store, newest first.
func listAll(t *testing.T, st fsm.Store) []*fsm.Job {
	t.Helper()
	return collectPages(t, st, fsm.ListJobsParams{Limit: 1000})
}

func writeSnapshot(t *testing.T, st fsm.Store, buf *bytes.Buffer) {
	t.Helper()
	snap, err := st.Snapshot(context.Background())
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	n, err := snap.WriteTo(buf)
	if err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if n != int64(buf.Len()) {
		t.Errorf("WriteTo reported %d bytes, wrote %d", n, buf.Len())
	}
}
