package fsm_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// purgeSetup returns a node with tenant t1 and worker w1.
func purgeSetup(t *testing.T) *node {
	t.Helper()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 8, Encoders: x264})
	return n
}

// finishedJob submits a job of tenant and ends it at end: succeeded,
// failed (not retryable) or canceled.
func (n *node) finishedJob(id, tenant string, state fsm.JobState, end time.Time) *fsm.Job {
	n.t.Helper()
	n.submit(id, tenant, spec("720p30-h264"), end.Add(-time.Minute))
	if state == fsm.JobCanceled {
		return n.job(&fsm.CancelJob{JobID: id, At: end})
	}
	j := n.run(id, "w1", end.Add(-time.Second))
	c := &fsm.FinishJob{Report: fsm.Report{JobID: j.ID, WorkerID: j.WorkerID, Attempt: j.Attempt}, At: end}
	if state == fsm.JobFailed {
		c.Error = &fsm.Error{Code: fsm.CodeFFmpeg, Message: "exit 1"}
	}
	return n.job(c)
}

// gone checks that a job is neither in memory nor in the store.
func (n *node) gone(id string) {
	n.t.Helper()
	if _, err := n.f.GetJob(context.Background(), id); !errors.Is(err, fsm.ErrNotFound) {
		n.t.Fatalf("GetJob(%s) after the purge = %v, want not found", id, err)
	}
}

// TestPurgeJobs: a purge deletes exactly the tenant's jobs that finished
// before the entry's time minus the retention; it keeps active jobs,
// later ones, another tenant's and unknown IDs, and a purged ID is never
// reused.
func TestPurgeJobs(t *testing.T) {
	t.Parallel()
	n := purgeSetup(t)
	n.tenant("t2")
	day := 24 * time.Hour
	n.finishedJob("old-ok", "t1", fsm.JobSucceeded, at(time.Hour))
	n.finishedJob("old-failed", "t1", fsm.JobFailed, at(2*time.Hour))
	n.finishedJob("old-canceled", "t1", fsm.JobCanceled, at(3*time.Hour))
	n.finishedJob("new-ok", "t1", fsm.JobSucceeded, at(day+time.Hour))
	n.finishedJob("other-tenant", "t2", fsm.JobSucceeded, at(time.Hour))
	n.submit("queued", "t1", spec("720p30-h264"), at(0))
	n.run(n.submit("running", "t1", spec("720p30-h264"), at(0)).ID, "w1", at(time.Minute))

	// The entry's time is day+30m: the cutoff is 30m.
	purge := &fsm.PurgeJobs{TenantID: "t1", Retention: fsm.Duration(day), At: at(day + 30*time.Minute),
		IDs: []string{"old-ok", "old-failed", "old-canceled", "new-ok", "other-tenant", "queued", "running", "missing"}}
	if err := purge.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	// Cutoff 30m: nothing finished before it.
	if r := n.apply(purge)[0]; r != nil {
		t.Fatalf("purge response %v, want nil", r)
	}
	for _, id := range purge.IDs[:7] {
		n.get(id)
	}
	purge.At = at(day + 150*time.Minute) // cutoff 2h30m: old-ok and old-failed
	n.apply(purge)
	n.gone("old-ok")
	n.gone("old-failed")
	n.get("old-canceled")
	purge.At = at(2 * day) // cutoff 1 day: all three old ones; new-ok finished after it
	n.apply(purge)
	n.gone("old-canceled")
	for _, id := range []string{"new-ok", "other-tenant", "queued", "running"} {
		n.get(id)
	}
	if _, ok := n.f.ActiveJob("running"); !ok {
		t.Fatal("the running job left memory")
	}
	for _, tenant := range []string{"t1", "t2"} {
		for _, j := range listAllJobs(t, n.st, tenant, 100) {
			if j.ID == "old-ok" || j.ID == "old-failed" || j.ID == "old-canceled" {
				t.Errorf("tenant %s lists purged job %s", tenant, j.ID)
			}
		}
	}
	ids, err := n.st.FinishedJobs(context.Background(), &fsm.FinishedJobsParams{TenantID: "t1", Before: at(3 * day), Limit: 10})
	if err != nil || len(ids) != 1 || ids[0] != "new-ok" {
		t.Fatalf("FinishedJobs after the purge = %v, %v; want [new-ok]", ids, err)
	}
	// A purged ID is not reused.
	n.refused(&fsm.SubmitJob{Job: newJob(t, "old-ok", "t1", spec("720p30-h264"), at(2*day))}, fsm.CodeAlreadyExists)

	// The FSM restarted on its store has the same jobs.
	restarted := newFSM(t, n.st)
	if _, err := restarted.GetJob(context.Background(), "old-ok"); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("restarted FSM: GetJob(old-ok) = %v, want not found", err)
	}
}

// TestPurgeJobsTenantRetention: a tenant's own retention overrides the
// one the command carries: 0 keeps everything, a longer one keeps more,
// and dropping it brings the default back.
func TestPurgeJobsTenantRetention(t *testing.T) {
	t.Parallel()
	n := purgeSetup(t)
	n.finishedJob("j1", "t1", fsm.JobSucceeded, at(time.Hour))
	purge := &fsm.PurgeJobs{TenantID: "t1", IDs: []string{"j1"}, Retention: fsm.Duration(time.Hour), At: at(10 * time.Hour)}

	n.applyOK(&fsm.UpdateTenant{ID: "t1", Retention: new(fsm.Duration(0)), At: t0})
	n.apply(purge)
	n.get("j1") // kept forever
	n.applyOK(&fsm.UpdateTenant{ID: "t1", Retention: new(fsm.Duration(24 * time.Hour)), At: t0})
	n.apply(purge)
	n.get("j1") // kept a day
	if tn, _ := n.f.Tenant("t1"); fsm.RetentionOf(tn, time.Hour) != 24*time.Hour {
		t.Fatalf("RetentionOf(t1) = %v, want the tenant's 24h", fsm.RetentionOf(tn, time.Hour))
	}
	n.applyOK(&fsm.UpdateTenant{ID: "t1", DefaultRetention: true, At: t0})
	if tn, _ := n.f.Tenant("t1"); tn.Retention != nil {
		t.Fatalf("retention after default_retention = %v, want none", *tn.Retention)
	}
	n.apply(purge)
	n.gone("j1")
}

