package fsm_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// limited creates tenant id with limits.
func (n *node) limited(id string, l fsm.Limits) {
	n.t.Helper()
	n.applyOK(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: id, Name: id, Limits: l, CreatedAt: t0}})
}

// quotaRefused applies c and checks that it was refused with
// quota_exceeded for quota, with the limit and usage given.
func (n *node) quotaRefused(c fsm.Command, quota string, limit, usage float64) {
	n.t.Helper()
	r := n.apply(c)[0]
	var e *fsm.Error
	if err, ok := r.(error); !ok || !errors.As(err, &e) {
		n.t.Fatalf("apply %T: got %T %v, want quota_exceeded", c, r, r)
	}
	if e.Code != fsm.CodeQuotaExceeded || e.Details == nil {
		n.t.Fatalf("apply %T: got %v (details %+v), want quota_exceeded with details", c, e, e.Details)
	}
	if d := e.Details; d.Quota != quota || d.Limit != limit || d.Usage != usage {
		n.t.Errorf("apply %T: details %+v, want quota %s limit %g usage %g", c, *d, quota, limit, usage)
	}
}

func cpuSpec(cpu float64) fsm.JobSpec {
	s := spec("720p30-h264")
	s.Resources.CPU = cpu
	return s
}

func TestQuotaMaxJobs(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.limited("t1", fsm.Limits{MaxJobs: 2})
	n.tenant("t2")
	n.worker(fsm.Worker{ID: "w1", Slots: 4, Encoders: x264})
	n.submit("a", "t1", spec("720p30-h264"), t0)
	n.submit("b", "t1", spec("720p30-h264"), t0)
	n.quotaRefused(&fsm.SubmitJob{Job: newJob(t, "c", "t1", spec("720p30-h264"), t0)}, "max_jobs", 2, 2)
	// Another tenant is not affected.
	n.submit("x", "t2", spec("720p30-h264"), t0)
	// Running jobs still count; a finished one frees its place.
	j := n.run("a", "w1", t0)
	n.quotaRefused(&fsm.SubmitJob{Job: newJob(t, "c", "t1", spec("720p30-h264"), t0)}, "max_jobs", 2, 2)
	n.job(&fsm.FinishJob{Report: report(t, j), At: at(time.Second)})
	n.submit("c", "t1", spec("720p30-h264"), t0)
	if u := n.f.Usage("t1"); u.Jobs != 2 || u.ConcurrentJobs != 0 {
		t.Errorf("usage = %+v, want 2 jobs, 0 concurrent", u)
	}
	// Raising the limit lets more in; 0 is unlimited.
	n.applyOK(&fsm.UpdateTenant{ID: "t1", MaxJobs: intp(0)})
	for i := range 5 {
		n.submit(fmt.Sprintf("d%d", i), "t1", spec("720p30-h264"), t0)
	}
}

func TestQuotaMaxConcurrentJobs(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.limited("t1", fsm.Limits{MaxConcurrentJobs: 1})
	n.worker(fsm.Worker{ID: "w1", Slots: 4, Encoders: x264})
	for _, id := range []string{"a", "b", "c"} {
		n.submit(id, "t1", spec("720p30-h264"), t0)
	}
	d := n.schedule(at(time.Second))
	if len(d.Assign) != 1 || d.Assign[0].JobID != "a" {
		t.Fatalf("first pass assigned %v, want only a", assigned(d))
	}
	n.job(d.Assign[0])
	if d := n.schedule(at(time.Second)); len(d.Assign) != 0 {
		t.Fatalf("at the limit the scheduler assigned %v", assigned(d))
	}
	// Apply refuses an assignment past the limit, whoever proposes it.
	n.quotaRefused(&fsm.AssignJob{JobID: "b", WorkerID: "w1", Attempt: 1, At: at(time.Second)}, "max_concurrent_jobs", 1, 1)
	// A paused job keeps its slot.
	j := n.job(&fsm.StartJob{Report: report(t, n.active("a")), At: at(time.Second)})
	n.job(&fsm.PauseJob{JobID: "a", At: at(time.Second)})
	if d := n.schedule(at(2 * time.Second)); len(d.Assign) != 0 {
		t.Fatalf("with a paused job the scheduler assigned %v", assigned(d))
	}
	n.job(&fsm.ResumeJob{JobID: "a", At: at(2 * time.Second)})
	n.job(&fsm.FinishJob{Report: report(t, j), At: at(3 * time.Second)})
	if d := n.schedule(at(3 * time.Second)); len(d.Assign) != 1 || d.Assign[0].JobID != "b" {
		t.Fatalf("after a finish the scheduler assigned %v, want b", assigned(d))
	}
}

