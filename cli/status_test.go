package cli

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// TestCLIJobsStatusAndSpecAudio runs dev mode without workers, so that
// jobs stay queued: `jobs submit --spec` takes an output's audio as the
// API does, refuses what the API refuses, and `jobs status` counts the
// queued jobs by queue and priority with the oldest one's age.
func TestCLIJobsStatusAndSpecAudio(t *testing.T) {
	d := startDevWorkers(t, 0)
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	// An output's audio: opus for the webm output, aac for the others.
	ladder := write("ladder.json", `{"scenario":"240p30-h264","input":{"url":"testsrc://?duration=1"},"queue":"batch","priority":"high",
		"outputs":[{"url":"file:///l.mp4"},{"url":"file:///l.webm","video":{"codec":"vp9"},"audio":{"codec":"opus","bitrate_kbps":96}}],
		"audio":{"codec":"aac"}}`)
	id := strings.TrimSpace(d.mustRun("jobs", "submit", "--spec", ladder))
	var j server.Job
	if err := json.Unmarshal([]byte(d.mustRun("jobs", "get", id, "-o", "json")), &j); err != nil {
		t.Fatal(err)
	}
	if a := j.Spec.Outputs[1].Audio; a == nil || a.Codec != "opus" || a.BitrateKbps != 96 {
		t.Fatalf("outputs[1].audio = %+v, want opus at 96", a)
	}
	// What the API refuses, the CLI refuses with the API's code, before
	// sending anything.
	for name, body := range map[string]string{
		"unknown.json": `{"scenario":"240p30-h264","input":{"url":"testsrc://"},"outputs":[{"url":"file:///u.mp4","audio":{"codec":"aac","channels":2}}]}`,
		"zerofps.json": `{"scenario":"240p30-h264","input":{"url":"testsrc://"},"outputs":[{"url":"file:///z.mp4","video":{"fps":0}}]}`,
	} {
		_, err := d.run("jobs", "submit", "--spec", write(name, body))
		var fe *fsm.Error
		if !errors.As(err, &fe) || (fe.Code != server.CodeUnknownField && fe.Code != fsm.CodeInvalidArgument) {
			t.Errorf("submit --spec %s: %v, want the API's refusal", name, err)
		}
	}

	d.mustRun("jobs", "submit", "--scenario", "240p30-h264", "--input", "testsrc://?duration=1", "--output", "file:///a.mp4")
	d.mustRun("jobs", "submit", "--scenario", "240p30-h264", "--input", "testsrc://?duration=1", "--output", "file:///b.mp4", "--queue", "live", "--priority", "low")

	var sum server.JobSummary
	if err := json.Unmarshal([]byte(d.mustRun("jobs", "status", "-o", "json")), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.States[fsm.JobQueued] != 3 || sum.States[fsm.JobRunning] != 0 {
		t.Errorf("states = %v, want 3 queued", sum.States)
	}
	for q, want := range map[fsm.Queue]map[fsm.Priority]int{
		fsm.QueueBatch:   {fsm.PriorityHigh: 1},
		fsm.QueueDefault: {fsm.PriorityMedium: 1},
		fsm.QueueLive:    {fsm.PriorityLow: 1},
	} {
		qs := sum.Queues[q]
		if qs.Queued != 1 || qs.OldestQueuedAt == nil {
			t.Errorf("queue %s = %+v, want 1 queued with its time", q, qs)
		}
		for p, n := range want {
			if qs.Priorities[p] != n {
				t.Errorf("queue %s priority %s = %d, want %d", q, p, qs.Priorities[p], n)
			}
		}
	}
	if sum.OldestQueuedAt == nil || !sum.OldestQueuedAt.Equal(*sum.Queues[fsm.QueueBatch].OldestQueuedAt) {
		t.Errorf("oldest queued = %v, want the first job's (batch queue) %v", sum.OldestQueuedAt, sum.Queues[fsm.QueueBatch].OldestQueuedAt)
	}

	table := d.mustRun("jobs", "status")
	for _, want := range []string{"STATE", "queued", "QUEUE", "HIGH", "MEDIUM", "LOW", "OLDEST", "batch", "Oldest queued job: queued "} {
		if !strings.Contains(table, want) {
			t.Errorf("jobs status lacks %q:\n%s", want, table)
		}
	}
	// Another tenant, named by a super-admin (dev's key): its own counts.
	d.mustRun("tenants", "create", "--name", "other")
	var other server.JobSummary
	if err := json.Unmarshal([]byte(d.mustRun("jobs", "status", "--tenant", "other", "-o", "json")), &other); err != nil {
		t.Fatal(err)
	}
	if other.Tenant != "other" || other.States[fsm.JobQueued] != 0 || other.OldestQueuedAt != nil {
		t.Errorf("--tenant other: %+v, want nothing queued", other)
	}
}
