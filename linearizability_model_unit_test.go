package main

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// op builds a history entry of client c over [call, ret] (ret < 0: no
// answer, infinity).
func op(c int, call, ret int64, kind jobOpKind, id string, out jobOutput) porcupine.Operation {
	if ret < 0 {
		ret = math.MaxInt64
		out.Unknown = true
	}
	return porcupine.Operation{ClientId: c, Input: jobInput{Kind: kind, Tenant: "t", ID: id}, Call: call, Output: out, Return: ret}
}

func ok(s fsm.JobState) jobOutput  { return jobOutput{State: s} }
func refused(c fsm.Code) jobOutput { return jobOutput{Code: c} }
func listed(js ...listedJob) jobOutput {
	sortListed(js)
	return jobOutput{Jobs: js}
}

const (
	q = fsm.JobQueued
	x = fsm.JobCanceled
)

// TestJobModel checks the sequential specification on small hand-written
// histories, legal and illegal.
func TestJobModel(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		legal bool
		ops   []porcupine.Operation
	}{
		{"submit, cancel, read back", true, []porcupine.Operation{
			op(0, 0, 1, opSubmit, "a", ok(q)),
			op(0, 2, 3, opCancel, "a", ok(x)),
			op(1, 4, 5, opGet, "a", ok(x)),
			op(1, 6, 7, opCancel, "a", refused(fsm.CodeInvalidTransition)),
			op(1, 8, 9, opList, "", listed(listedJob{ID: "a", State: x})),
		}},
		{"a read after an acknowledged cancel sees queued (stale)", false, []porcupine.Operation{
			op(0, 0, 1, opSubmit, "a", ok(q)),
			op(0, 2, 3, opCancel, "a", ok(x)),
			op(1, 4, 5, opGet, "a", ok(q)),
		}},
		{"a read concurrent with the cancel may see either", true, []porcupine.Operation{
			op(0, 0, 1, opSubmit, "a", ok(q)),
			op(0, 2, 6, opCancel, "a", ok(x)),
			op(1, 3, 4, opGet, "a", ok(q)),
			op(2, 3, 5, opGet, "a", ok(x)),
		}},
		{"reads go back in time", false, []porcupine.Operation{
			op(0, 0, 1, opSubmit, "a", ok(q)),
			op(0, 2, 9, opCancel, "a", ok(x)),
			op(1, 3, 4, opGet, "a", ok(x)),
			op(2, 5, 6, opGet, "a", ok(q)),
		}},
		{"an unanswered submit may have happened", true, []porcupine.Operation{
			op(0, 0, -1, opSubmit, "a", jobOutput{}),
			op(1, 2, 3, opGet, "a", refused(fsm.CodeNotFound)),
			op(1, 4, 5, opGet, "a", ok(q)),
			op(1, 6, 7, opGet, "a", ok(q)),
		}},
		{"an unanswered submit happens once", false, []porcupine.Operation{
			op(0, 0, -1, opSubmit, "a", jobOutput{}),
			op(1, 2, 3, opGet, "a", ok(q)),
			op(1, 4, 5, opGet, "a", refused(fsm.CodeNotFound)),
		}},
		{"an unanswered cancel may never happen", true, []porcupine.Operation{
			op(0, 0, 1, opSubmit, "a", ok(q)),
			op(0, 2, -1, opCancel, "a", jobOutput{}),
			op(1, 3, 4, opGet, "a", ok(q)),
			op(1, 100, 101, opPause, "a", refused(fsm.CodeInvalidTransition)),
		}},
		{"cancel of a missing job is not_found, of a canceled one invalid_transition", false, []porcupine.Operation{
			op(0, 0, 1, opSubmit, "a", ok(q)),
			op(0, 2, 3, opCancel, "a", ok(x)),
			op(1, 4, 5, opCancel, "a", refused(fsm.CodeNotFound)),
		}},
		{"a replayed submit answers the job as it is", true, []porcupine.Operation{
			op(0, 0, 1, opSubmit, "a", ok(q)),
			op(0, 2, 3, opCancel, "a", ok(x)),
			op(1, 4, 5, opSubmit, "a", ok(x)),
		}},
		{"a replayed submit answers an old state", false, []porcupine.Operation{
			op(0, 0, 1, opSubmit, "a", ok(q)),
			op(0, 2, 3, opCancel, "a", ok(x)),
			op(1, 4, 5, opSubmit, "a", ok(q)),
		}},
		{"retry of a canceled job; retry of a queued one is refused", true, []porcupine.Operation{
			op(0, 0, 1, opSubmit, "a", ok(q)),
			op(0, 2, 3, opRetry, "a", refused(fsm.CodeInvalidTransition)),
			op(0, 4, 5, opCancel, "a", ok(x)),
			op(1, 6, 7, opRetry, "a", jobOutput{NewID: "b", State: q}),
			op(1, 8, 9, opGet, "b", ok(q)),
			op(1, 10, 11, opList, "", listed(listedJob{ID: "a", State: x}, listedJob{ID: "b", State: q, RetryOf: "a"})),
		}},
		{"a retry refused after an acknowledged cancel", false, []porcupine.Operation{
			op(0, 0, 1, opSubmit, "a", ok(q)),
			op(0, 2, 3, opCancel, "a", ok(x)),
			op(1, 4, 5, opRetry, "a", refused(fsm.CodeInvalidTransition)),
		}},
		{"an unanswered retry's job shows up anonymous", true, []porcupine.Operation{
			op(0, 0, 1, opSubmit, "a", ok(q)),
			op(0, 2, 3, opCancel, "a", ok(x)),
			op(0, 4, -1, opRetry, "a", jobOutput{}),
			op(1, 5, 6, opList, "", listed(listedJob{ID: "a", State: x})),
			op(1, 7, 8, opList, "", listed(listedJob{ID: "a", State: x}, listedJob{ID: "zz", State: q, RetryOf: "a"})),
		}},
		{"a list misses an acknowledged submit", false, []porcupine.Operation{
			op(0, 0, 1, opSubmit, "a", ok(q)),
			op(0, 2, 3, opSubmit, "b", ok(q)),
			op(1, 4, 5, opList, "", listed(listedJob{ID: "a", State: q})),
		}},
		{"a list shows a job no submit made", false, []porcupine.Operation{
			op(0, 0, 1, opSubmit, "a", ok(q)),
			op(1, 4, 5, opList, "", listed(listedJob{ID: "a", State: q}, listedJob{ID: "zz", State: q})),
		}},
		{"a list shows a job twice", false, []porcupine.Operation{
			op(0, 0, 1, opSubmit, "a", ok(q)),
			op(0, 2, 3, opSubmit, "b", ok(q)),
			op(1, 4, 5, opList, "", listed(listedJob{ID: "a", State: q}, listedJob{ID: "a", State: q})),
		}},
		{"pause and resume of a queued job are refused and change nothing", true, []porcupine.Operation{
			op(0, 0, 1, opSubmit, "a", ok(q)),
			op(0, 2, 3, opPause, "a", refused(fsm.CodeInvalidTransition)),
			op(0, 4, 5, opResume, "a", refused(fsm.CodeInvalidTransition)),
			op(0, 6, 7, opGet, "a", ok(q)),
			op(0, 8, 9, opResume, "b", refused(fsm.CodeNotFound)),
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			anonymize(tc.ops)
			res, _ := porcupine.CheckOperationsVerbose(jobModel, tc.ops, 10*time.Second)
			if want := map[bool]porcupine.CheckResult{true: porcupine.Ok, false: porcupine.Illegal}[tc.legal]; res != want {
				t.Errorf("got %s, want %s", res, want)
			}
		})
	}
}

