package cluster

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	json "github.com/go-json-experiment/json/v1"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Group commit of submits. Every submit of a node goes through its
// batcher: while batchesInFlight batches are in flight (proposed on the
// leader, or forwarded to it by a follower), arriving submits queue; when
// one returns, everything queued goes as the next batch, one
// fsm.SubmitJobs entry, bounded by maxBatchItems and maxBatchBytes. An
// idle node adds no wait: the first submit is flushed at once. Two
// batches in flight rather than one let the leader append and replicate
// the next batch while the FSM applies and commits the previous one (a
// proposal returns only once applied), as Raft overlaps its own batches. A follower's batch goes to the
// leader's /rpc/apply-batch in one call over a kept-alive connection,
// where it joins the leader's own batcher, so that the submits of every
// node share entries. Each item gets its own result: its queued job, its
// own typed refusal, or the batch's failure to commit.

// Bounds of one batch entry, and how many batches a node keeps in flight.
const (
	maxBatchItems   = fsm.MaxSubmitBatch
	maxBatchBytes   = 4 << 20
	batchesInFlight = 2
)

// batchResult is one item's outcome.
type batchResult struct {
	v     any
	index uint64
	err   error
}

// batchItem is one submit waiting in a batcher.
type batchItem struct {
	// raw is the item's JSON (an fsm.SubmitItem, validated).
	raw []byte
	// local items came from another node's forward: they are proposed
	// here or refused with ErrNotLeader, never forwarded again.
	local bool
	// outcomeOnly items need their result's index and error only
	// (OutcomeOnly), not its value.
	outcomeOnly bool
	ctx         context.Context
	res         batchResult
	done        *sync.WaitGroup
}

// batcher queues items and runs at most inFlight flushes at a time. Its
// zero value is not usable: make it with newBatcher.
type batcher struct {
	// flush commits one batch; it sets every item's res. It may be
	// called concurrently, up to inFlight times.
	flush              func(batch []*batchItem)
	maxItems, maxBytes int
	inFlight           int

	mu      sync.Mutex
	queue   []*batchItem
	running int // flush loops
}

func newBatcher(flush func([]*batchItem), maxItems, maxBytes, inFlight int) *batcher {
	return &batcher{flush: flush, maxItems: maxItems, maxBytes: maxBytes, inFlight: inFlight}
}

// enqueue adds items and starts a flush loop if fewer than inFlight run.
// Each item's done is marked once its res is set.
func (b *batcher) enqueue(items []*batchItem) {
	b.mu.Lock()
	b.queue = append(b.queue, items...)
	start := b.running < b.inFlight
	if start {
		b.running++
	}
	b.mu.Unlock()
	if start {
		go b.run()
	}
}

// run flushes batches until the queue is empty.
func (b *batcher) run() {
	for {
		b.mu.Lock()
		batch := b.take()
		if len(batch) == 0 {
			b.running--
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.flush(batch)
		for _, it := range batch {
			it.done.Done()
		}
	}
}

// take removes the next batch from the queue, with b.mu held: items in
// arrival order up to the bounds, at least one. An item whose caller has
// gone is answered with its context's error and never proposed.
func (b *batcher) take() []*batchItem {
	var batch []*batchItem
	size, n := 0, 0
	for n < len(b.queue) && len(batch) < b.maxItems {
		it := b.queue[n]
		if err := it.ctx.Err(); err != nil {
			it.res.err = fmt.Errorf("apply: %w", err)
			it.done.Done()
			n++
			continue
		}
		if len(batch) > 0 && size+len(it.raw) > b.maxBytes {
			break
		}
		batch = append(batch, it)
		size += len(it.raw) + 1
		n++
	}
	clear(b.queue[:n])
	b.queue = b.queue[n:]
	if len(b.queue) == 0 {
		b.queue = nil
	}
	return batch
}

// do enqueues raws as items and waits until each has its result, or ctx
// ends (then the items not answered yet report ctx's error; they may
// still be committed).
func (b *batcher) do(ctx context.Context, raws [][]byte, local bool) []batchResult {
	var wg sync.WaitGroup
	items := make([]*batchItem, len(raws))
	for i, raw := range raws {
		items[i] = &batchItem{raw: raw, local: local, outcomeOnly: isOutcomeOnly(ctx), ctx: ctx, done: &wg}
	}
	wg.Add(len(items))
	b.enqueue(items)
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		out := make([]batchResult, len(items))
		for i := range out {
			out[i].err = fmt.Errorf("apply: %w: %w", ErrUnknownOutcome, ctx.Err())
		}
		return out
	}
	out := make([]batchResult, len(items))
	for i, it := range items {
		out[i] = it.res
	}
	return out
}

