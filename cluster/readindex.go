package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Linearizable reads (Raft's "read index", section 6.4 of Ongaro's
// thesis). A read on any node first learns an index that is at least the
// commit index of the moment the read began, confirmed by a leader that
// was still leader after that moment, then waits until its own FSM has
// applied that index. Every write acknowledged before the read began is
// then in the state it answers from.
//
// The leader confirms its leadership with a quorum heartbeat round
// (raft.VerifyLeader), not with a lease: a lease would trust that no
// server's clock runs fast by more than its margin, and this one trusts
// no clock. To keep that round cheap, reads are batched: all reads that
// arrive on a node while one round trip is in flight wait together for
// the next one, so a node has at most one round trip in flight and
// concurrent reads share it.
//
//   - On the leader one batch is one VerifyLeader for every read that
//     arrived before the batch started (reads of this node and the
//     /rpc/readindex calls of followers alike). The commit index is read
//     before the round starts, so every read of the batch began before it.
//   - On a follower one batch is one GET /rpc/readindex to the leader for
//     every read waiting at that moment; the next batch forms while it is
//     in flight.
//
// One caveat of hashicorp/raft's VerifyLeader: a heartbeat answer that
// arrives after the call counts for it even if the heartbeat was sent
// just before the call (at most one heartbeat round trip earlier). That
// follower had then acknowledged this leader, and a follower with a known
// leader refuses to vote until its heartbeat timeout (1 s) passes, so no
// other leader can commit within that round trip unless a follower's
// timer lets its heartbeat timeout pass in less than one round trip of
// real time. That bound on clock rate (not on clock agreement) is the
// only clock assumption these reads make; Consul's, Nomad's and Vault's
// consistent reads make the same one on the same library.
//
// A new leader does not know which entries of earlier terms are
// committed until it commits one of its own term, so before its first
// read index of a term it runs a Barrier (which commits such an entry).
//
// A failed batch (leadership lost, no leader, the leader unreachable)
// fails every read of the batch with ErrNotLeader or ErrNoLeader; none of
// them answers from the state it had. ReadIndex retries those until its
// context ends, as writes wait for a leader.

// readFetchTimeout bounds one round trip of a batch (a VerifyLeader, an
// RPC to the leader); the reads of a failed batch retry with the next.
const readFetchTimeout = 3 * time.Second

// readBatcher shares one index fetch among the reads that wait at the
// moment it starts. Its zero value is ready to use; it is safe for
// concurrent use.
type readBatcher struct {
	mu      sync.Mutex
	next    *readBatch // the batch forming; nil if no read waits
	running bool       // a fetch loop is running

	reads   atomic.Uint64 // reads served (for tests and statistics)
	batches atomic.Uint64 // fetches made, one per batch
}

// readBatch is one fetch and the reads that wait for it.
type readBatch struct {
	done  chan struct{}
	index uint64
	err   error
}

// do returns an index fetched by fetch after do was called: it joins the
// batch that has not started yet (starting the fetch loop if none runs),
// and waits for it or for ctx. Every caller passes an equivalent fetch;
// the loop uses the first caller's.
func (b *readBatcher) do(ctx context.Context, fetch func(context.Context) (uint64, error)) (uint64, error) {
	b.mu.Lock()
	if b.next == nil {
		b.next = &readBatch{done: make(chan struct{})}
	}
	batch := b.next
	if !b.running {
		b.running = true
		go b.loop(fetch)
	}
	b.mu.Unlock()
	b.reads.Add(1)
	select {
	case <-batch.done:
		return batch.index, batch.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// loop runs one fetch per batch, taking the forming batch out before the
// fetch starts (so that every read of a batch arrived before its fetch
// began, and later reads form the next batch), until no read waits.
func (b *readBatcher) loop(fetch func(context.Context) (uint64, error)) {
	for {
		b.mu.Lock()
		batch := b.next
		b.next = nil
		if batch == nil {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.batches.Add(1)
		ctx, cancel := context.WithTimeout(context.Background(), readFetchTimeout)
		batch.index, batch.err = fetch(ctx)
		cancel()
		close(batch.done)
	}
}

// readIndexes are a node's two batchers: leader for the reads this node
// confirms as leader (its own and its followers'), remote for the reads it
// asks the leader for as a follower. The zero value is ready to use.
type readIndexes struct {
	leader readBatcher
	remote readBatcher
	// barrierTerm is the last term in which this node, as leader,
	// committed a barrier (see leaderReadIndex).
	barrierTerm atomic.Uint64
}

// ReadIndex makes this node's state at least as new as everything the
// cluster had committed when it was called (a linearizable read barrier):
// a batch of reads gets the commit index confirmed by the leader, and this
// node waits until it has applied that far. During an election it waits
// for a leader, as writes do, until ctx ends, and then fails with
// ErrNoLeader or ErrNotLeader (wrapping ctx's error); it never returns
// early on state it cannot vouch for.
func (n *Node) ReadIndex(ctx context.Context) error {
	for {
		err := n.readIndex(ctx)
		if err == nil || (!errors.Is(err, ErrNoLeader) && !errors.Is(err, ErrNotLeader)) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (n *Node) readIndex(ctx context.Context) error {
	var index uint64
	var err error
	if n.IsLeader() {
		index, err = n.reads.leader.do(ctx, n.leaderReadIndex)
	} else {
		index, err = n.reads.remote.do(ctx, n.remoteReadIndex)
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("read index: %w: %w", ErrNoLeader, err)
		}
		return err
	}
	return n.waitApplied(ctx, index)
}

// leaderReadIndex is one leader batch: the commit index, confirmed by a
// quorum heartbeat round that starts after it was read.
func (n *Node) leaderReadIndex(ctx context.Context) (uint64, error) {
	if !n.IsLeader() {
		return 0, fmt.Errorf("read index: %w", ErrNotLeader)
	}
	if term := n.raft.CurrentTerm(); n.reads.barrierTerm.Load() != term {
		// The commit index may still miss entries of earlier terms
		// until an entry of this term commits.
		if err := n.raft.Barrier(timeoutOf(ctx)).Error(); err != nil {
			return 0, fmt.Errorf("read index: barrier: %w: %w", ErrNotLeader, err)
		}
		n.reads.barrierTerm.Store(term)
	}
	index := n.raft.CommitIndex()
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return 0, fmt.Errorf("read index: %w: %w", ErrNotLeader, err)
	}
	return index, nil
}

// remoteReadIndex is one follower batch: one /rpc/readindex to the leader.
func (n *Node) remoteReadIndex(ctx context.Context) (uint64, error) {
	addr, _ := n.Leader()
	if addr == "" {
		return 0, fmt.Errorf("read index: %w", ErrNoLeader)
	}
	var r struct {
		Index uint64 `json:"index"`
	}
	if err := n.rpcCall(ctx, addr, "GET", "/rpc/readindex", nil, &r); err != nil {
		return 0, fmt.Errorf("read index: %w: %w", ErrNoLeader, err)
	}
	return r.Index, nil
}

// ReadIndexStats reports how many reads this node's read barriers served
// and in how many batches (round trips: VerifyLeader rounds as leader,
// /rpc/readindex calls as follower).
func (n *Node) ReadIndexStats() (reads, batches uint64) {
	return n.reads.leader.reads.Load() + n.reads.remote.reads.Load(),
		n.reads.leader.batches.Load() + n.reads.remote.batches.Load()
}