// TestWithoutUnobserved: the unanswered operations left out before a
// first check are those whose effect no answer shows; the rest stay.
func TestWithoutUnobserved(t *testing.T) {
	t.Parallel()
	h := []porcupine.Operation{
		op(0, 0, -1, opSubmit, "seen", jobOutput{}),
		op(0, 1, -1, opSubmit, "unseen", jobOutput{}),
		op(0, 2, -1, opCancel, "seen", jobOutput{}),
		op(0, 3, -1, opCancel, "other", jobOutput{}),
		op(0, 4, 5, opSubmit, "other", ok(q)),
		op(0, 6, -1, opPause, "seen", jobOutput{}),
		op(0, 7, -1, opRetry, "seen", jobOutput{}),
		op(0, 8, -1, opRetry, "other", jobOutput{}),
		op(1, 9, 10, opList, "", listed(listedJob{ID: "seen", State: x}, listedJob{ID: "other", State: q},
			listedJob{ID: "anon", State: q, RetryOf: "seen"})),
		op(1, 11, 12, opGet, "unseen", refused(fsm.CodeNotFound)),
	}
	anonymize(h)
	var got []string
	for _, o := range withoutUnobserved(h) {
		in := o.Input.(jobInput)
		got = append(got, in.Kind.String()+"("+in.ID+")")
	}
	want := []string{"submit(seen)", "cancel(seen)", "submit(other)", "retry(seen)", "list()", "get(unseen)"}
	if !slices.Equal(got, want) {
		t.Errorf("kept %v, want %v", got, want)
	}
	for _, hist := range [][]porcupine.Operation{h, withoutUnobserved(h)} {
		if res := porcupine.CheckOperations(jobModel, hist); !res {
			t.Errorf("history of %d operations: not linearizable", len(hist))
		}
	}
}
