package main

import (
	"bufio"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// logLine is the one format of the log: slog's text handler.
var logLine = regexp.MustCompile(`^time=\d{4}-\d\d-\d\dT\S+ level=(DEBUG|INFO|WARN|ERROR)(\+\d+)? msg=`)

// rawVerb is a format verb that reached the log unformatted
// ("[%0.2f%% 100]", "%+v", "%!v(MISSING)").
var rawVerb = regexp.MustCompile(`%[-+# 0]*\d*(\.\d+)?[vdfsqxXT]|%!`)

// TestLogOneFormat runs a three-node cluster at log level debug and a
// worker through what logs from libraries (Raft elections and
// configuration changes, gossip, a job, a leadership transfer, garbage on
// the node port, a graceful stop), and checks that every line every
// process wrote to stderr is in the one format, with no raw format verb.
// (net/http's errors on the HTTPS API: TestServeAPIErrorLog in cli.)
func TestLogOneFormat(t *testing.T) {
	c := newTestCluster(t, 3)
	// Each server's stderr apart from the line it prints on stdout.
	stderr := make([]*syncBuffer, len(c.nodes))
	for i, s := range c.nodes {
		s.args = append(s.args, "--log-level", "debug")
		stderr[i] = &syncBuffer{}
		s.cmd = exec.Command(binary(t), s.args...)
		s.cmd.Env = c.env
		s.cmd.Stdout, s.cmd.Stderr = s.log, stderr[i]
		if err := s.cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	c.waitReady(c.nodes...)
	c.mustCLI("cluster", "init", "--addr", c.addrs(c.nodes...), "--cluster-key-file", c.keyFile)
	w := c.addWorker(1)

	id := strings.TrimSpace(c.mustCLI("jobs", "submit", "--addr", c.addrs(c.nodes...), "--scenario", "240p30-h264",
		"--input", "testsrc://?duration=1", "--output", "file:///log.mp4"))
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(c.mustCLI("jobs", "get", id, "--addr", c.addrs(c.nodes...)), string(fsm.JobSucceeded)) {
		if time.Now().After(deadline) {
			t.Fatalf("job %s did not succeed", id)
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.mustCLI("cluster", "transfer-leadership", "--addr", c.addrs(c.nodes...))

	// Garbage on the node port: its handshake fails, and is logged.
	if conn, err := net.DialTimeout("tcp", c.nodes[0].raftAddr, 5*time.Second); err == nil {
		conn.Write([]byte("GET / HTTP/1.1\r\n\r\n\x16\x03\x01garbage"))
		conn.Close()
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stderr[0].String(), "node port handshake failed"); {
		if time.Now().After(deadline) {
			t.Fatalf("n1 did not log the failed handshake:\n%s", stderr[0].String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, s := range c.nodes {
		s.stop()
	}
	w.cmd.Process.Kill()
	w.cmd.Wait()

	check := func(name, out string, mustLog bool) {
		t.Helper()
		sc := bufio.NewScanner(strings.NewReader(out))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		n := 0
		for sc.Scan() {
			line := sc.Text()
			n++
			if !logLine.MatchString(line) {
				t.Errorf("%s: a line not in the log format: %q", name, line)
			}
			if m := rawVerb.FindString(line); m != "" {
				t.Errorf("%s: a raw format verb %q in %q", name, m, line)
			}
		}
		if n == 0 && mustLog {
			t.Errorf("%s logged nothing at level debug", name)
		}
	}
	for i, s := range c.nodes {
		check(s.id, stderr[i].String(), true)
	}
	check("worker", w.log.String(), false)
	if t.Failed() {
		for i, s := range c.nodes {
			t.Logf("%s stderr:\n%s", s.id, stderr[i].String())
		}
	}
}
