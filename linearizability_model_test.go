package main

import (
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// The job API as a sequential specification for porcupine, in a cluster
// without workers: a job is absent, queued or canceled. Nothing but a
// client moves it, so every state change in a history is the effect of
// one of the history's own operations.
//
//	submit(id)  absent: creates it queued, answers queued (201);
//	            present: answers it as it is (a replay, 200).
//	get(id)     absent: not_found; present: its state.
//	cancel(id)  absent: not_found; queued: canceled, answers canceled;
//	            canceled: invalid_transition.
//	pause(id), resume(id)
//	            absent: not_found; queued or canceled: invalid_transition
//	            (pause needs running, resume paused; no job ever runs).
//	retry(id)   absent: not_found; queued: invalid_transition;
//	            canceled: a new queued job that names it in retry_of,
//	            with an ID the server stamps.
//	list        every job of the tenant with its state and retry_of.
//
// An operation that got no answer (a transport error, a timeout, a 5xx)
// may or may not have taken effect: it is recorded with an unknown output
// and a return time of infinity, and its step applies it whenever the
// model can (so porcupine may place it anywhere after its call, or at the
// end, where it changes nothing anyone saw). A read that got no answer
// observed nothing and changes nothing, so it is left out of the history.
//
// A job that an unanswered retry created has an ID no client learned:
// such jobs are anonymous in the model (counted per retry_of), and a list
// shows them with their IDs blanked (see anonymize).
//
// Tenants share nothing, so a history is checked per tenant (partitions);
// within a tenant a list reads every job, so there is no finer partition.

// jobOpKind is an operation of the job API.
type jobOpKind uint8

const (
	opSubmit jobOpKind = iota
	opGet
	opCancel
	opPause
	opResume
	opRetry
	opList
)

var opNames = [...]string{"submit", "get", "cancel", "pause", "resume", "retry", "list"}

func (k jobOpKind) String() string { return opNames[k] }

// jobInput is an operation's call: its kind, the tenant and the job it
// names (submit: the Idempotency-Key, which becomes the job's ID).
type jobInput struct {
	Kind   jobOpKind
	Tenant string
	ID     string
}

// jobOutput is an operation's answer.
type jobOutput struct {
	// Unknown: no answer; the operation may or may not have taken effect.
	Unknown bool
	// NotSent: the request never left the client (no connection could
	// be made); it is no operation and stays out of the history.
	NotSent bool
	// Code is the error code of a refusal, "" for success.
	Code fsm.Code
	// State is the job's state in a successful answer (not list).
	State fsm.JobState
	// NewID is the job a successful retry created.
	NewID string
	// Jobs is a successful list's answer, sorted (see sortListed).
	Jobs []listedJob
}

// listedJob is one job of a list answer; ID is "" for a job whose ID no
// client learned (an unanswered retry created it).
type listedJob struct {
	ID      string
	State   fsm.JobState
	RetryOf string
}

// modelJob is a job the model knows by ID.
type modelJob struct {
	State   fsm.JobState
	RetryOf string
}

// jobsState is the model's state of one tenant. It is never mutated: a
// step that changes it returns a copy.
type jobsState struct {
	jobs map[string]modelJob
	anon map[string]int // retry_of: jobs created by unanswered retries
}

func (s jobsState) with(id string, j modelJob) jobsState {
	n := jobsState{jobs: maps.Clone(s.jobs), anon: s.anon}
	if n.jobs == nil {
		n.jobs = map[string]modelJob{}
	}
	n.jobs[id] = j
	return n
}

func (s jobsState) withAnon(retryOf string) jobsState {
	n := jobsState{jobs: s.jobs, anon: maps.Clone(s.anon)}
	if n.anon == nil {
		n.anon = map[string]int{}
	}
	n.anon[retryOf]++
	return n
}

// list is what a list of the tenant answers in state s.
func (s jobsState) list() []listedJob {
	out := make([]listedJob, 0, len(s.jobs))
	for id, j := range s.jobs {
		out = append(out, listedJob{ID: id, State: j.State, RetryOf: j.RetryOf})
	}
	for of, n := range s.anon {
		for range n {
			out = append(out, listedJob{State: fsm.JobQueued, RetryOf: of})
		}
	}
	sortListed(out)
	return out
}

// lists reports whether js (sorted) is what a list answers in state s:
// list, without building it.
func (s jobsState) lists(js []listedJob) bool {
	anon := 0
	for _, n := range s.anon {
		anon += n
	}
	if len(js) != len(s.jobs)+anon {
		return false
	}
	var seen map[string]int
	for k, j := range js {
		if k > 0 && j.ID != "" && j.ID == js[k-1].ID {
			return false
		}
		if j.ID == "" {
			if j.State != fsm.JobQueued {
				return false
			}
			if seen == nil {
				seen = map[string]int{}
			}
			if seen[j.RetryOf]++; seen[j.RetryOf] > s.anon[j.RetryOf] {
				return false
			}
			continue
		}
		if m, ok := s.jobs[j.ID]; !ok || m.State != j.State || m.RetryOf != j.RetryOf {
			return false
		}
	}
	return true // as many, none twice: every job of s was matched
}

func sortListed(js []listedJob) {
	sort.Slice(js, func(a, b int) bool {
		x, y := js[a], js[b]
		if x.ID != y.ID {
			return x.ID < y.ID
		}
		if x.RetryOf != y.RetryOf {
			return x.RetryOf < y.RetryOf
		}
		return x.State < y.State
	})
}

// jobStep is the sequential specification: whether op (in, out) can
// happen in state s, and the state after it.
func jobStep(s jobsState, in jobInput, out jobOutput) (bool, jobsState) {
	j, exists := s.jobs[in.ID]
	if out.Unknown {
		// Applied here, if it could be; porcupine also tries later
		// places, and the end (not applied at all).
		switch {
		case in.Kind == opSubmit && !exists:
			return true, s.with(in.ID, modelJob{State: fsm.JobQueued})
		case in.Kind == opCancel && exists && j.State == fsm.JobQueued:
			return true, s.with(in.ID, modelJob{State: fsm.JobCanceled, RetryOf: j.RetryOf})
		case in.Kind == opRetry && exists && j.State == fsm.JobCanceled:
			return true, s.withAnon(in.ID)
		}
		return true, s
	}
	if in.Kind == opList {
		return out.Code == "" && s.lists(out.Jobs), s
	}
	if in.Kind == opSubmit {
		if !exists {
			return out.Code == "" && out.State == fsm.JobQueued, s.with(in.ID, modelJob{State: fsm.JobQueued})
		}
		return out.Code == "" && out.State == j.State, s
	}
	if !exists {
		return out.Code == fsm.CodeNotFound, s
	}
	switch in.Kind {
	case opGet:
		return out.Code == "" && out.State == j.State, s
	case opCancel:
		if j.State == fsm.JobCanceled {
			return out.Code == fsm.CodeInvalidTransition, s
		}
		return out.Code == "" && out.State == fsm.JobCanceled, s.with(in.ID, modelJob{State: fsm.JobCanceled, RetryOf: j.RetryOf})
	case opPause, opResume:
		return out.Code == fsm.CodeInvalidTransition, s
	case opRetry:
		if j.State != fsm.JobCanceled {
			return out.Code == fsm.CodeInvalidTransition, s
		}
		if _, taken := s.jobs[out.NewID]; out.Code != "" || out.NewID == "" || taken || out.State != fsm.JobQueued {
			return false, s
		}
		return true, s.with(out.NewID, modelJob{State: fsm.JobQueued, RetryOf: in.ID})
	}
	return false, s
}

func (s jobsState) equal(o jobsState) bool {
	return maps.Equal(s.jobs, o.jobs) && maps.Equal(s.anon, o.anon)
}

func (s jobsState) hash() uint64 {
	var x uint64
	for id, j := range s.jobs {
		h := fnv.New64a()
		h.Write([]byte(id))
		h.Write([]byte(j.State))
		x ^= h.Sum64() // order-independent
	}
	for of, n := range s.anon {
		h := fnv.New64a()
		fmt.Fprintf(h, "%s/%d", of, n)
		x ^= h.Sum64()
	}
	return x
}

func (s jobsState) String() string {
	var b strings.Builder
	for _, j := range s.list() {
		id := j.ID
		if id == "" {
			id = "?"
		}
		fmt.Fprintf(&b, "%s:%s", short(id), j.State)
		if j.RetryOf != "" {
			fmt.Fprintf(&b, "(retry of %s)", short(j.RetryOf))
		}
		b.WriteString(" ")
	}
	return strings.TrimSpace(b.String())
}

// short abbreviates a job ID (a UUIDv7: its random tail tells jobs apart).
func short(id string) string {
	if len(id) > 8 {
		return id[len(id)-8:]
	}
	return id
}

func describeJobOp(in jobInput, out jobOutput) string {
	call := in.Kind.String() + "(" + short(in.ID) + ")"
	if in.Kind == opList {
		call = "list(" + in.Tenant + ")"
	}
	switch {
	case out.Unknown:
		return call + " -> ? (no answer)"
	case out.Code != "":
		return call + " -> " + string(out.Code)
	case in.Kind == opList:
		return call + " -> [" + jobsState{}.describeList(out.Jobs) + "]"
	case in.Kind == opRetry:
		return call + " -> " + short(out.NewID) + ":" + string(out.State)
	}
	return call + " -> " + string(out.State)
}

func (jobsState) describeList(js []listedJob) string {
	var parts []string
	for _, j := range js {
		id := j.ID
		if id == "" {
			id = "?"
		}
		parts = append(parts, short(id)+":"+string(j.State))
	}
	return strings.Join(parts, " ")
}

// jobModel is the porcupine model of the job API, partitioned by tenant.
var jobModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			t := op.Input.(jobInput).Tenant
			if _, ok := by[t]; !ok {
				order = append(order, t)
			}
			by[t] = append(by[t], op)
		}
		var out [][]porcupine.Operation
		for _, t := range order {
			out = append(out, by[t])
		}
		return out
	},
	Init: func() any { return jobsState{} },
	Step: func(state, input, output any) (bool, any) {
		return jobStep(state.(jobsState), input.(jobInput), output.(jobOutput))
	},
	Equal:             func(a, b any) bool { return a.(jobsState).equal(b.(jobsState)) },
	Hash:              func(s any) uint64 { return s.(jobsState).hash() },
	DescribeOperation: func(in, out any) string { return describeJobOp(in.(jobInput), out.(jobOutput)) },
	DescribeState:     func(s any) string { return s.(jobsState).String() },
}

