package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run the load balancer configurations of packaging/haproxy
// and packaging/nginx, as docs/deployment.md installs them, in front of
// three real nodes. The balancers come from Debian (.ci/run installs
// them): missing in CI (CI=true) is a failure, elsewhere a skip.

// lbBinary returns the path of a load balancer's binary.
func lbBinary(t testing.TB, name string) string {
	t.Helper()
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	if path := "/usr/sbin/" + name; fileExists(path) { // off a user's PATH
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required in CI (.ci/run installs it)", name)
	}
	t.Skipf("%s is not installed (apt-get install %s)", name, name)
	return ""
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// selfSigned writes a certificate for 127.0.0.1 to dir: the certificate,
// its key, and both in one file (HAProxy's crt), and returns a pool that
// trusts it.
func selfSigned(t testing.TB, dir string) (certFile, keyFile, bundle string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ffrtmp-lb-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certFile, keyFile, bundle = filepath.Join(dir, "api.crt"), filepath.Join(dir, "api.key"), filepath.Join(dir, "api.pem")
	for path, data := range map[string][]byte{certFile: certPEM, keyFile: keyPEM, bundle: append(certPEM, keyPEM...)} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	roots = x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	return certFile, keyFile, bundle, roots
}

// exampleNode is a node's API address in the packaged configurations.
var exampleNode = regexp.MustCompile(`192\.0\.2\.1[0-9]:7070`)

// render returns the packaged configuration at path with its example node
// addresses replaced by the nodes' (in order) and each old string of
// repl's old/new pairs replaced by its new one. Each must occur exactly
// once: a file that changed its shape fails the test rather than running
// something else than what is shipped.
func render(t testing.TB, path string, nodes []*serverProc, repl ...string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if n := len(exampleNode.FindAllString(text, -1)); n != len(nodes) {
		t.Fatalf("%s names %d nodes, want %d", path, n, len(nodes))
	}
	k := 0
	text = exampleNode.ReplaceAllStringFunc(text, func(string) string {
		k++
		return nodes[k-1].httpAddr
	})
	for i := 0; i+1 < len(repl); i += 2 {
		if n := strings.Count(text, repl[i]); n != 1 {
			t.Fatalf("%s has %q %d times, want once", path, repl[i], n)
		}
		text = strings.Replace(text, repl[i], repl[i+1], 1)
	}
	return text
}

// runBalancer starts a balancer process whose output goes to stdout and
// stderr, and stops it (SIGTERM) when the test ends, showing its output
// if the test failed.
func runBalancer(t testing.TB, stdout, stderr *syncBuffer, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s\n%s", filepath.Base(bin), lastLines(stderr.String(), 40), lastLines(stdout.String(), 40))
		}
	})
}

// waitServing waits until base answers GET /health through the balancer.
func waitServing(t testing.TB, base string, roots *x509.CertPool) {
	t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer hc.CloseIdleConnections()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := hc.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not serve: %v", base, err)
		}
	}
}

// haproxyProc is HAProxy running packaging/haproxy/ffrtmp.cfg in front of
// a cluster, logging (option httplog) to log.
type haproxyProc struct {
	t     testing.TB
	base  string
	roots *x509.CertPool
	log   *syncBuffer
	nodes []*serverProc
}

// startHAProxy runs the packaged HAProxy configuration with the nodes'
// addresses, a listen address and certificate of the test, and its log
// sent to stdout instead of syslog; as another user than root, without
// the chroot and the change of user, which only root may do.
func startHAProxy(t testing.TB, nodes []*serverProc) *haproxyProc {
	t.Helper()
	bin := lbBinary(t, "haproxy")
	dir := t.TempDir()
	_, _, bundle, roots := selfSigned(t, dir)
	addr := freeAddr(t)
	repl := []string{
		"bind :443 ssl crt /etc/haproxy/ffrtmp-api.pem", "bind " + addr + " ssl crt " + bundle,
		"log /dev/log local0", "log stdout format raw local0",
	}
	if os.Geteuid() != 0 {
		repl = append(repl, "    chroot /var/lib/haproxy\n", "", "    user haproxy\n", "", "    group haproxy\n", "")
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(render(t, "packaging/haproxy/ffrtmp.cfg", nodes, repl...)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	h := &haproxyProc{t: t, base: "https://" + addr, roots: roots, log: &syncBuffer{}, nodes: nodes}
	// -db: in the foreground, as a child of the test.
	runBalancer(t, h.log, &syncBuffer{}, bin, "-db", "-f", cfg)
	waitServing(t, h.base, roots)
	return h
}

// target is what HAProxy gives a load: itself.
func (h *haproxyProc) target() (node, base string) { return "haproxy", h.base }

// name is a node's server name in the configuration (node1, node2…).
func (h *haproxyProc) name(s *serverProc) string {
	return fmt.Sprintf("node%d", slices.Index(h.nodes, s)+1)
}

// logs counts how often HAProxy has logged s as state (UP or DOWN).
func (h *haproxyProc) logs(s *serverProc, state string) int {
	return strings.Count(h.log.String(), "Server ffrtmp_nodes/"+h.name(s)+" is "+state)
}

// waitLogs waits until HAProxy has logged s as state more than before
// times, and returns when it saw that.
func (h *haproxyProc) waitLogs(s *serverProc, state string, before int) time.Time {
	h.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); h.logs(s, state) <= before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			h.t.Fatalf("HAProxy never marked %s %s", s.id, state)
		}
	}
	return time.Now()
}

