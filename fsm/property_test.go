package fsm_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
)

var (
	propSeed  = flag.Uint64("fsm.seed", 0, "run the FSM property test with this seed only")
	propSeeds = flag.Int("fsm.seeds", 20, "number of seeds the FSM property test runs")
	propCmds  = flag.Int("fsm.cmds", 300, "commands per seed in the FSM property test")
)

// TestFSMProperty feeds random but plausible command sequences to FSMs and
// checks DESIGN.md's properties: Apply is deterministic whatever the batch
// split, replaying a prefix changes nothing, snapshot→restore gives the
// same state, and the domain invariants hold after every batch.
func TestFSMProperty(t *testing.T) {
	seeds := make([]uint64, 0, *propSeeds)
	if *propSeed != 0 {
		seeds = append(seeds, *propSeed)
	} else {
		for i := range *propSeeds {
			seeds = append(seeds, uint64(i+1))
		}
	}
	var cov coverage
	t.Run("seeds", func(t *testing.T) {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
				t.Parallel()
				t.Logf("seed %d; rerun alone with: go test ./fsm -run TestFSMProperty -args -fsm.seed=%d", seed, seed)
				runProperty(t, seed, *propCmds, &cov)
			})
		}
	})
	if t.Failed() || *propSeed != 0 || *propSeeds < 10 {
		return
	}
	// The generator must keep exercising what the properties are about;
	// a run that never reaches these proves little.
	t.Logf("coverage: %s", cov.String())
	for _, want := range []string{
		"CreateTenant ok", "CreateTenant already_exists", "CreateAPIKey ok", "CreateAPIKey not_found", "RevokeAPIKey ok",
		"RegisterWorker ok", "RegisterWorker not_found", "SubmitJob ok", "SubmitJob not_found", "SubmitJob already_exists",
		"AssignJob ok", "AssignJob stale_attempt", "AssignJob invalid_transition", "AssignJob not_found",
		"StartJob ok", "StartJob stale_attempt", "ProgressJob ok", "ProgressJob stale_attempt",
		"ExitJob ok", "ExitJob stale_attempt", "ExitJob invalid_transition", "PauseJob invalid_transition",
		"FinishJob ok", "FinishJob stale_attempt", "CancelJob ok", "CancelJob invalid_transition",
		"PauseJob ok", "ResumeJob ok", "RequeueJob ok", "ExpireJob ok", "ExpireJob invalid_transition",
		"state succeeded", "state failed", "state canceled", "error worker_lost", "error acquire_timeout",
		"error no_capable_worker", "error ffmpeg_error", "requeued", "skipped entry",
		"RecordAudit ok", "audited SubmitJob", "audited CancelJob", "audited CreateAPIKey",
		"UpdateTenant ok", "UpdateTenant not_found", "DeleteTenant ok", "DeleteTenant not_found", "DeleteTenant tenant_has_active_jobs",
		"AdoptOrphans ok", "AdoptOrphans not_found", "SubmitJob quota_exceeded", "SubmitJob tenant_disabled", "AssignJob quota_exceeded",
		"RegisterWorker quota_exceeded",
		"CreateUser ok", "CreateUser already_exists", "UpdateUser ok", "CreateInvitation ok", "AcceptInvitation ok",
		"AcceptInvitation invitation_used", "AcceptInvitation invitation_expired", "AcceptInvitation invitation_revoked",
		"RevokeInvitation ok", "RotateAPIKey ok", "RotateAPIKey invalid_transition", "TouchAPIKeys ok",
		"CreateWorkerToken ok", "CreateWorkerToken already_exists", "RevokeWorkerToken ok",
		"RegisterWorker token_refused", "PurgeJobs ok", "purged",
		"SubmitJobs item ok", "SubmitJobs item already_exists", "SubmitJobs item not_found", "audited SubmitJobs item",
	} {
		if cov.get(want) == 0 {
			t.Errorf("no seed produced %q", want)
		}
	}
}

// coverage counts what the generated sequences did, over all seeds.
type coverage struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *coverage) add(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[k]++
}

func (c *coverage) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

func (c *coverage) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.m))
	for k := range c.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, c.m[k])
	}
	return b.String()
}

func runProperty(t *testing.T, seed uint64, ncmds int, cov *coverage) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	g := newGen(t, r)

	// A drives the generator: each chunk is generated from A's state at
	// the chunk's start and applied to A as one batch.
	stA := &recordingStore{Store: openStore(t)}
	a := newFSM(t, stA)
	var (
		entries  []*raft.Log
		respA    []any
		terminal = map[string]*fsm.Job{}
		history  = map[string]fsm.Job{}

		midIndex uint64
		midState string
		midNow   time.Time
		midData  = &memSink{}
		midDone  = make(chan error, 1)
	)
	midChunk, midAt := -1, ncmds/4+r.IntN(ncmds/2+1)
	for chunk := 0; len(entries) < ncmds; chunk++ {
		logs := g.chunk(a, 1+r.IntN(16), uint64(len(entries))+1)
		entries = append(entries, logs...)
		resps := a.ApplyBatch(logs)
		respA = append(respA, resps...)
		checkResponses(t, logs, resps, cov)
		if got, want := a.Flush(), logs[len(logs)-1].Index; got != want {
			t.Fatalf("after batch ending at %d: Flush() = %d", want, got)
		}
		for range checkInvariants(t, a, g, terminal, history, chunk%8 == 0 || len(entries) >= ncmds) {
			cov.add("purged")
		}

		// Once, mid-run, take a snapshot and persist it while A goes on
		// applying: Persist must write the state as of Snapshot.
		if midChunk < 0 && len(entries) >= midAt {
			midChunk = chunk
			snap, err := a.Snapshot()
			if err != nil {
				t.Fatalf("snapshot: %v", err)
			}
			midIndex, midNow = a.Index(), g.now
			midState = captureState(t, a, g, midNow)
			go func() {
				defer snap.Release()
				midDone <- snap.Persist(midData)
			}()
		}
	}
	n := len(entries)
	final := g.now
	stateA := captureState(t, a, g, final)
	for _, j := range listAllJobs(t, a.Store(), "", 100) {
		cov.add("state " + string(j.State))
		if j.Error != nil {
			cov.add("error " + string(j.Error.Code))
		}
		if j.Retries > 0 {
			cov.add("requeued")
		}
	}

	// (a) Determinism: the same entries in another batch split give the
	// same responses and the same state.
	b := newFSM(t, openStore(t))
	respB := applySplit(t, b, entries, r)
	for i := range entries {
		if ja, jb := mustJSON(t, respA[i]), mustJSON(t, respB[i]); ja != jb {
			t.Fatalf("entry %d: response differs between batch splits:\nA %s\nB %s", entries[i].Index, ja, jb)
		}
	}
	diffState(t, "B (another batch split)", captureState(t, b, g, final), stateA)

	// (b) Replaying a prefix: apply 1..k, then 1..n again, as Raft does
	// after a restart without a snapshot; entries up to k are skipped.
	k := 1 + r.IntN(n)
	c := newFSM(t, openStore(t))
	applySplit(t, c, entries[:k], r)
	respC := applySplit(t, c, entries, r)
	for i, resp := range respC {
		if i < k && resp != nil {
			t.Fatalf("replayed entry %d (prefix 1..%d): response %s, want nil (skipped)", entries[i].Index, k, mustJSON(t, resp))
		}
		if i >= k && mustJSON(t, resp) != mustJSON(t, respA[i]) {
			t.Fatalf("entry %d after replaying prefix 1..%d: response %s, want %s", entries[i].Index, k, mustJSON(t, resp), mustJSON(t, respA[i]))
		}
	}
	diffState(t, fmt.Sprintf("C (prefix 1..%d applied twice)", k), captureState(t, c, g, final), stateA)

	// Committing A's batches to its store again changes nothing, and an
	// FSM restarted on that store has A's state and skips the whole log.
	bs := stA.Store.(*bolt.Store)
	before := storeDump(t, bs)
	for _, batch := range stA.recorded() {
		if err := bs.Commit(ctx, batch); err != nil {
			t.Fatalf("commit batch %d again: %v", batch.Index, err)
		}
	}
	if after := storeDump(t, bs); after != before {
		t.Fatalf("committing the same batches again changed the store:\nbefore %s\nafter  %s", before, after)
	}
	restarted := newFSM(t, bs)
	diffState(t, "A restarted on its store", captureState(t, restarted, g, final), stateA)
	for i, resp := range applySplit(t, restarted, entries, r) {
		if resp != nil {
			t.Fatalf("entry %d applied to a restarted FSM: response %s, want nil", entries[i].Index, mustJSON(t, resp))
		}
	}
	diffState(t, "A restarted, log applied again", captureState(t, restarted, g, final), stateA)

	// (c) Snapshot → restore. The mid-run snapshot restores to the state
	// at its index, and applying the log on top reaches the final state.
	if midChunk >= 0 {
		if err := <-midDone; err != nil {
			t.Fatalf("persist mid-run snapshot: %v", err)
		}
		midData.check(t)
		d := newFSM(t, openStore(t))
		if err := d.Restore(io.NopCloser(bytes.NewReader(midData.buf.Bytes()))); err != nil {
			t.Fatalf("restore mid-run snapshot: %v", err)
		}
		if got := d.Index(); got != midIndex {
			t.Fatalf("restored mid-run snapshot: Index() = %d, want %d", got, midIndex)
		}
		diffState(t, fmt.Sprintf("D (restored from the snapshot at %d)", midIndex), captureState(t, d, g, midNow), midState)
		for i, resp := range applySplit(t, d, entries, r) {
			if entries[i].Index <= midIndex && resp != nil {
				t.Fatalf("entry %d is in the restored snapshot: response %s, want nil", entries[i].Index, mustJSON(t, resp))
			}
		}
		diffState(t, "D (restored, then the rest of the log)", captureState(t, d, g, final), stateA)
	}

	// The final snapshot restores over an FSM with other state, which
	// Restore must discard.
	snap, err := a.Snapshot()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("persist: %v", err)
	}
	snap.Release()
	sink.check(t)
	e := newFSM(t, openStore(t))
	e.ApplyBatch([]*raft.Log{
		entry(t, 1, &fsm.CreateTenant{Tenant: fsm.Tenant{ID: "zz-stale"}}),
		entry(t, 2, &fsm.SubmitJob{Job: newJob(t, "zz-job", "zz-stale", spec("720p30-h264"), t0)}),
		entry(t, 3, &fsm.RegisterWorker{Worker: fsm.Worker{ID: "zz-worker", Slots: 1, Incarnation: "i"}, At: t0}),
	})
	if err := e.Restore(io.NopCloser(bytes.NewReader(sink.buf.Bytes()))); err != nil {
		t.Fatalf("restore: %v", err)
	}
	diffState(t, "E (restored from the final snapshot)", captureState(t, e, g, final), stateA)
	if _, ok := e.Tenant("zz-stale"); ok {
		t.Error("restore kept a tenant that is not in the snapshot")
	}
	if _, err := e.GetJob(ctx, "zz-job"); !errors.Is(err, fsm.ErrNotFound) {
		t.Errorf("restore kept a job that is not in the snapshot: GetJob = %v", err)
	}
}

