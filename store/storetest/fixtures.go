package storetest

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	json "github.com/go-json-experiment/json/v1"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// t0 is the fixed time every fixture is stamped from. Whole seconds in UTC,
// so that a store keeping microseconds (PostgreSQL) round-trips it exactly.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// jobID returns the n-th job ID: a valid UUIDv7-shaped string that sorts
// (as bytes) in creation order, like the IDs the API stamps.
func jobID(n int) string {
	return fmt.Sprintf("01956a3c-%04x-7000-8000-%012x", n>>16&0xffff, n)
}

func newTenant(id string, index uint64) *fsm.Tenant {
	return &fsm.Tenant{
		ID:        id,
		Name:      "Tenant " + id,
		Plan:      "gold",
		Limits:    fsm.Limits{MaxJobs: 100, MaxConcurrentJobs: 4, MaxWorkers: 2, MaxCPU: 12.5},
		CreatedAt: t0,
		CreatedBy: "admin (key 0123456789abcdef)",
		Meta:      fsm.Meta{CreateIndex: index, ModifyIndex: index},
	}
}

func newKey(id, tenantID string, index uint64) *fsm.APIKey {
	return &fsm.APIKey{
		ID:        id,
		TenantID:  tenantID,
		User:      "alice@" + tenantID,
		Role:      fsm.RoleOperator,
		Hash:      []byte("0123456789abcdef0123456789abcdef"),
		CreatedAt: t0,
		ExpiresAt: t0.Add(24 * time.Hour),
		Meta:      fsm.Meta{CreateIndex: index, ModifyIndex: index},
	}
}

// newAudit returns audit record seq of a tenant, chained to nothing (the
// store does not check the chain).
func newAudit(seq uint64, tenantID string, index uint64) *fsm.AuditRecord {
	return &fsm.AuditRecord{
		Seq:  seq,
		Time: t0.Add(time.Duration(seq) * time.Second),
		Actor: fsm.Actor{User: "alice@" + tenantID, KeyID: "k" + tenantID, Role: fsm.RoleOperator, TenantID: tenantID,
			RequestID: fmt.Sprintf("req-%d", seq), Source: "10.0.0.9:5555", Action: "submitJob", Target: jobID(int(seq)), Tenant: tenantID},
		Result:   fsm.ResultOK,
		PrevHash: []byte(fmt.Sprintf("prev-%d", seq)),
		Hash:     []byte(fmt.Sprintf("hash-%d", seq)),
		Meta:     fsm.Meta{CreateIndex: index, ModifyIndex: index},
	}
}

func newWorkerToken(id, tenantID string, index uint64) *fsm.WorkerToken {
	return &fsm.WorkerToken{
		ID:        id,
		TenantID:  tenantID,
		Name:      "rack 4",
		Hash:      []byte("0123456789abcdef0123456789abcdef"),
		CreatedAt: t0,
		CreatedBy: "k1",
		WorkerID:  "w1",
		Meta:      fsm.Meta{CreateIndex: index, ModifyIndex: index},
	}
}

func newWorker(id string, index uint64) *fsm.Worker {
	return &fsm.Worker{
		ID:           id,
		Name:         "host-" + id,
		Addr:         "10.0.0.7:7946",
		State:        fsm.WorkerUp,
		Incarnation:  "inc-1",
		Slots:        2,
		CPUs:         8,
		MemoryMB:     16384,
		Encoders:     []string{"libx264", "libx265"},
		Labels:       map[string]string{"zone": "a"},
		RegisteredAt: t0,
		Meta:         fsm.Meta{CreateIndex: index, ModifyIndex: index},
	}
}

// sample returns an object of kind k, resident (Load returns it) unless
// the kind is history, that belongs to tenant "acme" (sample(TenantKind)). A kind without a sample
// fails the test: add one here when registering a kind.
func sample(t *testing.T, k *fsm.Kind, index uint64) fsm.Object {
	t.Helper()
	switch k {
	case fsm.TenantKind:
		return newTenant("acme", index)
	case fsm.UserKind:
		return &fsm.User{ID: "u1", Email: "Alice@Acme.example", TenantID: "acme", Role: fsm.RoleOperator,
			CreatedAt: t0, CreatedBy: "admin@localhost", Meta: fsm.Meta{CreateIndex: index, ModifyIndex: index}}
	case fsm.APIKeyKind:
		k := newKey("k1", "acme", index)
		k.UserID, k.Name, k.Scopes, k.LastUsedAt = "u1", "ci", []string{"jobs.view", "jobs.create"}, t0.Add(time.Minute)
		return k
	case fsm.InvitationKind:
		return &fsm.Invitation{ID: "i1", TenantID: "acme", Email: "bob@acme.example", Role: fsm.RoleViewer,
			Hash: []byte("0123456789abcdef0123456789abcdef"), CreatedAt: t0, CreatedBy: "alice@acme.example",
			ExpiresAt: t0.Add(72 * time.Hour), AcceptedAt: t0.Add(time.Hour), UserID: "u1",
			Meta: fsm.Meta{CreateIndex: index, ModifyIndex: index}}
	case fsm.WorkerTokenKind:
		return newWorkerToken("wt1", "acme", index)
	case fsm.WorkerKind:
		return newWorker("w1", index)
	case fsm.JobKind:
		return newJob(1, "acme", fsm.JobRunning, fsm.QueueDefault, index)
	case fsm.AuditKind:
		return newAudit(1, "acme", index)
	}
	t.Fatalf("storetest has no sample of kind %q: add one to sample", k.Name)
	return nil
}

