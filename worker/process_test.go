package worker

import (
	"bufio"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// procState returns the state letter of a process from /proc (R, S, T,
// Z…), or false if the process no longer exists.
func procState(t *testing.T, pid int) (byte, bool) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		t.Fatalf("cannot parse /proc/%d/stat: %q", pid, s)
	}
	return s[i+2], true
}

// waitState waits until cond holds for pid's state, failing at the
// deadline.
func waitState(t *testing.T, pid int, what string, cond func(state byte, alive bool) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, alive := procState(t, pid)
		if cond(st, alive) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d: still not %s (state %q, alive %v)", pid, what, st, alive)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func stopped(st byte, alive bool) bool { return alive && st == 'T' }
func running(st byte, alive bool) bool { return alive && st != 'T' && st != 't' && st != 'Z' }
func gone(st byte, alive bool) bool    { return !alive || st == 'Z' }

// endlessFFmpeg starts an ffmpeg that runs until it is stopped, reading a
// small test pattern at its native rate so that it uses little CPU.
func endlessFFmpeg(t *testing.T) *Process {
	t.Helper()
	ffmpeg, _ := tools(t)
	p, err := StartProcess(ffmpeg, []string{"-hide_banner", "-nostdin", "-loglevel", "error",
		"-re", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=10", "-f", "null", "-"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(0) })
	return p
}

func TestProcessPauseResumeStop(t *testing.T) {
	t.Parallel()
	p := endlessFFmpeg(t)
	pid := p.Pid()
	if pgid, err := syscall.Getpgid(pid); err != nil || pgid != pid {
		t.Fatalf("process group = %d, %v; want its own group %d", pgid, err, pid)
	}

	if err := p.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	waitState(t, pid, "stopped", stopped)
	if err := p.Resume(); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	waitState(t, pid, "running", running)

	// Stop works on a paused process: it is continued so SIGTERM lands.
	if err := p.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	waitState(t, pid, "stopped", stopped)
	stopDone := make(chan struct{})
	go func() { p.Stop(10 * time.Second); close(stopDone) }()
	select {
	case <-stopDone:
	case <-time.After(20 * time.Second):
		t.Fatal("Stop did not return")
	}

	// Wait is safe from several goroutines after Stop and agrees on the
	// outcome: ffmpeg exits non-zero after SIGTERM.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = p.Wait() })
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil || err.Error() != errs[0].Error() {
			t.Errorf("Wait #%d = %v, want the same non-nil error as #0 (%v)", i, err, errs[0])
		}
	}
	waitState(t, pid, "gone", gone)
	if err := p.Pause(); !errors.Is(err, ErrProcessDone) {
		t.Errorf("Pause after exit = %v, want ErrProcessDone", err)
	}
	if err := p.Resume(); !errors.Is(err, ErrProcessDone) {
		t.Errorf("Resume after exit = %v, want ErrProcessDone", err)
	}
	p.Stop(time.Second) // harmless after exit
}

func TestProcessStopKillsTheGroup(t *testing.T) {
	t.Parallel()
	// A shell that ignores SIGTERM, as does its child: only SIGKILL to the
	// whole group ends both.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	p, err := StartProcess("/bin/sh", []string{"-c", `trap "" TERM; sleep 60 & echo $!; wait`}, pw, io.Discard)
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(0) })
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("read child pid: %v", err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("child pid %q: %v", line, err)
	}

	stopDone := make(chan struct{})
	go func() { p.Stop(100 * time.Millisecond); close(stopDone) }()
	select {
	case <-stopDone:
	case <-time.After(20 * time.Second):
		t.Fatal("Stop did not return")
	}
	if err := p.Wait(); err == nil || exitDescription(err) != "was killed by signal 9 (killed)" {
		t.Errorf("Wait = %v (%s), want death by SIGKILL", err, exitDescription(err))
	}
	waitState(t, child, "gone", gone)
}

func TestStartProcessMissingProgram(t *testing.T) {
	t.Parallel()
	if _, err := StartProcess("/nonexistent/ffmpeg", nil, nil, nil); err == nil {
		t.Fatal("StartProcess of a missing program succeeded")
	}
}

func TestStartProcessSetupFails(t *testing.T) {
	t.Parallel()
	ffmpeg, _ := tools(t)
	pid := 0
	p, err := startProcess(ffmpeg, []string{"-hide_banner", "-nostdin", "-loglevel", "error",
		"-re", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=10", "-f", "null", "-"}, nil, io.Discard,
		procOptions{setup: func(p int) error {
			pid = p
			return errors.New("no limits today")
		}})
	if p != nil || err == nil || !strings.Contains(err.Error(), "no limits today") {
		t.Fatalf("startProcess = %v, %v; want the setup error", p, err)
	}
	// The process was killed and reaped before startProcess returned.
	if st, alive := procState(t, pid); alive {
		t.Errorf("process %d is still there (state %c)", pid, st)
	}
}