// applySplit applies entries to f in random batch sizes and returns the
// responses in entry order.
func applySplit(t *testing.T, f *fsm.FSM, entries []*raft.Log, r *rand.Rand) []any {
	t.Helper()
	var out []any
	for i := 0; i < len(entries); {
		j := min(len(entries), i+1+r.IntN(16))
		before := f.Index()
		resps := f.ApplyBatch(entries[i:j])
		if len(resps) != j-i {
			t.Fatalf("ApplyBatch of %d entries returned %d responses", j-i, len(resps))
		}
		if got, want := f.Flush(), max(before, entries[j-1].Index); got != want {
			t.Fatalf("after ApplyBatch up to %d: Flush() = %d, want %d", entries[j-1].Index, got, want)
		}
		out = append(out, resps...)
		i = j
	}
	return out
}

var knownCodes = []fsm.Code{fsm.CodeInvalidArgument, fsm.CodeNotFound, fsm.CodeAlreadyExists,
	fsm.CodeInvalidTransition, fsm.CodeStaleAttempt, fsm.CodeQuotaExceeded, fsm.CodeTenantDisabled, fsm.CodeTenantBusy,
	fsm.CodeInvitationUsed, fsm.CodeInvitationExpired, fsm.CodeInvitationRevoked, fsm.CodeTokenRefused}

// checkResponses checks that every entry got a response of the right kind:
// nil for a skipped entry, else the changed object or a typed refusal.
func checkResponses(t *testing.T, logs []*raft.Log, resps []any, cov *coverage) {
	t.Helper()
	for i, l := range logs {
		resp := resps[i]
		if l.Type != raft.LogCommand {
			if resp != nil {
				t.Fatalf("entry %d of type %v: response %v, want nil", l.Index, l.Type, resp)
			}
			cov.add("skipped entry")
			continue
		}
		typ := fsm.MessageType(l.Data[0])
		if typ == fsm.EnvelopeType {
			// Not DecodeEntry: the generator also makes commands that
			// validation would refuse, to check that Apply survives them.
			var env struct {
				Type fsm.MessageType `json:"type"`
			}
			if err := json.Unmarshal(l.Data[1:], &env); err != nil {
				t.Fatalf("entry %d: envelope does not decode: %v", l.Index, err)
			}
			typ = env.Type
			cov.add("audited " + commandName(typ))
		}
		name := commandName(typ)
		if typ == fsm.RecordAuditType && resp == nil {
			cov.add(name + " ok")
			continue
		}
		if typ == fsm.SubmitJobsType {
			checkSubmitJobs(t, l, resp, cov)
			continue
		}
		switch v := resp.(type) {
		case *fsm.Error:
			if !slices.Contains(knownCodes, v.Code) {
				t.Fatalf("entry %d (%s): refused with unexpected code %q: %v", l.Index, name, v.Code, v)
			}
			cov.add(name + " " + string(v.Code))
		case *fsm.Tenant, *fsm.APIKey, *fsm.WorkerToken, *fsm.Worker, *fsm.Job, *fsm.User, *fsm.Invitation:
			cov.add(name + " ok")
		case nil:
			if typ := fsm.MessageType(l.Data[0]); typ != fsm.TouchAPIKeysType && typ != fsm.PurgeJobsType {
				t.Fatalf("entry %d (%s): nil response", l.Index, name)
			}
			cov.add(name + " ok")
		default:
			t.Fatalf("entry %d (%s): response %T %v", l.Index, name, resp, resp)
		}
	}
}

// checkSubmitJobs checks a batch's response: one result per item, each
// the queued job (with the item's ID) or a typed refusal.
func checkSubmitJobs(t *testing.T, l *raft.Log, resp any, cov *coverage) {
	t.Helper()
	var c fsm.SubmitJobs
	if err := json.Unmarshal(l.Data[1:], &c); err != nil {
		t.Fatalf("entry %d: batch does not decode: %v", l.Index, err)
	}
	res, ok := resp.(*fsm.SubmitJobsResult)
	if !ok || len(res.Results) != len(c.Items) {
		t.Fatalf("entry %d (SubmitJobs of %d): response %T %v", l.Index, len(c.Items), resp, resp)
	}
	for i, r := range res.Results {
		if c.Items[i].Actor != nil {
			cov.add("audited SubmitJobs item")
		}
		switch v := r.(type) {
		case *fsm.Error:
			if !slices.Contains(knownCodes, v.Code) {
				t.Fatalf("entry %d item %d: refused with unexpected code %q: %v", l.Index, i, v.Code, v)
			}
			cov.add("SubmitJobs item " + string(v.Code))
		case *fsm.Job:
			if v.ID != c.Items[i].Job.ID {
				t.Fatalf("entry %d item %d: job %s, want %s", l.Index, i, v.ID, c.Items[i].Job.ID)
			}
			cov.add("SubmitJobs item ok")
		default:
			t.Fatalf("entry %d item %d: result %T %v", l.Index, i, r, r)
		}
	}
}