// encodeBatch returns the log entry of a SubmitJobs whose items are the
// given JSON encodings.
func encodeBatch(batch []*batchItem) []byte {
	size := 16
	for _, it := range batch {
		size += len(it.raw) + 1
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	buf.WriteByte(byte(fsm.SubmitJobsType))
	buf.WriteString(`{"items":[`)
	for i, it := range batch {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(it.raw)
	}
	buf.WriteString(`]}`)
	return buf.Bytes()
}

// flushSubmits commits one batch of submits: proposed here on the leader,
// else forwarded to the leader (items that came from a forward are
// refused with ErrNotLeader instead, for their node to retry).
func (n *Node) flushSubmits(batch []*batchItem) {
	if n.IsLeader() {
		n.proposeBatch(batch)
		return
	}
	fwd := batch[:0:0]
	for _, it := range batch {
		if it.local {
			it.res.err = fmt.Errorf("apply: %w", ErrNotLeader)
			continue
		}
		fwd = append(fwd, it)
	}
	if len(fwd) == 0 {
		return
	}
	addr, _ := n.Leader()
	if addr == "" {
		for _, it := range fwd {
			it.res.err = fmt.Errorf("apply: %w", ErrNoLeader)
		}
		return
	}
	n.forwardBatch(addr, fwd)
}

// proposeBatch proposes a batch as one entry on this node. It does not
// decode and validate the whole entry again, as propose does for other
// commands: each item was validated in the form the entry holds
// (validateItem for a forwarded one; SubmitAll validates an item before
// encoding it, and a valid item, every string of it valid UTF-8, encodes
// to JSON that decodes to the same item), and the batcher keeps a batch
// within 1 to fsm.MaxSubmitBatch items.
func (n *Node) proposeBatch(batch []*batchItem) {
	n.metrics.batchItems.Observe(float64(len(batch)))
	v, index, err := awaitApply(n.raft.Apply(encodeBatch(batch), applyTimeout))
	res, ok := v.(*fsm.SubmitJobsResult)
	if err == nil && (!ok || len(res.Results) != len(batch)) {
		err = fmt.Errorf("apply: batch of %d submits answered with %T", len(batch), v)
	}
	for i, it := range batch {
		if err != nil {
			it.res = batchResult{err: err}
			continue
		}
		it.res = batchResult{v: res.Results[i], index: index}
		if e, ok := res.Results[i].(error); ok {
			it.res = batchResult{err: e, index: index}
		}
	}
}

// batchItemResponse is one item's result on the wire: applyResponse, and
// for an item the leader could not commit, whether anything may have
// been appended.
type batchItemResponse struct {
	applyResponse
	// Failure is "" (committed, or refused with Error), "not_leader" or
	// "no_leader" (nothing appended: retry), or "unknown" (the outcome is
	// unknown) with Message.
	Failure string `json:"failure,omitempty"`
	Message string `json:"message,omitempty"`
}

type batchResponse struct {
	Results []batchItemResponse `json:"results"`
}

// forwardTimeout bounds one forwarded batch.
const forwardTimeout = applyTimeout + 5*time.Second

// forwardBatch sends a batch of submits to the leader's /rpc/apply-batch.
func (n *Node) forwardBatch(leader string, batch []*batchItem) {
	n.forwardItems(leader, "/rpc/apply-batch", encodeBatch(batch), batch)
}

// forwardItems sends a batch to the leader's path, which answers a
// batchResponse, and sets each item's result.
func (n *Node) forwardItems(leader, path string, body []byte, batch []*batchItem) {
	ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
	defer cancel()
	var resp batchResponse
	err := n.rpcCall(ctx, leader, "POST", path, body, &resp)
	if err == nil && len(resp.Results) != len(batch) {
		err = fmt.Errorf("forward: %w: leader answered %d results for %d items", ErrUnknownOutcome, len(resp.Results), len(batch))
	}
	switch {
	case err == nil:
	case isDomainError(err), errors.Is(err, errNoRPC):
	case sentNothing(err):
		err = fmt.Errorf("forward: %w: %w", ErrNoLeader, err)
	default:
		err = fmt.Errorf("forward: %w: %w", ErrUnknownOutcome, err)
	}
	for i, it := range batch {
		if err != nil {
			it.res = batchResult{err: err}
			continue
		}
		r := &resp.Results[i]
		it.res = batchResult{index: r.Index}
		switch r.Failure {
		case "":
			it.res.v, it.res.err = decodeResponse(&r.applyResponse)
		case "not_leader":
			it.res.err = fmt.Errorf("forward: %w: %s", ErrNotLeader, r.Message)
		case "no_leader":
			it.res.err = fmt.Errorf("forward: %w: %s", ErrNoLeader, r.Message)
		default:
			it.res.err = fmt.Errorf("forward: %w: %s", ErrUnknownOutcome, r.Message)
		}
	}
}

// handleApplyBatch takes a follower's batch of submits into this leader's
// batcher and answers each item's result. An item that fails validation
// is refused alone.
func (n *Node) handleApplyBatch(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxRPCBody))
	if err != nil || len(data) < 2 || fsm.MessageType(data[0]) != fsm.SubmitJobsType {
		rpcError(w, http.StatusBadRequest, errors.New("apply-batch needs a batch of submits"))
		return
	}
	var body struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(data[1:], &body); err != nil || len(body.Items) == 0 || len(body.Items) > maxBatchItems {
		rpcError(w, http.StatusBadRequest, errors.New("apply-batch: malformed batch"))
		return
	}
	if n.notLeader(w) {
		return
	}
	out := batchResponse{Results: make([]batchItemResponse, len(body.Items))}
	var raws [][]byte
	var pos []int
	for i, raw := range body.Items {
		if err := validateItem(raw); err != nil {
			out.Results[i].Error = err
			continue
		}
		raws = append(raws, raw)
		pos = append(pos, i)
	}
	for k, res := range n.submits.do(r.Context(), raws, true) {
		out.Results[pos[k]] = itemResponse(res.index, res.v, res.err)
	}
	rpcJSON(w, http.StatusOK, out)
}

