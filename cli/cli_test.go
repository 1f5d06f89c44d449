package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

func TestReorderArgs(t *testing.T) {
	app := newApp(Env{})
	cases := []struct{ in, want string }{
		{"jobs get ID -o json", "-o json jobs get ID"},
		{"-o json jobs get ID", "-o json jobs get ID"},
		{"jobs submit --scenario 720p30-h264 --output file:///a.mp4 -o json", "-o json jobs submit --scenario 720p30-h264 --output file:///a.mp4"},
		{"jobs list --state running --addr http://x:1", "--addr http://x:1 jobs list --state running"},
		{"jobs watch ID --api-key=k", "--api-key=k jobs watch ID"},
		{"jobs submit --spec - --output file:///a.mp4", "jobs submit --spec - --output file:///a.mp4"},
		{"jobs get -- -weird", "jobs get -- -weird"},
		{"jobs list --tenant t-b --state queued -o json", "--tenant t-b -o json jobs list --state queued"},
		{"workers drain w1 --tenant=t-b", "--tenant=t-b workers drain w1"},
		// A command's own --tenant (the worker's tenant, migrate's target)
		// stays the command's.
		{"migrate --from sqlite:///m.db --tenant acme", "migrate --from sqlite:///m.db --tenant acme"},
		{"worker --tenant acme", "worker --tenant acme"},
	}
	for _, tc := range cases {
		got := strings.Join(reorderArgs(app, strings.Fields(tc.in)), " ")
		if got != tc.want {
			t.Errorf("reorderArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// devEnv runs dev mode in-process on loopback with its own config and
// data directories, and returns a function that runs CLI commands
// against it.
type devEnv struct {
	t       *testing.T
	vars    map[string]string
	dataDir string
}

func startDev(t *testing.T) *devEnv { return startDevWorkers(t, 1) }

func startDevWorkers(t *testing.T, workers int) *devEnv {
	t.Helper()
	root := t.TempDir()
	d := &devEnv{t: t, vars: map[string]string{
		"XDG_CONFIG_HOME": filepath.Join(root, "config"),
		"HOME":            root,
	}, dataDir: filepath.Join(root, "data")}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		done <- RunDev(ctx, DevConfig{
			DataDir: d.dataDir, HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", Workers: workers, Slots: 2,
			AllowHosts: []string{"127.0.0.1"}, Logger: newLogger(io.Discard, "error"), Out: &out,
			Getenv: d.getenv, OnReady: func(u string) { ready <- u },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dev: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("dev exited: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("dev did not become ready")
	}
	if !strings.Contains(out.String(), "ffk_") {
		t.Fatalf("dev did not print the admin key: %q", out.String())
	}
	return d
}

func (d *devEnv) getenv(k string) string { return d.vars[k] }

// run runs one CLI command and returns its stdout.
func (d *devEnv) run(args ...string) (string, error) {
	d.t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	err := Run(ctx, Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Getenv: d.getenv}, args)
	return out.String(), err
}

func (d *devEnv) mustRun(args ...string) string {
	d.t.Helper()
	out, err := d.run(args...)
	if err != nil {
		d.t.Fatalf("ffrtmp %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func TestCLIJobLifecycle(t *testing.T) {
	d := startDev(t)

	cfgPath, _ := ConfigPath(d.getenv)
	st, err := os.Stat(cfgPath)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file %s: mode %v, err %v", cfgPath, st.Mode().Perm(), err)
	}

	id := strings.TrimSpace(d.mustRun("jobs", "submit", "--scenario", "240p30-h264", "--input", "testsrc://?duration=2", "--output", "file:///demo.mp4"))
	if len(id) != 36 {
		t.Fatalf("submit printed %q, want a job ID", id)
	}
	watch := d.mustRun("jobs", "watch", id)
	// The output by its URL: the API never names a host path.
	if !strings.Contains(watch, "succeeded") || !strings.Contains(watch, "output file:///demo.mp4") || strings.Contains(watch, d.dataDir) {
		t.Fatalf("watch output:\n%s", watch)
	}
	var j fsm.Job
	if err := json.Unmarshal([]byte(d.mustRun("jobs", "get", id, "-o", "json")), &j); err != nil {
		t.Fatal(err)
	}
	if j.State != fsm.JobSucceeded || j.Result == nil || j.Result.Outputs[0].Codec != "h264" || j.Result.Outputs[0].Height != 240 {
		t.Fatalf("job = %+v", j)
	}
	if table := d.mustRun("jobs", "get", id); !strings.Contains(table, "succeeded") || !strings.Contains(table, "426x240") {
		t.Fatalf("get table:\n%s", table)
	}
	if list := d.mustRun("jobs", "list", "--state", "succeeded"); !strings.Contains(list, id) {
		t.Fatalf("list lacks %s:\n%s", id, list)
	}
	if logs := d.mustRun("jobs", "logs", id); !strings.Contains(logs, "libx264") {
		t.Fatalf("logs:\n%s", logs)
	}
	if ws := d.mustRun("workers", "list"); !strings.Contains(ws, "libx264") || !strings.Contains(ws, "up") {
		t.Fatalf("workers list:\n%s", ws)
	}

	// A whole spec from stdin-like file, then cancel while it runs.
	spec := filepath.Join(t.TempDir(), "spec.json")
	os.WriteFile(spec, []byte(`{"name":"long","scenario":"240p30-h264","input":{"url":"testsrc://?duration=600"},"outputs":[{"url":"file:///long.mp4"}],"max_retries":0}`), 0o600)
	long := strings.TrimSpace(d.mustRun("jobs", "submit", "--spec", spec))
	waitJob(t, d, long, fsm.JobRunning)
	if out := d.mustRun("jobs", "cancel", long); !strings.Contains(out, "canceled") {
		t.Fatalf("cancel printed %q", out)
	}
	_, err = d.run("jobs", "watch", long)
	if !errors.Is(err, ErrJobNotSucceeded) {
		t.Fatalf("watch of a canceled job: %v", err)
	}
	retried := strings.TrimSpace(d.mustRun("jobs", "retry", long))
	if retried == long || len(retried) != 36 {
		t.Fatalf("retry printed %q", retried)
	}
	d.mustRun("jobs", "cancel", retried)
}

func waitJob(t *testing.T, d *devEnv, id string, state fsm.JobState) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var j fsm.Job
		if err := json.Unmarshal([]byte(d.mustRun("jobs", "get", id, "-o", "json")), &j); err != nil {
			t.Fatal(err)
		}
		if j.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %s, want %s", id, j.State, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestCLIErrors(t *testing.T) {
	d := startDev(t)
	cases := []struct {
		args []string
		code fsm.Code
	}{
		{[]string{"jobs", "submit", "--scenario", "720p30-h264", "--input", "file:///etc/passwd", "--output", "file:///a.mp4"}, fsm.CodeURLNotAllowed},
		{[]string{"jobs", "submit", "--scenario", "720p31-h264", "--input", "testsrc://", "--output", "file:///a.mp4"}, fsm.CodeUnknownScenario},
		{[]string{"jobs", "get", "01a21f5d-e989-755a-85c1-5ed848c98b1a"}, fsm.CodeNotFound},
		{[]string{"jobs", "list", "--api-key", "ffk_00_bad"}, "unauthenticated"},
	}
	for _, tc := range cases {
		_, err := d.run(tc.args...)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Code != tc.code {
			t.Errorf("ffrtmp %s: got %v, want code %s", strings.Join(tc.args, " "), err, tc.code)
		}
	}
	if _, err := d.run("jobs", "submit", "--scenario", "720p30-h264"); err == nil {
		t.Error("submit without input and output succeeded")
	}
	if _, err := d.run("jobs", "list", "-o", "yaml"); err == nil {
		t.Error("unknown output format accepted")
	}
	out := d.mustRun("jobs", "list", "-o", "json")
	var page fsm.JobPage
	if err := json.Unmarshal([]byte(out), &page); err != nil || len(page.Jobs) != 0 {
		t.Fatalf("bad submits stored jobs: %v %d", err, len(page.Jobs))
	}
}

// TestDevWithoutWorker runs dev mode with --workers 0: the node keeps
// serving, and jobs wait in the queue for a worker.
func TestDevWithoutWorker(t *testing.T) {
	d := startDevWorkers(t, 0)
	id := strings.TrimSpace(d.mustRun("jobs", "submit", "--scenario", "240p30-h264", "--input", "testsrc://?duration=1", "--output", "file:///w0.mp4"))
	var ws []json.RawMessage
	if err := json.Unmarshal([]byte(d.mustRun("workers", "list", "-o", "json")), &ws); err != nil || len(ws) != 0 {
		t.Fatalf("workers: %v %d", err, len(ws))
	}
	if j := strings.TrimSpace(d.mustRun("jobs", "list", "--state", "queued", "-o", "json")); !strings.Contains(j, id) {
		t.Fatalf("job %s not queued:\n%s", id, j)
	}
}
