package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// link carries TCP connections across a network namespace boundary over
// Unix sockets (which the file system shares) and can be cut, closing
// every connection it carries and refusing new ones: a partition.
type link struct {
	t   testing.TB
	mu  sync.Mutex
	cut bool
	all map[net.Conn]struct{}
}

func newLink(t testing.TB) *link {
	l := &link{t: t, all: map[net.Conn]struct{}{}}
	t.Cleanup(func() { l.setCut(true) })
	return l
}

// setCut cuts or heals the link.
func (l *link) setCut(cut bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = cut
	if cut {
		for c := range l.all {
			c.Close()
		}
		clear(l.all)
	}
}

// track registers conns, or closes them if the link is cut.
func (l *link) track(conns ...net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		l.all[c] = struct{}{}
	}
	return true
}

func (l *link) untrack(conns ...net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range conns {
		c.Close()
		delete(l.all, c)
	}
}

// serve accepts on ln until it is closed and pipes each connection to a
// new one from dial.
func (l *link) serve(ln net.Listener, dial func() (net.Conn, error)) {
	l.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				if !l.track(in) {
					return
				}
				out, err := dial()
				if err != nil {
					l.untrack(in)
					return
				}
				if !l.track(out) {
					l.untrack(in)
					return
				}
				var wg sync.WaitGroup
				wg.Go(func() { io.Copy(out, in); l.untrack(in, out) })
				wg.Go(func() { io.Copy(in, out); l.untrack(in, out) })
				wg.Wait()
			}()
		}
	}()
}

// publishers is a TCP proxy in front of an RTMP receiver that records the
// most publishers it ever had connected at once.
type publishers struct {
	mu       sync.Mutex
	now, max int
}

func (p *publishers) add(d int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.now += d
	p.max = max(p.max, p.now)
}

// countedRTMP starts an RTMP receiver (ffmpeg -listen 1, started again
// after each session, until ctx ends) at recvAddr behind a proxy at
// proxyAddr that counts publishers.
func countedRTMP(ctx context.Context, t *testing.T) (recvAddr, proxyAddr string, pubs *publishers) {
	t.Helper()
	recvAddr, proxyAddr = freeAddr(t), freeAddr(t)
	go func() {
		for ctx.Err() == nil {
			exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
				"-listen", "1", "-f", "flv", "-i", "rtmp://"+recvAddr+"/live/s", "-f", "null", "-").Run()
		}
	}()
	return recvAddr, proxyAddr, countPublishers(t, proxyAddr, recvAddr)
}

// startLive submits a live job that streams to the receiver at recvAddr
// through proxyAddr, once the receiver listens, and returns the job once
// it streams.
func startLive(ctx context.Context, t *testing.T, client *cli.Client, recvAddr, proxyAddr string) *server.Job {
	t.Helper()
	_, recvPort, _ := strings.Cut(recvAddr, ":")
	waitListening(t, recvPort)
	live, err := client.SubmitJob(ctx, &fsm.JobSpec{
		Scenario: "240p30-h264", Queue: fsm.QueueLive,
		Input:   fsm.Input{URL: "testsrc://?duration=600"},
		Outputs: []fsm.Output{{URL: "rtmp://" + proxyAddr + "/live/s"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return waitJob(t, client, live.ID, func(j *server.Job) bool {
		return j.State == fsm.JobRunning && j.Progress != nil && j.Progress.Frame > 30
	})
}

// countPublishers listens on addr and relays each connection to the RTMP
// receiver at to, counting them, until the test ends.
func countPublishers(t testing.TB, addr, to string) *publishers {
	t.Helper()
	pubs := &publishers{}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				pubs.add(1)
				defer pubs.add(-1)
				out, err := net.Dial("tcp", to)
				if err != nil {
					return
				}
				defer out.Close()
				go func() { io.Copy(out, in); out.Close() }()
				io.Copy(in, out)
			}()
		}
	}()
	return pubs
}

func (p *publishers) most() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.max
}

// nsWorker is an `ffrtmp worker` process in its own network namespace
// whose only ways out are links: to each server's gossip and node ports
// (cluster, cut to partition the worker), to the RTMP endpoint (media,
// never cut), and into its gossip port.
type nsWorker struct {
	cmd *exec.Cmd
	log *syncBuffer
	dir string
}

