package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// netns is a network namespace around one process (started by
// nsCommand), whose only ways in and out are links: socat relays inside
// it, joined through Unix sockets (the file system is shared) to
// listeners and dialers outside. Inside, every address keeps the
// address it has outside.
type netns struct {
	t    testing.TB
	pid  int
	sock string // directory of the links' Unix sockets (paths must be short)
	n    int
}

// nsCommand returns a command that runs bin with args in a new network
// namespace whose loopback is up; the shell execs bin, so the command's
// process is bin's.
func nsCommand(bin string, args ...string) *exec.Cmd {
	return exec.Command("unshare", append([]string{"--net", "--", "sh", "-c", `ip link set lo up && exec "$0" "$@"`, bin}, args...)...)
}

// enterNetns waits until the command started by nsCommand has become
// bin running sub (its loopback is up then) and returns its namespace.
func enterNetns(t testing.TB, cmd *exec.Cmd, bin, sub string) *netns {
	t.Helper()
	sock, err := os.MkdirTemp("", "ffrtmp-ns")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	for deadline := time.Now().Add(30 * time.Second); ; {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid)); strings.HasPrefix(string(b), bin+"\x00"+sub) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the namespaced %s did not start", sub)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &netns{t: t, pid: cmd.Process.Pid, sock: sock}
}

func (ns *netns) path() string {
	ns.n++
	return filepath.Join(ns.sock, fmt.Sprintf("s%d", ns.n))
}

// out lets the namespace reach the host address addr through l.
func (ns *netns) out(l *link, addr string) {
	ns.t.Helper()
	path := ns.path()
	ln, err := net.Listen("unix", path)
	if err != nil {
		ns.t.Fatal(err)
	}
	l.serve(ln, func() (net.Conn, error) { return net.Dial("tcp", addr) })
	h, pt, _ := net.SplitHostPort(addr)
	ns.socat(fmt.Sprintf("TCP-LISTEN:%s,bind=%s,fork,reuseaddr", pt, h), "UNIX-CONNECT:"+path)
}

// in lets the host reach addr inside the namespace through l.
func (ns *netns) in(l *link, addr string) {
	ns.t.Helper()
	path := ns.path()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		ns.t.Fatal(err)
	}
	l.serve(ln, func() (net.Conn, error) { return net.Dial("unix", path) })
	ns.socat("UNIX-LISTEN:"+path+",fork", "TCP:"+addr)
}

// socat runs a socat relay inside the namespace.
func (ns *netns) socat(a, b string) {
	ns.t.Helper()
	cmd := exec.Command("nsenter", "-t", fmt.Sprint(ns.pid), "-n", "socat", a, b)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// socat forks a child per connection: stop the whole group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		ns.t.Fatal(err)
	}
	ns.t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if s := out.String(); ns.t.Failed() && s != "" {
			ns.t.Logf("socat %s %s: %s", a, b, s)
		}
	})
}
