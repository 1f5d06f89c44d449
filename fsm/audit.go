package fsm

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	json "github.com/go-json-experiment/json/v1"
)

// The audit log. A command proposed on behalf of an authenticated API
// caller carries its Actor in the entry's envelope (EnvelopeType, see
// EncodeAs); the API's route wrapper puts the actor into the request's
// context (WithActor) and the cluster node encodes it, so no handler
// deals with auditing. For every applied entry with an actor, Apply
// appends one AuditRecord to the same store batch as the change the entry
// made, so a change is never stored without its record. Records form a
// hash chain: each record's Hash is an HMAC-SHA256, under the
// installation's audit key (Config.AuditKey, derived from the cluster key
// and never stored), of the record's canonical encoding, which includes
// its sequence number and the previous record's Hash. A reader of the
// database alone can therefore neither forge a record nor alter, remove
// or reorder one without VerifyAudit noticing.
//
// The FSM keeps only the chain's head (the last record's Seq and Hash) in
// memory; records are read back from the store (Store.ListAudit,
// Store.ScanAudit).

// Actor is who proposed a command through the API, and for which request.
// It travels in the entry's envelope, never inside a command.
type Actor struct {
	// User and KeyID identify the authenticated principal.
	User  string `json:"user,omitempty"`
	KeyID string `json:"key_id,omitempty"`
	// Role is the principal's role.
	Role Role `json:"role,omitempty"`
	// TenantID is the principal's own tenant.
	TenantID string `json:"actor_tenant,omitempty"`
	// RequestID is the API request's ID (X-Request-Id).
	RequestID string `json:"request_id,omitempty"`
	// Source is the client's address.
	Source string `json:"source,omitempty"`
	// Action names the API operation (its OpenAPI operationId).
	Action string `json:"action"`
	// Target is the object the request names (its path ID), if any.
	// The record's Target falls back to the ID of the object the
	// command changed.
	Target string `json:"target,omitempty"`
	// Tenant is the tenant the request acts on ("" for the
	// installation). The record's Tenant is the changed object's tenant
	// where Apply knows it.
	Tenant string `json:"tenant,omitempty"`
}

// Bounds of an actor's fields, in bytes.
const (
	maxRequestIDLen = 128
	maxSourceLen    = 256
	maxActionLen    = 256
)

