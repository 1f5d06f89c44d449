package fsm

import (
	"bytes"
	"errors"
	"strconv"
)

// SubmitJobsType is a batch of submits: the group commit of the write
// path (cluster's batcher) puts every submit that arrives while a
// proposal is in flight into one entry of this type.
const SubmitJobsType MessageType = 32

// MaxSubmitBatch bounds the items of one SubmitJobs entry.
const MaxSubmitBatch = 1000

// SubmitJobs submits many jobs in one log entry. Each item is applied as
// its own SubmitJob, in order, with its own result, and audited with its
// own actor: a batch entry is never wrapped in an envelope (DecodeEntry
// refuses one), because the items of one batch come from different
// callers.
type SubmitJobs struct {
	Items []SubmitItem `json:"items"`
}

// SubmitItem is one submit of a batch: the job and, for an API call, the
// caller's actor (nil for none).
type SubmitItem struct {
	Job   Job    `json:"job"`
	Actor *Actor `json:"actor,omitempty"`
}

// presize gives c.Items the capacity for the items of body, the
// entry's JSON, so that decoding appends each item in place instead of
// growing the slice (and copying the items decoded so far, each a whole
// job) as many times as the batch doubles. The count is of `{"job":`,
// which the JSON of an item starts with and no string can hold (its
// quotes would be escaped); bounded by MaxSubmitBatch, and only a
// capacity: decoding is what fills the slice.
func (c *SubmitJobs) presize(body []byte) {
	n := min(bytes.Count(body, itemStart), MaxSubmitBatch)
	c.Items = make([]SubmitItem, 0, n)
}

var itemStart = []byte(`{"job":`)

// SubmitJobsResult is the response to SubmitJobs: for each item, in
// order, the queued *Job or the *Error that refused it.
type SubmitJobsResult struct {
	Results []any
}

// MessageType implements Command.
func (*SubmitJobs) MessageType() MessageType { return SubmitJobsType }

// Validate implements Validator: between 1 and MaxSubmitBatch items, each
// a valid SubmitJob with a valid actor, if any.
func (c *SubmitJobs) Validate() error {
	if len(c.Items) == 0 || len(c.Items) > MaxSubmitBatch {
		return invalid("a batch holds 1 to %d submits, not %d", MaxSubmitBatch, len(c.Items))
	}
	for i := range c.Items {
		if err := c.Items[i].Validate(); err != nil {
			return itemError(i, err)
		}
	}
	return nil
}

// Validate checks one item as DecodeEntry checks a SubmitJob in an
// envelope: the job, then the actor.
func (it *SubmitItem) Validate() error {
	if err := (&SubmitJob{Job: it.Job}).Validate(); err != nil {
		return err
	}
	if it.Actor != nil {
		return it.Actor.Validate()
	}
	return nil
}

// itemError prefixes a refusal with the item it is about.
func itemError(i int, err error) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	out := *e
	out.Message = "items[" + strconv.Itoa(i) + "]: " + e.Message
	return &out
}

// applySubmitJobs applies each item as applySubmitJob does and writes one
// audit record per item that has an actor. An ID that an earlier item of
// the same batch queued is refused with already_exists (applySubmitJob
// alone would take it for a replay of this entry, the index being the
// same).
func (f *FSM) applySubmitJobs(index uint64, c *SubmitJobs, b *batchBuilder) any {
	out := &SubmitJobsResult{Results: make([]any, len(c.Items))}
	queued := make(map[string]bool, len(c.Items))
	for i := range c.Items {
		it := &c.Items[i]
		sc := &SubmitJob{Job: it.Job}
		var resp any
		if queued[it.Job.ID] {
			resp = Errorf(CodeAlreadyExists, "job %q already exists", it.Job.ID)
		} else {
			resp = f.applySubmitJob(index, sc, b)
			if _, ok := resp.(*Job); ok {
				queued[it.Job.ID] = true
			}
		}
		out.Results[i] = resp
		if it.Actor != nil {
			f.audit(index, it.Actor, sc, resp, b)
		}
	}
	return out
}
