package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/server"
)

// TestCLISubmitSpecArray: `jobs submit --spec FILE` with a JSON array
// submits every spec in one batch and prints one row per spec; a refused
// spec fails the command without stopping the others.
func TestCLISubmitSpecArray(t *testing.T) {
	d := startDevWorkers(t, 0)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	os.WriteFile(good, []byte(`[
	  {"name":"a","scenario":"240p30-h264","input":{"url":"testsrc://?duration=1"},"outputs":[{"url":"file:///a.mp4"}]},
	  {"name":"b","scenario":"240p30-h264","input":{"url":"testsrc://?duration=1"},"outputs":[{"url":"file:///b.mp4"}]}
	]`), 0o600)
	out := d.mustRun("jobs", "submit", "--spec", good, "--queue", "batch", "-o", "json")
	var res []server.BatchSubmitResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 2 {
		t.Fatalf("submit of two specs printed %q (%v)", out, err)
	}
	for i, r := range res {
		if r.Status != 201 || r.Job == nil || r.Job.Spec.Queue != "batch" {
			t.Errorf("spec %d: %+v, want 201 with a job in queue batch (the flag overrides every spec)", i, r)
		}
	}

	mixed := filepath.Join(dir, "mixed.json")
	os.WriteFile(mixed, []byte(`[
	  {"scenario":"240p30-h264","input":{"url":"testsrc://?duration=1"},"outputs":[{"url":"file:///c.mp4"}]},
	  {"scenario":"721p30-h264","input":{"url":"testsrc://"},"outputs":[{"url":"file:///d.mp4"}]}
	]`), 0o600)
	table, err := d.run("jobs", "submit", "--spec", mixed)
	if err == nil || !strings.Contains(err.Error(), "1 of 2 specs were refused") {
		t.Fatalf("mixed batch: error %v, want one refused", err)
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "201") || !strings.Contains(lines[2], "400") || !strings.Contains(lines[2], "unknown_scenario") {
		t.Fatalf("mixed batch table:\n%s", table)
	}
	list := d.mustRun("jobs", "list")
	if got := strings.Count(list, "\n") - 1; got != 3 {
		t.Errorf("jobs list shows %d jobs, want 3:\n%s", got, list)
	}
}
