package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// TestBenchWorkersAndSubmit runs the load generator as an operator does,
// against a real node (dev mode, no local worker): `bench workers --count
// 20 --tokens-create` starts twenty simulated workers that register with
// worker tokens of their own over the node port, and `bench submit` in
// its open loop submits jobs at a small rate. Every submitted job runs on
// a simulated worker and succeeds, through the real worker protocol
// (start, progress and finish reports fenced by the attempt); at the end
// the tokens the command created are revoked.
func TestBenchWorkersAndSubmit(t *testing.T) {
	d := newDev(t)
	d.args = append(d.args, "--workers", "0")
	d.start()

	const count = 20
	wlog, wout := &syncBuffer{}, &syncBuffer{}
	workers := exec.Command(binary(t), "bench", "workers", "--count", "20", "--tokens-create", "--slots", "2",
		"--job-duration", "500ms", "--log-level", "warn", "-o", "json")
	workers.Env = d.env
	workers.Stdout, workers.Stderr = wout, wlog
	if err := workers.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if workers.ProcessState == nil {
			workers.Process.Kill()
			workers.Wait()
		}
		if t.Failed() {
			t.Logf("bench workers stderr:\n%s", wlog.String())
		}
	})
	waitUntil(t, 60*time.Second, "20 simulated workers up", func() bool {
		var ws []server.Worker
		if json.Unmarshal([]byte(d.mustCLI("workers", "list", "-o", "json")), &ws) != nil {
			return false
		}
		up := 0
		for _, w := range ws {
			if w.State == fsm.WorkerUp && strings.HasPrefix(w.ID, "sim-") {
				up++
			}
		}
		return up == count
	})
	if !strings.Contains(wlog.String(), "up 20/20") {
		t.Errorf("bench workers showed no progress line with every worker up:\n%s", wlog.String())
	}

	out := d.mustCLI("bench", "submit", "--rate", "20/s", "--duration", "2s", "--keep", "-o", "json")
	var rep cli.BenchReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bench submit -o json: %v\n%s", err, out)
	}
	if len(rep.Results) != 2 || rep.Results[1].Operation != "POST /v1/jobs" {
		t.Fatalf("results %+v, want the baseline and POST /v1/jobs", rep.Results)
	}
	sub := rep.Results[1]
	if sub.Mode != "open" || sub.Rate != 20 || sub.Requests != 40 || sub.OK != 40 || len(sub.Errors) != 0 {
		t.Fatalf("submit result %+v, want 40 of 40 submits ok in the open loop at 20/s", sub)
	}
	if !(sub.P50 > 0 && sub.P50 <= sub.P99 && sub.P99 <= sub.P999 && sub.P999 <= sub.Max) {
		t.Errorf("percentiles out of order: %+v", sub)
	}

	var page server.JobPage
	waitUntil(t, 2*time.Minute, "40 jobs succeeded", func() bool {
		if err := json.Unmarshal([]byte(d.mustCLI("jobs", "list", "--limit", "100", "-o", "json")), &page); err != nil {
			t.Fatal(err)
		}
		done := 0
		for _, j := range page.Jobs {
			if j.State == fsm.JobFailed || j.State == fsm.JobCanceled {
				t.Fatalf("job %s %s: %+v", j.ID, j.State, j.Error)
			}
			if j.State == fsm.JobSucceeded {
				done++
			}
		}
		return done == 40
	})
	for _, j := range page.Jobs {
		if !strings.HasPrefix(j.WorkerID, "sim-") || j.Result == nil || len(j.Result.Outputs) != 1 {
			t.Errorf("job %s: worker %q, result %+v; want a simulated worker's result", j.ID, j.WorkerID, j.Result)
		}
	}

	if err := workers.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := workers.Wait(); err != nil {
		t.Fatalf("bench workers: %v", err)
	}
	var wrep cli.WorkersReport
	if err := json.Unmarshal([]byte(wout.String()), &wrep); err != nil {
		t.Fatalf("bench workers -o json: %v\n%s", err, wout.String())
	}
	if wrep.Registered != count || wrep.Succeeded != 40 || wrep.Refused != 0 || len(wrep.Exited) != 0 {
		t.Errorf("workers report %+v, want 20 registered, 40 succeeded, none refused or exited", wrep)
	}
	var tokens []server.WorkerTokenView
	if err := json.Unmarshal([]byte(d.mustCLI("workers", "token", "list", "-o", "json")), &tokens); err != nil {
		t.Fatal(err)
	}
	revoked := 0
	for _, tok := range tokens {
		if strings.HasPrefix(tok.Name, "bench simulated worker") && tok.Revoked {
			revoked++
		}
	}
	if revoked != count {
		t.Errorf("%d of the bench's worker tokens revoked, want %d", revoked, count)
	}
}

// waitUntil polls cond until it holds, failing the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