func commandName(m fsm.MessageType) string {
	names := map[fsm.MessageType]string{
		fsm.CreateTenantType: "CreateTenant", fsm.CreateAPIKeyType: "CreateAPIKey", fsm.RevokeAPIKeyType: "RevokeAPIKey",
		fsm.RegisterWorkerType: "RegisterWorker", fsm.SubmitJobType: "SubmitJob", fsm.AssignJobType: "AssignJob",
		fsm.StartJobType: "StartJob", fsm.ProgressJobType: "ProgressJob", fsm.FinishJobType: "FinishJob",
		fsm.CancelJobType: "CancelJob", fsm.PauseJobType: "PauseJob", fsm.ResumeJobType: "ResumeJob",
		fsm.RequeueJobType: "RequeueJob", fsm.ExpireJobType: "ExpireJob", fsm.RecordAuditType: "RecordAudit",
		fsm.UpdateTenantType: "UpdateTenant", fsm.DeleteTenantType: "DeleteTenant", fsm.AdoptOrphansType: "AdoptOrphans",
		fsm.CreateUserType: "CreateUser", fsm.UpdateUserType: "UpdateUser", fsm.CreateInvitationType: "CreateInvitation",
		fsm.AcceptInvitationType: "AcceptInvitation", fsm.RevokeInvitationType: "RevokeInvitation",
		fsm.RotateAPIKeyType: "RotateAPIKey", fsm.TouchAPIKeysType: "TouchAPIKeys",
		fsm.CreateWorkerTokenType: "CreateWorkerToken", fsm.RevokeWorkerTokenType: "RevokeWorkerToken",
		fsm.PurgeJobsType: "PurgeJobs", fsm.ExitJobType: "ExitJob",
		fsm.SubmitJobsType: "SubmitJobs",
	}
	if s, ok := names[m]; ok {
		return s
	}
	return fmt.Sprintf("type %d", m)
}

// fsmState is everything observable about an FSM, for comparison.
type fsmState struct {
	Index      uint64
	Tenants    map[string]*fsm.Tenant
	Users      []*fsm.User
	Emails     map[string]string // email -> user ID, through the case-insensitive index
	Invites    []*fsm.Invitation
	Keys       map[string]*fsm.APIKey
	KeyCount   int
	Tokens     []*fsm.WorkerToken
	Workers    []*fsm.Worker
	WorkerJobs map[string][]*fsm.Job
	WorkerLoad map[string]int
	Jobs       []*fsm.Job // the store, every tenant, newest first
	Active     []*fsm.Job // memory
	ByState    map[fsm.JobState]int
	ByQueue    map[fsm.Queue]int
	// Decisions is what the scheduler would do at the generator's time
	// with a fresh rotation: it compares the scheduling indexes.
	Decisions *fsm.Decisions
	// Audit is the store's audit chain, and AuditHead the FSM's.
	Audit     []*fsm.AuditRecord
	AuditHead fsm.AuditHead
}

// captureState returns f's observable state as JSON.
func captureState(t *testing.T, f *fsm.FSM, g *gen, now time.Time) string {
	t.Helper()
	s := fsmState{
		Index:      f.Index(),
		Tenants:    map[string]*fsm.Tenant{},
		Users:      f.Users(""),
		Emails:     map[string]string{},
		Invites:    f.Invitations(""),
		Keys:       map[string]*fsm.APIKey{},
		KeyCount:   f.KeyCount(),
		Tokens:     f.WorkerTokens("", true),
		Workers:    f.Workers(""),
		WorkerJobs: map[string][]*fsm.Job{},
		WorkerLoad: map[string]int{},
		Jobs:       listAllJobs(t, f.Store(), "", 7),
	}
	for _, id := range g.tenantIDs() {
		if tn, ok := f.Tenant(id); ok {
			s.Tenants[id] = tn
		}
	}
	for _, e := range propEmails {
		if u, ok := f.UserByEmail(e); ok {
			s.Emails[e] = u.ID
		}
	}
	for _, id := range g.keyIDs() {
		if k, ok := f.APIKey(id); ok {
			s.Keys[id] = k
		}
	}
	for _, w := range g.workers {
		s.WorkerJobs[w.ID] = f.WorkerJobs(w.ID)
		s.WorkerLoad[w.ID] = f.WorkerLoad(w.ID)
	}
	for _, j := range s.Jobs {
		if a, ok := f.ActiveJob(j.ID); ok {
			s.Active = append(s.Active, a)
		}
	}
	s.ByState, s.ByQueue = f.Counts()
	s.Decisions = f.Schedule(now, fsm.NewFairness(), 1000)
	s.AuditHead = f.AuditHeadNow()
	if err := f.Store().ScanAudit(context.Background(), 0, func(r *fsm.AuditRecord) error {
		s.Audit = append(s.Audit, r)
		return nil
	}); err != nil {
		t.Fatalf("scan audit: %v", err)
	}
	v, err := f.VerifyAudit(context.Background())
	if err != nil || !v.OK || v.Checked != uint64(len(s.Audit)) {
		t.Fatalf("VerifyAudit = %+v, %v; want ok over %d records", v, err, len(s.Audit))
	}
	return mustJSON(t, s)
}

