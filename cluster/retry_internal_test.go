package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
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

// fakeLeader is what a leaderHold sees of Raft in a test: a term and
// whether a leader is known.
type fakeLeader struct {
	mu    sync.Mutex
	term  uint64
	known bool
}

func (f *fakeLeader) set(term uint64, known bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.term, f.known = term, known
}

func (f *fakeLeader) get() (uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.term, f.known
}

// TestLeaderHoldRidesOutLeadersThatStepDown: a write that found no leader
// waits for one for the hold; a leader of a newer term starts the hold
// anew, so that a write outlives a leader that steps down soon after its
// election (in a rolling restart, a leader whose only other reachable
// voter stalls past the leader lease) and the next election. The same
// term seen again, or no leader, does not extend it, and nothing extends
// it past the maximum.
func TestLeaderHoldRidesOutLeadersThatStepDown(t *testing.T) {
	t.Parallel()
	raft := &fakeLeader{term: 4, known: false}
	h := startHold(time.Hour, 3*time.Hour, raft.get)
	defer h.stop()
	first := h.ends

	h.renew() // no leader yet
	raft.set(4, true)
	h.renew() // a leader, but of the term the hold started in
	if !h.ends.Equal(first) {
		t.Fatalf("the hold moved without a leader of a newer term: %v, then %v", first, h.ends)
	}

	raft.set(5, false) // an election: a newer term, no leader yet
	h.renew()
	if !h.ends.Equal(first) {
		t.Fatalf("the hold moved for a term without a leader: %v, then %v", first, h.ends)
	}

	time.Sleep(time.Millisecond) // the clock moves on
	raft.set(5, true)            // elected; it will step down
	h.renew()
	second := h.ends
	if !second.After(first) {
		t.Fatalf("a leader of a newer term did not start the hold anew: %v, then %v", first, second)
	}

	for term := uint64(6); term < 20; term++ {
		time.Sleep(time.Millisecond)
		raft.set(term, true)
		h.renew()
	}
	if h.ends.After(h.until) {
		t.Errorf("renewed holds end at %v, past the maximum %v", h.ends, h.until)
	}

	// Without a newer leader, a hold runs out.
	short := startHold(10*time.Millisecond, time.Hour, raft.get)
	defer short.stop()
	for range 50 {
		short.renew() // the same term: no renewal
		time.Sleep(time.Millisecond)
	}
	select {
	case <-short.expired():
	case <-time.After(30 * time.Second):
		t.Fatal("a hold without a newer leader never ran out")
	}

	// Past its maximum a hold runs out even with a new leader.
	capped := startHold(time.Hour, 10*time.Millisecond, raft.get)
	defer capped.stop()
	time.Sleep(20 * time.Millisecond)
	raft.set(100, true)
	capped.renew()
	select {
	case <-capped.expired():
	case <-time.After(30 * time.Second):
		t.Fatal("a new leader renewed a hold past its maximum")
	}
}