// assertKinds checks that st holds exactly the objects of b, kind by
// kind, and that Load returned no object of a history kind.
func assertKinds(t *testing.T, what string, st *fsm.State, b *fsm.Batch) {
	t.Helper()
	for _, k := range fsm.Kinds {
		got, want := k.Loaded(st), k.Objects(b)
		if k.History() {
			if len(got) != 0 {
				t.Errorf("%s: Load returned %d %s objects, want none (history)", what, len(got), k.Name)
			}
			continue
		}
		if mustJSON(got) != mustJSON(want) {
			t.Errorf("%s: %s objects = %s, want %s", what, k.Name, mustJSON(got), mustJSON(want))
		}
	}
}

// newJob returns job n of a tenant, in a state, with every field that
// state implies filled in.
func newJob(n int, tenantID string, state fsm.JobState, queue fsm.Queue, index uint64) *fsm.Job {
	retries := 2
	spec := fsm.JobSpec{
		Name:           fmt.Sprintf("job-%d", n),
		Scenario:       "720p30-h264",
		Input:          fsm.Input{URL: "testsrc://?duration=2"},
		Outputs:        []fsm.Output{{URL: fmt.Sprintf("file:///out/%d.mp4", n)}},
		Queue:          queue,
		Priority:       fsm.PriorityMedium,
		Resources:      fsm.Resources{CPU: 1, MemoryMB: 512},
		Timeout:        fsm.Duration(time.Hour),
		AcquireTimeout: fsm.Duration(10 * time.Minute),
		MaxRetries:     &retries,
	}
	video := fsm.VideoParams{Codec: "h264", Width: 1280, Height: 720, FPS: 30, BitrateKbps: 2800}
	j := &fsm.Job{
		ID:       jobID(n),
		TenantID: tenantID,
		Spec:     spec,
		Plan: fsm.Plan{
			Input: fsm.PlanInput{Kind: fsm.KindTestsrc, URL: "testsrc://?duration=2", Width: 1280, Height: 720, FPS: 30, DurationSec: 2},
			Outputs: []fsm.Rendition{{
				Kind: fsm.KindFile, URL: spec.Outputs[0].URL, Path: fmt.Sprintf("out/%d.mp4", n),
				Container: "mp4", Video: video, Audio: fsm.AudioParams{Codec: "aac", BitrateKbps: 128},
			}},
		},
		State:       state,
		SubmittedAt: t0.Add(time.Duration(n) * time.Second),
		QueuedAt:    t0.Add(time.Duration(n) * time.Second),
		Meta:        fsm.Meta{CreateIndex: index, ModifyIndex: index},
	}
	if state != fsm.JobQueued {
		j.Attempt = 1
		j.WorkerID = "w1"
		j.AssignedAt = j.QueuedAt.Add(time.Second)
	}
	switch state {
	case fsm.JobRunning, fsm.JobPaused, fsm.JobSucceeded, fsm.JobFailed:
		j.StartedAt = j.AssignedAt.Add(time.Second)
		j.Progress = &fsm.Progress{Percent: 40, Frame: 24, FPS: 30, Speed: 1.5, OutTimeMS: 800, UpdatedAt: j.StartedAt.Add(time.Second)}
	}
	if state.Terminal() {
		j.FinishedAt = j.AssignedAt.Add(time.Minute)
		j.Log = "frame=60 fps=30 q=-1.0 Lsize=123kB\n"
	}
	switch state {
	case fsm.JobSucceeded:
		j.Result = &fsm.Result{Outputs: []fsm.OutputResult{{URL: spec.Outputs[0].URL, Codec: "h264", Width: 1280, Height: 720, FPS: 30, DurationSec: 2, SizeBytes: 125952}}}
	case fsm.JobFailed:
		j.Error = &fsm.Error{Code: fsm.CodeFFmpeg, Message: "ffmpeg exited with status 1"}
	}
	return j
}

// with returns a copy of j changed by edit, at a new modify index.
func with(j *fsm.Job, index uint64, edit func(*fsm.Job)) *fsm.Job {
	c := *j
	c.ModifyIndex = index
	if edit != nil {
		edit(&c)
	}
	return &c
}

