package cli

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// deadAddr returns an address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestCLIUnreachable: pointed at addresses where nothing listens, the CLI
// fails at once (not after its 30 s of retries), naming every address and
// saying what to do; with one live address among dead ones it fails over.
func TestCLIUnreachable(t *testing.T) {
	home := t.TempDir()
	vars := map[string]string{"HOME": home, "FFRTMP_API_KEY": "ffk_x_y"}
	dead1, dead2 := deadAddr(t), deadAddr(t)
	start := time.Now()
	_, err := runCLI(t, vars, "--addr", dead1+","+dead2, "jobs", "list")
	var ue *UnreachableError
	if !errors.As(err, &ue) {
		t.Fatalf("jobs list against dead addresses: %v, want an UnreachableError", err)
	}
	// The retries go on for 30 s; a fast fail is well below that.
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("failed after %s, want at once", took)
	}
	for _, want := range []string{dead1, dead2, "ffrtmp dev", "--addr", "FFRTMP_ADDR"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}

	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"jobs":[]}`))
	}))
	t.Cleanup(live.Close)
	if out, err := runCLI(t, vars, "--addr", dead1+","+live.URL, "jobs", "list"); err != nil || !strings.Contains(out, "ID") {
		t.Fatalf("jobs list with one live address: %q, %v", out, err)
	}
}

// blackHole returns an address whose connects hang, as a host that drops
// packets does: a listener with a backlog of 0, already full.
func blackHole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	for range 4 {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return addr // full: the next connect hangs
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("could not fill the listen backlog")
	return ""
}

// TestCLIDialTimeout: a node whose connects hang is given up on after the
// dial timeout, not the system's (minutes): alone it fails the command
// with the hint, beside a live node the CLI fails over to it.
func TestCLIDialTimeout(t *testing.T) {
	vars := map[string]string{"HOME": t.TempDir(), "FFRTMP_API_KEY": "ffk_x_y"}
	hole := blackHole(t)
	start := time.Now()
	_, err := runCLI(t, vars, "--addr", hole, "jobs", "list")
	var ue *UnreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), hole) {
		t.Fatalf("jobs list against a black hole: %v, want an UnreachableError naming it", err)
	}
	if took := time.Since(start); took > dialTimeout+10*time.Second {
		t.Errorf("gave up after %s, want about the dial timeout (%s)", took, dialTimeout)
	}
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"jobs":[]}`))
	}))
	t.Cleanup(live.Close)
	if out, err := runCLI(t, vars, "--addr", hole+","+live.URL, "jobs", "list"); err != nil || !strings.Contains(out, "ID") {
		t.Fatalf("jobs list with a black hole and a live node: %q, %v", out, err)
	}
}

// TestCLIUnauthenticatedHint: without any key (no flag, variable or config
// file), an unauthenticated answer says where a key comes from; with a
// key, the refusal is the server's alone.
func TestCLIUnauthenticatedHint(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":{"code":"unauthenticated","message":"an API key is required"}}`))
	}))
	t.Cleanup(srv.Close)
	home := t.TempDir()
	vars := map[string]string{"HOME": home}
	_, err := runCLI(t, vars, "--addr", srv.URL, "jobs", "list")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != "unauthenticated" {
		t.Fatalf("got %v, want unauthenticated", err)
	}
	for _, want := range []string{"ffrtmp dev", filepath.Join(home, ".config", "ffrtmp", "config.json"), "FFRTMP_API_KEY"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	vars["FFRTMP_API_KEY"] = "ffk_x_y"
	if _, err := runCLI(t, vars, "--addr", srv.URL, "jobs", "list"); err == nil || strings.Contains(err.Error(), "hint") {
		t.Errorf("with a key: %v, want the refusal without a hint", err)
	}
}

// TestCLINotAnAPIHint: an answer that is not the API's error shape (a
// web server, a proxy) names the address and asks whether it is a node.
func TestCLINotAnAPIHint(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	_, err := runCLI(t, map[string]string{"HOME": t.TempDir(), "FFRTMP_API_KEY": "ffk_x_y"}, "--addr", srv.URL, "jobs", "list")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || !strings.Contains(ae.Hint, strings.TrimPrefix(srv.URL, "http://")) {
		t.Fatalf("got %v, want a 404 whose hint names the address", err)
	}
}
