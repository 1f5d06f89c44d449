package cluster_test

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	jsonv1 "github.com/go-json-experiment/json/v1"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestWriteJSONMatchesEncoder checks that WriteJSON answers the bytes
// encoding/json's Encoder wrote before it (SetIndent("", indent),
// SetEscapeHTML(false), a trailing newline), compact and indented, for
// values with every shape the API and the node RPC answer: structs with
// embedded fields and omitempty, nested empty and nil slices and maps,
// times, durations, numbers, HTML, control and line separator
// characters in strings (every stored string is valid UTF-8: invalid
// bytes, which encoding/json escapes as \ufffd and WriteJSON writes as
// the character itself, cannot occur), and a type's own MarshalJSON;
// with the
// status, Content-Type and a Content-Length of the body's length.
func TestWriteJSONMatchesEncoder(t *testing.T) {
	t.Parallel()
	job := newJob(t, "acme", "720p30-h264", time.Minute)
	job.Spec.Name = "<b>a & b</b>\u2028\u2029\x00\x7f é"
	job.Error = fsm.Errorf(fsm.CodeInternal, "%s", job.Spec.Name)
	values := map[string]any{
		"job":    job,
		"jobPtr": &job,
		"error":  map[string]*fsm.Error{"error": fsm.Errorf(fsm.CodeInvalidArgument, "field %q: <bad> & \"worse\"", "x\ny")},
		"shapes": map[string]any{
			"empty_slice": []int{}, "nil_slice": []string(nil), "empty_map": map[string]int{}, "nil_map": map[string]int(nil),
			"nested": []any{[]any{}, map[string]any{}, nil, true, 0.1, 1e21, math.MaxInt64, -0.0, "\t"},
			"when":   time.Date(2026, 12, 1, 16, 0, 0, 123, time.UTC), "raw": json.RawMessage(`{"a":[1, 2]}`),
		},
		"list":   []fsm.Job{job, {ID: "empty"}},
		"string": "plain",
		"null":   nil,
	}
	for name, v := range values {
		for _, indent := range []string{"", "  "} {
			var want bytes.Buffer
			enc := json.NewEncoder(&want)
			enc.SetIndent("", indent)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(v); err != nil {
				t.Fatalf("%s: encoding/json: %v", name, err)
			}
			rec := httptest.NewRecorder()
			if err := cluster.WriteJSON(rec, http.StatusTeapot, v, indent); err != nil {
				t.Fatalf("%s: WriteJSON: %v", name, err)
			}
			if got := rec.Body.String(); got != want.String() {
				t.Errorf("%s, indent %q:\ngot  %s\nwant %s", name, indent, got, want.String())
			}
			if rec.Code != http.StatusTeapot || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Content-Length") != strconv.Itoa(want.Len()) {
				t.Errorf("%s: status %d, headers %v", name, rec.Code, rec.Header())
			}
		}
	}
}

// TestWriteJSONRefusesWithoutWriting checks that a value that does not
// encode is refused before anything is written, so that the caller can
// still answer an error.
func TestWriteJSONRefusesWithoutWriting(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	if err := cluster.WriteJSON(rec, http.StatusOK, map[string]any{"c": make(chan int)}, "  "); err == nil {
		t.Fatal("a channel encoded")
	}
	if rec.Body.Len() != 0 || len(rec.Header()) != 0 {
		t.Fatalf("wrote %q, headers %v", rec.Body.String(), rec.Header())
	}
}

// BenchmarkWriteJSON measures answering a queued job as the API does
// (indented) and as the node RPC does (compact): with WriteJSON, and
// with the v1 Encoder the server used before it (SetIndent,
// SetEscapeHTML(false)), its same-run baseline.
func BenchmarkWriteJSON(b *testing.B) {
	job := newJob(b, "acme", "720p30-h264", time.Minute)
	for _, indent := range []string{"  ", ""} {
		name := map[string]string{"  ": "indented", "": "compact"}[indent]
		b.Run("encoder/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				rec.Header().Set("Content-Type", "application/json")
				rec.WriteHeader(http.StatusCreated)
				enc := jsonv1.NewEncoder(rec)
				enc.SetIndent("", indent)
				enc.SetEscapeHTML(false)
				if err := enc.Encode(&job); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("WriteJSON/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := cluster.WriteJSON(httptest.NewRecorder(), http.StatusCreated, &job, indent); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