// TestPurgeJobsInOneBatch: a job that finishes in the same batch as the
// purge that names it is judged by its version in the batch, and a
// submit of the purged ID later in the batch is refused.
func TestPurgeJobsInOneBatch(t *testing.T) {
	t.Parallel()
	n := purgeSetup(t)
	n.submit("j1", "t1", spec("720p30-h264"), at(0))
	n.run("j1", "w1", at(time.Minute))
	j, _ := n.f.ActiveJob("j1")
	resps := n.apply(
		&fsm.FinishJob{Report: report(t, j), At: at(time.Hour)},
		&fsm.PurgeJobs{TenantID: "t1", IDs: []string{"j1"}, Retention: fsm.Duration(time.Hour), At: at(3 * time.Hour)},
		&fsm.SubmitJob{Job: newJob(t, "j1", "t1", spec("720p30-h264"), at(3*time.Hour))},
	)
	if err, _ := resps[2].(error); fsm.ErrorCode(err) != fsm.CodeAlreadyExists {
		t.Fatalf("submit of the purged ID in the same batch: %v, want already_exists", resps[2])
	}
	n.gone("j1")
}

// TestPurgeJobsReplay: replaying a purge (a restart without a snapshot,
// or a batch another node committed) is skipped, committing its deletion
// again changes nothing, and the job it does not name stays.
func TestPurgeJobsReplay(t *testing.T) {
	t.Parallel()
	n := purgeSetup(t)
	n.finishedJob("j1", "t1", fsm.JobSucceeded, at(time.Hour))
	n.finishedJob("j2", "t1", fsm.JobSucceeded, at(time.Hour))
	purge := entry(t, n.last+1, &fsm.PurgeJobs{TenantID: "t1", IDs: []string{"j1"}, Retention: fsm.Duration(time.Hour), At: at(5 * time.Hour)})
	n.f.ApplyBatch([]*raft.Log{purge})
	n.last++
	n.gone("j1")
	if r := n.f.ApplyBatch([]*raft.Log{purge})[0]; r != nil {
		t.Fatalf("replayed purge: %v, want nil (skipped)", r)
	}
	n.get("j2")
	// Committing the purge's batch again changes nothing either.
	if err := n.st.Commit(context.Background(), &fsm.Batch{Index: n.last + 1, Deleted: []fsm.Deletion{{Kind: fsm.JobKind, ID: "j1", CreateIndex: 1, Index: purge.Index}}}); err != nil {
		t.Fatalf("commit the deletion again: %v", err)
	}
	n.gone("j1")
}

func TestPurgeJobsValidate(t *testing.T) {
	t.Parallel()
	ok := fsm.PurgeJobs{TenantID: "t1", IDs: []string{"j1"}, Retention: fsm.Duration(time.Hour), At: t0}
	many := make([]string, fsm.MaxPurgeIDs+1)
	for i := range many {
		many[i] = "j"
	}
	for name, edit := range map[string]func(*fsm.PurgeJobs){
		"no tenant":         func(c *fsm.PurgeJobs) { c.TenantID = "" },
		"no ids":            func(c *fsm.PurgeJobs) { c.IDs = nil },
		"too many ids":      func(c *fsm.PurgeJobs) { c.IDs = many },
		"empty id":          func(c *fsm.PurgeJobs) { c.IDs = []string{"j1", ""} },
		"zero retention":    func(c *fsm.PurgeJobs) { c.Retention = 0 },
		"negative":          func(c *fsm.PurgeJobs) { c.Retention = -1 },
		"no time":           func(c *fsm.PurgeJobs) { c.At = time.Time{} },
		"control character": func(c *fsm.PurgeJobs) { c.IDs = []string{"j\x1b"} },
	} {
		c := ok
		edit(&c)
		if err := c.Validate(); fsm.ErrorCode(err) != fsm.CodeInvalidArgument {
			t.Errorf("%s: Validate() = %v, want invalid_argument", name, err)
		}
	}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid purge: %v", err)
	}
	for name, c := range map[string]*fsm.UpdateTenant{
		"both":     {ID: "t1", Retention: new(fsm.Duration(time.Hour)), DefaultRetention: true},
		"under 1m": {ID: "t1", Retention: new(fsm.Duration(time.Second))},
		"negative": {ID: "t1", Retention: new(fsm.Duration(-time.Hour))},
	} {
		if err := c.Validate(); fsm.ErrorCode(err) != fsm.CodeInvalidArgument {
			t.Errorf("UpdateTenant %s: Validate() = %v, want invalid_argument", name, err)
		}
	}
}

// TestPurgeJobsType: PurgeJobs is number 35 with the skip bit, so that a
// node of an older release skips it instead of stopping; the value is in
// logs from now on and never changes.
func TestPurgeJobsType(t *testing.T) {
	t.Parallel()
	b, err := fsm.Encode(&fsm.PurgeJobs{})
	if err != nil {
		t.Fatal(err)
	}
	if got := b[0]; got != 35|128 || fsm.PurgeJobsType&fsm.IgnoreUnknownTypeFlag == 0 {
		t.Errorf("PurgeJobs encodes with type byte %d, want 35 with the skip bit (163)", got)
	}
}