// Validate checks an actor's text: required action, bounded lengths,
// valid UTF-8 and no control characters.
func (a *Actor) Validate() error {
	if a.Action == "" {
		return invalid("actor.action is required")
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{
		{"actor.user", a.User, MaxIDLen}, {"actor.key_id", a.KeyID, MaxIDLen}, {"actor.role", string(a.Role), MaxIDLen},
		{"actor.actor_tenant", a.TenantID, MaxIDLen}, {"actor.request_id", a.RequestID, maxRequestIDLen},
		{"actor.source", a.Source, maxSourceLen}, {"actor.action", a.Action, maxActionLen},
		{"actor.target", a.Target, MaxIDLen}, {"actor.tenant", a.Tenant, MaxIDLen},
	} {
		if err := validText(f.name, f.v, f.max, ""); err != nil {
			return err
		}
	}
	return nil
}

type actorKey struct{}

// WithActor returns ctx carrying a, the actor of the commands proposed
// with it (cluster.Node.Apply encodes it into their envelopes). A nil a
// takes the actor away: for bookkeeping a request causes but did not ask
// for (a key's last-used time), which must not be recorded as its call.
func WithActor(ctx context.Context, a *Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the actor ctx carries, or nil.
func ActorFrom(ctx context.Context) *Actor {
	a, _ := ctx.Value(actorKey{}).(*Actor)
	return a
}

// envelope is the body of an EnvelopeType entry: the inner command's type
// and JSON body, and its actor.
type envelope struct {
	Actor   *Actor          `json:"actor"`
	Type    MessageType     `json:"type"`
	Command json.RawMessage `json:"command"`
}

// EncodeAs returns the log entry for c proposed by actor a: with a nil
// actor the plain entry (Encode), else an EnvelopeType entry whose JSON
// body is {"actor":{...},"type":N,"command":{...}}.
func EncodeAs(c Command, a *Actor) ([]byte, error) {
	if a == nil {
		return Encode(c)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", c, err)
	}
	env, err := json.Marshal(envelope{Actor: a, Type: c.MessageType(), Command: body})
	if err != nil {
		return nil, fmt.Errorf("encode envelope of %T: %w", c, err)
	}
	return append([]byte{byte(EnvelopeType)}, env...), nil
}

// unwrap returns an entry's command type, body and actor: an envelope's
// inner command and its actor, or a plain entry's type and body with a
// nil actor.
func unwrap(data []byte) (MessageType, []byte, *Actor, error) {
	t, body := MessageType(data[0]), data[1:]
	if t != EnvelopeType {
		return t, body, nil, nil
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return 0, nil, nil, err
	}
	if env.Actor == nil || len(env.Command) == 0 {
		return 0, nil, nil, errors.New("envelope without an actor or a command")
	}
	if env.Type == EnvelopeType {
		return 0, nil, nil, errors.New("envelope inside an envelope")
	}
	return env.Type, env.Command, env.Actor, nil
}

// RecordAudit records an API call that changed no replicated state: one
// the route wrapper refused (Result permission_denied), or one that
// changed the cluster rather than the FSM (membership, snapshots). It
// needs an actor (its envelope's); Apply writes only the record.
type RecordAudit struct {
	Result Code `json:"result"`
}

// MessageType implements Command.
func (*RecordAudit) MessageType() MessageType { return RecordAuditType }

// Validate implements Validator.
func (c *RecordAudit) Validate() error {
	if c.Result == "" {
		return invalid("result is required")
	}
	return validText("result", string(c.Result), 64, "")
}

func (f *FSM) applyRecordAudit(index uint64, c *RecordAudit, b *batchBuilder) any { return nil }

// ResultOK is the Result of an audit record whose command succeeded.
const ResultOK Code = "ok"

// AuditRecord is one entry of the audit log: who did what to which
// object of which tenant, with which result, when; chained to the record
// before it. Records never change once written.
type AuditRecord struct {
	// Seq numbers records 1, 2, 3... without gaps.
	Seq uint64 `json:"seq"`
	// Time is the leader's time of the entry.
	Time time.Time `json:"time"`
	// Actor is the entry's actor, with Target and Tenant completed.
	Actor
	// Result is "ok" or the code of the refusal.
	Result Code `json:"result"`
	// PrevHash is the previous record's Hash (none for Seq 1).
	PrevHash []byte `json:"prev_hash,omitempty"`
	// Hash is AuditHash of the record.
	Hash []byte `json:"hash"`
	// Meta's CreateIndex is the Raft index of the entry.
	Meta
}

// ObjectID implements Object: Seq in 20 decimal digits, so that IDs sort
// as sequence numbers do.
func (r *AuditRecord) ObjectID() string { return AuditID(r.Seq) }

// AuditID returns the object ID of the record with sequence number seq.
func AuditID(seq uint64) string { return fmt.Sprintf("%020d", seq) }

// AuditHead is the newest record's sequence number and hash; Seq 0 is an
// empty log.
type AuditHead struct {
	Seq  uint64 `json:"seq"`
	Hash []byte `json:"hash,omitempty"`
}

// auditDomain starts the canonical encoding, to tie the MAC to its use
// and version.
const auditDomain = "ffrtmp audit record v1\x00"

// canonical returns the record's canonical encoding, everything but
// Hash: the domain string, Seq, the entry's Raft index and Time (Unix
// nanoseconds) as 8-byte big-endian integers, then each text field and
// PrevHash as a 4-byte big-endian length and its bytes, in a fixed order.
// Lengths make it unambiguous: no two different records encode alike.
func (r *AuditRecord) canonical() []byte {
	buf := make([]byte, 0, 256)
	buf = append(buf, auditDomain...)
	buf = binary.BigEndian.AppendUint64(buf, r.Seq)
	buf = binary.BigEndian.AppendUint64(buf, r.CreateIndex)
	buf = binary.BigEndian.AppendUint64(buf, uint64(r.Time.UnixNano()))
	for _, s := range []string{r.User, r.KeyID, string(r.Role), r.TenantID, r.RequestID, r.Source,
		r.Action, r.Target, r.Tenant, string(r.Result)} {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(s)))
		buf = append(buf, s...)
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(r.PrevHash)))
	return append(buf, r.PrevHash...)
}

