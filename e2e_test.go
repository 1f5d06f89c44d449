package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// These tests run the real ffrtmp binary as a user would.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	// raceBinary builds the binary with the race detector, as tests want;
	// benchmarks (run alone, with -run '^$') turn it off before building.
	raceBinary = true
)

func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ffrtmp-e2e")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "ffrtmp")
		args := []string{"build", "-o", binPath}
		if raceBinary {
			args = append(args, "-race")
		}
		args = append(args, ".")
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			buildErr = err
			binPath = string(out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build: %v\n%s", buildErr, binPath)
	}
	return binPath
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type devProc struct {
	t        *testing.T
	env      []string
	args     []string
	cmd      *exec.Cmd
	httpAddr string
	log      *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for the process's output copier and
// the test to use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

func newDev(t *testing.T) *devProc {
	root := t.TempDir()
	d := &devProc{t: t, httpAddr: freeAddr(t), log: &syncBuffer{}}
	d.env = append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Join(root, "config"), "FFRTMP_ADDR=", "FFRTMP_API_KEY=")
	d.args = []string{"dev", "--data-dir", filepath.Join(root, "data"), "--http", d.httpAddr, "--raft-addr", freeAddr(t), "--slots", "2", "--gossip-addr", "off"}
	t.Cleanup(func() {
		if d.cmd != nil && d.cmd.ProcessState == nil {
			d.cmd.Process.Signal(syscall.SIGTERM)
			d.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("dev output:\n%s", d.log.String())
		}
	})
	return d
}

func (d *devProc) start() {
	d.t.Helper()
	d.cmd = exec.Command(binary(d.t), d.args...)
	d.cmd.Env = d.env
	d.cmd.Stdout = d.log
	d.cmd.Stderr = d.log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + d.httpAddr + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("dev not ready:\n%s", d.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitLog waits until the process's output holds s, or fails after 30 s.
func (d *devProc) waitLog(s string) {
	d.t.Helper()
	waitForCond(d.t, 30*time.Second, "\""+s+"\" in the output", func() bool { return strings.Contains(d.log.String(), s) })
}

func (d *devProc) kill9() {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		d.t.Fatal(err)
	}
	d.cmd.Wait()
}

// cli runs a client command of the binary and returns its stdout.
func (d *devProc) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(d.t), args...)
	cmd.Env = d.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), &cliError{err: err, stderr: errb.String()}
	}
	return out.String(), nil
}

type cliError struct {
	err    error
	stderr string
}

func (e *cliError) Error() string { return e.err.Error() + ": " + e.stderr }

func (d *devProc) mustCLI(args ...string) string {
	d.t.Helper()
	out, err := d.cli(args...)
	if err != nil {
		d.t.Fatalf("ffrtmp %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (d *devProc) job(id string) *fsm.Job {
	d.t.Helper()
	var j fsm.Job
	if err := json.Unmarshal([]byte(d.mustCLI("jobs", "get", id, "-o", "json")), &j); err != nil {
		d.t.Fatal(err)
	}
	return &j
}

func (d *devProc) waitJob(id string, cond func(*fsm.Job) bool, what string) *fsm.Job {
	d.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		j := d.job(id)
		if cond(j) {
			return j
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("job %s: waiting for %s; it is %s", id, what, j.State)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ffmpegRunning reports whether any ffmpeg process has needle in its
// command line.
func ffmpegRunning(needle string) bool {
	out, _ := exec.Command("pgrep", "-f", "ffmpeg.*"+needle).Output()
	return len(bytes.TrimSpace(out)) > 0
}

// TestKill9Restart kills the dev process in the middle of two jobs and
// restarts it: nothing is lost, the job with retries left runs again and
// succeeds, the one without fails with worker_lost, finished jobs stay.
func TestKill9Restart(t *testing.T) {
	d := newDev(t)
	d.start()

	done := strings.TrimSpace(d.mustCLI("jobs", "submit", "--scenario", "240p30-h264", "--input", "testsrc://?duration=1", "--output", "file:///first.mp4"))
	if out := d.mustCLI("jobs", "watch", done); !strings.Contains(out, "succeeded") {
		t.Fatalf("first job: %s", out)
	}
	retry := strings.TrimSpace(d.mustCLI("jobs", "submit", "--scenario", "240p30-h264", "--input", "testsrc://?duration=300", "--output", "file:///retry.mp4", "--max-retries", "2"))
	once := strings.TrimSpace(d.mustCLI("jobs", "submit", "--scenario", "240p30-h264", "--input", "testsrc://?duration=300", "--output", "file:///once.mp4", "--max-retries", "0"))
	for _, id := range []string{retry, once} {
		d.waitJob(id, func(j *fsm.Job) bool { return j.State == fsm.JobRunning && j.Progress != nil }, "running with progress")
	}

	d.kill9()
	deadline := time.Now().Add(10 * time.Second)
	for ffmpegRunning("retry.mp4") || ffmpegRunning("once.mp4") {
		if time.Now().After(deadline) {
			t.Fatal("ffmpeg outlived the killed dev process")
		}
		time.Sleep(50 * time.Millisecond)
	}

	d.start()
	if j := d.job(done); j.State != fsm.JobSucceeded {
		t.Fatalf("finished job is %s after restart", j.State)
	}
	j := d.waitJob(once, func(j *fsm.Job) bool { return j.State.Terminal() }, "terminal")
	if j.State != fsm.JobFailed || j.Error == nil || j.Error.Code != fsm.CodeWorkerLost {
		t.Fatalf("job without retries: %s %+v", j.State, j.Error)
	}
	j = d.waitJob(retry, func(j *fsm.Job) bool { return j.Attempt >= 2 && j.State == fsm.JobRunning }, "second attempt running")
	if j.Retries != 1 {
		t.Fatalf("retries = %d, want 1", j.Retries)
	}
	d.mustCLI("jobs", "cancel", retry)

	var page fsm.JobPage
	if err := json.Unmarshal([]byte(d.mustCLI("jobs", "list", "-o", "json")), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Jobs) != 3 {
		t.Fatalf("after restart %d jobs listed, want 3", len(page.Jobs))
	}
}

// TestDevFirstStartAndAuth checks the first-start contract: the admin key
// is printed once, written to the CLI config (0600), and a restart does
// not print a new one; requests without a valid key are refused.
func TestDevFirstStartAndAuth(t *testing.T) {
	d := newDev(t)
	d.start()
	// /ready can answer before the test has copied the process's output:
	// wait for the line printed after the key would be.
	d.waitLog("ffrtmp dev: API")
	if n := strings.Count(d.log.String(), "ffk_"); n != 1 {
		t.Fatalf("admin key printed %d times on first start", n)
	}
	var cfgDir string
	for _, e := range d.env {
		if v, ok := strings.CutPrefix(e, "XDG_CONFIG_HOME="); ok {
			cfgDir = v
		}
	}
	st, err := os.Stat(filepath.Join(cfgDir, "ffrtmp", "config.json"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config: %v %v", err, st)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.cmd.Wait()
	d.log.Reset()
	d.start()
	d.waitLog("ffrtmp dev: API")
	if strings.Contains(d.log.String(), "ffk_") {
		t.Fatal("restart printed a new admin key")
	}
	d.mustCLI("jobs", "list")
	resp, err := http.Get("http://" + d.httpAddr + "/v1/jobs")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("request without key: %d", resp.StatusCode)
	}
}