// logged is one request line of HAProxy's log (option httplog).
type logged struct {
	server, status, request string
}

// httplog matches a request line: the backend/server, the timers, the
// status and the quoted request line.
var httplog = regexp.MustCompile(`ffrtmp_nodes/(\S+) \S+ (-?\d+) .*"(\S+ \S+)`)

// requests returns the requests HAProxy logged after the log's first
// from bytes.
func (h *haproxyProc) requests(from int) []logged {
	var out []logged
	sc := bufio.NewScanner(strings.NewReader(h.log.String()[from:]))
	for sc.Scan() {
		if m := httplog.FindStringSubmatch(sc.Text()); m != nil {
			out = append(out, logged{m[1], m[2], m[3]})
		}
	}
	return out
}

// haproxyCluster starts three nodes with extra server flags, initializes
// the cluster and puts HAProxy in front of it.
func haproxyCluster(t testing.TB, flags ...string) (*testCluster, *haproxyProc, string) {
	t.Helper()
	c, key := initCluster(t, flags...)
	return c, startHAProxy(t, c.nodes), key
}

// rollingRestart restarts every node with SIGTERM, as systemctl restart
// does, each one ready and back in HAProxy before the next, with perNode
// more requests of l sent after each.
func rollingRestart(t testing.TB, c *testCluster, h *haproxyProc, l *load, perNode int64) {
	t.Helper()
	for _, s := range c.nodes {
		before := h.logs(s, "UP")
		t.Logf("restarting %s", s.id)
		s.stop() // SIGTERM, and wait for the process to end
		s.start(c.env)
		c.waitReady(s)
		h.waitLogs(s, "UP", before)
		l.waitSent(perNode)
	}
}

// killLeader kills the leader with SIGKILL, waits until HAProxy marked it
// down and for after more requests of l, then starts it again and waits
// until HAProxy has it back. It returns the node, when it was killed and
// when the test saw HAProxy mark it down.
func killLeader(t testing.TB, c *testCluster, h *haproxyProc, l *load, after int64) (killed *serverProc, at, down time.Time) {
	t.Helper()
	killed = c.leader()
	downs, ups := h.logs(killed, "DOWN"), h.logs(killed, "UP")
	t.Logf("killing %s", killed.id)
	at = time.Now()
	killed.kill9()
	down = h.waitLogs(killed, "DOWN", downs)
	l.waitSent(after)
	killed.start(c.env)
	c.waitReady(killed)
	h.waitLogs(killed, "UP", ups)
	return killed, at, down
}

// latency returns the longest request of l and its 99.9th percentile.
func (l *load) latency() (longest, p999 time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.took) == 0 {
		return 0, 0
	}
	s := slices.Clone(l.took)
	slices.Sort(s)
	return s[len(s)-1], s[min(len(s)-1, len(s)*999/1000)]
}

// report logs l's counts and latency, and its first failures.
func (l *load) report(what string) {
	l.t.Helper()
	longest, p999 := l.latency()
	l.t.Logf("%s: %d requests, %d acknowledged, %d failed; longest %s, p99.9 %s",
		what, l.sent.Load(), len(l.acked), len(l.failures), longest.Round(time.Millisecond), p999.Round(time.Millisecond))
	for i, f := range l.failures {
		if i == 20 {
			l.t.Logf("… and %d more", len(l.failures)-20)
			break
		}
		l.t.Logf("failed: %s", f.err)
	}
}