// anonymize blanks, in every list answer, the IDs of jobs that no
// operation of the history named or was answered with: jobs created by
// retries whose answer was lost.
func anonymize(history []porcupine.Operation) {
	known := map[string]bool{}
	for _, op := range history {
		in, out := op.Input.(jobInput), op.Output.(jobOutput)
		if in.ID != "" {
			known[in.ID] = true
		}
		if out.NewID != "" {
			known[out.NewID] = true
		}
	}
	for i, op := range history {
		out := op.Output.(jobOutput)
		if len(out.Jobs) == 0 {
			continue
		}
		js := slices.Clone(out.Jobs)
		for k := range js {
			if !known[js[k].ID] {
				js[k].ID = ""
			}
		}
		sortListed(js)
		out.Jobs = js
		history[i].Output = out
	}
}

// withoutUnobserved returns history without the unanswered operations
// whose effect no answer shows: a submit of a job no answer shows
// existing, a cancel of a job no answer shows canceled, a retry of a job
// whose retries no list shows anonymous, and every pause and resume (they
// change nothing here). Porcupine places an unanswered operation as early
// as it can and backtracks from there, which costs time exponential in
// the number of them open at once; the ones removed here can be placed
// at the end of any linearization, after everything anyone saw, so
// if the history without them is linearizable, so is the history. (The
// converse does not hold: if it is not, check the whole history.)
func withoutUnobserved(history []porcupine.Operation) []porcupine.Operation {
	exists, canceled, anonOf := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, op := range history {
		in, out := op.Input.(jobInput), op.Output.(jobOutput)
		if out.Unknown {
			continue
		}
		for _, j := range out.Jobs {
			if j.ID == "" {
				anonOf[j.RetryOf] = true
				continue
			}
			exists[j.ID] = true
			canceled[j.ID] = canceled[j.ID] || j.State == fsm.JobCanceled
		}
		if in.Kind == opSubmit {
			// Its answer shows the job, but it may have created it
			// itself; a replay may show it canceled.
			canceled[in.ID] = canceled[in.ID] || out.State == fsm.JobCanceled
			continue
		}
		if in.Kind == opList || out.Code == fsm.CodeNotFound {
			continue
		}
		exists[in.ID] = true
		switch {
		case out.State == fsm.JobCanceled,
			in.Kind == opCancel && out.Code == fsm.CodeInvalidTransition,
			in.Kind == opRetry && out.Code == "":
			canceled[in.ID] = true
		}
		if out.NewID != "" {
			exists[out.NewID] = true
		}
	}
	var kept []porcupine.Operation
	for _, op := range history {
		in, out := op.Input.(jobInput), op.Output.(jobOutput)
		if out.Unknown {
			switch in.Kind {
			case opSubmit:
				if !exists[in.ID] {
					continue
				}
			case opCancel:
				if !canceled[in.ID] {
					continue
				}
			case opRetry:
				if !anonOf[in.ID] {
					continue
				}
			case opPause, opResume:
				continue
			}
		}
		kept = append(kept, op)
	}
	return kept
}
