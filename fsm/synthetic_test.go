package fsm_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// synthetic is a scheduler load harness: an FSM on a bolt store fed
// command batches directly (no Raft), synthetic workers that exist only
// as registrations (no processes, no ffmpeg), and a synthetic executor
// that "runs" a job by applying its FinishJob. It exists only to load the
// scheduler and must not stand in for a real worker anywhere else.
type synthetic struct {
	*node
	r       *rand.Rand
	now     time.Time
	fair    *fsm.Fairness
	kinds   map[string]jobKind // by name
	nextJob int
	// kindOf remembers which kind each submitted job is, so a finished
	// job can be replaced by one like it.
	kindOf map[string]string
}

// jobKind is a spec compiled once and submitted many times by one tenant.
type jobKind struct {
	tenant string
	spec   fsm.JobSpec
	plan   fsm.Plan
}

func newSynthetic(tb testing.TB, seed uint64, tenants []string) *synthetic {
	tb.Helper()
	s := &synthetic{
		node: newNode(tb), r: rand.New(rand.NewPCG(seed, seed)), now: t0,
		fair: fsm.NewFairness(), kinds: map[string]jobKind{}, kindOf: map[string]string{},
	}
	var cmds []fsm.Command
	for _, tn := range tenants {
		cmds = append(cmds, &fsm.CreateTenant{Tenant: fsm.Tenant{ID: tn, Name: tn, CreatedAt: t0}})
	}
	s.applyAll(cmds)
	return s
}

// kind compiles sp as a kind of job that tenant submits.
func (s *synthetic) kind(name, tenant string, sp fsm.JobSpec) {
	s.t.Helper()
	plan, err := sp.Compile(fsm.Policy{})
	if err != nil {
		s.t.Fatalf("compile kind %s: %v", name, err)
	}
	s.kinds[name] = jobKind{tenant: tenant, spec: sp, plan: *plan}
}

// workers registers synthetic workers.
func (s *synthetic) workers(ws []fsm.Worker) {
	cmds := make([]fsm.Command, len(ws))
	for i, w := range ws {
		w.Name, w.Incarnation, w.RegisteredAt = w.ID, "synthetic", t0
		cmds[i] = &fsm.RegisterWorker{Worker: w, At: t0}
	}
	s.applyAll(cmds)
}

// submitCmds returns SubmitJob commands for one new job of each named
// kind, in order.
func (s *synthetic) submitCmds(kinds []string) []fsm.Command {
	cmds := make([]fsm.Command, len(kinds))
	for i, name := range kinds {
		k, ok := s.kinds[name]
		if !ok {
			s.t.Fatalf("unknown job kind %q", name)
		}
		id := fmt.Sprintf("job-%07d", s.nextJob)
		s.nextJob++
		s.kindOf[id] = name
		cmds[i] = &fsm.SubmitJob{Job: fsm.Job{ID: id, TenantID: k.tenant, Spec: k.spec, Plan: k.plan, SubmittedAt: s.now}}
	}
	return cmds
}

// applyAll applies cmds in batches of at most 1000 and fails on any
// refusal.
func (s *synthetic) applyAll(cmds []fsm.Command) []any {
	s.t.Helper()
	var out []any
	for len(cmds) > 0 {
		n := min(len(cmds), 1000)
		resps := s.apply(cmds[:n]...)
		for i, r := range resps {
			if err, ok := r.(error); ok {
				s.t.Fatalf("apply %T %+v: refused: %v", cmds[i], cmds[i], err)
			}
		}
		out = append(out, resps...)
		cmds = cmds[n:]
	}
	return out
}

// finishCmds returns the synthetic executor's success reports for the
// given assignments.
func finishCmds(as []*fsm.AssignJob, at time.Time) []fsm.Command {
	cmds := make([]fsm.Command, len(as))
	for i, a := range as {
		cmds[i] = &fsm.FinishJob{Report: fsm.Report{JobID: a.JobID, WorkerID: a.WorkerID, Attempt: a.Attempt}, At: at}
	}
	return cmds
}

// assignCmds returns the decisions' assignments as commands.
func assignCmds(d *fsm.Decisions) []fsm.Command {
	cmds := make([]fsm.Command, len(d.Assign))
	for i, a := range d.Assign {
		cmds[i] = a
	}
	return cmds
}
