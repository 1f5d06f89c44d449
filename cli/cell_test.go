package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"

	"github.com/ffrtmp/ffrtmp/fsm"
)

func TestCellEscapes(t *testing.T) {
	for in, want := range map[string]string{
		"plain 名前 🎬 e\u0301":   "plain 名前 🎬 e\u0301",
		"\x1b[31mred\x1b[0m":   `\x1b[31mred\x1b[0m`,
		"tab\tnew\nline\r":     `tab\tnew\nline\r`,
		"nul\x00 c1\u0085":     `nul\x00 c1\u0085`,
		"ls\u2028 rlo\u202e x": `ls\u2028 rlo\u202e x`,
		"bad\xffbyte \uFFFD":   `bad\xffbyte ` + "\uFFFD",
	} {
		if got := cell(in); got != want {
			t.Errorf("cell(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestTablesEscapeStoredControlCharacters: data stored before the API
// refused control characters prints escaped in `jobs list`, `jobs get`
// and `workers list`.
func TestTablesEscapeStoredControlCharacters(t *testing.T) {
	hostile := "evil\x1b]0;owned\x07\x1b[2J\nfake row\t"
	retries := 1
	job := &fsm.Job{ID: "0190b6a0-0000-7000-8000-000000000001", State: fsm.JobFailed, TenantID: "default",
		Spec:  fsm.JobSpec{Name: hostile, Queue: fsm.QueueDefault, Priority: fsm.PriorityMedium, MaxRetries: &retries, Input: fsm.Input{URL: "file:///a" + hostile}},
		Error: &fsm.Error{Code: fsm.CodeFFmpeg, Message: hostile}}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var v any
		switch r.URL.Path {
		case "/v1/jobs":
			v = fsm.JobPage{Jobs: []*fsm.Job{job}}
		case "/v1/workers":
			v = map[string]any{"workers": []*fsm.Worker{{ID: "w1", Name: hostile, State: fsm.WorkerUp}}}
		default:
			v = job
		}
		json.NewEncoder(w).Encode(v)
	}))
	t.Cleanup(hs.Close)
	c, err := NewClient(hs.URL, "ffk_x_y")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, print := range map[string]func(Output) error{
		"jobs list":    func(o Output) error { return ListJobs(ctx, c, o, nil) },
		"jobs get":     func(o Output) error { return GetJob(ctx, c, o, job.ID) },
		"workers list": func(o Output) error { return ListWorkers(ctx, c, o) },
	} {
		var buf bytes.Buffer
		if err := print(Output{W: &buf}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out := buf.String()
		if strings.ContainsFunc(out, func(r rune) bool { return unicode.IsControl(r) && r != '\n' }) || strings.Contains(out, "\nfake row") {
			t.Errorf("%s printed a control character or a forged row:\n%q", name, out)
		}
		if !strings.Contains(out, `evil\x1b]0;owned\a`) {
			t.Errorf("%s does not show the escaped name:\n%s", name, out)
		}
	}
}