func TestQuotaMaxCPU(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.limited("t1", fsm.Limits{MaxCPU: 3})
	n.worker(fsm.Worker{ID: "w1", Slots: 8, CPUs: 16, Encoders: x264})
	n.refused(&fsm.SubmitJob{Job: newJob(t, "nocpu", "t1", spec("720p30-h264"), t0)}, fsm.CodeInvalidArgument)
	r := n.apply(&fsm.SubmitJob{Job: newJob(t, "huge", "t1", cpuSpec(4), t0)})[0]
	var e *fsm.Error
	if !errors.As(asError(r), &e) || e.Code != fsm.CodeQuotaExceeded || e.Details.Quota != "max_cpu" || e.Details.Requested != 4 {
		t.Fatalf("a job larger than max_cpu: got %v", r)
	}
	n.submit("a", "t1", cpuSpec(2), t0)
	n.submit("b", "t1", cpuSpec(2), at(time.Second))
	n.submit("c", "t1", cpuSpec(1), at(2*time.Second))
	// a (2) fits; b (2) would make 4 > 3 and is passed over; c (1) fits.
	d := n.schedule(at(time.Minute))
	if got := assigned(d); fmt.Sprint(got) != "[a c]" {
		t.Fatalf("assigned %v, want [a c]", got)
	}
	for _, a := range d.Assign {
		n.job(a)
	}
	if u := n.f.Usage("t1"); u.CPU != 3 || u.ConcurrentJobs != 2 {
		t.Errorf("usage = %+v, want cpu 3, 2 concurrent", u)
	}
	n.quotaRefused(&fsm.AssignJob{JobID: "b", WorkerID: "w1", Attempt: 1, At: at(time.Minute)}, "max_cpu", 3, 3)
}

func TestQuotaMaxWorkers(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.limited("t1", fsm.Limits{MaxWorkers: 1})
	n.worker(fsm.Worker{ID: "d1", TenantID: "t1", Slots: 1, Encoders: x264})
	reg := func(id string) *fsm.RegisterWorker {
		return &fsm.RegisterWorker{Worker: fsm.Worker{ID: id, Name: id, TenantID: "t1", Slots: 1, Incarnation: "i2", Encoders: x264}, At: t0}
	}
	n.quotaRefused(reg("d2"), "max_workers", 1, 1)
	// The same worker registering again (a restart) takes nothing new.
	n.applyOK(reg("d1"))
	// Shared workers do not count.
	n.worker(fsm.Worker{ID: "s1", Slots: 1, Encoders: x264})
	// A worker that is down frees its place.
	n.applyOK(&fsm.MarkWorkerDown{WorkerID: "d1", Reason: "gone", At: t0})
	n.applyOK(reg("d2"))
	if u := n.f.Usage("t1"); u.Workers != 1 {
		t.Errorf("usage = %+v, want 1 worker", u)
	}
}

// TestQuotaDoesNotBlockOthers: a tenant at its concurrency or CPU limit,
// first in the rotation and with the oldest jobs, takes nothing from the
// shared pool's other tenants.
func TestQuotaDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.limited("ta", fsm.Limits{MaxConcurrentJobs: 1})
	n.limited("tb", fsm.Limits{MaxCPU: 1})
	n.tenant("tc")
	n.worker(fsm.Worker{ID: "w1", Slots: 6, CPUs: 64, Encoders: x264})
	k := 0
	for _, tn := range []string{"ta", "tb", "tc"} {
		for i := range 4 {
			n.submit(fmt.Sprintf("%s-%d", tn, i), tn, cpuSpec(1), at(time.Duration(k)*time.Second))
			k++
		}
	}
	d := n.schedule(at(time.Minute))
	want := "[ta-0 tb-0 tc-0 tc-1 tc-2 tc-3]"
	if got := fmt.Sprint(assigned(d)); got != want {
		t.Errorf("assigned %s, want %s", got, want)
	}
}

