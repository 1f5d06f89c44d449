package storetest

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// exerciseRetention checks what history retention needs of a store:
// FinishedJobs pages a tenant's finished jobs by finish time, and a
// batch's deletions remove jobs everywhere a reader finds them, leave a
// tombstone that JobsExist reports, are idempotent, never remove a newer
// version, and survive a snapshot and restore.
func exerciseRetention(t *testing.T, caps Capabilities, newStore func(t *testing.T) fsm.Store) {
	ctx := context.Background()

	// retentionJobs commits, at index 5, jobs 1..6 of acme (1, 2, 4, 6
	// finished, in that finish order; 3 queued, 5 running) and job 7 of
	// globex (finished first of all).
	retentionJobs := func(t *testing.T, st fsm.Store) map[int]*fsm.Job {
		t.Helper()
		jobs := map[int]*fsm.Job{
			1: newJob(1, "acme", fsm.JobSucceeded, fsm.QueueDefault, 5),
			2: newJob(2, "acme", fsm.JobFailed, fsm.QueueDefault, 5),
			3: newJob(3, "acme", fsm.JobQueued, fsm.QueueDefault, 5),
			4: newJob(4, "acme", fsm.JobCanceled, fsm.QueueDefault, 5),
			5: newJob(5, "acme", fsm.JobRunning, fsm.QueueDefault, 5),
			6: newJob(6, "acme", fsm.JobSucceeded, fsm.QueueDefault, 5),
			7: newJob(7, "globex", fsm.JobSucceeded, fsm.QueueDefault, 5),
		}
		// Finish order differs from ID order: 2 before 1.
		for n, d := range map[int]time.Duration{1: 2 * time.Hour, 2: time.Hour, 4: 3 * time.Hour, 6: 4 * time.Hour, 7: 0} {
			jobs[n].FinishedAt = t0.Add(d)
		}
		b := &fsm.Batch{Index: 5, Tenants: []*fsm.Tenant{newTenant("acme", 1), newTenant("globex", 1)}}
		for _, j := range jobs {
			b.Jobs = append(b.Jobs, j)
		}
		commit(t, st, b)
		return jobs
	}
	finished := func(t *testing.T, st fsm.Store, tenant string, before time.Time, limit int) []string {
		t.Helper()
		got, err := st.FinishedJobs(ctx, &fsm.FinishedJobsParams{TenantID: tenant, Before: before, Limit: limit})
		if err != nil {
			t.Fatalf("FinishedJobs(%s, before %v, limit %d): %v", tenant, before, limit, err)
		}
		return got
	}
	del := func(j *fsm.Job, index uint64) fsm.Deletion {
		return fsm.Deletion{Kind: fsm.JobKind, ID: j.ID, CreateIndex: j.CreateIndex, Index: index}
	}

	t.Run("FinishedJobs", func(t *testing.T) {
		t.Parallel()
		st := newStore(t)
		jobs := retentionJobs(t, st)
		id := func(ns ...int) []string {
			out := []string{}
			for _, n := range ns {
				out = append(out, jobs[n].ID)
			}
			return out
		}
		for _, c := range []struct {
			tenant string
			before time.Duration
			limit  int
			want   []string
		}{
			{"acme", 10 * time.Hour, 100, id(2, 1, 4, 6)},
			{"acme", 10 * time.Hour, 2, id(2, 1)},
			{"acme", 3 * time.Hour, 100, id(2, 1)}, // strictly before
			{"acme", time.Hour, 100, id()},
			{"globex", time.Hour, 100, id(7)},
			{"nobody", 10 * time.Hour, 100, id()},
		} {
			assertSame(t, "FinishedJobs", finished(t, st, c.tenant, t0.Add(c.before), c.limit), c.want)
		}
		for _, limit := range []int{0, -1, 1001} {
			if _, err := st.FinishedJobs(ctx, &fsm.FinishedJobsParams{TenantID: "acme", Before: t0, Limit: limit}); err == nil {
				t.Errorf("FinishedJobs with limit %d: no error", limit)
			}
		}
		got, err := st.GetJobs(ctx, []string{jobs[1].ID, jobs[3].ID, jobID(99)})
		if err != nil {
			t.Fatalf("GetJobs: %v", err)
		}
		if len(got) != 2 || got[jobs[1].ID] == nil || got[jobs[3].ID] == nil {
			t.Fatalf("GetJobs = %v, want jobs 1 and 3", got)
		}
		assertSame(t, "GetJobs", normJob(got[jobs[1].ID]), normJob(jobs[1]))
	})

	t.Run("Deletion", func(t *testing.T) {
		t.Parallel()
		st := newStore(t)
		jobs := retentionJobs(t, st)
		// Job 4 was changed at index 12 (a later version): the deletion
		// at 11 must keep it. Jobs 1 and 2 go.
		newer := *jobs[4]
		newer.ModifyIndex, newer.Log = 12, "changed"
		commit(t, st, &fsm.Batch{Index: 12, Jobs: []*fsm.Job{&newer}})
		batch := &fsm.Batch{Index: 13, Deleted: []fsm.Deletion{del(jobs[1], 11), del(jobs[2], 11), del(jobs[4], 11)}}
		commit(t, st, batch)

		check := func(t *testing.T, st fsm.Store, what string) {
			t.Helper()
			for _, n := range []int{1, 2} {
				if j, err := st.GetJob(ctx, jobs[n].ID); !errors.Is(err, fsm.ErrNotFound) {
					t.Errorf("%s: GetJob(deleted job %d) = %v, %v; want fsm.ErrNotFound", what, n, j, err)
				}
			}
			assertSame(t, what+": GetJob(newer job 4)", normJob(getJob(t, st, jobs[4].ID)), normJob(&newer))
			assertSame(t, what+": FinishedJobs", finished(t, st, "acme", t0.Add(10*time.Hour), 100), []string{jobs[4].ID, jobs[6].ID})
			listed := ids(collectPages(t, st, fsm.ListJobsParams{TenantID: "acme", Limit: 2}))
			want := []string{jobs[6].ID, jobs[5].ID, jobs[4].ID, jobs[3].ID}
			assertSame(t, what+": ListJobs(acme)", listed, want)
			assertSame(t, what+": ListJobs(all)", ids(listAll(t, st)), append(slices.Clone(want[:0:0]), jobs[7].ID, jobs[6].ID, jobs[5].ID, jobs[4].ID, jobs[3].ID))
			got, err := st.GetJobs(ctx, []string{jobs[1].ID, jobs[6].ID})
			if err != nil || len(got) != 1 || got[jobs[6].ID] == nil {
				t.Errorf("%s: GetJobs(1, 6) = %v, %v; want only job 6", what, got, err)
			}
			// The tombstones keep the deleted IDs from being reused.
			exist, err := st.JobsExist(ctx, []string{jobs[1].ID, jobs[2].ID, jobs[3].ID, jobID(99)})
			if err != nil {
				t.Fatalf("%s: JobsExist: %v", what, err)
			}
			assertSame(t, what+": JobsExist", exist, map[string]uint64{jobs[1].ID: 5, jobs[2].ID: 5, jobs[3].ID: 5})
			s := load(t, st)
			assertSame(t, what+": Load's active jobs", ids(s.Jobs), []string{jobs[3].ID, jobs[5].ID})
		}
		check(t, st, "after the deletion")

		// Committing the same deletions again, in a later batch (a node
		// replaying the entry), changes nothing.
		commit(t, st, &fsm.Batch{Index: 14, Deleted: batch.Deleted})
		check(t, st, "after the deletion again")

		var buf bytes.Buffer
		writeSnapshot(t, st, &buf)
		dst := newStore(t)
		if caps.Peer != nil {
			dst = caps.Peer(t, st)
		}
		if err := dst.Restore(ctx, &buf); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		check(t, dst, "after Snapshot and Restore")
	})
}
