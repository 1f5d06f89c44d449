package cluster

import (
	"reflect"
	"testing"

	json "github.com/go-json-experiment/json/v1"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestResponseCodecEveryKind: an apply response of every registered kind
// crosses the wire between nodes as the same object, under the kind names
// that nodes of earlier versions know.
func TestResponseCodecEveryKind(t *testing.T) {
	t.Parallel()
	var names []string
	for _, k := range fsm.Kinds {
		names = append(names, k.Name)
		o := k.New()
		if err := json.Unmarshal([]byte(`{"id":"x1","create_index":3,"modify_index":4}`), o); err != nil {
			t.Fatal(err)
		}
		r, err := encodeResponse(4, o)
		if err != nil {
			t.Fatalf("encodeResponse(%T): %v", o, err)
		}
		wire, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var back applyResponse
		if err := json.Unmarshal(wire, &back); err != nil {
			t.Fatal(err)
		}
		got, err := decodeResponse(&back)
		if err != nil {
			t.Fatalf("decodeResponse(%s): %v", wire, err)
		}
		if back.Kind != k.Name || !reflect.DeepEqual(got, o) {
			t.Errorf("%s round trip: kind %q, %#v; want %q, %#v", k.Name, back.Kind, got, k.Name, o)
		}
	}
	// The names are wire format: a node of an earlier version must still
	// read them.
	for name, want := range map[string]any{"tenant": &fsm.Tenant{}, "api_key": &fsm.APIKey{}, "worker": &fsm.Worker{}, "job": &fsm.Job{}} {
		if k := fsm.KindNamed(name); k == nil || reflect.TypeOf(k.New()) != reflect.TypeOf(want) {
			t.Errorf("kind %q is %v, want the kind of %T (registered: %v)", name, k, want, names)
		}
	}
	if _, err := decodeResponse(&applyResponse{Kind: "gadget", Value: json.RawMessage(`{}`)}); err == nil {
		t.Error("decodeResponse of an unknown kind = nil error, want an error")
	}
}