// diffState fails the test if two captured states differ, naming the
// first differing part.
func diffState(t *testing.T, what, got, want string) {
	t.Helper()
	if got == want {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	from := max(0, i-300)
	t.Fatalf("%s: state differs at byte %d:\ngot  …%s…\nwant …%s…", what, i, got[from:min(len(got), i+300)], want[from:min(len(want), i+300)])
}

// storeDump returns everything in a bolt store as JSON.
func storeDump(t *testing.T, st *bolt.Store) string {
	t.Helper()
	s, err := st.Load(context.Background())
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return mustJSON(t, struct {
		State *fsm.State
		Jobs  []*fsm.Job
	}{s, listAllJobs(t, st, "", 100)})
}

// checkInvariants checks the domain invariants of f after a batch and
// returns how many finished jobs were purged since the last check.
// terminal and history carry what earlier checks saw.
// With full set it also checks the per-tenant listings.
func checkInvariants(t *testing.T, f *fsm.FSM, g *gen, terminal map[string]*fsm.Job, history map[string]fsm.Job, full bool) (purged int) {
	t.Helper()
	ctx := context.Background()
	jobs := listAllJobs(t, f.Store(), "", 100)
	if full {
		checkTenantListings(t, f.Store(), g, jobs)
	}

	workers := map[string]*fsm.Worker{}
	for _, w := range f.Workers("") {
		workers[w.ID] = w
	}
	type use struct {
		jobs     []string
		slots    int   // the jobs whose ffmpeg has not exited (ExitJob)
		milliCPU int64 // summed in integers, as the FSM does: float sums depend on order
		mem      int
		sessions map[string]int // hardware kind → encoder sessions held
	}
	uses := map[string]*use{}
	// tenantUse recounts each tenant's quota usage (CPU in millicores)
	// from the store, to check the FSM's incremental counters.
	tenantUse := map[string]fsm.TenantUsage{}
	listed := map[string]bool{}
	active := 0
	for _, j := range jobs {
		listed[j.ID] = true
		if !j.State.Valid() {
			t.Fatalf("job %s has unknown state %q", j.ID, j.State)
		}
		if prev, ok := history[j.ID]; ok {
			if j.CreateIndex != prev.CreateIndex || j.ModifyIndex < prev.ModifyIndex || j.Attempt < prev.Attempt || j.Retries < prev.Retries {
				t.Fatalf("job %s went back: create %d→%d modify %d→%d attempt %d→%d retries %d→%d", j.ID,
					prev.CreateIndex, j.CreateIndex, prev.ModifyIndex, j.ModifyIndex, prev.Attempt, j.Attempt, prev.Retries, j.Retries)
			}
		}
		history[j.ID] = *j
		if j.CreateIndex == 0 || j.ModifyIndex < j.CreateIndex || j.ModifyIndex > f.Index() {
			t.Fatalf("job %s: meta %+v with FSM index %d", j.ID, j.Meta, f.Index())
		}
		if j.Spec.MaxRetries == nil || j.Retries > *j.Spec.MaxRetries {
			t.Fatalf("job %s: %d retries, max_retries %v", j.ID, j.Retries, j.Spec.MaxRetries)
		}
		mem, inMemory := f.ActiveJob(j.ID)
		if j.State.Terminal() {
			if inMemory {
				t.Fatalf("terminal job %s (%s) is still in memory", j.ID, j.State)
			}
			if prev, ok := terminal[j.ID]; ok {
				// The store rewrites an object only with a higher modify
				// index, so an unchanged index means unchanged; the full
				// comparison runs with full set.
				if prev.ModifyIndex != j.ModifyIndex || (full && mustJSON(t, prev) != mustJSON(t, j)) {
					t.Fatalf("terminal job %s changed:\nwas %s\nnow %s", j.ID, mustJSON(t, prev), mustJSON(t, j))
				}
				continue
			}
			terminal[j.ID] = j
			got, err := f.GetJob(ctx, j.ID)
			if err != nil {
				t.Fatalf("GetJob(%s) of a terminal job: %v", j.ID, err)
			}
			if gs, js := mustJSON(t, got), mustJSON(t, j); gs != js {
				t.Fatalf("GetJob(%s) = %s, listed as %s", j.ID, gs, js)
			}
			if j.FinishedAt.IsZero() {
				t.Fatalf("terminal job %s has no finished_at", j.ID)
			}
			continue
		}
		if prev, ok := terminal[j.ID]; ok {
			t.Fatalf("terminal job %s is %s again:\nwas %s\nnow %s", j.ID, j.State, mustJSON(t, prev), mustJSON(t, j))
		}
		active++
		tu := tenantUse[j.TenantID]
		tu.Jobs++
		if j.State != fsm.JobQueued {
			tu.ConcurrentJobs++
			tu.CPU += math.Round(j.Spec.Resources.CPU * 1000)
		}
		tenantUse[j.TenantID] = tu
		if !inMemory {
			t.Fatalf("active job %s (%s) is not in memory", j.ID, j.State)
		}
		if ms, js := mustJSON(t, mem), mustJSON(t, j); ms != js {
			t.Fatalf("job %s: memory and store differ:\nmemory %s\nstore  %s", j.ID, ms, js)
		}
		switch j.State {
		case fsm.JobQueued:
			// Attempt counts assignments and every ended attempt of an
			// active job was requeued, so a queued job has Attempt ==
			// Retries (≥ 1 after a retry) and no worker; a live job's
			// lost workers cost no retry, so it may have more attempts.
			live := j.Spec.Queue == fsm.QueueLive
			if j.WorkerID != "" || (!live && j.Attempt != j.Retries) || (live && j.Attempt < j.Retries) {
				t.Fatalf("queued job %s: worker %q attempt %d retries %d", j.ID, j.WorkerID, j.Attempt, j.Retries)
			}
		case fsm.JobAssigned, fsm.JobRunning, fsm.JobPaused:
			live := j.Spec.Queue == fsm.QueueLive
			if j.WorkerID == "" || j.Attempt < 1 || (!live && j.Attempt != j.Retries+1) || (live && j.Attempt < j.Retries+1) {
				t.Fatalf("%s job %s: worker %q attempt %d retries %d", j.State, j.ID, j.WorkerID, j.Attempt, j.Retries)
			}
			w, ok := workers[j.WorkerID]
			if !ok {
				t.Fatalf("%s job %s is on unknown worker %s", j.State, j.ID, j.WorkerID)
			}
			if w.TenantID != "" && w.TenantID != j.TenantID {
				t.Fatalf("job %s of tenant %s is on worker %s dedicated to %s", j.ID, j.TenantID, w.ID, w.TenantID)
			}
			if !w.CanEncode(j.Plan.Codecs()) {
				t.Fatalf("job %s needs %v; worker %s has %v", j.ID, j.Plan.Codecs(), w.ID, w.Encoders)
			}
			u := uses[w.ID]
			if u == nil {
				u = &use{}
				uses[w.ID] = u
			}
			u.jobs = append(u.jobs, j.ID)
			if !j.ExitedAt.IsZero() {
				if j.State != fsm.JobRunning {
					t.Fatalf("%s job %s has exited_at %v; only a running job may", j.State, j.ID, j.ExitedAt)
				}
				continue // its slot and resources are free
			}
			u.slots++
			u.milliCPU += int64(math.Round(j.Spec.Resources.CPU * 1000))
			u.mem += j.Spec.Resources.MemoryMB
			for _, r := range j.Plan.Outputs {
				e := w.EncoderFor(r.Video.Codec, j.Plan.Hardware)
				if e == "" {
					t.Fatalf("job %s (hardware %q) is on worker %s, which has no encoder for its %s rendition", j.ID, j.Plan.Hardware, w.ID, r.Video.Codec)
				}
				if j.Plan.Hardware == fsm.HardwareSoftware && fsm.EncoderHardware(e) != "" ||
					j.Plan.Hardware != fsm.HardwareAny && j.Plan.Hardware != fsm.HardwareSoftware && fsm.EncoderHardware(e) != j.Plan.Hardware {
					t.Fatalf("job %s requires hardware %q; worker %s would encode %s with %s", j.ID, j.Plan.Hardware, w.ID, r.Video.Codec, e)
				}
				if k := fsm.EncoderHardware(e); k != "" {
					if u.sessions == nil {
						u.sessions = map[string]int{}
					}
					u.sessions[k]++
				}
			}
		}
	}
	for _, tn := range g.tenantIDs() {
		want := tenantUse[tn]
		want.CPU /= 1000
		got := f.Usage(tn)
		got.Workers = 0
		if got != want {
			t.Fatalf("tenant %s: usage %+v, recounted %+v", tn, got, want)
		}
	}
	for id := range terminal {
		if !listed[id] {
			// Only a purge removes a finished job; it is gone for good.
			if _, err := f.GetJob(ctx, id); !errors.Is(err, fsm.ErrNotFound) {
				t.Fatalf("terminal job %s is no longer listed, but GetJob = %v", id, err)
			}
			delete(terminal, id)
			purged++
		}
	}
	byState, byQueue := f.Counts()
	sum, queued := 0, 0
	for st, c := range byState {
		if st.Terminal() {
			t.Fatalf("Counts() has %d %s jobs in memory", c, st)
		}
		sum += c
	}
	for _, c := range byQueue {
		queued += c
	}
	if sum != active || queued != byState[fsm.JobQueued] {
		t.Fatalf("Counts() = %v %v, store has %d active jobs", byState, byQueue, active)
	}
	// JobSummary of every tenant agrees with Counts.
	js := f.JobSummary("")
	for st, c := range js.States {
		if c != byState[st] {
			t.Fatalf("JobSummary has %d %s jobs, Counts %d", c, st, byState[st])
		}
	}
	for q, prios := range js.Queued {
		n := 0
		for _, c := range prios {
			n += c
		}
		if n != byQueue[q] || (n > 0) != !js.OldestQueued[q].IsZero() {
			t.Fatalf("JobSummary has %d queued in %s (oldest %v), Counts %d", n, q, js.OldestQueued[q], byQueue[q])
		}
	}
	for _, w := range workers {
		u := uses[w.ID]
		if u == nil {
			u = &use{}
		}
		var got []string
		for _, j := range f.WorkerJobs(w.ID) {
			got = append(got, j.ID)
		}
		slices.Sort(u.jobs)
		if !slices.Equal(got, u.jobs) || f.WorkerLoad(w.ID) != len(u.jobs) {
			t.Fatalf("worker %s: WorkerJobs %v, WorkerLoad %d; the store has %v on it", w.ID, got, f.WorkerLoad(w.ID), u.jobs)
		}
		if u.slots > w.Slots {
			t.Fatalf("worker %s holds %d active jobs %v (not exited) with %d slots", w.ID, u.slots, u.jobs, w.Slots)
		}
		if w.CPUs > 0 && u.milliCPU > int64(w.CPUs)*1000 {
			t.Fatalf("worker %s holds %d millicores of jobs with %d CPUs", w.ID, u.milliCPU, w.CPUs)
		}
		if w.MemoryMB > 0 && u.mem > w.MemoryMB {
			t.Fatalf("worker %s holds %d MB of jobs with %d MB", w.ID, u.mem, w.MemoryMB)
		}
		for k, n := range u.sessions {
			if n > w.EncoderSessions[k] {
				t.Fatalf("worker %s holds %d %s sessions with %d", w.ID, n, k, w.EncoderSessions[k])
			}
		}
	}
	for id := range uses {
		if _, ok := workers[id]; !ok {
			t.Fatalf("jobs %v are on unknown worker %s", uses[id].jobs, id)
		}
	}
	return purged
}

// checkTenantListings checks that listing each tenant's jobs partitions
// the full listing.
func checkTenantListings(t *testing.T, st fsm.Store, g *gen, all []*fsm.Job) {
	t.Helper()
	n := 0
	for _, tn := range g.tenantIDs() {
		for _, j := range listAllJobs(t, st, tn, 100) {
			if j.TenantID != tn {
				t.Fatalf("job %s of tenant %s listed for tenant %s", j.ID, j.TenantID, tn)
			}
			n++
		}
	}
	if n != len(all) {
		t.Fatalf("per-tenant listings hold %d jobs, the full listing %d", n, len(all))
	}
}

// recordingStore records every batch committed through it.
type recordingStore struct {
	fsm.Store
	mu      sync.Mutex
	batches []*fsm.Batch
}

func (s *recordingStore) Commit(ctx context.Context, b *fsm.Batch) error {
	if err := s.Store.Commit(ctx, b); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, b)
	return nil
}