// TestHAProxyFailover runs HAProxy from Debian with the packaged
// configuration (packaging/haproxy/ffrtmp.cfg: checks of GET /ready every
// 500 ms, fall 2, rise 2, retries 3, option redispatch) in front of three
// nodes, with 16 keep-alive clients submitting jobs over TLS through it.
// A rolling restart with SIGTERM, one node at a time, fails no request
// and loses no job. A leader killed with SIGKILL (and started again)
// fails only requests HAProxy had sent to it (at most one per client),
// and every acknowledged job exists exactly once afterwards.
func TestHAProxyFailover(t *testing.T) {
	// A drain longer than HAProxy needs to notice (inter 500ms, fall 2)
	// with room to spare, shorter than the default to keep the test short.
	c, h, key := haproxyCluster(t, "--drain", "3s")

	t.Run("rolling restart", func(t *testing.T) {
		l := startLoad(t, h.target, key, false, h.roots)
		l.waitSent(200)
		rollingRestart(t, c, h, l, 200)
		l.stop()
		l.report("rolling restart")
		if len(l.failures) > 0 {
			t.Errorf("%d requests failed, want none", len(l.failures))
		}
		l.checkJobs(c.nodes, key)
	})

	t.Run("leader kill -9", func(t *testing.T) {
		from := len(h.log.String())
		l := startLoad(t, h.target, key, false, h.roots)
		l.known = listAll(t, "http://"+c.nodes[0].httpAddr, key)
		l.waitSent(200)
		killed, at, down := killLeader(t, c, h, l, 400)
		l.stop()
		l.report("leader kill -9")
		t.Logf("HAProxy marked %s down %s after the kill", killed.id, down.Sub(at).Round(time.Millisecond))
		if len(l.failures) > 16 {
			t.Errorf("%d failed requests, want at most one per client (16)", len(l.failures))
		}
		// A request HAProxy had sent to the killed node fails: with 502,
		// or, on a kept-alive connection to the node, by HAProxy closing
		// the client's connection without an answer (EOF; it logs
		// nothing then). Either happens only until HAProxy marks the node
		// down (seen by polling its log, hence the margin). A 503 or any
		// other answer of a node is a failure of the test.
		for _, f := range l.failures {
			if !strings.HasSuffix(f.err, ": EOF") && !strings.HasPrefix(f.err, "502 ") {
				t.Errorf("request failed with more than the loss of its connection: %s", f.err)
			}
			if f.at.Before(at) || f.at.After(down.Add(time.Second)) {
				t.Errorf("request failed %s after the kill, HAProxy marked %s down after %s: %s",
					f.at.Sub(at).Round(time.Millisecond), killed.id, down.Sub(at).Round(time.Millisecond), f.err)
			}
		}
		for _, r := range h.requests(from) {
			if r.request == "POST /v1/jobs" && r.status != "201" && r.server != h.name(killed) {
				t.Errorf("HAProxy answered %s for a request to %s; only requests to the killed %s (%s) may fail",
					r.status, r.server, h.name(killed), killed.id)
			}
		}
		l.checkJobs(c.nodes, key)
	})
}

// TestNginxConfig checks the packaged nginx configuration
// (packaging/nginx/ffrtmp.conf, a file for /etc/nginx/conf.d) with
// `nginx -t` and runs a short load through it: 16 keep-alive clients
// submitting over TLS to three nodes, no request failing.
func TestNginxConfig(t *testing.T) {
	bin := lbBinary(t, "nginx")
	c, key := initCluster(t)

	dir := t.TempDir()
	cert, certKey, _, roots := selfSigned(t, dir)
	addr := freeAddr(t)
	conf := render(t, "packaging/nginx/ffrtmp.conf", c.nodes,
		"listen 443 ssl;", "listen "+addr+" ssl;",
		"/etc/nginx/ffrtmp-api.crt", cert,
		"/etc/nginx/ffrtmp-api.key", certKey)
	site := filepath.Join(dir, "ffrtmp.conf")
	// nginx.conf as Debian's includes conf.d, with the paths nginx writes
	// moved into the test's directory.
	main := fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log stderr;
daemon off;
worker_processes 1;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[2]s;
}
`, dir, site)
	mainFile := filepath.Join(dir, "nginx.conf")
	for path, data := range map[string]string{site: conf, mainFile: main} {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"-p", dir, "-e", "stderr", "-c", mainFile}
	if out, err := exec.Command(bin, append([]string{"-t"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	runBalancer(t, &syncBuffer{}, &syncBuffer{}, bin, args...)
	base := "https://" + addr
	waitServing(t, base, roots)

	l := startLoad(t, func() (string, string) { return "nginx", base }, key, false, roots)
	l.waitSent(300)
	l.stop()
	l.report("through nginx")
	if len(l.failures) > 0 {
		t.Errorf("%d requests failed, want none", len(l.failures))
	}
	l.checkJobs(c.nodes, key)
}
