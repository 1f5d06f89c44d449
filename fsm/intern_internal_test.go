package fsm

import (
	"encoding/json"
	"testing"
	"unsafe"
)

// TestCompactSharesStrings: a job decoded from an entry, compacted,
// holds the same values as before, but its fixed-vocabulary strings
// are the vocabulary's copies, and its plan's URLs are its spec's.
func TestCompactSharesStrings(t *testing.T) {
	spec := JobSpec{Scenario: "720p30-h264", Queue: QueueBatch, Priority: PriorityLow,
		Input: Input{URL: "testsrc://?duration=5"}, Outputs: []Output{{URL: "file:///out/a.mp4"}}}
	plan, err := spec.Compile(Policy{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(&Job{ID: "j1", TenantID: "acme", Spec: spec, Plan: *plan})
	if err != nil {
		t.Fatal(err)
	}
	var j Job
	if err := json.Unmarshal(data, &j); err != nil {
		t.Fatal(err)
	}
	tenant := string([]byte("acme")) // the FSM's own copy
	compact(&j, tenant)
	got, err := json.Marshal(&j)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(data) {
		t.Fatalf("compact changed the job:\n got %s\nwant %s", got, data)
	}
	same := func(what, a, b string) {
		t.Helper()
		if unsafe.StringData(a) != unsafe.StringData(b) {
			t.Errorf("%s %q is a copy of its own", what, a)
		}
	}
	same("tenant", j.TenantID, tenant)
	same("scenario", j.Spec.Scenario, vocabulary["720p30-h264"])
	same("queue", string(j.Spec.Queue), vocabulary["batch"])
	same("priority", string(j.Spec.Priority), vocabulary["low"])
	same("input kind", j.Plan.Input.Kind, vocabulary[KindTestsrc])
	same("input URL", j.Plan.Input.URL, j.Spec.Input.URL)
	r := j.Plan.Outputs[0]
	same("output kind", r.Kind, vocabulary[KindFile])
	same("container", r.Container, vocabulary["mp4"])
	same("video codec", r.Video.Codec, vocabulary["h264"])
	same("audio codec", r.Audio.Codec, vocabulary["aac"])
	same("output URL", r.URL, j.Spec.Outputs[0].URL)
}