func (s *recordingStore) recorded() []*fsm.Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.batches)
}

// memSink is a raft.SnapshotSink that keeps the snapshot in memory.
type memSink struct {
	mu               sync.Mutex
	buf              bytes.Buffer
	closed, canceled bool
}

var _ raft.SnapshotSink = (*memSink)(nil)

func (s *memSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.canceled {
		return 0, errors.New("write to a finished sink")
	}
	return s.buf.Write(p)
}

func (s *memSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *memSink) Cancel() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.canceled = true
	return nil
}

func (s *memSink) ID() string { return "mem" }

func (s *memSink) check(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed || s.canceled || s.buf.Len() == 0 {
		t.Fatalf("snapshot sink: closed %v canceled %v %d bytes; want closed with data", s.closed, s.canceled, s.buf.Len())
	}
}

// gen generates plausible commands: mostly what the edge and the leader
// would propose, plus stale, duplicate and invalid ones.
type gen struct {
	t        *testing.T
	r        *rand.Rand
	now      time.Time
	fair     *fsm.Fairness
	nextJob  int
	nextKey  int
	nextUser int
	jobs     []string     // every job ID submitted
	paused   []string     // every job ID a PauseJob was proposed for
	attempts []fsm.Report // every assignment proposed
	workers  []fsm.Worker // one fixed template per worker ID
	incarn   map[string]int
}

func newGen(t *testing.T, r *rand.Rand) *gen {
	x := func(e ...string) []string { return e }
	fair := fsm.NewFairness()
	if r.IntN(2) == 0 {
		fair.CountFrom(t0.Add(time.Duration(r.IntN(300)) * time.Second))
	}
	return &gen{
		t: t, r: r, now: t0, fair: fair, incarn: map[string]int{},
		workers: []fsm.Worker{
			{ID: "w1", Slots: 2, CPUs: 4, MemoryMB: 8192, Encoders: x("libx264", "libx265")},
			{ID: "w2", Slots: 3, Encoders: x("libx264", "libsvtav1", "libvpx-vp9"), Labels: map[string]string{"zone": "b"}},
			{ID: "w3", TenantID: "t2", Slots: 1, CPUs: 2, MemoryMB: 2048, Encoders: x("libx264")},
			{ID: "w4", Slots: 3, MemoryMB: 4096, Encoders: x("h264_nvenc", "hevc_nvenc"), EncoderSessions: map[string]int{fsm.HardwareNVENC: 2}},
			{ID: "w5", TenantID: "t9", Slots: 1, Encoders: x("libx264")}, // t9 never exists
			{ID: "w6", TenantID: "t2", Slots: 1, Encoders: x("libx264")}, // t2's second: max_workers 1 refuses one
		},
	}
}

// Tenants t1..t4 may be created; t9 never is.
func (g *gen) tenantIDs() []string { return []string{"t1", "t2", "t3", "t4", "t9"} }

func (g *gen) keyIDs() []string {
	out := []string{"k-missing"}
	for i := 1; i <= g.nextKey; i++ {
		out = append(out, fmt.Sprintf("k%d", i))
	}
	return out
}

func pick[T any](r *rand.Rand, xs ...T) T { return xs[r.IntN(len(xs))] }

// chunk generates about size commands from f's current state, as log
// entries starting at index first. Now and then it adds an entry that is
// not a command, which the FSM must skip.
func (g *gen) chunk(f *fsm.FSM, size int, first uint64) []*raft.Log {
	if first == 1 {
		// A prelude so that jobs can flow from the start.
		var cmds []fsm.Command
		for _, id := range []string{"t1", "t2", "t3"} {
			cmds = append(cmds, g.tenant(id))
		}
		cmds = append(cmds, g.register(g.workers[0]), g.register(g.workers[1]))
		return g.logs(cmds, first)
	}
	d := f.Schedule(g.now, g.fair, 1+g.r.IntN(4))
	assigns, expires := d.Assign, d.Expire
	var cmds []fsm.Command
	for len(cmds) < size {
		g.now = g.now.Add(time.Duration(g.r.IntN(4000)) * time.Millisecond)
		if g.r.IntN(50) == 0 {
			g.now = g.now.Add(time.Duration(1+g.r.IntN(4)) * time.Minute)
		}
		cmds = append(cmds, g.next(f, &assigns, &expires)...)
	}
	return g.logs(cmds, first)
}

func (g *gen) logs(cmds []fsm.Command, first uint64) []*raft.Log {
	var out []*raft.Log
	idx := first
	for _, c := range cmds {
		if g.r.IntN(40) == 0 {
			// A configuration entry with a body that is not a command.
			out = append(out, &raft.Log{Index: idx, Term: 1, Type: raft.LogConfiguration, Data: []byte{0xff, 0x00}})
			idx++
		}
		l := entry(g.t, idx, c)
		if a := g.actor(c); a != nil {
			data, err := fsm.EncodeAs(c, a)
			if err != nil {
				g.t.Fatalf("encode %T with an actor: %v", c, err)
			}
			l.Data = data
		}
		if g.r.IntN(10) != 0 { // else an entry from before Raft stamped them
			l.AppendedAt = g.now.Add(time.Duration(g.r.IntN(2000)) * time.Millisecond)
		}
		out = append(out, l)
		idx++
	}
	return out
}