// startNSWorker starts the worker, linked to the servers by cut and to
// the RTMP endpoint at rtmpAddr by media; inside, it reaches each by the
// same address as outside.
func startNSWorker(t *testing.T, c *testCluster, cut, media *link, rtmpAddr string) *nsWorker {
	t.Helper()
	w := &nsWorker{log: &syncBuffer{}, dir: filepath.Join(c.dir, "wns")}
	tok := c.workerToken("")
	if err := os.MkdirAll(w.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(w.dir, "worker.token")
	if err := os.WriteFile(tokenFile, []byte(tok.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gossip := "127.0.1.1:" + c.gossipPort
	w.cmd = nsCommand(binary(t), "worker",
		"--join", strings.Join(tok.Join, ","), "--token-file", tokenFile, "--ca-hash", tok.CAHash,
		"--gossip-addr", gossip, "--data-dir", w.dir,
		"--media-root", filepath.Join(c.dir, "media"), "--slots", "2", "--log-level", "info")
	w.cmd.Env = c.env
	w.cmd.Stdout, w.cmd.Stderr = w.log, w.log
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if w.cmd.ProcessState == nil {
			w.cmd.Process.Signal(syscall.SIGTERM)
			w.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("namespaced worker output:\n%s", w.log.String())
		}
	})
	// The relays bind in the namespace once its loopback is up.
	ns := enterNetns(t, w.cmd, binary(t), "worker")
	for _, s := range c.nodes {
		ns.out(cut, s.gossipAddr)
		ns.out(cut, s.raftAddr)
	}
	ns.out(media, rtmpAddr)
	// Into the namespace: the worker's gossip port, where the servers
	// reach it (TCP; memberlist falls back to TCP probes without UDP).
	ns.in(cut, gossip)
	return w
}

// workerID waits for a worker's ID file.
func workerID(t *testing.T, dir string) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if b, err := os.ReadFile(filepath.Join(dir, "worker-id")); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker wrote no ID")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitWorkerState waits until the worker is in state.
func waitWorkerState(t *testing.T, client *cli.Client, id string, state fsm.WorkerState) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Minute); ; {
		ws, err := client.ListWorkers(context.Background())
		for _, w := range ws {
			if w.ID == id && w.State == state {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker %s is not %s (%v)", id, state, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPartitionedWorkerFencesItself partitions a worker (its own network
// namespace, linked to the servers by links the test cuts) for longer
// than the lease while it runs a live RTMP stream and file jobs of a
// batch. The live endpoint never has two publishers at once; no output
// file appears before its job succeeded or changes after; every job
// succeeds; and when the partition heals the worker comes back by itself
// and runs jobs again.
func TestPartitionedWorkerFencesItself(t *testing.T) {
	c, client := startInitialized(t, 3, "--worker-lease", "8s")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	recvAddr, proxyAddr, pubs := countedRTMP(ctx, t)

	cut, media := newLink(t), newLink(t)
	nw := startNSWorker(t, c, cut, media, proxyAddr)
	nsID := workerID(t, nw.dir)
	waitWorkerState(t, client, nsID, fsm.WorkerUp)

	first := startLive(ctx, t, client, recvAddr, proxyAddr)
	live := first
	if first.WorkerID != nsID {
		t.Fatalf("the live job runs on %s, want the only worker %s", first.WorkerID, nsID)
	}

	// A batch of file jobs; watch their outputs appear.
	retries := 5
	var ids []string
	paths := map[string]string{} // job ID: output path under the media root
	for i := range 20 {
		j, err := client.SubmitJob(ctx, &fsm.JobSpec{
			Scenario: "240p30-h264", MaxRetries: &retries,
			Input:   fsm.Input{URL: "testsrc://?duration=6"},
			Outputs: []fsm.Output{{URL: fmt.Sprintf("file:///part/%02d.mp4", i)}},
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	seen := watchOutputs(ctx, t, client, filepath.Join(c.dir, "media"), ids)
	waitJob(t, client, ids[0], func(j *server.Job) bool {
		return j.WorkerID == nsID && (j.State == fsm.JobRunning || j.State == fsm.JobSucceeded)
	})
	other := c.addWorker(2)
	otherID := workerID(t, other.dir)
	waitWorkerState(t, client, otherID, fsm.WorkerUp)

	// Partition the worker while it streams and transcodes.
	cut.setCut(true)
	t.Log("partitioned", nsID)
	waitWorkerState(t, client, nsID, fsm.WorkerDown)
	second := waitJob(t, client, live.ID, func(j *server.Job) bool {
		return j.State == fsm.JobRunning && j.Attempt > first.Attempt && j.Progress != nil && j.Progress.Frame > 30
	})
	if second.WorkerID != otherID {
		t.Fatalf("the live job moved to %s, want %s", second.WorkerID, otherID)
	}
	cut.setCut(false)
	t.Log("healed")
	waitWorkerState(t, client, nsID, fsm.WorkerUp)

	for _, id := range ids {
		if j := waitJobDone(t, client, id); j.State != fsm.JobSucceeded {
			t.Errorf("job %s: %s %+v", id, j.State, j.Error)
		} else {
			paths[id] = outputFile(filepath.Join(c.dir, "media"), j.TenantID, j.Result.Outputs[0].URL)
		}
	}
	// The worker that was partitioned runs jobs again.
	c.mustCLI("--addr", c.addrs(c.nodes...), "workers", "drain", otherID)
	after, err := client.SubmitJob(ctx, &fsm.JobSpec{
		Scenario: "144p30-h264", Input: fsm.Input{URL: "testsrc://?duration=1"},
		Outputs: []fsm.Output{{URL: "file:///part/after.mp4"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if j := waitJobDone(t, client, after.ID); j.State != fsm.JobSucceeded || j.WorkerID != nsID {
		t.Errorf("job after the partition: %s on %s, want succeeded on %s", j.State, j.WorkerID, nsID)
	}
	if _, err := client.JobAction(ctx, live.ID, "cancel"); err != nil {
		t.Fatal(err)
	}
	waitJobDone(t, client, live.ID)

	if n := pubs.most(); n != 1 {
		t.Errorf("the RTMP endpoint had %d publishers at once, want 1", n)
	}
	for _, v := range seen.check(paths) {
		t.Error(v)
	}
	// A run whose report the partition held keeps its temporary output
	// until the worker learns the cluster's answer (a refusal discards
	// it), which its report's retries may take a while to hear after the
	// heal: every temporary output is gone within a deadline.
	parts := func() []string {
		var out []string
		filepath.WalkDir(filepath.Join(c.dir, "media"), func(p string, d os.DirEntry, err error) error {
			if err == nil && strings.Contains(d.Name(), ".part-") {
				out = append(out, p)
			}
			return nil
		})
		return out
	}
	for deadline := time.Now().Add(30 * time.Second); len(parts()) > 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("temporary outputs left 30 s after the last job: %v", parts())
			break
		}
	}
}

// outputWatch records, for each job, when its output file first appeared
// and whether its job had succeeded by then.
type outputWatch struct {
	mu         sync.Mutex
	ino        map[string]uint64 // path: inode when first seen
	violations []string
	stop       func()
}

// watchOutputs polls the media root for the jobs' outputs until the test
// ends. The first time an output shows up, its job must already have
// succeeded with that output: a worker publishes only after the cluster
// accepted its attempt.
func watchOutputs(ctx context.Context, t *testing.T, client *cli.Client, media string, ids []string) *outputWatch {
	w := &outputWatch{ino: map[string]uint64{}}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	w.stop = func() { cancel(); <-done }
	t.Cleanup(w.stop)
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			filepath.WalkDir(media, func(p string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() || !strings.HasSuffix(p, ".mp4") || !strings.Contains(p, "/part/") {
					return nil
				}
				w.mu.Lock()
				_, known := w.ino[p]
				w.mu.Unlock()
				if known {
					return nil
				}
				fi, err := os.Stat(p)
				if err != nil {
					return nil
				}
				w.mu.Lock()
				w.ino[p] = fi.Sys().(*syscall.Stat_t).Ino
				w.mu.Unlock()
				name := filepath.Base(p)
				for i, id := range ids {
					if name != fmt.Sprintf("%02d.mp4", i) {
						continue
					}
					// A consistent read: what the leader had committed
					// when the file was already there.
					page, err := client.ListJobs(ctx, url.Values{"limit": {"1000"}, "consistent": {"true"}})
					if err != nil {
						if ctx.Err() == nil {
							w.add(fmt.Sprintf("list jobs: %v", err))
						}
						break
					}
					for _, j := range page.Jobs {
						if j.ID == id && (j.State != fsm.JobSucceeded || outputFile(media, j.TenantID, j.Result.Outputs[0].URL) != p) {
							w.add(fmt.Sprintf("output %s appeared while job %s was %s (attempt %d)", p, id, j.State, j.Attempt))
						}
					}
				}
				return nil
			})
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *outputWatch) add(v string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.violations = append(w.violations, v)
}

// check stops the watch and returns what went wrong: violations seen,
// and outputs that are missing or were replaced after they appeared
// (published twice).
func (w *outputWatch) check(paths map[string]string) []string {
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.violations
	for id, p := range paths {
		fi, err := os.Stat(p)
		switch ino, seen := w.ino[p]; {
		case errors.Is(err, os.ErrNotExist):
			out = append(out, fmt.Sprintf("job %s: output %s is missing", id, p))
		case err != nil:
			out = append(out, err.Error())
		case !seen:
			out = append(out, fmt.Sprintf("job %s: output %s was never seen appearing", id, p))
		case fi.Sys().(*syscall.Stat_t).Ino != ino:
			out = append(out, fmt.Sprintf("job %s: output %s was replaced after it appeared (published twice)", id, p))
		}
	}
	return out
}
