package main

import (
	"context"
	"strings"
	"syscall"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// TestStoppedWorkerCannotPublishTwice freezes (SIGSTOP) the worker that
// streams a live RTMP job until the cluster gives the job to the other
// worker. The frozen worker cannot fence itself, but its watchdog kills
// its ffmpeg before the lease runs out, so the endpoint never has two
// publishers at once. Thawed, the worker comes back up and runs jobs.
func TestStoppedWorkerCannotPublishTwice(t *testing.T) {
	c, client := startInitialized(t, 1, "--worker-lease", "6s")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	recvAddr, proxyAddr, pubs := countedRTMP(ctx, t)
	workers := []*workerProc{c.addWorker(1), c.addWorker(2)}
	waitWorkers(t, client, 2)
	first := startLive(ctx, t, client, recvAddr, proxyAddr)
	live := first
	var frozen *workerProc
	otherID := ""
	for _, w := range workers {
		if id := workerID(t, w.dir); id == first.WorkerID {
			frozen = w
		} else {
			otherID = id
		}
	}
	if frozen == nil {
		t.Fatalf("the live job runs on %s, which is neither worker", first.WorkerID)
	}

	if err := frozen.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Log("stopped", first.WorkerID)
	waitWorkerState(t, client, first.WorkerID, fsm.WorkerDown)
	// The new attempt streams, unless it is a second publisher.
	second := waitJob(t, client, live.ID, func(j *server.Job) bool {
		return pubs.most() > 1 || j.State == fsm.JobRunning && j.Attempt > first.Attempt && j.Progress != nil && j.Progress.Frame > 30
	})
	if n := pubs.most(); n != 1 {
		t.Fatalf("while the worker was stopped, the RTMP endpoint had %d publishers at once, want 1", n)
	}
	if second.WorkerID != otherID {
		t.Fatalf("the live job moved to %s, want %s", second.WorkerID, otherID)
	}

	if err := frozen.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	t.Log("continued", first.WorkerID)
	waitWorkerState(t, client, first.WorkerID, fsm.WorkerUp)
	// The stream stays with the newer attempt.
	if j, err := client.GetJob(ctx, live.ID); err != nil || j.Attempt != second.Attempt || j.State != fsm.JobRunning {
		t.Errorf("the live job after the thaw: %+v %v; want attempt %d running", j, err, second.Attempt)
	}
	// The thawed worker runs jobs again.
	c.mustCLI("--addr", c.addrs(c.nodes...), "workers", "drain", otherID)
	after, err := client.SubmitJob(ctx, &fsm.JobSpec{
		Scenario: "144p30-h264", Input: fsm.Input{URL: "testsrc://?duration=1"},
		Outputs: []fsm.Output{{URL: "file:///after-stop.mp4"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if j := waitJobDone(t, client, after.ID); j.State != fsm.JobSucceeded || j.WorkerID != first.WorkerID {
		t.Errorf("job after the thaw: %s on %s, want succeeded on %s", j.State, j.WorkerID, first.WorkerID)
	}
	if _, err := client.JobAction(ctx, live.ID, "cancel"); err != nil {
		t.Fatal(err)
	}
	waitJobDone(t, client, live.ID)
	if n := pubs.most(); n != 1 {
		t.Errorf("the RTMP endpoint had %d publishers at once, want 1", n)
	}
	if !strings.Contains(frozen.log.String(), "killing the worker's ffmpeg processes") {
		t.Error("the stopped worker's watchdog did not say it killed ffmpeg")
	}
}
