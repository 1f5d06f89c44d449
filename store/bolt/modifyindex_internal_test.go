package bolt

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestModifyIndexTail: every object type the store writes ends its JSON
// with its modify index, where putGuarded reads it without decoding the
// object; a value of another form is decoded, with the same answer as a
// full decode. The values are written as Commit writes them, and are the
// bytes encoding/json writes.
func TestModifyIndexTail(t *testing.T) {
	t.Parallel()
	meta := fsm.Meta{CreateIndex: 7, ModifyIndex: 1234567}
	tricky := `"modify_index":99}`
	objs := []fsm.Object{
		&fsm.Job{ID: "j1", TenantID: "acme", State: fsm.JobRunning, Log: tricky, SubmittedAt: time.Now(),
			Progress: &fsm.Progress{Percent: 50}, Error: &fsm.Error{Code: fsm.CodeFFmpeg, Message: tricky}, Meta: meta},
		&fsm.Tenant{ID: "acme", Name: tricky, Meta: meta},
		&fsm.User{ID: "u1", Meta: meta},
		&fsm.APIKey{ID: "k1", Meta: meta},
		&fsm.Invitation{ID: "i1", Meta: meta},
		&fsm.WorkerToken{ID: "t1", Meta: meta},
		&fsm.Worker{ID: "w1", Name: tricky, Meta: meta},
		&fsm.AuditRecord{Seq: 3, Result: fsm.Code(tricky), Meta: meta},
	}
	// The store writes through one arena per transaction: each value must
	// be what encoding/json writes, and stay so as the arena grows.
	arena := &valueArena{}
	var written [][]byte
	for _, o := range objs {
		v, err := arena.marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		written = append(written, v)
	}
	for i, o := range objs {
		v := written[i]
		if want, err := json.Marshal(o); err != nil || string(v) != string(want) {
			t.Errorf("%T: the store wrote %s, encoding/json writes %s (%v)", o, v, want, err)
		}
		if m, ok := modifyIndexTail(v); !ok || m != meta.ModifyIndex {
			t.Errorf("%T: tail %d %v, want %d: does fsm.Meta still come last? %s", o, m, ok, meta.ModifyIndex, v)
		}
	}
	for _, v := range []string{
		`{"modify_index":5}`,
		`{"a":1,"modify_index":0}`,
		`{"a":"x\"modify_index\":5"}`,
		`{"a\"modify_index":5}`,
		`{"x":{"modify_index":3}}`,
		`{"modify_index":3,"x":1}`,
		`{"modify_index":}`,
		`{"modify_index":18446744073709551616}`,
		`{"create_index":1, "modify_index": 9 }`,
		`[1]`,
		`{}`,
	} {
		var want fsm.Meta
		wantErr := json.Unmarshal([]byte(v), &want)
		got, err := modifyIndexOf([]byte(v))
		if (err != nil) != (wantErr != nil) || got != want.ModifyIndex {
			t.Errorf("modifyIndexOf(%s) = %d, %v; a full decode gives %d, %v", v, got, err, want.ModifyIndex, wantErr)
		}
	}
}