// actor returns the actor of an API command now and then (always for
// RecordAudit), nil for the leader's and workers' commands.
func (g *gen) actor(c fsm.Command) *fsm.Actor {
	switch c.(type) {
	case *fsm.RecordAudit:
	case *fsm.CreateTenant, *fsm.CreateAPIKey, *fsm.RevokeAPIKey, *fsm.SubmitJob, *fsm.CancelJob, *fsm.PauseJob, *fsm.ResumeJob:
		if g.r.IntN(3) == 0 {
			return nil
		}
	default:
		return nil
	}
	tenant := pick(g.r, "t1", "t2", "")
	return &fsm.Actor{User: pick(g.r, "ann", "bob"), KeyID: pick(g.r, "k1", "k2"), Role: fsm.RoleOperator, TenantID: tenant,
		RequestID: fmt.Sprintf("r%d", g.r.IntN(1000)), Source: "10.1.2.3:4567", Action: fmt.Sprintf("%T", c)[5:],
		Target: pick(g.r, "", "x1"), Tenant: tenant}
}

// submitBatch returns a SubmitJobs (the group commit's entry) that starts
// with job and holds up to four more: new jobs, now and then an ID the
// batch already holds or an older one, each item with an actor of its own
// or none.
func (g *gen) submitBatch(job fsm.Job) *fsm.SubmitJobs {
	r := g.r
	items := []fsm.SubmitItem{{Job: job, Actor: g.itemActor()}}
	for range r.IntN(5) {
		var j fsm.Job
		switch r.IntN(6) {
		case 0:
			j = items[r.IntN(len(items))].Job // a client retry inside the batch
		case 1:
			old := g.jobs[r.IntN(len(g.jobs))]
			j = newJob(g.t, old, job.TenantID, g.spec(old), g.now)
		default:
			g.nextJob++
			id := fmt.Sprintf("j%04d", g.nextJob)
			g.jobs = append(g.jobs, id)
			j = newJob(g.t, id, pick(r, "t1", "t2", "t3", "t9"), g.spec(id), g.now)
		}
		items = append(items, fsm.SubmitItem{Job: j, Actor: g.itemActor()})
	}
	return &fsm.SubmitJobs{Items: items}
}

// itemActor returns the actor of one item of a batch, or nil.
func (g *gen) itemActor() *fsm.Actor {
	if g.r.IntN(3) == 0 {
		return nil
	}
	return g.actor(&fsm.SubmitJob{})
}

// propEmails are the emails users and invitations are made with; some
// differ only in case, which the FSM must treat as one.
var propEmails = []string{"a@x.example", "A@X.example", "b@x.example", "c@x.example", "B@x.EXAMPLE"}

// user returns a new user with ID id, of a random tenant, email and role.
func (g *gen) user(id string) fsm.User {
	return fsm.User{ID: id, Email: pick(g.r, propEmails...), TenantID: pick(g.r, "t1", "t2", "t9"), Role: pick(g.r, fsm.RolesByPower...), CreatedAt: g.now}
}

// newKey returns a key with a new ID.
func (g *gen) newKey() fsm.APIKey {
	g.nextKey++
	id := fmt.Sprintf("k%d", g.nextKey)
	h := sha256.Sum256([]byte(id))
	return fsm.APIKey{ID: id, TenantID: pick(g.r, "t1", "t2"), User: "user-" + id, Role: pick(g.r, fsm.RolesByPower...), Hash: h[:], CreatedAt: g.now}
}

func (g *gen) tenant(id string) fsm.Command {
	return &fsm.CreateTenant{Tenant: fsm.Tenant{ID: id, Name: id, CreatedAt: g.now}}
}

func (g *gen) register(w fsm.Worker) fsm.Command {
	inc := g.incarn[w.ID]
	if inc == 0 || g.r.IntN(3) == 0 {
		inc++ // a new process
		g.incarn[w.ID] = inc
	}
	w.Name = "host-" + w.ID
	if g.r.IntN(2) == 0 {
		// A remote worker: its token, or now and then another's.
		w.TokenID = "wt" + strings.TrimPrefix(w.ID, "w")
		if g.r.IntN(5) == 0 {
			w.TokenID = pick(g.r, "wt1", "wt2", "wt3", "wt4", "wt5", "wt-missing")
		}
	}
	w.Incarnation = fmt.Sprintf("%s-%d", w.ID, inc)
	w.RegisteredAt = g.now
	return &fsm.RegisterWorker{Worker: w, At: g.now}
}

func (g *gen) spec(id string) fsm.JobSpec {
	r := g.r
	scen := pick(r, "720p30-h264", "720p30-h264", "1080p60-h264", "360p25-h264", "480p30-h265", "360p25-vp9", "480p30-av1")
	s := fsm.JobSpec{
		Name:           "job " + id,
		Scenario:       scen,
		Input:          fsm.Input{URL: fmt.Sprintf("testsrc://?duration=%d", 1+r.IntN(30))},
		Outputs:        []fsm.Output{{URL: "file:///out/" + id + ".mkv"}},
		Queue:          pick(r, "", fsm.QueueLive, fsm.QueueDefault, fsm.QueueBatch),
		Priority:       pick(r, "", fsm.PriorityHigh, fsm.PriorityMedium, fsm.PriorityLow),
		Resources:      fsm.Resources{CPU: pick(r, 0, 0, 0.1, 0.2, 0.3, 0.7, 1, 1.5, 2, 3), MemoryMB: pick(r, 0, 0, 512, 1024, 3000)},
		AcquireTimeout: pick(r, fsm.Duration(20*time.Second), fsm.Duration(45*time.Second), fsm.Duration(90*time.Second), fsm.Duration(3*time.Minute)),
		MaxRetries:     pick(r, nil, intp(0), intp(1), intp(2), intp(3)),
	}
	if !strings.HasSuffix(scen, "-vp9") { // vp9 has no NVENC encoder
		s.Hardware = pick(r, fsm.HardwareAny, fsm.HardwareAny, fsm.HardwareAny, fsm.HardwareSoftware, fsm.HardwareNVENC)
	}
	switch {
	case r.IntN(8) > 0:
	case s.Hardware == fsm.HardwareNVENC:
		// A ladder that holds two NVENC sessions.
		s.Outputs = append(s.Outputs, fsm.Output{URL: "file:///out/" + id + "-low.mp4", Video: &fsm.VideoParams{Codec: "h264", Height: 360}})
	default:
		// A ladder that needs two encoders.
		s.Outputs = append(s.Outputs, fsm.Output{URL: "file:///out/" + id + "-low.webm", Video: &fsm.VideoParams{Codec: "vp9", Height: 360}})
	}
	return s
}

// report picks a known attempt, most often a recent one.
func (g *gen) report() (fsm.Report, bool) {
	if len(g.attempts) == 0 {
		return fsm.Report{}, false
	}
	if g.r.IntN(4) > 0 {
		return g.attempts[max(0, len(g.attempts)-1-g.r.IntN(6))], true
	}
	return g.attempts[g.r.IntN(len(g.attempts))], true
}

func (g *gen) jobID() (string, bool) {
	if len(g.jobs) == 0 {
		return "", false
	}
	if g.r.IntN(3) > 0 {
		return g.jobs[max(0, len(g.jobs)-1-g.r.IntN(8))], true
	}
	return g.jobs[g.r.IntN(len(g.jobs))], true
}