// finish returns a copy of j in terminal state s at a new modify index.
func finish(j *fsm.Job, s fsm.JobState, index uint64) *fsm.Job {
	return with(j, index, func(c *fsm.Job) {
		c.State = s
		c.FinishedAt = c.QueuedAt.Add(time.Hour)
		if s == fsm.JobFailed {
			c.Error = &fsm.Error{Code: fsm.CodeTimeout, Message: "ran past its timeout"}
		}
	})
}

// commit sorts the batch by ID, as the FSM does, and commits it.
func commit(t *testing.T, st fsm.Store, b *fsm.Batch) {
	t.Helper()
	slices.SortFunc(b.Tenants, func(x, y *fsm.Tenant) int { return cmp.Compare(x.ID, y.ID) })
	slices.SortFunc(b.Keys, func(x, y *fsm.APIKey) int { return cmp.Compare(x.ID, y.ID) })
	slices.SortFunc(b.WorkerTokens, func(x, y *fsm.WorkerToken) int { return cmp.Compare(x.ID, y.ID) })
	slices.SortFunc(b.Workers, func(x, y *fsm.Worker) int { return cmp.Compare(x.ID, y.ID) })
	slices.SortFunc(b.Jobs, func(x, y *fsm.Job) int { return cmp.Compare(x.ID, y.ID) })
	if err := st.Commit(context.Background(), b); err != nil {
		t.Fatalf("Commit(index %d): %v", b.Index, err)
	}
}

func load(t *testing.T, st fsm.Store) *fsm.State {
	t.Helper()
	s, err := st.Load(context.Background())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}

func getJob(t *testing.T, st fsm.Store, id string) *fsm.Job {
	t.Helper()
	j, err := st.GetJob(context.Background(), id)
	if err != nil {
		t.Fatalf("GetJob(%s): %v", id, err)
	}
	return j
}

// normalState returns the state with every list sorted by ID and every
// time in UTC, so that two stores holding the same data compare equal
// whatever order or time zone they return.
func normalState(s *fsm.State) *fsm.State {
	out := &fsm.State{Index: s.Index}
	for _, x := range s.Tenants {
		out.Tenants = append(out.Tenants, normTenant(x))
	}
	for _, x := range s.Keys {
		out.Keys = append(out.Keys, normKey(x))
	}
	for _, x := range s.WorkerTokens {
		c := *x
		utc(&c.CreatedAt)
		out.WorkerTokens = append(out.WorkerTokens, &c)
	}
	for _, x := range s.Workers {
		out.Workers = append(out.Workers, normWorker(x))
	}
	out.Jobs = normJobs(s.Jobs)
	slices.SortFunc(out.Tenants, func(x, y *fsm.Tenant) int { return cmp.Compare(x.ID, y.ID) })
	slices.SortFunc(out.Keys, func(x, y *fsm.APIKey) int { return cmp.Compare(x.ID, y.ID) })
	slices.SortFunc(out.WorkerTokens, func(x, y *fsm.WorkerToken) int { return cmp.Compare(x.ID, y.ID) })
	slices.SortFunc(out.Workers, func(x, y *fsm.Worker) int { return cmp.Compare(x.ID, y.ID) })
	slices.SortFunc(out.Jobs, func(x, y *fsm.Job) int { return cmp.Compare(x.ID, y.ID) })
	return out
}

func utc(t *time.Time) {
	if !t.IsZero() {
		*t = t.UTC()
	}
}

func normTenant(x *fsm.Tenant) *fsm.Tenant {
	c := *x
	utc(&c.CreatedAt)
	return &c
}

func normKey(x *fsm.APIKey) *fsm.APIKey {
	c := *x
	utc(&c.CreatedAt)
	utc(&c.ExpiresAt)
	return &c
}

func normWorker(x *fsm.Worker) *fsm.Worker {
	c := *x
	utc(&c.RegisteredAt)
	return &c
}

func normJob(x *fsm.Job) *fsm.Job {
	if x == nil {
		return nil
	}
	c := *x
	for _, p := range []*time.Time{&c.SubmittedAt, &c.QueuedAt, &c.NotBefore, &c.AssignedAt, &c.StartedAt, &c.FinishedAt} {
		utc(p)
	}
	if c.Progress != nil {
		p := *c.Progress
		utc(&p.UpdatedAt)
		c.Progress = &p
	}
	return &c
}

// normJobs normalizes times and keeps the order.
func normJobs(js []*fsm.Job) []*fsm.Job {
	out := make([]*fsm.Job, 0, len(js))
	for _, j := range js {
		out = append(out, normJob(j))
	}
	return out
}

func mustJSON(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err)
	}
	return string(b)
}

// assertSame fails if got and want do not encode to the same JSON, which
// is how clients see them.
func assertSame(t *testing.T, what string, got, want any) {
	t.Helper()
	if g, w := mustJSON(got), mustJSON(want); g != w {
		t.Errorf("%s differs\ngot:  %s\nwant: %s", what, g, w)
	}
}

func ids(js []*fsm.Job) []string {
	out := make([]string, 0, len(js))
	for _, j := range js {
		out = append(out, j.ID)
	}
	return out
}