func TestTenantCommands(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 2, Encoders: x264})

	// Update: partial, and refused for an unknown tenant.
	plan := "gold"
	tn := n.applyOK(&fsm.UpdateTenant{ID: "t1", Plan: &plan, MaxJobs: intp(5)}).(*fsm.Tenant)
	if tn.Plan != "gold" || tn.Limits != (fsm.Limits{MaxJobs: 5}) || tn.ModifyIndex != n.last {
		t.Errorf("updated tenant = %+v", tn)
	}
	n.refused(&fsm.UpdateTenant{ID: "nope", Plan: &plan}, fsm.CodeNotFound)

	// Disabled: no new jobs, no dedicated workers, and its queued jobs wait.
	n.submit("q", "t1", spec("720p30-h264"), t0)
	yes, no := true, false
	n.applyOK(&fsm.UpdateTenant{ID: "t1", Disabled: &yes})
	n.refused(&fsm.SubmitJob{Job: newJob(t, "j2", "t1", spec("720p30-h264"), t0)}, fsm.CodeTenantDisabled)
	n.refused(&fsm.RegisterWorker{Worker: fsm.Worker{ID: "d1", TenantID: "t1", Slots: 1, Incarnation: "i"}, At: t0}, fsm.CodeTenantDisabled)
	if d := n.schedule(at(time.Second)); len(d.Assign) != 0 {
		t.Errorf("a disabled tenant's job was placed: %v", assigned(d))
	}
	n.applyOK(&fsm.UpdateTenant{ID: "t1", Disabled: &no})

	// Delete: refused while a job is active, in any active state.
	n.refused(&fsm.DeleteTenant{ID: "t1", At: t0}, fsm.CodeTenantBusy)
	j := n.run("q", "w1", t0)
	n.refused(&fsm.DeleteTenant{ID: "t1", At: t0}, fsm.CodeTenantBusy)
	n.job(&fsm.FinishJob{Report: report(t, j), At: at(time.Second)})
	del := n.applyOK(&fsm.DeleteTenant{ID: "t1", At: at(2 * time.Second)}).(*fsm.Tenant)
	if !del.DeletedAt.Equal(at(2*time.Second)) || !del.Deleted() {
		t.Errorf("deleted tenant = %+v", del)
	}
	// A tombstone refuses everything and is not listed.
	n.refused(&fsm.DeleteTenant{ID: "t1", At: t0}, fsm.CodeNotFound)
	n.refused(&fsm.UpdateTenant{ID: "t1", Plan: &plan}, fsm.CodeNotFound)
	n.refused(&fsm.SubmitJob{Job: newJob(t, "j3", "t1", spec("720p30-h264"), t0)}, fsm.CodeNotFound)
	n.refused(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "t1", Name: "t1"}}, fsm.CodeAlreadyExists)
	n.refused(&fsm.CreateAPIKey{Key: fsm.APIKey{ID: "k1", TenantID: "t1", Role: fsm.RoleViewer}}, fsm.CodeNotFound)
	n.refused(&fsm.AdoptOrphans{TenantID: "t1"}, fsm.CodeNotFound)
	if ts := n.f.Tenants(); len(ts) != 0 {
		t.Errorf("Tenants() = %v, want none", ts)
	}
	// The tombstone survives a reload from the store.
	f2 := newFSM(t, n.st)
	if tn, ok := f2.Tenant("t1"); !ok || !tn.Deleted() {
		t.Errorf("after reload Tenant(t1) = %+v, %v", tn, ok)
	}
}

func TestAdoptOrphans(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("default")
	n.tenant("t1")
	n.tenant("gone")
	n.worker(fsm.Worker{ID: "w1", Slots: 2, Encoders: x264})
	n.submit("own", "t1", spec("720p30-h264"), t0)
	n.submit("dead", "gone", spec("720p30-h264"), t0)
	n.applyOK(&fsm.CancelJob{JobID: "dead", At: t0})
	n.applyOK(&fsm.DeleteTenant{ID: "gone", At: t0})
	// Objects without a tenant come only from imports: write them the
	// way an import does, straight to the store, and reload.
	orphan := newJob(t, "orphan", "", spec("720p30-h264"), t0)
	orphan.State, orphan.QueuedAt = fsm.JobQueued, t0
	orphan.Meta = fsm.Meta{CreateIndex: n.last + 1, ModifyIndex: n.last + 1}
	lost := newJob(t, "lost", "never-created", spec("720p30-h264"), t0)
	lost.State, lost.QueuedAt = fsm.JobQueued, t0
	lost.Meta = orphan.Meta
	dw := &fsm.Worker{ID: "dw", TenantID: "never-created", State: fsm.WorkerDown, Slots: 1, Meta: orphan.Meta}
	gw := &fsm.Worker{ID: "gw", TenantID: "gone", State: fsm.WorkerDown, Slots: 1, Meta: orphan.Meta}
	n.last++
	if err := n.st.Commit(t.Context(), &fsm.Batch{Index: n.last, Jobs: []*fsm.Job{&lost, &orphan}, Workers: []*fsm.Worker{dw, gw}}); err != nil {
		t.Fatal(err)
	}
	n.f = newFSM(t, n.st)
	if jobs, workers := n.f.Orphans(); jobs != 2 || workers != 1 {
		t.Fatalf("Orphans() = %d, %d; want 2 jobs, 1 worker", jobs, workers)
	}
	n.applyOK(&fsm.AdoptOrphans{TenantID: "default", At: t0})
	for id, want := range map[string]string{"orphan": "default", "lost": "default", "own": "t1"} {
		if j, _ := n.f.ActiveJob(id); j.TenantID != want {
			t.Errorf("job %s: tenant %q, want %q", id, j.TenantID, want)
		}
	}
	for id, want := range map[string]string{"dw": "default", "gw": "gone", "w1": ""} {
		if w, _ := n.f.Worker(id); w.TenantID != want {
			t.Errorf("worker %s: tenant %q, want %q", id, w.TenantID, want)
		}
	}
	if u := n.f.Usage("default"); u.Jobs != 2 {
		t.Errorf("default's usage after adoption = %+v, want 2 jobs", u)
	}
	// Again: nothing more to adopt, nothing changes.
	before := n.f.Index()
	n.applyOK(&fsm.AdoptOrphans{TenantID: "default", At: t0})
	if j, _ := n.f.ActiveJob("orphan"); j.ModifyIndex > before {
		t.Errorf("a second adoption changed job orphan (modify index %d)", j.ModifyIndex)
	}
	// The adopted jobs are scheduled as default's.
	if d := n.schedule(at(time.Second)); len(d.Assign) != 2 {
		t.Errorf("assigned %v, want two jobs", assigned(d))
	}
}