// AuditHash returns HMAC-SHA256 under key of r's canonical encoding.
func AuditHash(key []byte, r *AuditRecord) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(r.canonical())
	return m.Sum(nil)
}

// audit appends the record of an applied entry with an actor: the result
// is the refusal's code, RecordAudit's result, or ok; the target and
// tenant are the changed object's where the actor names none.
func (f *FSM) audit(index uint64, a *Actor, c Command, resp any, b *batchBuilder) {
	r := &AuditRecord{Seq: f.auditHead.Seq + 1, Time: f.at(time.Time{}), Actor: *a, Result: ResultOK,
		PrevHash: f.auditHead.Hash, Meta: Meta{CreateIndex: index, ModifyIndex: index}}
	switch v := resp.(type) {
	case *Error:
		r.Result = v.Code
	case Object:
		if r.Target == "" {
			r.Target = v.ObjectID()
		}
		if t, ok := objectTenant(v); ok {
			r.Tenant = t
		}
	}
	if ra, ok := c.(*RecordAudit); ok {
		r.Result = ra.Result
	}
	r.Hash = AuditHash(f.auditKey, r)
	f.auditHead = AuditHead{Seq: r.Seq, Hash: r.Hash}
	b.put(AuditKind, r)
}

// objectTenant returns the tenant an object belongs to, where its type
// says ("" for a shared-pool worker); ok is false for a type it does not
// know, whose record keeps the tenant the request acted on.
func objectTenant(o Object) (string, bool) {
	switch v := o.(type) {
	case *Tenant:
		return v.ID, true
	case *APIKey:
		return v.TenantID, true
	case *Worker:
		return v.TenantID, true
	case *Job:
		return v.TenantID, true
	}
	return "", false
}

// AuditHeadNow returns the head of the audit chain as the store holds it
// (the last committed batch's), for verification against the store.
func (f *FSM) AuditHeadNow() AuditHead {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.auditCommitted
}

// VerifyAudit checks the store's audit chain with the FSM's key against
// the FSM's committed head and the heads in expect, which the store must
// reach (see the function VerifyAudit).
func (f *FSM) VerifyAudit(ctx context.Context, expect ...AuditHead) (*AuditVerification, error) {
	return VerifyAudit(ctx, f.store, f.auditKey, append(expect, f.AuditHeadNow())...)
}

// ListAuditParams selects a page of audit records.
type ListAuditParams struct {
	// TenantID keeps only records of this tenant; "" keeps all.
	TenantID string
	// Actor keeps only records whose user or key ID is Actor.
	Actor string
	// Action keeps only records of this action.
	Action string
	// Since and Until, if not zero, keep records with Since <= Time < Until.
	Since, Until time.Time
	// Limit is the page size (1..1000).
	Limit int
	// Before is the cursor: the Seq of the last record of the previous
	// page; 0 starts at the newest record.
	Before uint64
}

// AuditPage is one page of audit records, newest first. Next is the
// cursor of the following page, 0 on the last page.
type AuditPage struct {
	Records []*AuditRecord
	Next    uint64
}

// Keep reports whether r passes the filters of p (not the cursor).
func (p *ListAuditParams) Keep(r *AuditRecord) bool {
	return (p.TenantID == "" || r.Tenant == p.TenantID) &&
		(p.Actor == "" || r.User == p.Actor || r.KeyID == p.Actor) &&
		(p.Action == "" || r.Action == p.Action) &&
		(p.Since.IsZero() || !r.Time.Before(p.Since)) &&
		(p.Until.IsZero() || r.Time.Before(p.Until))
}

