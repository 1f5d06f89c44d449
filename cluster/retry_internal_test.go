package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// TestHeldErrorStaysUnknown: once a resent write's first try may have been
// applied, the error Apply gives up with is an unknown outcome, never "no
// leader", a timeout or the last try's own error, which callers read as
// "nothing applied".
func TestHeldErrorStaysUnknown(t *testing.T) {
	t.Parallel()
	first := fmt.Errorf("forward: %w: EOF", ErrUnknownOutcome)
	for _, then := range []error{fmt.Errorf("apply: %w", ErrNoLeader), context.DeadlineExceeded} {
		err := heldError(first, then)
		if !errors.Is(err, ErrUnknownOutcome) || errors.Is(err, ErrNoLeader) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("heldError(unknown, %v) = %v; want only ErrUnknownOutcome", then, err)
		}
	}
	if err := heldError(nil, ErrNoLeader); !errors.Is(err, ErrNoLeader) || errors.Is(err, ErrUnknownOutcome) {
		t.Errorf("heldError(nil, ErrNoLeader) = %v; want ErrNoLeader", err)
	}
	other := errors.New("raft: something else")
	if err := failedAfter(first, other); !errors.Is(err, ErrUnknownOutcome) {
		t.Errorf("failedAfter(unknown, %v) = %v; want ErrUnknownOutcome", other, err)
	}
	if err := failedAfter(nil, other); err != other {
		t.Errorf("failedAfter(nil, %v) = %v; want it unchanged", other, err)
	}
}
