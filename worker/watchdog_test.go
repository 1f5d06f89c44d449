package worker

import (
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// startTestWatchdog starts a watchdog (this test binary, re-executed)
// and closes it at the end of the test.
func startTestWatchdog(t *testing.T, deadline time.Duration) *watchdog {
	t.Helper()
	d, err := startWatchdog(slog.New(slog.DiscardHandler), deadline)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.close)
	if pgid, err := syscall.Getpgid(d.cmd.Process.Pid); err != nil || pgid != d.cmd.Process.Pid {
		t.Errorf("the watchdog's process group is %d (%v), want its own, %d", pgid, err, d.cmd.Process.Pid)
	}
	return d
}

// startSleep starts a long-running process in a process group of its
// own, as ffmpeg runs, and kills it at the end of the test.
func startSleep(t *testing.T) *Process {
	t.Helper()
	p, err := StartProcess("sleep", []string{"600"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(0) })
	return p
}

// waitGone waits until p has exited, failing after a deadline long
// enough for a loaded machine.
func waitGone(t *testing.T, p *Process, why string) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("the process group is still running %s", why)
	}
}

// A worker that stops beating (frozen by SIGSTOP, or hung) has its
// registered process groups killed, and is told so.
func TestWatchdogKillsWithoutBeats(t *testing.T) {
	d := startTestWatchdog(t, 500*time.Millisecond)
	p, other := startSleep(t), startSleep(t)
	d.add(p.Pid())
	d.add(other.Pid())
	d.del(other.Pid())
	waitGone(t, p, "though the worker stopped beating")
	if !d.killedGroup(p.Pid(), 30*time.Second) {
		t.Error("the watchdog did not say it killed the process group")
	}
	select {
	case <-other.Done():
		t.Error("the watchdog killed an unregistered process group")
	default:
	}
}

// A worker that dies (its end of the pipe closes) takes its registered
// process groups with it, however long the deadline.
func TestWatchdogKillsOnWorkerExit(t *testing.T) {
	d := startTestWatchdog(t, time.Hour)
	p := startSleep(t)
	d.add(p.Pid())
	d.close()
	waitGone(t, p, "after the worker's end of the pipe closed")
}

// Beats keep registered process groups alive past the deadline; when
// they stop, the groups die.
func TestWatchdogBeatsKeepAlive(t *testing.T) {
	const deadline = 2 * time.Second
	d := startTestWatchdog(t, deadline)
	p := startSleep(t)
	stop, beating := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(beating)
		d.beat(stop)
	}()
	d.add(p.Pid())
	select {
	case <-p.Done():
		t.Fatal("the watchdog killed a process group while the worker was beating")
	case <-time.After(2 * deadline):
	}
	close(stop)
	<-beating
	waitGone(t, p, "after the beats stopped")
}

// The deadline follows the lease the cluster names.
func TestWatchdogDeadlineFollowsLease(t *testing.T) {
	d := startTestWatchdog(t, time.Hour)
	p := startSleep(t)
	d.add(p.Pid())
	d.setLease(3 * time.Second) // a half-second deadline, no beats
	waitGone(t, p, "though the lease's deadline passed without a beat")
}

// The watchdog kills a frozen worker's ffmpeg before the leader could
// re-assign its job: by then the worker's own fence would have fired.
func TestWatchdogForLeavesAMargin(t *testing.T) {
	for _, lease := range []time.Duration{time.Second, 8 * time.Second, 15 * time.Second} {
		if latest := FenceFor(lease) + WatchdogFor(lease); latest >= lease {
			t.Errorf("lease %s: a frozen worker's ffmpeg may run until %s, not before the lease ends", lease, latest)
		}
	}
}

// A worker whose ffmpeg its watchdog killed (it stopped beating, and runs
// again) reports the attempt lost, retryable, as its fence does, and
// publishes nothing of it.
func TestWorkerReportsWhatItsWatchdogKilled(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := newFakeControl(time.Hour) // neither the fence nor the watchdog's own deadline falls
	w := startWorker(t, e, c)
	c.assign(fileJob(t, "long", "3600", "file:///out/dog-long.mp4"))
	waitFor(t, "ffmpeg running", func() bool { return ffmpegRunning(t, "dog-long.mp4") })
	c.mu.Lock() // after a heartbeat, so after the worker set w.dog
	c.mu.Unlock()
	if w.dog == nil {
		t.Fatal("the worker runs without a watchdog")
	}
	// As if no beat had come for the deadline: the watchdog kills.
	w.dog.send("deadline 1")
	f := nextFinish(t, c)
	if f.JobID != "long" || f.Error == nil || f.Error.Code != fsm.CodeWorkerLost || !f.Retryable ||
		!strings.Contains(f.Error.Message, "watchdog") {
		t.Fatalf("finish %+v, want job long lost to the watchdog (retryable worker_lost)", f)
	}
	if ffmpegRunning(t, "dog-long.mp4") {
		t.Error("ffmpeg still runs after the attempt was reported lost")
	}
	if parts := partFiles(t, e.root); len(parts) != 0 {
		t.Errorf("temporary files left: %v", parts)
	}
}