// next returns the next command or commands; assigns and expires are the
// scheduler's decisions not yet proposed.
func (g *gen) next(f *fsm.FSM, assigns *[]*fsm.AssignJob, expires *[]*fsm.ExpireJob) []fsm.Command {
	r := g.r
	one := func(c fsm.Command) []fsm.Command { return []fsm.Command{c} }
	type op struct {
		weight int
		do     func() []fsm.Command // nil if it has nothing to do
	}
	ops := []op{
		{2, func() []fsm.Command { return one(g.tenant(pick(r, "t1", "t2", "t3", "t4"))) }},
		{2, func() []fsm.Command {
			id := fmt.Sprintf("k%d", g.nextKey+1)
			if g.nextKey > 0 && r.IntN(5) == 0 {
				id = fmt.Sprintf("k%d", 1+r.IntN(g.nextKey)) // a duplicate
			} else {
				g.nextKey++
			}
			h := sha256.Sum256([]byte(id))
			return one(&fsm.CreateAPIKey{Key: fsm.APIKey{ID: id, TenantID: pick(r, "t1", "t2", "t3", "t9"), User: "user-" + id,
				Role: pick(r, fsm.RoleTenantAdmin, fsm.RoleOperator, fsm.RoleViewer), Hash: h[:], CreatedAt: g.now}})
		}},
		{1, func() []fsm.Command { return one(&fsm.RevokeAPIKey{ID: pick(r, g.keyIDs()...), At: g.now}) }},
		{1, func() []fsm.Command {
			return one(&fsm.RecordAudit{Result: pick(r, fsm.Code("permission_denied"), fsm.ResultOK)})
		}},
		{3, func() []fsm.Command {
			c := &fsm.UpdateTenant{ID: pick(r, "t1", "t2", "t3", "t9"), At: g.now}
			switch r.IntN(5) {
			case 0:
				c.MaxJobs = new(pick(r, 0, 0, 2, 5, 20))
			case 1:
				c.MaxConcurrentJobs = new(pick(r, 0, 0, 1, 2))
			case 2:
				c.MaxCPU = new(pick(r, 0, 0, 1.5, 4))
			case 3:
				c.MaxWorkers = new(pick(r, 0, 1, 1))
			default:
				c.Disabled = new(r.IntN(3) == 0)
			}
			return one(c)
		}},
		// t4 may be deleted (a tombstone from then on); t9 never exists.
		{1, func() []fsm.Command { return one(&fsm.DeleteTenant{ID: pick(r, "t4", "t9"), At: g.now}) }},
		{1, func() []fsm.Command { return one(&fsm.AdoptOrphans{TenantID: pick(r, "t1", "t9"), At: g.now}) }},
		{2, func() []fsm.Command {
			u := g.user(pick(r, "u1", "u2", "u3", "u4", "u5", "u6"))
			c := &fsm.CreateUser{User: u}
			if r.IntN(3) == 0 {
				k := g.newKey()
				k.UserID, k.TenantID = u.ID, u.TenantID
				c.Key = &k
			}
			return one(c)
		}},
		{1, func() []fsm.Command {
			c := &fsm.UpdateUser{ID: pick(r, "u1", "u2", "u3", "u7", "u-missing"), At: g.now}
			if r.IntN(2) == 0 {
				c.Role = pick(r, fsm.RolesByPower...)
			} else {
				d := r.IntN(2) == 0
				c.Disabled = &d
			}
			return one(c)
		}},
		{1, func() []fsm.Command {
			k := g.newKey()
			k.UserID = pick(r, "u1", "u2", "u3", "u7", "u-missing")
			return one(&fsm.CreateAPIKey{Key: k})
		}},
		{1, func() []fsm.Command {
			ttl := pick(r, time.Minute, 10*time.Second, time.Hour)
			return one(&fsm.CreateInvitation{Invitation: fsm.Invitation{ID: pick(r, "i1", "i2", "i3", "i4"), TenantID: pick(r, "t1", "t2", "t9"),
				Email: pick(r, propEmails...), Role: pick(r, fsm.RolesByPower...), Hash: make([]byte, 32), CreatedAt: g.now, ExpiresAt: g.now.Add(ttl)}})
		}},
		{2, func() []fsm.Command {
			k := g.newKey()
			u := fsm.User{ID: pick(r, "u7", "u8", "u9", "u1"), CreatedAt: g.now}
			k.UserID = u.ID
			return one(&fsm.AcceptInvitation{InvitationID: pick(r, "i1", "i2", "i3", "i4", "i-missing"), User: u, Key: k, At: g.now})
		}},
		// An invitation accepted a second time (or, if none was accepted
		// yet, a pending one accepted by a new user): invitation_used.
		{1, func() []fsm.Command {
			accept := func(id string) []fsm.Command {
				g.nextUser++
				u := fsm.User{ID: fmt.Sprintf("ua%d", g.nextUser), CreatedAt: g.now}
				k := g.newKey()
				k.UserID = u.ID
				return one(&fsm.AcceptInvitation{InvitationID: id, User: u, Key: k, At: g.now})
			}
			pending := ""
			for _, id := range []string{"i1", "i2", "i3", "i4"} {
				inv, ok := f.Invitation(id)
				switch {
				case !ok || inv.Revoked:
				case !inv.AcceptedAt.IsZero():
					return accept(id)
				case pending == "" && inv.ExpiresAt.After(g.now):
					pending = id
				}
			}
			if pending == "" {
				return nil
			}
			return accept(pending)
		}},
		{1, func() []fsm.Command {
			return one(&fsm.RevokeInvitation{ID: pick(r, "i1", "i2", "i3", "i4", "i-missing"), At: g.now})
		}},
		{2, func() []fsm.Command {
			old := pick(r, g.keyIDs()...)
			return one(&fsm.RotateAPIKey{ID: old, Key: g.newKey(), Grace: pick(r, fsm.Duration(0), fsm.Duration(time.Minute), fsm.Duration(time.Hour)), At: g.now})
		}},
		{2, func() []fsm.Command {
			var uses []fsm.KeyUse
			for range 1 + r.IntN(3) {
				uses = append(uses, fsm.KeyUse{ID: pick(r, g.keyIDs()...), At: g.now.Add(time.Duration(r.IntN(120)-60) * time.Second)})
			}
			return one(&fsm.TouchAPIKeys{Keys: uses})
		}},
		{3, func() []fsm.Command { return one(g.register(pick(r, g.workers...))) }},
		// A dedicated worker, not up, of a tenant with max_workers (set to
		// 1 first if need be): refused once the tenant's others fill it.
		{1, func() []fsm.Command {
			for _, w := range g.workers {
				t, ok := f.Tenant(w.TenantID)
				if cur, up := f.Worker(w.ID); !ok || (up && cur.State == fsm.WorkerUp) {
					continue
				}
				if t.Limits.MaxWorkers == 0 {
					return one(&fsm.UpdateTenant{ID: t.ID, MaxWorkers: new(1), At: g.now})
				}
				return one(g.register(w))
			}
			return nil
		}},
		{1, func() []fsm.Command {
			id := pick(r, "wt1", "wt2", "wt3", "wt4", "wt5")
			h := sha256.Sum256([]byte(id))
			// wt3 is the dedicated worker w3's (tenant t2); wt5's tenant
			// never exists.
			tenant := map[string]string{"wt3": "t2", "wt5": "t9"}[id]
			return one(&fsm.CreateWorkerToken{Token: fsm.WorkerToken{ID: id, TenantID: tenant, Name: "token " + id,
				Hash: h[:], CreatedAt: g.now, CreatedBy: "k1"}})
		}},
		{1, func() []fsm.Command {
			return one(&fsm.RevokeWorkerToken{ID: pick(r, "wt1", "wt2", "wt3", "wt4", "wt-missing"), At: g.now})
		}},
		// The leader's retention: a tenant's jobs that finished before a
		// cutoff, as the store lists them, maybe with an active job, a
		// job of another tenant or an unknown ID, which Apply keeps.
		{2, func() []fsm.Command {
			tenant := pick(r, "t1", "t2", "t3", "t4")
			ret := pick(r, 30*time.Second, time.Minute, 5*time.Minute)
			ids, err := f.Store().FinishedJobs(context.Background(), &fsm.FinishedJobsParams{TenantID: tenant, Before: g.now.Add(-ret), Limit: 1 + r.IntN(6)})
			if err != nil {
				g.t.Fatalf("finished jobs: %v", err)
			}
			if id, ok := g.jobID(); ok && r.IntN(2) == 0 {
				ids = append(ids, id)
			}
			if r.IntN(8) == 0 {
				ids = append(ids, "j-missing")
			}
			if len(ids) == 0 {
				return nil
			}
			return one(&fsm.PurgeJobs{TenantID: tenant, IDs: ids, Retention: fsm.Duration(ret), At: g.now})
		}},
		{1, func() []fsm.Command {
			c := &fsm.UpdateTenant{ID: pick(r, "t1", "t2", "t3"), At: g.now}
			switch r.IntN(3) {
			case 0:
				c.DefaultRetention = true
			default:
				c.Retention = new(pick(r, fsm.Duration(0), fsm.Duration(time.Minute), fsm.Duration(time.Hour)))
			}
			return one(c)
		}},
		{14, func() []fsm.Command {
			g.nextJob++
			id := fmt.Sprintf("j%04d", g.nextJob)
			g.jobs = append(g.jobs, id)
			job := newJob(g.t, id, pick(r, "t1", "t1", "t2", "t2", "t3", "t3", "t4", "t9"), g.spec(id), g.now)
			switch r.IntN(15) {
			case 0:
				// The same submission applied twice (a follower resends it
				// after a leader change): the job it created.
				return []fsm.Command{&fsm.SubmitJob{Job: job}, &fsm.SubmitJob{Job: job}}
			case 1:
				// An older ID again, likely finished by now: a finished job
				// must stay as it is.
				old := g.jobs[r.IntN(len(g.jobs))]
				return one(&fsm.SubmitJob{Job: newJob(g.t, old, job.TenantID, g.spec(old), g.now)})
			case 2, 3, 4:
				return one(g.submitBatch(job))
			}
			return one(&fsm.SubmitJob{Job: job})
		}},
		{18, func() []fsm.Command {
			if len(*assigns) == 0 {
				return nil
			}
			a := (*assigns)[0]
			*assigns = (*assigns)[1:]
			g.attempts = append(g.attempts, fsm.Report{JobID: a.JobID, WorkerID: a.WorkerID, Attempt: a.Attempt})
			return one(a)
		}},
		// A valid assignment a scheduler's stale decision could make for a
		// tenant with a concurrency limit (set to 1 first if need be):
		// Apply judges the quota again.
		{1, func() []fsm.Command {
			for range 8 {
				id, ok := g.jobID()
				if !ok {
					return nil
				}
				j, ok := f.ActiveJob(id)
				if !ok || j.State != fsm.JobQueued {
					continue
				}
				t, ok := f.Tenant(j.TenantID)
				if !ok {
					continue
				}
				if t.Limits.MaxConcurrentJobs == 0 {
					return one(&fsm.UpdateTenant{ID: t.ID, MaxConcurrentJobs: new(1), At: g.now})
				}
				for _, w := range f.Workers("") {
					if w.State == fsm.WorkerUp && !w.Draining && (w.TenantID == "" || w.TenantID == j.TenantID) {
						g.attempts = append(g.attempts, fsm.Report{JobID: id, WorkerID: w.ID, Attempt: j.Attempt + 1})
						return one(&fsm.AssignJob{JobID: id, WorkerID: w.ID, Attempt: j.Attempt + 1, At: g.now})
					}
				}
			}
			return nil
		}},
		{3, func() []fsm.Command {
			id, ok := g.jobID()
			if !ok {
				return nil
			}
			attempt := r.IntN(4)
			if j, ok := f.ActiveJob(id); ok && r.IntN(2) == 0 {
				attempt = j.Attempt + 1
			}
			w := pick(r, "w1", "w2", "w3", "w4", "w5", "w-missing")
			g.attempts = append(g.attempts, fsm.Report{JobID: id, WorkerID: w, Attempt: attempt})
			return one(&fsm.AssignJob{JobID: id, WorkerID: w, Attempt: attempt, At: g.now})
		}},
		{10, func() []fsm.Command {
			rep, ok := g.report()
			if !ok {
				return nil
			}
			return one(&fsm.StartJob{Report: rep, At: g.now})
		}},
		{6, func() []fsm.Command {
			rep, ok := g.report()
			if !ok {
				return nil
			}
			return one(&fsm.ProgressJob{Report: rep, Progress: fsm.Progress{Percent: float64(r.IntN(100)), Frame: int64(r.IntN(10000)),
				FPS: 30, Speed: 1.5, OutTimeMS: int64(r.IntN(60000)), UpdatedAt: g.now}})
		}},
		{5, func() []fsm.Command {
			rep, ok := g.report()
			if !ok {
				return nil
			}
			return one(&fsm.ExitJob{Report: rep, At: g.now})
		}},
		{12, func() []fsm.Command {
			rep, ok := g.report()
			if !ok {
				return nil
			}
			c := &fsm.FinishJob{Report: rep, At: g.now, Log: fmt.Sprintf("frame=%d", r.IntN(1000))}
			switch r.IntN(10) {
			case 0, 1:
				c.Error = &fsm.Error{Code: fsm.CodeFFmpeg, Message: "exit status 1"}
			case 2, 3, 4:
				c.Error = &fsm.Error{Code: pick(r, fsm.CodeFFmpeg, fsm.CodeTimeout), Message: "transient"}
				c.Retryable = true
			default:
				c.Result = &fsm.Result{Outputs: []fsm.OutputResult{{URL: "file:///out/" + rep.JobID + ".mkv", Codec: "h264", Width: 1280, Height: 720, FPS: 30, DurationSec: 1, SizeBytes: 1234}}}
			}
			return one(c)
		}},
		{2, func() []fsm.Command {
			rep, ok := g.report()
			if !ok {
				return nil
			}
			return one(&fsm.RequeueJob{Report: rep, Reason: fsm.Error{Code: fsm.CodeWorkerLost, Message: "dispatch failed"}, At: g.now})
		}},
		{3, func() []fsm.Command {
			id, ok := g.jobID()
			if !ok {
				return nil
			}
			return one(&fsm.CancelJob{JobID: id, At: g.now})
		}},
		{3, func() []fsm.Command {
			rep, ok := g.report()
			if !ok {
				return nil
			}
			g.paused = append(g.paused, rep.JobID)
			return one(&fsm.PauseJob{JobID: rep.JobID, At: g.now})
		}},
		{3, func() []fsm.Command {
			if len(g.paused) == 0 {
				return nil
			}
			id := g.paused[len(g.paused)-1-r.IntN(min(3, len(g.paused)))]
			return one(&fsm.ResumeJob{JobID: id, At: g.now})
		}},
		{4, func() []fsm.Command {
			if len(*expires) == 0 {
				return nil
			}
			e := (*expires)[0]
			*expires = (*expires)[1:]
			return one(e)
		}},
		{1, func() []fsm.Command {
			id, ok := g.jobID()
			if !ok {
				return nil
			}
			return one(&fsm.ExpireJob{JobID: id, Code: pick(r, fsm.CodeAcquireTimeout, fsm.CodeNoCapableWorker), At: g.now,
				CountFrom: pick(r, time.Time{}, g.now.Add(-time.Duration(r.IntN(600))*time.Second))})
		}},
	}
	total := 0
	for _, o := range ops {
		total += o.weight
	}
	for {
		n := r.IntN(total)
		for _, o := range ops {
			if n < o.weight {
				if cmds := o.do(); cmds != nil {
					return cmds
				}
				break
			}
			n -= o.weight
		}
	}
}
