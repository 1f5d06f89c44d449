package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/hashicorp/raft"
)

// Batched forwarding of writes. A follower used to forward each write
// (a worker's start, progress or finish report, an API call) in an RPC
// of its own. Each held a connection to the leader for the length of a
// commit, so that with hundreds of reports in flight the follower held
// hundreds of connections and dialed (and mutual-TLS handshook) new ones
// at every burst: with 100 simulated workers of 10 slots, a report took
// seconds to be answered on three nodes. Now every write a
// follower forwards goes through its forward batcher (the same batcher
// as the group commit of submits, batch.go): while forwardsInFlight
// calls are in flight, arriving writes queue, and when one returns
// everything queued goes in the next /rpc/apply-many call, at most
// maxForwardItems commands and maxBatchBytes. The leader proposes each
// command as its own log entry (Raft appends those proposed together in
// one batch) and answers each one's result, so a write keeps its own
// entry, validation, refusal and outcome: nothing about the log changes,
// only how commands reach the leader. A leader that does not know
// /rpc/apply-many (an older binary during a rolling upgrade) answers 404,
// and the writes go one per call as before.

// Bounds of one forwarded call.
const (
	maxForwardItems  = 512 // raft's MaxAppendEntries: one append batch
	forwardsInFlight = 2
)

// errNoRPC means the node does not serve the RPC called (404): nothing
// was done.
var errNoRPC = errors.New("rpc not served by this node")

// forwardWrite sends an encoded command to the leader through the
// forward batcher, then waits (bounded) until this node has applied it
// too, so that the client reads its own write from the node it talks to.
// Errors are classified as applyLocal's.
func (n *Node) forwardWrite(ctx context.Context, data []byte) (any, uint64, error) {
	res := n.forwards.do(ctx, [][]byte{data}, false)[0]
	if errors.Is(res.err, errNoRPC) {
		addr, _ := n.Leader()
		if addr == "" {
			return nil, 0, fmt.Errorf("forward: %w", ErrNoLeader)
		}
		return n.forward(ctx, addr, data)
	}
	n.awaitForwarded(ctx, res.index)
	return res.v, res.index, res.err
}

// flushForwards sends one batch of writes to the leader. On a node that
// leads (it was elected since the writes were queued) or knows no leader,
// nothing is sent, and the callers retry as for any write that reached
// no leader.
func (n *Node) flushForwards(batch []*batchItem) {
	addr, _ := n.Leader()
	if addr == "" || n.IsLeader() {
		err := ErrNoLeader
		if addr != "" {
			err = ErrNotLeader
		}
		for _, it := range batch {
			it.res.err = fmt.Errorf("forward: %w", err)
		}
		return
	}
	n.metrics.forwardItems.Observe(float64(len(batch)))
	size := 0
	for _, it := range batch {
		size += binary.MaxVarintLen32 + len(it.raw)
	}
	body := make([]byte, 0, size)
	path := "/rpc/apply-many?values=none"
	for _, it := range batch {
		body = binary.AppendUvarint(body, uint64(len(it.raw)))
		body = append(body, it.raw...)
		if !it.outcomeOnly {
			path = "/rpc/apply-many"
		}
	}
	n.forwardItems(addr, path, body, batch)
}

// outcomeOnlyKey marks a context whose writes need no result value.
type outcomeOnlyKey struct{}

// OutcomeOnly marks ctx's writes (Apply) as needing only their outcome:
// Apply returns a nil value on success, and a follower's forwarded call
// does not carry the value back (a worker's report would otherwise bring
// the whole job back from the leader, encoded there and decoded here,
// only to be dropped). Refusals are returned as always.
func OutcomeOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, outcomeOnlyKey{}, true)
}

func isOutcomeOnly(ctx context.Context) bool {
	v, _ := ctx.Value(outcomeOnlyKey{}).(bool)
	return v
}

// decodeFrames splits an /rpc/apply-many body into its commands: each a
// uvarint length and that many bytes.
func decodeFrames(data []byte) ([][]byte, error) {
	var out [][]byte
	for len(data) > 0 {
		l, k := binary.Uvarint(data)
		if k <= 0 || l == 0 || l > uint64(len(data)-k) {
			return nil, errors.New("malformed command frame")
		}
		out = append(out, data[k:k+int(l)])
		data = data[k+int(l):]
	}
	return out, nil
}

// handleApplyMany proposes a follower's batch of forwarded commands on
// this leader, each as its own entry, and answers each one's result. Each
// command is validated alone (propose); one that fails is refused alone.
func (n *Node) handleApplyMany(w http.ResponseWriter, r *http.Request) {
	if n.withoutApplyMany.Load() {
		http.NotFound(w, r) // a test's binary from before /rpc/apply-many
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxRPCBody))
	if err != nil {
		rpcError(w, http.StatusBadRequest, err)
		return
	}
	cmds, err := decodeFrames(data)
	if err != nil || len(cmds) == 0 || len(cmds) > maxForwardItems {
		rpcError(w, http.StatusBadRequest, errors.New("apply-many: malformed batch"))
		return
	}
	if n.notLeader(w) {
		return
	}
	// values=none: the follower's callers need each outcome only
	// (OutcomeOnly). A leader from before it answers the values anyway.
	outcomeOnly := r.URL.Query().Get("values") == "none"
	out := batchResponse{Results: make([]batchItemResponse, len(cmds))}
	futures := make([]raft.ApplyFuture, len(cmds))
	for i, c := range cmds {
		f, err := n.propose(c, applyTimeout)
		if err != nil {
			out.Results[i] = itemResponse(0, nil, err)
			continue
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f != nil {
			v, index, err := awaitApply(f)
			if outcomeOnly {
				v = nil
			}
			out.Results[i] = itemResponse(index, v, err)
		}
	}
	rpcJSON(w, http.StatusOK, out)
}
