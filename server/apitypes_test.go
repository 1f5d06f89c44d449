package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// internalKey reports whether a JSON key names something the FSM keeps
// for itself: a credential's hash, a host path, the Raft index that
// created an object, a worker process's incarnation.
func internalKey(k string) bool {
	return k == "hash" || strings.HasSuffix(k, "_hash") || k == "path" || strings.HasSuffix(k, "_path") ||
		k == "create_index" || k == "incarnation"
}

// FindInternals walks a JSON document and describes every place that
// shows an internal: a key internalKey names (unless allowed lists it:
// the route documents it), or a string that holds one of hostPaths. An
// answer that is not JSON is searched for hostPaths only.
func FindInternals(body []byte, allowed []string, hostPaths ...string) []string {
	var out []string
	var v any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		for _, p := range hostPaths {
			if p != "" && bytes.Contains(body, []byte(p)) {
				out = append(out, fmt.Sprintf("the answer shows the host path %s", p))
			}
		}
		return out
	}
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if internalKey(k) && !slices.Contains(allowed, k) {
					out = append(out, fmt.Sprintf("%s.%s is internal", at, k))
				}
				walk(at+"."+k, c)
			}
		case []any:
			for i, c := range v {
				walk(fmt.Sprintf("%s[%d]", at, i), c)
			}
		case string:
			for _, p := range hostPaths {
				if p != "" && strings.Contains(v, p) {
					out = append(out, fmt.Sprintf("%s shows the host path %s", at, p))
				}
			}
		}
	}
	walk("$", v)
	slices.Sort(out)
	return out
}

// TestAPIJobLeavesOutInternals converts a job and a worker with every
// field set: what the FSM keeps for itself is gone, the rest is there.
func TestAPIJobLeavesOutInternals(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	retries := 2
	j := &fsm.Job{
		ID: "019a2f5d-e989-755a-85c1-5ed848c98b1a", TenantID: "acme", State: fsm.JobSucceeded, Attempt: 2, Retries: 1,
		WorkerID: "w1", RetryOf: "019a2f5d-e989-755a-85c1-5ed848c98b1b",
		Spec: fsm.JobSpec{Scenario: "240p30-h264", Input: fsm.Input{URL: "file:///in/a.mp4"}, Outputs: []fsm.Output{{URL: "file:///out/a.mp4"}}, MaxRetries: &retries},
		Plan: fsm.Plan{Input: fsm.PlanInput{Kind: fsm.KindFile, URL: "file:///in/a.mp4", Path: "in/a.mp4"},
			Outputs: []fsm.Rendition{{Kind: fsm.KindFile, URL: "file:///out/a.mp4", Path: "out/a.mp4", Container: "mp4"}}, Hardware: "software"},
		SubmittedAt: at, QueuedAt: at, NotBefore: at, AssignedAt: at, StartedAt: at, FinishedAt: at,
		Progress: &fsm.Progress{Percent: 100, Frame: 60, FPS: 30, Speed: 2, OutTimeMS: 2000, UpdatedAt: at},
		Result: &fsm.Result{Outputs: []fsm.OutputResult{{URL: "file:///out/a.mp4", Path: "/var/lib/ffrtmp/media/acme/out/a.mp4",
			Codec: "h264", Width: 426, Height: 240, FPS: 30, DurationSec: 2, SizeBytes: 1000}}, CPUSeconds: 1, PeakMemoryMB: 64},
		Error: &fsm.Error{Code: fsm.CodeFFmpeg, Message: "x"},
		Log:   "log",
		Meta:  fsm.Meta{CreateIndex: 3, ModifyIndex: 9},
	}
	b, _ := json.Marshal(apiJob(j))
	if got := FindInternals(b, nil, "/var/lib/ffrtmp"); len(got) > 0 {
		t.Errorf("job: %v\n%s", got, b)
	}
	for _, want := range []string{`"modify_index":9`, `"retry_of"`, `"not_before"`, `"progress"`, `"cpu_seconds":1`, `"log":"log"`, `"error":{"code":"ffmpeg_error"`, `"hardware":"software"`, `"size_bytes":1000`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("job lacks %s: %s", want, b)
		}
	}
	w := &fsm.Worker{ID: "w1", TenantID: "acme", Name: "host", Addr: "10.0.0.7:7947", State: fsm.WorkerUp, Incarnation: "i-1", Draining: true,
		Slots: 2, CPUs: 4, MemoryMB: 1024, Encoders: []string{"libx264"}, EncoderSessions: map[string]int{"nvenc": 3},
		Labels: map[string]string{"rack": "1"}, RegisteredAt: at, Meta: fsm.Meta{CreateIndex: 3, ModifyIndex: 9}}
	b, _ = json.Marshal(apiWorker(w, 1))
	if got := FindInternals(b, nil); len(got) > 0 || bytes.Contains(b, []byte("10.0.0.7")) || bytes.Contains(b, []byte("i-1")) {
		t.Errorf("worker: %v\n%s", got, b)
	}
	for _, want := range []string{`"active_jobs":1`, `"modify_index":9`, `"draining":true`, `"encoder_sessions":{"nvenc":3}`, `"labels":{"rack":"1"}`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("worker lacks %s: %s", want, b)
		}
	}
}

