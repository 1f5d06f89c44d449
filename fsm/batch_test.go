package fsm_test

import (
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestSubmitJobsValidation: a batch holds 1 to MaxSubmitBatch valid
// items, a refusal names the item, and a batch in an envelope is refused
// (its actors travel per item).
func TestSubmitJobsValidation(t *testing.T) {
	t.Parallel()
	good := newJob(t, "j1", "t1", spec("720p30-h264"), t0)
	bad := good
	bad.ID = ""
	actor := &fsm.Actor{User: "ann", Action: "submitJobs"}
	many := make([]fsm.SubmitItem, fsm.MaxSubmitBatch+1)
	for i := range many {
		many[i] = fsm.SubmitItem{Job: good}
	}
	for _, tc := range []struct {
		name  string
		c     *fsm.SubmitJobs
		actor *fsm.Actor
		want  string // "" for valid, else a substring of the refusal
	}{
		{"one item with an actor", &fsm.SubmitJobs{Items: []fsm.SubmitItem{{Job: good, Actor: actor}}}, nil, ""},
		{"empty", &fsm.SubmitJobs{}, nil, "1 to 1000"},
		{"too many", &fsm.SubmitJobs{Items: many}, nil, "1 to 1000"},
		{"bad second item", &fsm.SubmitJobs{Items: []fsm.SubmitItem{{Job: good}, {Job: bad}}}, nil, "items[1]: "},
		{"bad actor", &fsm.SubmitJobs{Items: []fsm.SubmitItem{{Job: good, Actor: &fsm.Actor{User: "ann"}}}}, nil, "items[0]: actor.action"},
		{"in an envelope", &fsm.SubmitJobs{Items: []fsm.SubmitItem{{Job: good}}}, actor, "an actor per item"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := fsm.EncodeAs(tc.c, tc.actor)
			if err != nil {
				t.Fatal(err)
			}
			_, err = fsm.DecodeCommand(data)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("DecodeCommand: %v, want valid", err)
			case tc.want != "" && (fsm.ErrorCode(err) != fsm.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("DecodeCommand: %v, want invalid_argument with %q", err, tc.want)
			}
		})
	}
}
