package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// TestHeldErrorStaysUnknown: once a resent write's first try may have been
// applied, the error Apply gives up with is an unknown outcome, never "no
// leader" or a timeout, which callers read as "nothing applied".
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
}
