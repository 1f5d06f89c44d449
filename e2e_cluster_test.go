package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// serverProc is one real `ffrtmp server` process on its own loopback
// address (127.0.0.N), as docs/deployment.md starts them.
type serverProc struct {
	t          testing.TB
	id         string
	ip         string
	args       []string
	cmd        *exec.Cmd
	log        *syncBuffer
	httpAddr   string
	raftAddr   string
	gossipAddr string
	// netns, if set, runs the process in its own network namespace and
	// links it to the host once it started (see startNetnsNode).
	netns func(*serverProc)
}

// testCluster is a set of server processes sharing a cluster key.
type testCluster struct {
	t          testing.TB
	dir        string
	keyFile    string
	nodes      []*serverProc
	env        []string
	gossipPort string
}

// ports picks a free port pair usable on every 127.0.0.N address.
func ports(t testing.TB) (httpPort, raftPort string) {
	t.Helper()
	_, h, _ := strings.Cut(freeAddr(t), ":")
	_, r, _ := strings.Cut(freeAddr(t), ":")
	return h, r
}

// gossipPort picks a port free for TCP and UDP on 127.0.0.1.
func gossipPort(t testing.TB) string {
	t.Helper()
	for range 50 {
		_, p, _ := strings.Cut(freeAddr(t), ":")
		if u, err := net.ListenPacket("udp", "127.0.0.1:"+p); err == nil {
			u.Close()
			return p
		}
	}
	t.Fatal("no free gossip port")
	return ""
}

func newTestCluster(t testing.TB, n int) *testCluster {
	t.Helper()
	dir := t.TempDir()
	c := &testCluster{t: t, dir: dir, keyFile: filepath.Join(dir, "cluster.key"), gossipPort: gossipPort(t)}
	out, err := exec.Command(binary(t), "keygen").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.keyFile, out, 0o600); err != nil {
		t.Fatal(err)
	}
	c.env = append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "FFRTMP_ADDR=", "FFRTMP_API_KEY=")
	hp, rp := ports(t)
	var raftAddrs []string
	for i := 1; i <= n; i++ {
		raftAddrs = append(raftAddrs, fmt.Sprintf("127.0.0.%d:%s", i, rp))
	}
	for i := 1; i <= n; i++ {
		c.add(i, hp, rp, raftAddrs, n)
	}
	t.Cleanup(func() {
		for _, s := range c.nodes {
			s.stop()
			if t.Failed() {
				t.Logf("%s output:\n%s", s.id, s.log.String())
			}
		}
	})
	return c
}

// add configures node i (not started); expect 0 means join only.
func (c *testCluster) add(i int, httpPort, raftPort string, join []string, expect int) *serverProc {
	ip := fmt.Sprintf("127.0.0.%d", i)
	s := &serverProc{t: c.t, id: fmt.Sprintf("n%d", i), ip: ip, log: &syncBuffer{},
		httpAddr: ip + ":" + httpPort, raftAddr: ip + ":" + raftPort, gossipAddr: ip + ":" + c.gossipPort}
	var others []string
	for _, a := range join {
		if a != s.raftAddr {
			others = append(others, a)
		}
	}
	s.args = []string{"server", "--node-id", s.id, "--data-dir", filepath.Join(c.dir, s.id),
		"--raft-addr", s.raftAddr, "--http-addr", s.httpAddr, "--join", strings.Join(others, ","),
		"--gossip-addr", s.gossipAddr, "--cluster-key-file", c.keyFile, "--log-level", "warn",
		"--allow-host", "127.0.0.1"}
	if expect > 0 {
		s.args = append(s.args, "--bootstrap-expect", fmt.Sprint(expect))
	}
	c.nodes = append(c.nodes, s)
	return s
}

func (s *serverProc) start(env []string) {
	s.t.Helper()
	s.cmd = exec.Command(binary(s.t), s.args...)
	if s.netns != nil {
		s.cmd = nsCommand(binary(s.t), s.args...)
	}
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	if s.netns != nil {
		s.netns(s)
	}
}

func (s *serverProc) running() bool { return s.cmd != nil && s.cmd.ProcessState == nil }

func (s *serverProc) kill9() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	s.cmd.Wait()
}

func (s *serverProc) stop() {
	if s.running() {
		s.cmd.Process.Signal(syscall.SIGCONT)
		s.cmd.Process.Signal(syscall.SIGTERM)
		s.cmd.Wait()
	}
}

// ready reports whether the node answers /ready with 200.
func (s *serverProc) ready() bool { return s.readyAt("/ready") }

