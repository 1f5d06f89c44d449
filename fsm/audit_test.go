package fsm_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
)

func testActor(action, target, tenant string) *fsm.Actor {
	return &fsm.Actor{User: "ann@acme", KeyID: "0123456789abcdef", Role: fsm.RoleOperator, TenantID: "acme",
		RequestID: "req-1", Source: "192.0.2.1:5000", Action: action, Target: target, Tenant: tenant}
}

// TestEnvelope: an entry with an actor is an envelope that decodes to
// its command and actor; without one the entry keeps its old format.
func TestEnvelope(t *testing.T) {
	t.Parallel()
	c := &fsm.CancelJob{JobID: "j1", At: t0}
	plain, _ := fsm.Encode(c)
	if same, _ := fsm.EncodeAs(c, nil); string(same) != string(plain) || fsm.MessageType(plain[0]) != fsm.CancelJobType {
		t.Fatalf("EncodeAs(c, nil) = %q, want Encode's %q", same, plain)
	}
	a := testActor("cancelJob", "j1", "acme")
	data, err := fsm.EncodeAs(c, a)
	if err != nil {
		t.Fatal(err)
	}
	if fsm.MessageType(data[0]) != fsm.EnvelopeType {
		t.Fatalf("type byte %d, want the envelope's %d", data[0], fsm.EnvelopeType)
	}
	got, actor, err := fsm.DecodeEntry(data)
	if err != nil || *actor != *a || got.(*fsm.CancelJob).JobID != "j1" {
		t.Fatalf("DecodeEntry = %+v, %+v, %v; want the command and its actor", got, actor, err)
	}
	if got, err := fsm.DecodeCommand(data); err != nil || got.(*fsm.CancelJob).JobID != "j1" {
		t.Fatalf("DecodeCommand = %+v, %v; want the inner command", got, err)
	}

	refused := map[string][]byte{}
	enc := func(name string, c fsm.Command, a *fsm.Actor) {
		d, err := fsm.EncodeAs(c, a)
		if err != nil {
			t.Fatal(err)
		}
		refused[name] = d
	}
	enc("no action", c, &fsm.Actor{User: "x"})
	enc("control character", c, &fsm.Actor{Action: "cancelJob", User: "a\x1b[2Jb"})
	enc("long source", c, &fsm.Actor{Action: "cancelJob", Source: strings.Repeat("s", 300)})
	enc("record without actor", &fsm.RecordAudit{Result: "permission_denied"}, nil)
	enc("record without result", &fsm.RecordAudit{}, a)
	env := func(v any) []byte {
		b, _ := json.Marshal(v)
		return append([]byte{byte(fsm.EnvelopeType)}, b...)
	}
	refused["nested"] = env(map[string]any{"actor": a, "type": fsm.EnvelopeType, "command": map[string]any{}})
	refused["no actor"] = env(map[string]any{"type": fsm.CancelJobType, "command": c})
	refused["bad inner"] = env(map[string]any{"actor": a, "type": fsm.CancelJobType, "command": map[string]any{"job_id": ""}})
	for name, d := range refused {
		if _, _, err := fsm.DecodeEntry(d); fsm.ErrorCode(err) != fsm.CodeInvalidArgument {
			t.Errorf("%s: DecodeEntry error %v, want invalid_argument", name, err)
		}
	}
	unknown := env(map[string]any{"actor": a, "type": 99, "command": map[string]any{}})
	if _, _, err := fsm.DecodeEntry(unknown); fsm.ErrorCode(err) != fsm.CodeUnknownCommand {
		t.Errorf("envelope of an unknown type: error %v, want unknown_command", err)
	}
}

// auditNode applies entries one per index, with actors where given.
func (n *node) applyAs(a *fsm.Actor, c fsm.Command) any {
	n.t.Helper()
	n.last++
	data, err := fsm.EncodeAs(c, a)
	if err != nil {
		n.t.Fatal(err)
	}
	return n.f.ApplyBatch([]*raft.Log{{Index: n.last, Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: at(0).Add(time.Duration(n.last))}})[0]
}

