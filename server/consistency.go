package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Read consistency. Every read route (a GET that is not local, see
// route.local) is linearizable by default: before its handler runs, this
// node obtains a read index from the leader (batched with the reads that
// wait at the same moment, see cluster/readindex.go) and waits until it
// has applied that far, so the answer reflects every write acknowledged
// before the request arrived, whichever node took the write. ?stale=true
// skips the barrier and answers from this node's state as it is. Every
// read's response says which it was (consistencyHeader) and the index its
// state had reached (X-Ffrtmp-Index).

// consistencyHeader names a read's mode: consistencyLinearizable or
// consistencyStale.
const (
	consistencyHeader       = "X-Ffrtmp-Consistency"
	consistencyLinearizable = "linearizable"
	consistencyStale        = "stale"
)

// readHold bounds how long a linearizable read waits for a read index (an
// election, a leader that cannot be reached), as writes wait for a leader.
const readHold = 5 * time.Second

// Errors of reads, answered 503 unavailable with Retry-After.
var (
	// errNoReadIndex marks a linearizable read that got no read index
	// within readHold.
	errNoReadIndex = errors.New("no leader confirmed a read index")
	// errNotCaughtUp marks a stale read on a node that has not applied
	// an index the client has seen.
	errNotCaughtUp = errors.New("this node has not yet applied an index the client has seen")
)

// readFreshKey marks a request context whose read barrier has passed
// (true: a linearizable read): this node's state already holds every
// object created before the request arrived, so a lookup that finds
// nothing need not catch up with the leader again.
type readFreshKey struct{}

func readFresh(ctx context.Context) bool { v, _ := ctx.Value(readFreshKey{}).(bool); return v }

// keyShaped reports whether r carries a well-formed API key. A request
// without one is refused before any read barrier, so that garbage costs
// the leader nothing.
func keyShaped(r *http.Request) bool {
	bearer, ok := bearerOf(r)
	if !ok {
		return false
	}
	_, _, ok = parseKey(bearer)
	return ok
}

// isRead reports whether rt is a read that goes behind a read barrier.
func (rt route) isRead() bool { return rt.method == http.MethodGet && !rt.local }

// staleRequested reports whether r asks for a stale read (?stale=true).
func staleRequested(r *http.Request) (bool, error) {
	v := r.URL.Query().Get("stale")
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fsm.Errorf(fsm.CodeInvalidArgument, "stale must be true or false")
	}
	return b, nil
}

// readBarrier makes r's read linearizable unless it asks for a stale one,
// and sets the consistency and index headers of its response (a handler
// may set a more precise index). It reports whether the read is
// linearizable (fresh), and fails with errNoReadIndex when no read index
// could be had within readHold.
func (s *Server) readBarrier(w http.ResponseWriter, r *http.Request) (fresh bool, err error) {
	stale, err := staleRequested(r)
	if err != nil {
		return false, err
	}
	if stale {
		w.Header().Set(consistencyHeader, consistencyStale)
		setIndex(w, s.fsm.Index())
		return false, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), readHold)
	defer cancel()
	if err := s.readIndex(ctx); err != nil {
		if r.Context().Err() != nil {
			return false, r.Context().Err()
		}
		if errors.Is(err, errStoreUnavailable) {
			return false, err
		}
		return false, fmt.Errorf("%w: %w", errNoReadIndex, err)
	}
	w.Header().Set(consistencyHeader, consistencyLinearizable)
	setIndex(w, s.fsm.Index())
	return true, nil
}

// eventsCatchUp bounds how long an event stream that resumes from a
// Last-Event-ID waits for a lagging node (stale=true) to apply it.
const eventsCatchUp = 30 * time.Second

// storeDownPoll is how often a read that waits for its read index checks
// whether applying waits for the store.
const storeDownPoll = 50 * time.Millisecond

// readIndex runs the node's read barrier, but gives up as soon as this
// node's FSM is seen waiting for the store (a PostgreSQL outage): it
// cannot apply up to the read index until the store answers, and a
// reader does not wait on the store (a stale read answers from memory).
// A node whose memory already holds the read index answers at once.
func (s *Server) readIndex(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.raft.ReadIndex(ctx) }()
	t := time.NewTicker(storeDownPoll)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-t.C:
			if s.fsm.StoreDown() {
				return storeError(errors.New("applying waits for the store; a stale read answers from memory"))
			}
		}
	}
}

// awaitSeen is awaitIndex for a stale read; a linearizable read has
// applied every index a client can have seen (a larger one was never
// sent, and a long poll on it simply waits).
func (s *Server) awaitSeen(r *http.Request, index uint64, wait time.Duration) error {
	if stale, _ := staleRequested(r); !stale {
		return nil
	}
	return s.awaitIndex(r.Context(), index, wait)
}

// awaitIndex waits (within wait) until this node has applied index, the
// newest a client says it has seen (?index= of a long poll, an SSE
// Last-Event-ID), so that a stale read on a node that lags never answers
// with an older state than one the client already had. A linearizable
// read has applied it already.
func (s *Server) awaitIndex(ctx context.Context, index uint64, wait time.Duration) error {
	if index == 0 || s.fsm.Index() >= index {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := s.fsm.WaitIndex(wctx, index); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w (index %d); retry, or read without stale=true", errNotCaughtUp, index)
	}
	return nil
}