// itemResponse is the wire form of one item's outcome on the leader: its
// response, or its refusal, committed at index; or why it was not
// committed.
func itemResponse(index uint64, v any, err error) batchItemResponse {
	var o batchItemResponse
	var refused *fsm.Error
	switch {
	case err == nil:
	case errors.As(err, &refused):
		v = refused
	case errors.Is(err, ErrNotLeader):
		o.Failure, o.Message = "not_leader", err.Error()
		return o
	case errors.Is(err, ErrNoLeader):
		o.Failure, o.Message = "no_leader", err.Error()
		return o
	default:
		o.Failure, o.Message = "unknown", err.Error()
		return o
	}
	enc, err := encodeResponse(index, v)
	if err != nil {
		o.Failure, o.Message = "unknown", err.Error()
		return o
	}
	o.applyResponse = *enc
	return o
}

// validateItem checks one item's JSON as the log will hold it.
func validateItem(raw []byte) *fsm.Error {
	if !utf8.Valid(raw) {
		return fsm.Errorf(fsm.CodeInvalidArgument, "submit is not valid UTF-8")
	}
	var it fsm.SubmitItem
	if err := json.Unmarshal(raw, &it); err != nil {
		return fsm.Errorf(fsm.CodeInvalidArgument, "submit does not decode")
	}
	if err := it.Validate(); err != nil {
		var e *fsm.Error
		if errors.As(err, &e) {
			return e
		}
		return fsm.Errorf(fsm.CodeInvalidArgument, "%v", err)
	}
	return nil
}