func scanAudit(t *testing.T, st fsm.Store) []*fsm.AuditRecord {
	t.Helper()
	var out []*fsm.AuditRecord
	if err := st.ScanAudit(context.Background(), 0, func(r *fsm.AuditRecord) error { out = append(out, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAuditRecords: each entry with an actor gets one record, in the same
// batch, with the result, target and tenant of what it did; entries
// without one get none; the chain verifies, and two nodes build the same.
func TestAuditRecords(t *testing.T) {
	t.Parallel()
	var nodes []*node
	for range 2 {
		n := newNode(t)
		n.apply(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "acme"}}) // no actor: no record
		n.applyAs(testActor("submitJob", "", "acme"), &fsm.SubmitJob{Job: newJob(t, "j1", "acme", spec("720p30-h264"), t0)})
		n.applyAs(testActor("cancelJob", "nope", "acme"), &fsm.CancelJob{JobID: "nope", At: t0})
		n.applyAs(testActor("drainWorker", "w9", "acme"), &fsm.RecordAudit{Result: "permission_denied"})
		n.apply(&fsm.CancelJob{JobID: "j1", At: t0}) // no actor
		nodes = append(nodes, n)
	}
	recs := scanAudit(t, nodes[0].st)
	type want struct {
		seq            uint64
		action, target string
		tenant         string
		result         fsm.Code
		index          uint64
	}
	wants := []want{{1, "submitJob", "j1", "acme", "ok", 2}, {2, "cancelJob", "nope", "acme", "invalid_transition", 3}, {3, "drainWorker", "w9", "acme", "permission_denied", 4}}
	if len(recs) != len(wants) {
		t.Fatalf("%d records, want %d: %s", len(recs), len(wants), mustJSON(t, recs))
	}
	var prev []byte
	for i, w := range wants {
		r := recs[i]
		if r.Seq != w.seq || r.Action != w.action || r.Target != w.target || r.Tenant != w.tenant || r.Result != w.result || r.CreateIndex != w.index {
			t.Errorf("record %d = %s, want %+v", i, mustJSON(t, r), w)
		}
		if r.User != "ann@acme" || r.KeyID != "0123456789abcdef" || r.RequestID != "req-1" || r.Source != "192.0.2.1:5000" || !r.Time.Equal(at(0).Add(time.Duration(w.index))) {
			t.Errorf("record %d lost its actor or time: %s", i, mustJSON(t, r))
		}
		if string(r.PrevHash) != string(prev) || string(r.Hash) != string(fsm.AuditHash(testAuditKey, r)) {
			t.Errorf("record %d is not chained: %s", i, mustJSON(t, r))
		}
		prev = r.Hash
	}
	if other := scanAudit(t, nodes[1].st); mustJSON(t, other) != mustJSON(t, recs) {
		t.Errorf("two nodes built different chains:\n%s\n%s", mustJSON(t, other), mustJSON(t, recs))
	}
	if h := nodes[0].f.AuditHeadNow(); h.Seq != 3 || string(h.Hash) != string(prev) {
		t.Errorf("AuditHeadNow = %+v, want the last record's", h)
	}
	v, err := nodes[0].f.VerifyAudit(context.Background())
	if err != nil || !v.OK || v.Checked != 3 || v.Head.Seq != 3 {
		t.Errorf("VerifyAudit = %+v, %v; want ok, 3 checked", v, err)
	}
	// A restarted FSM continues the chain from the stored head.
	restarted := newFSM(t, nodes[0].st)
	if h := restarted.AuditHeadNow(); h.Seq != 3 || string(h.Hash) != string(prev) {
		t.Errorf("restarted AuditHeadNow = %+v, want the stored head", h)
	}
	// The wrong key fails the first record.
	if v, _ := fsm.VerifyAudit(context.Background(), nodes[0].st, []byte("another key")); v.OK || v.FirstBad.Seq != 1 {
		t.Errorf("VerifyAudit with another key = %+v, want record 1 bad", v)
	}
}

// sliceStore serves ScanAudit from a slice, for VerifyAudit.
type sliceStore struct {
	fsm.Store
	recs []*fsm.AuditRecord
}

func (s *sliceStore) ScanAudit(ctx context.Context, after uint64, fn func(*fsm.AuditRecord) error) error {
	for _, r := range s.recs {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// TestVerifyAuditTampering: an altered, removed or reordered record, or
// a cut-off tail, is named with the reason.
func TestVerifyAuditTampering(t *testing.T) {
	t.Parallel()
	var chain []*fsm.AuditRecord
	var prev []byte
	for i := uint64(1); i <= 5; i++ {
		r := &fsm.AuditRecord{Seq: i, Time: at(time.Duration(i)), Actor: *testActor("submitJob", "j", "acme"), Result: fsm.ResultOK,
			PrevHash: prev, Meta: fsm.Meta{CreateIndex: 10 + i, ModifyIndex: 10 + i}}
		r.Hash = fsm.AuditHash(testAuditKey, r)
		prev = r.Hash
		chain = append(chain, r)
	}
	head := fsm.AuditHead{Seq: 5, Hash: chain[4].Hash}
	clone := func() []*fsm.AuditRecord {
		out := make([]*fsm.AuditRecord, len(chain))
		for i, r := range chain {
			c := *r
			out[i] = &c
		}
		return out
	}
	altered := clone()
	altered[2].Result = "permission_denied"
	removed := append(clone()[:1], clone()[2:]...)
	reordered := clone()
	reordered[2], reordered[3] = reordered[3], reordered[2]
	renumbered := clone() // records 3 and 4 swapped, Seq rewritten to fit
	renumbered[2], renumbered[3] = renumbered[3], renumbered[2]
	renumbered[2].Seq, renumbered[3].Seq = 3, 4
	for _, c := range []struct {
		name   string
		recs   []*fsm.AuditRecord
		expect []fsm.AuditHead
		bad    uint64
		reason string
	}{
		{"intact", clone(), []fsm.AuditHead{head, {Seq: 2, Hash: chain[1].Hash}}, 0, ""},
		{"altered", altered, nil, 3, "altered"},
		{"removed", removed, nil, 2, "missing"},
		{"reordered", reordered, nil, 3, "out of order"},
		{"renumbered", renumbered, nil, 3, "does not chain"},
		{"tail cut", clone()[:3], []fsm.AuditHead{head}, 4, "missing"},
		{"head replaced", clone()[:4], []fsm.AuditHead{{Seq: 4, Hash: []byte("x")}}, 4, "not the one committed"},
	} {
		v, err := fsm.VerifyAudit(context.Background(), &sliceStore{recs: c.recs}, testAuditKey, c.expect...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if c.bad == 0 {
			if !v.OK || v.Checked != 5 || v.Head.Seq != 5 {
				t.Errorf("%s: %+v, want ok", c.name, v)
			}
			continue
		}
		if v.OK || v.FirstBad == nil || v.FirstBad.Seq != c.bad || !strings.Contains(v.FirstBad.Reason, c.reason) {
			t.Errorf("%s: %s, want record %d bad: %s", c.name, mustJSON(t, v), c.bad, c.reason)
		}
	}
}