// readyAt reports whether the node answers path (a /ready query) with 200.
func (s *serverProc) readyAt(path string) bool {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get("http://" + s.httpAddr + path)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

func (c *testCluster) startAll() {
	for _, s := range c.nodes {
		s.start(c.env)
	}
	c.waitReady(c.nodes...)
}

func (c *testCluster) waitReady(nodes ...*serverProc) {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for _, s := range nodes {
		for !s.ready() {
			if time.Now().After(deadline) {
				c.t.Fatalf("%s not ready:\n%s", s.id, s.log.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (c *testCluster) addrs(nodes ...*serverProc) string {
	var out []string
	for _, s := range nodes {
		out = append(out, "http://"+s.httpAddr)
	}
	return strings.Join(out, ",")
}

// cli runs the binary's client with the cluster's config.
func (c *testCluster) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(c.t), args...)
	cmd.Env = c.env
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), fmt.Errorf("%v: %s", err, ee.Stderr)
	}
	return string(out), err
}

func (c *testCluster) mustCLI(args ...string) string {
	c.t.Helper()
	out, err := c.cli(args...)
	if err != nil {
		c.t.Fatalf("ffrtmp %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (c *testCluster) status(via *serverProc) server.ClusterStatus {
	c.t.Helper()
	var st server.ClusterStatus
	if err := json.Unmarshal([]byte(c.mustCLI("--addr", "http://"+via.httpAddr, "cluster", "status", "-o", "json")), &st); err != nil {
		c.t.Fatal(err)
	}
	return st
}

func (c *testCluster) leader() *serverProc {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, s := range c.nodes {
			if !s.running() {
				continue
			}
			st := c.status(s)
			for _, n := range c.nodes {
				if n.id == st.Leader && n.running() {
					return n
				}
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatal("no leader")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// followers returns the running nodes other than l.
func (c *testCluster) followers(l *serverProc) []*serverProc {
	var out []*serverProc
	for _, s := range c.nodes {
		if s != l && s.running() {
			out = append(out, s)
		}
	}
	return out
}

func (c *testCluster) key() string {
	cfg, err := os.ReadFile(filepath.Join(c.dir, "config", "ffrtmp", "config.json"))
	if err != nil {
		c.t.Fatal(err)
	}
	var v cli.Config
	json.Unmarshal(cfg, &v)
	return v.APIKey
}

// TestClusterFailover starts three servers on 127.0.0.1-3, initializes the
// cluster, submits 2,000 jobs round-robin to all three while the leader is
// killed with SIGKILL, and checks that every acknowledged job exists
// exactly once on every node; then restarts the killed node, which catches
// up, adds a fourth node and removes it.
func TestClusterFailover(t *testing.T) {
	c := newTestCluster(t, 3)
	c.startAll()
	out := c.mustCLI("cluster", "init", "--addr", "http://"+c.nodes[0].httpAddr, "--cluster-key-file", c.keyFile)
	if !strings.Contains(out, "ffk_") {
		t.Fatalf("init printed %q", out)
	}
	if _, err := c.cli("cluster", "init", "--addr", "http://"+c.nodes[1].httpAddr, "--cluster-key-file", c.keyFile); err == nil || !strings.Contains(err.Error(), "already_exists") {
		t.Fatalf("second init: %v", err)
	}
	st := c.status(c.nodes[2])
	healthy := 0
	for _, m := range st.Members {
		if m.Healthy != nil && *m.Healthy && m.Voter {
			healthy++
		}
	}
	if st.Leader == "" || healthy != 3 {
		t.Fatalf("status after start: leader %q, %d healthy voters", st.Leader, healthy)
	}

	client, err := cli.NewClient(c.addrs(c.nodes...), c.key())
	if err != nil {
		t.Fatal(err)
	}
	const total, conc = 2000, 16
	spec := &fsm.JobSpec{Scenario: "240p30-h264", Queue: fsm.QueueBatch,
		Input: fsm.Input{URL: "testsrc://?duration=1"}, Outputs: []fsm.Output{{URL: "file:///load.mp4"}}}
	var (
		acked    sync.Map
		failures atomic.Int64
		done     atomic.Int64
		wg       sync.WaitGroup
		maxPause atomic.Int64
	)
	ctx := context.Background()
	killed := make(chan *serverProc, 1)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += conc {
				t0 := time.Now()
				j, err := client.Rotated(i).SubmitJob(ctx, spec)
				if d := time.Since(t0); int64(d) > maxPause.Load() {
					maxPause.Store(int64(d))
				}
				if err != nil {
					failures.Add(1)
					t.Logf("submit %d: %v", i, err)
					continue
				}
				if _, dup := acked.LoadOrStore(j.ID, i); dup {
					t.Errorf("job %s acknowledged twice", j.ID)
				}
				if done.Add(1) == total/3 {
					l := c.leader()
					t.Logf("killing leader %s", l.id)
					l.kill9()
					killed <- l
				}
			}
		}()
	}
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d submits failed; clients should only see a pause", n)
	}
	t.Logf("longest submit during failover: %s", time.Duration(maxPause.Load()))
	victim := <-killed

	var ackedIDs []string
	acked.Range(func(k, _ any) bool { ackedIDs = append(ackedIDs, k.(string)); return true })
	if len(ackedIDs) != total {
		t.Fatalf("%d jobs acknowledged, want %d", len(ackedIDs), total)
	}

	// Restart the killed node with the same command line; it catches up.
	victim.start(c.env)
	c.waitReady(victim)
	for _, s := range c.nodes {
		got := listAll(t, "http://"+s.httpAddr, c.key())
		if len(got) != total {
			t.Errorf("%s lists %d jobs, want %d", s.id, len(got), total)
		}
		for _, id := range ackedIDs {
			if got[id] != 1 {
				t.Errorf("%s: acknowledged job %s listed %d times", s.id, id, got[id])
				break
			}
		}
	}

	// Scale up: a fourth node joins with only --join; then remove it.
	hp := strings.Split(c.nodes[0].httpAddr, ":")[1]
	rp := strings.Split(c.nodes[0].raftAddr, ":")[1]
	n4 := c.add(4, hp, rp, []string{c.nodes[0].raftAddr, c.nodes[1].raftAddr, c.nodes[2].raftAddr}, 0)
	n4.start(c.env)
	c.waitReady(n4)
	if got := listAll(t, "http://"+n4.httpAddr, c.key()); len(got) != total {
		t.Errorf("the new node lists %d jobs, want %d", len(got), total)
	}
	if st := c.status(n4); len(st.Members) != 4 {
		t.Fatalf("after join: %d members", len(st.Members))
	}
	c.mustCLI("--addr", "http://"+c.nodes[0].httpAddr, "cluster", "remove", "n4")
	if st := c.status(c.nodes[0]); len(st.Members) != 3 {
		t.Fatalf("after remove: %d members", len(st.Members))
	}
}

// listAll pages through every job on one node and counts each ID.
func listAll(t testing.TB, addr, key string) map[string]int {
	t.Helper()
	client, err := cli.NewClient(addr, key)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	// A consistent read: the node first applies all the leader has.
	q := map[string][]string{"limit": {"1000"}, "consistent": {"true"}}
	for {
		page, err := client.ListJobs(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range page.Jobs {
			seen[j.ID]++
		}
		if page.Next == "" {
			return seen
		}
		q["after"] = []string{page.Next}
	}
}

// TestMinorityCannotCommit freezes two of three servers: the remaining
// one, in the minority, refuses writes (503) and is not ready, and the
// refused job does not exist on it. When the others come back, the
// cluster serves writes again.
func TestMinorityCannotCommit(t *testing.T) {
	c := newTestCluster(t, 3)
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", "http://"+c.nodes[0].httpAddr, "--cluster-key-file", c.keyFile)
	l := c.leader()
	var frozen []*serverProc
	for _, s := range c.nodes {
		if s != l {
			s.cmd.Process.Signal(syscall.SIGSTOP)
			frozen = append(frozen, s)
		}
	}
	t.Cleanup(func() {
		for _, s := range frozen {
			s.cmd.Process.Signal(syscall.SIGCONT)
		}
	})
	// A submit with a fixed Idempotency-Key (the job ID), straight to the
	// minority node.
	id, _ := uuid.NewV7()
	body := `{"scenario":"240p30-h264","input":{"url":"testsrc://?duration=1"},"outputs":[{"url":"file:///minority.mp4"}]}`
	req, _ := http.NewRequest("POST", "http://"+l.httpAddr+"/v1/jobs", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.key())
	req.Header.Set("Idempotency-Key", id.String())
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("write in the minority: status %d, want 503 with Retry-After", resp.StatusCode)
	}
	// A stale read answers from the minority node's state, which lacks
	// the refused job; a default (linearizable) read cannot be confirmed
	// without a quorum and fails.
	req, _ = http.NewRequest("GET", "http://"+l.httpAddr+"/v1/jobs/"+id.String()+"?stale=true", nil)
	req.Header.Set("Authorization", "Bearer "+c.key())
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the refused job is visible on the minority node: %v %v", err, resp.StatusCode)
	}
	req, _ = http.NewRequest("GET", "http://"+l.httpAddr+"/v1/jobs/"+id.String(), nil)
	req.Header.Set("Authorization", "Bearer "+c.key())
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a linearizable read in the minority: %v %v, want 503 with Retry-After", err, resp.StatusCode)
	}
	// The operator's view answers in the minority too (it is local, with
	// no read barrier), and reports the frozen servers as unreachable.
	for _, m := range c.status(l).Members {
		if m.ID != l.id && m.Error == "" {
			t.Errorf("cluster status in the minority: member %s = %+v, want an error (frozen)", m.ID, m)
		}
	}
	// Strictly it has no leader now; plainly, it stays ready only for its
	// --ready-grace (it held the write for the election that never came).
	if l.readyAt("/ready?strict=true") {
		t.Error("the minority node reports a leader")
	}
	for deadline := time.Now().Add(30 * time.Second); l.ready(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the minority node still reports ready after its grace")
		}
	}
	for _, s := range frozen {
		s.cmd.Process.Signal(syscall.SIGCONT)
	}
	c.waitReady(c.nodes...)
	c.mustCLI("--addr", c.addrs(c.nodes...), "jobs", "submit", "--scenario", "240p30-h264", "--input", "testsrc://?duration=1", "--output", "file:///after.mp4")
}