// SubmitAll submits jobs through the group commit, each with the actor
// ctx carries (if any), and returns each one's result: the queued
// *fsm.Job, or its error (a *fsm.Error refusal of that job alone, or a
// failure to commit). It retries what was surely not appended
// (ErrNotLeader, ErrNoLeader) while the cluster elects a leader, held as
// Apply holds a write (leaderHold). A forwarded submit answers with the
// leader's result as soon as the leader has committed and applied it; it
// does not wait for this node's own apply, which would add the time until
// the leader's next AppendEntries tells this node of the commit (up to
// twice CommitTimeout) and this node's own store commit. A client still
// reads its own submit here: every read passes the read barrier (a read
// index from the leader, see readindex.go) unless it asks for a stale
// one, and a later write that looks up the job here catches up first
// (see server's catchUp).
func (n *Node) SubmitAll(ctx context.Context, cmds []*fsm.SubmitJob) ([]any, []error) {
	start := time.Now()
	defer func() { n.metrics.apply.Observe(time.Since(start).Seconds()) }()
	resps := make([]any, len(cmds))
	errs := make([]error, len(cmds))
	actor := fsm.ActorFrom(ctx)
	var raws [][]byte
	var todo []int
	for i, c := range cmds {
		it := fsm.SubmitItem{Job: c.Job, Actor: actor}
		err := it.Validate()
		var raw []byte
		if err == nil {
			raw, err = json.Marshal(&it)
		}
		if err != nil {
			errs[i] = err
			continue
		}
		raws = append(raws, raw)
		todo = append(todo, i)
	}
	hold := n.newHold()
	defer hold.stop()
	// unknown holds each item's first unknown outcome: a submit is
	// resendable (see resendable), so an item whose outcome a leader
	// change lost is sent again, and answers as Apply's writes do.
	unknown := make([]error, len(cmds))
	for len(todo) > 0 {
		var retryRaws [][]byte
		var retry []int
		for k, res := range n.submits.do(ctx, raws, false) {
			i := todo[k]
			resps[i], errs[i] = res.v, res.err
			switch {
			case errors.Is(res.err, ErrUnknownOutcome):
				if unknown[i] == nil {
					unknown[i] = n.noteResend(nil, res.err, hold)
				}
				retryRaws, retry = append(retryRaws, raws[k]), append(retry, i)
			case errors.Is(res.err, ErrNotLeader) || errors.Is(res.err, ErrNoLeader):
				retryRaws, retry = append(retryRaws, raws[k]), append(retry, i)
			case res.err != nil && !isDomainError(res.err):
				errs[i] = failedAfter(unknown[i], res.err)
			}
		}
		if len(retry) == 0 {
			break
		}
		var stop error
		held := false
		hold.renew()
		select {
		case <-ctx.Done():
			stop, held = ctx.Err(), true
		case <-hold.expired():
			held = true
		case <-time.After(50 * time.Millisecond):
		}
		if held {
			for _, i := range retry {
				errs[i] = heldError(unknown[i], cmp.Or(stop, errs[i]))
			}
			return resps, errs
		}
		raws, todo = retryRaws, retry
	}
	return resps, errs
}