// AuditVerification is the outcome of VerifyAudit.
type AuditVerification struct {
	// OK is set when every record checked is sound.
	OK bool `json:"ok"`
	// Checked counts the records read.
	Checked uint64 `json:"checked"`
	// Head is the newest sound record's Seq and Hash: an operator who
	// keeps it can later tell whether newer records were cut off.
	Head AuditHead `json:"head"`
	// FirstBad is the first record that fails, and why.
	FirstBad *AuditBad `json:"first_bad,omitempty"`
}

// AuditBad names a record that fails verification.
type AuditBad struct {
	Seq    uint64 `json:"seq"`
	Reason string `json:"reason"`
}

// VerifyAudit reads every record of st in Seq order and recomputes the
// chain with key: each record must have the next Seq (1 first), the
// previous record's Hash as PrevHash, and a Hash that is its own MAC. The
// first record that fails is reported with the reason; a store read error
// is returned as an error. Each of expect is a head known to have been
// committed (the node's own, or one an operator kept): the chain must
// reach it, with the same hash at its Seq, or records were cut off or
// replaced.
func VerifyAudit(ctx context.Context, st Store, key []byte, expect ...AuditHead) (*AuditVerification, error) {
	v := &AuditVerification{}
	var prev []byte
	bad := func(seq uint64, format string, args ...any) error {
		v.FirstBad = &AuditBad{Seq: seq, Reason: fmt.Sprintf(format, args...)}
		return errStopScan
	}
	err := st.ScanAudit(ctx, 0, func(r *AuditRecord) error {
		want := v.Head.Seq + 1
		v.Checked++
		switch {
		case r.Seq < want:
			return bad(want, "record %d is out of order: it follows record %d", r.Seq, v.Head.Seq)
		case r.Seq > want:
			return bad(want, "record %d is missing or out of order: record %d follows record %d", want, r.Seq, v.Head.Seq)
		case !bytes.Equal(r.PrevHash, prev):
			return bad(r.Seq, "record %d does not chain to record %d: its prev_hash differs from that record's hash", r.Seq, v.Head.Seq)
		case !hmac.Equal(r.Hash, AuditHash(key, r)):
			return bad(r.Seq, "record %d was altered: its hash does not match its content", r.Seq)
		}
		for _, e := range expect {
			if e.Seq == r.Seq && !hmac.Equal(e.Hash, r.Hash) {
				return bad(r.Seq, "record %d is not the one committed: its hash differs from the known head %s", r.Seq, e)
			}
		}
		prev = r.Hash
		v.Head = AuditHead{Seq: r.Seq, Hash: r.Hash}
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return nil, fmt.Errorf("verify audit log: %w", err)
	}
	for _, e := range expect {
		if v.FirstBad == nil && e.Seq > v.Head.Seq {
			v.FirstBad = &AuditBad{Seq: v.Head.Seq + 1, Reason: fmt.Sprintf("records %d to %d are missing: the chain ends at %d, the known head is %s", v.Head.Seq+1, e.Seq, v.Head.Seq, e)}
		}
	}
	v.OK = v.FirstBad == nil
	return v, nil
}

// errStopScan ends ScanAudit early from VerifyAudit.
var errStopScan = errors.New("stop scan")

// ParseAuditHead parses a head written as "SEQ:HEXHASH" (AuditHead.String).
func ParseAuditHead(s string) (*AuditHead, error) {
	seq, hash, ok := strings.Cut(s, ":")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok || err != nil {
		return nil, fmt.Errorf("audit head %q: want SEQ:HASH", s)
	}
	h, err := hex.DecodeString(hash)
	if err != nil || len(h) != sha256.Size {
		return nil, fmt.Errorf("audit head %q: want a %d-digit hex hash", s, 2*sha256.Size)
	}
	return &AuditHead{Seq: n, Hash: h}, nil
}

// String writes the head as "SEQ:HEXHASH".
func (h AuditHead) String() string { return fmt.Sprintf("%d:%x", h.Seq, h.Hash) }