func TestTenantValidation(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]fsm.Command{
		"name differs":    &fsm.CreateTenant{Tenant: fsm.Tenant{ID: "acme", Name: "Acme"}},
		"upper case":      &fsm.CreateTenant{Tenant: fsm.Tenant{ID: "Acme", Name: "Acme"}},
		"leading dash":    &fsm.CreateTenant{Tenant: fsm.Tenant{ID: "-a", Name: "-a"}},
		"too long":        &fsm.CreateTenant{Tenant: fsm.Tenant{ID: string(make([]byte, 64)), Name: string(make([]byte, 64))}},
		"negative limit":  &fsm.CreateTenant{Tenant: fsm.Tenant{ID: "a", Name: "a", Limits: fsm.Limits{MaxJobs: -1}}},
		"born deleted":    &fsm.CreateTenant{Tenant: fsm.Tenant{ID: "a", Name: "a", DeletedAt: t0}},
		"update negative": &fsm.UpdateTenant{ID: "a", MaxCPU: new(-1.0)},
		"update no id":    &fsm.UpdateTenant{},
		"delete no id":    &fsm.DeleteTenant{},
		"adopt no tenant": &fsm.AdoptOrphans{},
	} {
		if _, err := fsm.DecodeCommand(mustEncode(t, c)); fsm.ErrorCode(err) != fsm.CodeInvalidArgument {
			t.Errorf("%s: DecodeCommand = %v, want invalid_argument", name, err)
		}
	}
}

// active returns an active job or fails.
func (n *node) active(id string) *fsm.Job {
	n.t.Helper()
	j, ok := n.f.ActiveJob(id)
	if !ok {
		n.t.Fatalf("job %s is not active", id)
	}
	return j
}

func assigned(d *fsm.Decisions) []string {
	var out []string
	for _, a := range d.Assign {
		out = append(out, a.JobID)
	}
	return out
}

// TestQuotaWaitDoesNotExpire: a job that waits for its own tenant's
// max_concurrent_jobs does not run out its acquire timeout meanwhile; the
// timeout counts again from when the tenant has room.
func TestQuotaWaitDoesNotExpire(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.limited("t1", fsm.Limits{MaxConcurrentJobs: 1})
	n.worker(fsm.Worker{ID: "w1", Slots: 2, Encoders: x264})
	s := spec("720p30-h264")
	s.AcquireTimeout = fsm.Duration(time.Minute)
	n.submit("a", "t1", s, t0)
	n.submit("b", "t1", s, t0)
	fair := fsm.NewFairness()
	d := n.f.Schedule(at(time.Second), fair, 100)
	if got := fmt.Sprint(assigned(d)); got != "[a]" {
		t.Fatalf("assigned %s, want [a]", got)
	}
	j := n.job(d.Assign[0])
	j = n.job(&fsm.StartJob{Report: report(t, j), At: at(time.Second)})
	// Long past b's timeout, a still runs: b waits and does not expire.
	if d := n.f.Schedule(at(10*time.Minute), fair, 100); len(d.Expire) != 0 || len(d.Assign) != 0 {
		t.Fatalf("at the limit: expire %v, assign %v; want neither", d.Expire, assigned(d))
	}
	n.job(&fsm.FinishJob{Report: report(t, j), At: at(11 * time.Minute)})
	if d := n.f.Schedule(at(11*time.Minute), fair, 100); len(d.Expire) != 0 || fmt.Sprint(assigned(d)) != "[b]" {
		t.Fatalf("with room again: expire %v, assign %v; want b placed", d.Expire, assigned(d))
	}
}
