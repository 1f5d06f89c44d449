package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// workerProc is one real `ffrtmp worker` process.
type workerProc struct {
	t    testing.TB
	id   string
	args []string
	cmd  *exec.Cmd
	log  *syncBuffer
	dir  string
}

// workerToken creates a worker token for tenant ("" for the shared pool)
// with the cluster's admin key, as an operator does.
func (c *testCluster) workerToken(tenant string) server.CreatedWorkerToken {
	c.t.Helper()
	args := []string{"--addr", c.addrs(c.nodes...), "workers", "token", "create", "--name", "e2e", "-o", "json"}
	if tenant != "" {
		args = append(args, "--tenant", tenant)
	}
	var created server.CreatedWorkerToken
	if err := json.Unmarshal([]byte(c.mustCLI(args...)), &created); err != nil {
		c.t.Fatal(err)
	}
	return created
}

// addWorker starts worker i of the shared pool, with a token of its own.
func (c *testCluster) addWorker(i int) *workerProc {
	c.t.Helper()
	return c.addWorkerWith(i, c.workerToken(""))
}

// addWorkerWith starts worker i with a token, as docs/deployment.md does:
// the token in a file, the servers' node addresses, the CA hash.
func (c *testCluster) addWorkerWith(i int, tok server.CreatedWorkerToken) *workerProc {
	c.t.Helper()
	dir := filepath.Join(c.dir, fmt.Sprintf("w%d", i))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "worker.token")
	if err := os.WriteFile(tokenFile, []byte(tok.Token+"\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
	w := &workerProc{t: c.t, log: &syncBuffer{}, dir: dir}
	w.args = []string{"worker", "--join", strings.Join(tok.Join, ","), "--token-file", tokenFile, "--ca-hash", tok.CAHash,
		"--gossip-addr", fmt.Sprintf("127.0.1.%d:%s", i, c.gossipPort),
		"--data-dir", dir, "--media-root", filepath.Join(c.dir, "media"), "--slots", "2", "--log-level", "warn"}
	w.start(c.env)
	c.t.Cleanup(func() {
		if w.cmd.ProcessState == nil {
			w.cmd.Process.Signal(syscall.SIGCONT)
			w.cmd.Process.Signal(syscall.SIGTERM)
			w.cmd.Wait()
		}
		if c.t.Failed() {
			c.t.Logf("worker %d output:\n%s", i, w.log.String())
		}
	})
	return w
}

// start starts the worker process; again after it stopped, with the same
// arguments (so the same data directory and worker ID), as a service
// manager does.
func (w *workerProc) start(env []string) {
	w.cmd = exec.Command(binary(w.t), w.args...)
	w.cmd.Env = env
	w.cmd.Stdout, w.cmd.Stderr = w.log, w.log
	if err := w.cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
}

// startInitialized starts n servers, each with the extra args,
// initializes the cluster and returns a client that knows every node.
func startInitialized(t testing.TB, n int, args ...string) (*testCluster, *cli.Client) {
	t.Helper()
	c := newTestCluster(t, n)
	for _, s := range c.nodes {
		s.args = append(s.args, args...)
	}
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", c.addrs(c.nodes...), "--cluster-key-file", c.keyFile)
	client, err := cli.NewClient(c.addrs(c.nodes...), c.key())
	if err != nil {
		t.Fatal(err)
	}
	return c, client
}

// waitWorkers waits until n workers are up and returns them.
func waitWorkers(t testing.TB, client *cli.Client, n int) []server.Worker {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ws, err := client.ListWorkers(context.Background())
		up := 0
		for _, w := range ws {
			if w.State == fsm.WorkerUp {
				up++
			}
		}
		if err == nil && up >= n {
			return ws
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d workers up, want %d (%v)", up, n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestWorkersAcrossHosts runs three servers and three worker processes on
// loopback addresses: a batch of real transcodes survives a SIGKILL of a
// worker (then started again) and of the leader, and every job succeeds
// exactly once, with its output where the result says. Then a drained
// worker gets no new jobs.
func TestWorkersAcrossHosts(t *testing.T) {
	c, client := startInitialized(t, 3)
	var workers []*workerProc
	for i := 1; i <= 3; i++ {
		workers = append(workers, c.addWorker(i))
	}
	ws := waitWorkers(t, client, 3)
	for _, w := range ws {
		if !strings.Contains(strings.Join(w.Encoders, ","), "libx264") {
			t.Fatalf("worker %s advertises %v", w.ID, w.Encoders)
		}
	}

	// A job nobody can run (no worker has NVENC) does not hold up the
	// others, and fails after its acquire timeout.
	gpu, err := client.SubmitJob(context.Background(), &fsm.JobSpec{
		Scenario: "240p30-h264", Hardware: fsm.HardwareNVENC, AcquireTimeout: fsm.Duration(5 * time.Second),
		Input: fsm.Input{URL: "testsrc://?duration=1"}, Outputs: []fsm.Output{{URL: "file:///gpu.mp4"}},
	})
	if err != nil {
		t.Fatal(err)
	}

	const total = 50
	var ids []string
	for i := range total {
		j, err := client.SubmitJob(context.Background(), &fsm.JobSpec{
			Scenario: "240p30-h264", Input: fsm.Input{URL: "testsrc://?duration=3"},
			Outputs: []fsm.Output{{URL: fmt.Sprintf("file:///batch/%02d.mp4", i)}},
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	// Once work is running, kill a worker that runs something, then the
	// leader.
	deadline := time.Now().Add(60 * time.Second)
	var victim *workerProc
	for victim == nil {
		for _, w := range ws {
			var v server.Worker
			out := c.mustCLI("--addr", c.addrs(c.nodes...), "workers", "get", w.ID, "-o", "json")
			json.Unmarshal([]byte(out), &v)
			if v.ActiveJobs > 0 {
				for _, p := range workers {
					id, _ := os.ReadFile(filepath.Join(p.dir, "worker-id"))
					if strings.TrimSpace(string(id)) == w.ID {
						victim = p
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no worker started a job")
		}
	}
	victim.cmd.Process.Signal(syscall.SIGKILL)
	victim.cmd.Wait()
	l := c.leader()
	l.kill9()
	// Its service manager starts the worker again: it publishes what it
	// finished before the kill if the cluster took its report (the
	// journal), and its other attempts run again elsewhere.
	victim.start(c.env)

	for _, id := range ids {
		j := waitJobDone(t, client, id)
		if j.State != fsm.JobSucceeded {
			t.Errorf("job %s: %s %+v", id, j.State, j.Error)
			continue
		}
		o := j.Result.Outputs[0]
		if o.Codec != "h264" || o.Height != 240 {
			t.Errorf("job %s output %+v", id, o)
		}
		if err := waitFile(outputFile(filepath.Join(c.dir, "media"), j.TenantID, o.URL)); err != nil {
			t.Errorf("job %s: %v", id, err)
		}
	}

	if j := waitJobDone(t, client, gpu.ID); j.State != fsm.JobFailed || j.Error.Code != fsm.CodeNoCapableWorker {
		t.Errorf("job needing NVENC: %s %+v, want failed no_capable_worker", j.State, j.Error)
	}

	// Drain a live worker: nothing new goes to it.
	l.start(c.env)
	c.waitReady(l)
	ws = waitWorkers(t, client, 2)
	var drained string
	for _, w := range ws {
		if w.State == fsm.WorkerUp {
			drained = w.ID
			break
		}
	}
	c.mustCLI("--addr", c.addrs(c.nodes...), "workers", "drain", drained)
	for i := range 6 {
		j, err := client.SubmitJob(context.Background(), &fsm.JobSpec{
			Scenario: "144p30-h264", Input: fsm.Input{URL: "testsrc://?duration=1"},
			Outputs: []fsm.Output{{URL: fmt.Sprintf("file:///drain/%d.mp4", i)}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := waitJobDone(t, client, j.ID); got.State != fsm.JobSucceeded || got.WorkerID == drained {
			t.Errorf("job after drain: %s on %s (drained %s)", got.State, got.WorkerID, drained)
		}
	}
}

// outputFile returns where a worker with media root media writes a
// file:// output of tenant: the API names outputs by URL, never by their
// path on the worker host.
func outputFile(media, tenant, fileURL string) string {
	return filepath.Join(media, tenant, filepath.FromSlash(strings.TrimPrefix(fileURL, "file://")))
}

// waitFile waits for a job's output file, which its worker renames into
// place a moment after the job turned succeeded.
func waitFile(path string) error {
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, err := os.Stat(path)
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}

func waitJobDone(t testing.TB, client *cli.Client, id string) *server.Job {
	t.Helper()
	return waitJob(t, client, id, func(j *server.Job) bool { return j.State.Terminal() })
}

// TestStaleWorkerCannotOverwrite freezes (SIGSTOP) the worker running a
// job until the cluster gives the job to another worker, then thaws it:
// the stale worker's reports are refused, the newer attempt's result
// stands, and the stale worker comes back up.
func TestStaleWorkerCannotOverwrite(t *testing.T) {
	c, client := startInitialized(t, 3)
	workers := []*workerProc{c.addWorker(1), c.addWorker(2)}
	waitWorkers(t, client, 2)
	j, err := client.SubmitJob(context.Background(), &fsm.JobSpec{
		Scenario: "240p30-h264", Input: fsm.Input{URL: "testsrc://?duration=90"},
		Outputs: []fsm.Output{{URL: "file:///stale.mp4"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	first := waitJob(t, client, j.ID, func(j *server.Job) bool { return j.State == fsm.JobRunning })
	var frozen *workerProc
	for _, w := range workers {
		id, _ := os.ReadFile(filepath.Join(w.dir, "worker-id"))
		if strings.TrimSpace(string(id)) == first.WorkerID {
			frozen = w
		}
	}
	frozen.cmd.Process.Signal(syscall.SIGSTOP)
	second := waitJob(t, client, j.ID, func(j *server.Job) bool {
		return j.Attempt > first.Attempt && j.State == fsm.JobRunning
	})
	if second.WorkerID == first.WorkerID {
		t.Fatalf("attempt 2 went to the frozen worker %s", second.WorkerID)
	}
	frozen.cmd.Process.Signal(syscall.SIGCONT)
	done := waitJobDone(t, client, j.ID)
	if done.State != fsm.JobSucceeded || done.Attempt != second.Attempt || done.WorkerID != second.WorkerID {
		t.Fatalf("final job: %s attempt %d on %s; want succeeded, attempt %d on %s", done.State, done.Attempt, done.WorkerID, second.Attempt, second.WorkerID)
	}
	// The thawed worker registers again and is up.
	deadline := time.Now().Add(60 * time.Second)
	for {
		ws, _ := client.ListWorkers(context.Background())
		up := 0
		for _, w := range ws {
			if w.State == fsm.WorkerUp {
				up++
			}
		}
		if up == 2 {
			break
		}
		if time.Now().After(deadline) {
			var states []string
			for _, w := range ws {
				states = append(states, w.ID+"="+string(w.State))
			}
			t.Fatalf("the thawed worker did not come back: %v", states)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func waitJob(t testing.TB, client *cli.Client, id string, cond func(*server.Job) bool) *server.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for {
		j, err := client.GetJob(ctx, id)
		if err == nil && cond(j) {
			return j
		}
		if ctx.Err() != nil {
			t.Fatalf("job %s: condition not met: %v %+v", id, err, j)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestLiveJobMovesToAnotherWorker streams a live job (real-time test
// pattern → RTMP) to a loopback RTMP receiver (ffmpeg -listen 1, started
// again after each publisher), kills the worker that streams it, and
// checks that the stream resumes from the other worker.
func TestLiveJobMovesToAnotherWorker(t *testing.T) {
	c, client := startInitialized(t, 3)
	workers := []*workerProc{c.addWorker(1), c.addWorker(2)}
	waitWorkers(t, client, 2)

	_, port, _ := strings.Cut(freeAddr(t), ":")
	url := "rtmp://127.0.0.1:" + port + "/live/stream"
	recvDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	received := make(chan string, 8)
	go func() {
		for n := 0; ctx.Err() == nil; n++ {
			out := filepath.Join(recvDir, fmt.Sprintf("recv%d.flv", n))
			cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
				"-listen", "1", "-f", "flv", "-i", url, "-c", "copy", "-f", "flv", out)
			cmd.Run()
			if st, err := os.Stat(out); err == nil && st.Size() > 0 {
				received <- out
			}
		}
	}()

	// Submit once the receiver listens (probing it would take its one
	// client).
	waitListening(t, port)
	j, err := client.SubmitJob(ctx, &fsm.JobSpec{
		Scenario: "240p30-h264", Queue: fsm.QueueLive,
		Input:   fsm.Input{URL: "testsrc://?duration=120"},
		Outputs: []fsm.Output{{URL: url}},
	})
	if err != nil {
		t.Fatal(err)
	}
	first := waitJob(t, client, j.ID, func(j *server.Job) bool {
		return j.State == fsm.JobRunning && j.Progress != nil && j.Progress.Frame > 30
	})
	for _, w := range workers {
		id, _ := os.ReadFile(filepath.Join(w.dir, "worker-id"))
		if strings.TrimSpace(string(id)) == first.WorkerID {
			w.cmd.Process.Signal(syscall.SIGKILL)
			w.cmd.Wait()
		}
	}
	select {
	case f := <-received:
		t.Logf("first session received %s", f)
	case <-time.After(30 * time.Second):
		t.Fatal("the receiver got nothing from the first worker")
	}
	second := waitJob(t, client, j.ID, func(j *server.Job) bool {
		return j.State == fsm.JobRunning && j.Attempt > first.Attempt && j.Progress != nil && j.Progress.Frame > 30
	})
	if second.WorkerID == first.WorkerID || second.Retries != first.Retries {
		t.Fatalf("after the worker died: on %s (was %s), retries %d (was %d)", second.WorkerID, first.WorkerID, second.Retries, first.Retries)
	}
	// Stop the stream: the receiver's second session ends with data.
	if _, err := client.JobAction(ctx, j.ID, "cancel"); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-received:
		probe, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", f).Output()
		if err != nil || !strings.Contains(string(probe), "h264") {
			t.Fatalf("second session %s: %v %s", f, err, probe)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the receiver got nothing from the second worker")
	}
}

// waitListening waits until the RTMP receiver listens on 127.0.0.1:port.
func waitListening(t testing.TB, port string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !tcpListening(port); {
		if time.Now().After(deadline) {
			t.Fatal("the RTMP receiver does not listen")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tcpListening reports whether a TCP socket listens on 127.0.0.1:port.
func tcpListening(port string) bool {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	p, _ := strconv.Atoi(port)
	want := fmt.Sprintf("0100007F:%04X", p)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == want && f[3] == "0A" {
			return true
		}
	}
	return false
}