// TestAPITypesMatchOpenAPI checks that every response type's JSON fields
// are exactly its schema's properties in openapi.json, and that the
// schemas' examples decode into the types without an unknown field.
func TestAPITypesMatchOpenAPI(t *testing.T) {
	t.Parallel()
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Items struct {
						Properties map[string]any `json:"properties"`
					} `json:"items"`
					Properties map[string]any `json:"properties"`
				} `json:"properties"`
				Example json.RawMessage `json:"example"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	schemas := doc.Components.Schemas
	props := func(name string) []string {
		s, ok := schemas[name]
		if !ok {
			t.Fatalf("openapi.json has no schema %s", name)
		}
		var out []string
		for k := range s.Properties {
			out = append(out, k)
		}
		return out
	}
	nested := func(schema, prop string, items bool) []string {
		p := schemas[schema].Properties[prop]
		m := p.Properties
		if items {
			m = p.Items.Properties
		}
		var out []string
		for k := range m {
			out = append(out, k)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		schema []string
		typ    any
	}{
		{"Job", props("Job"), Job{}},
		{"Plan", props("Plan"), Plan{}},
		{"Plan.input", nested("Plan", "input", false), PlanInput{}},
		{"Plan.outputs", nested("Plan", "outputs", true), PlanOutput{}},
		{"Progress", props("Progress"), Progress{}},
		{"Result", props("Result"), Result{}},
		{"OutputResult", props("OutputResult"), OutputResult{}},
		{"JobPage", props("JobPage"), JobPage{}},
		{"Worker", props("Worker"), Worker{}},
		{"WorkerList", props("WorkerList"), WorkerList{}},
		{"Whoami", props("Whoami"), Whoami{}},
		{"ClusterStatus", props("ClusterStatus"), ClusterStatus{}},
		{"ClusterMember", props("ClusterMember"), ClusterMember{}},
		{"ServerStatus", props("ServerStatus"), ServerStatus{}},
	} {
		got, want := jsonNames(reflect.TypeOf(tc.typ)), tc.schema
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: the type's fields are %v, the schema's %v", tc.name, got, want)
		}
	}
	for name, typ := range map[string]any{"Job": &Job{}, "Worker": &Worker{}} {
		dec := json.NewDecoder(bytes.NewReader(schemas[name].Example))
		dec.DisallowUnknownFields()
		if err := dec.Decode(typ); err != nil {
			t.Errorf("the example of %s does not decode: %v", name, err)
		}
	}
}

// jsonNames returns the JSON names of a struct type's fields.
func jsonNames(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	return out
}
