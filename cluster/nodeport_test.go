package cluster_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
)

// workerHTTP returns an HTTP client that reaches node ports as a worker
// does: TLS pinned to the cluster CA, no client certificate.
func workerHTTP(conf *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return cluster.DialNodeForTest(ctx, conf, addr, cluster.ProtoRPC)
		},
	}, Timeout: 10 * time.Second}
}

// TestNodePortWorkerCaller: a caller without a server certificate reaches
// the worker protocol's handlers and nothing else of node RPC, never
// Raft; a server's certificate still reaches everything.
func TestNodePortWorkerCaller(t *testing.T) {
	t.Parallel()
	n := clustertest.Start(t, clustertest.Options{ID: "n1", Bootstrap: true})
	n.Node.HandleWorkerRPC("POST /rpc/worker/ping", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "pong")
	}))
	wc := workerHTTP(clustertest.WorkerTLS(t))
	post := func(c *http.Client, path string) (int, string) {
		t.Helper()
		resp, err := c.Post("http://"+n.Node.Addr()+path, "application/json", strings.NewReader(`{"id":"x","addr":"127.0.0.1:1"}`))
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(wc, "/rpc/worker/ping"); code != 200 || body != "pong" {
		t.Fatalf("worker protocol as a worker: %d %q, want 200 pong", code, body)
	}
	for _, path := range []string{"/rpc/apply", "/rpc/join", "/rpc/remove", "/rpc/restore", "/rpc/notify", "/rpc/heartbeat", "/rpc/transfer"} {
		if code, _ := post(wc, path); code != http.StatusNotFound {
			t.Errorf("POST %s as a worker: %d, want 404 (not served to workers)", path, code)
		}
	}
	resp, err := wc.Get("http://" + n.Node.Addr() + "/rpc/readindex")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /rpc/readindex as a worker: %d, want 404", resp.StatusCode)
	}
	if cfg := n.Node.RaftForTest().GetConfiguration(); cfg.Error() != nil || len(cfg.Configuration().Servers) != 1 {
		t.Errorf("configuration changed: %+v %v", cfg.Configuration(), cfg.Error())
	}

	// Raft from a worker: the connection is closed before Raft sees it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := cluster.DialNodeForTest(ctx, clustertest.WorkerTLS(t), n.Node.Addr(), cluster.ProtoRaft)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := bufio.NewReader(c).ReadByte(); err == nil {
		t.Error("a worker's Raft connection was answered")
	}
	c.Close()

	// A server reaches node RPC, and not the workers' handlers.
	sc := workerHTTP(clustertest.PeerTLS(t))
	resp, err = sc.Get("http://" + n.Node.Addr() + "/rpc/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /rpc/status as a server: %d, want 200", resp.StatusCode)
	}
	if code, _ := post(sc, "/rpc/worker/ping"); code != http.StatusNotFound {
		t.Errorf("worker protocol as a server: %d, want 404", code)
	}
}

// TestNodePortRefusesStrangers: a worker that pins another CA refuses the
// server, and a certificate of another CA is refused by the server.
func TestNodePortRefusesStrangers(t *testing.T) {
	t.Parallel()
	n := clustertest.Start(t, clustertest.Options{ID: "n1", Bootstrap: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	other, err := cluster.PeerTLSFromKey(bytes.Repeat([]byte{9}, cluster.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	hash, err := cluster.CAHash(other)
	if err != nil {
		t.Fatal(err)
	}
	wrongPin, err := cluster.WorkerTLS(hash)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := cluster.DialNodeForTest(ctx, wrongPin, n.Node.Addr(), cluster.ProtoRPC); err == nil {
		c.Close()
		t.Error("a worker pinned to another cluster's CA accepted this server")
	}

	c, err := cluster.DialNodeForTest(ctx, other, n.Node.Addr(), cluster.ProtoRaft)
	if err == nil {
		// TLS 1.3: the client learns of a refused certificate on its
		// first read.
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil {
		t.Error("a server certificate of another CA was accepted")
	}
}

// TestWorkerTLSWithOperatorCA: with operator certificates the worker pins
// the operator's CA, which servers send with their certificate.
func TestWorkerTLSWithOperatorCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := clustertest.WriteCA(t, dir, "ops")
	cert, key := ca.Leaf(t, dir, "node1")
	srv, err := cluster.PeerTLSFromFiles(cert, key, ca.File)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := cluster.CAHash(srv)
	if err != nil {
		t.Fatal(err)
	}
	wt, err := cluster.WorkerTLS(hash)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, cluster.NodePortTLSForTest(srv), wt); err != nil {
		t.Fatalf("worker pinned to the operator CA: %v", err)
	}
	if _, err := cluster.ParseCAHash("sha256:xyz"); err == nil {
		t.Error("a malformed CA hash parsed")
	}
}

// TestCallerOf: a connection with a verified peer certificate is a server,
// one without is a worker.
func TestCallerOf(t *testing.T) {
	t.Parallel()
	if got := cluster.NodePortCallerForTest(tls.ConnectionState{}); got != "worker" {
		t.Errorf("no certificate: %s, want worker", got)
	}
	if got := cluster.NodePortCallerForTest(tls.ConnectionState{PeerCertificates: []*x509.Certificate{{}}}); got != "server" {
		t.Errorf("a certificate: %s, want server", got)
	}
}

// TestNodeRPCKeepsItsConnection: node RPC callers speak HTTP/2 on the
// node port, so calls abandoned at their deadline (a heartbeat during a
// busy moment) cost no new connection and no new TLS handshake; over
// HTTP/1.1 each of them closed its connection. A caller that offers no
// HTTP/2 is still served.
func TestNodeRPCKeepsItsConnection(t *testing.T) {
	t.Parallel()
	n := clustertest.Start(t, clustertest.Options{ID: "n1", Bootstrap: true})
	n.Node.HandleWorkerRPC("POST /rpc/worker/proto", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	n.Node.HandleWorkerRPC("POST /rpc/worker/slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	c := cluster.NewRPCClientForTest(clustertest.WorkerTLS(t))
	call := func(ctx context.Context, c *http.Client, path string) (string, error) {
		req, _ := http.NewRequestWithContext(ctx, "POST", cluster.RPCSchemeForTest+n.Node.Addr()+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	if proto, err := call(t.Context(), c, "/rpc/worker/proto"); err != nil || proto != "HTTP/2.0" {
		t.Fatalf("worker call: %q %v, want HTTP/2.0", proto, err)
	}
	for range 20 {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		_, err := call(ctx, c, "/rpc/worker/slow")
		cancel()
		if err == nil {
			t.Fatal("a call past its deadline succeeded")
		}
	}
	if proto, err := call(t.Context(), c, "/rpc/worker/proto"); err != nil || proto != "HTTP/2.0" {
		t.Fatalf("worker call after abandoned ones: %q %v, want HTTP/2.0", proto, err)
	}
	if _, workers := n.Node.NodePortConnsForTest(); workers != 1 {
		t.Errorf("worker connections accepted: %d, want 1 for 22 calls", workers)
	}
	// A caller of an older version: HTTP/1.1 over the node port's TLS.
	resp, err := workerHTTP(clustertest.WorkerTLS(t)).Post("http://"+n.Node.Addr()+"/rpc/worker/proto", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); string(b) != "HTTP/1.1" {
		t.Errorf("HTTP/1.1 caller: %q, want HTTP/1.1", b)
	}
}

// TestNodeRPCToAServerWithoutHTTP2: a server of an older version offers
// no HTTP/2 on its node port; servers and workers of this version then
// call it over HTTP/1.1, as during a rolling upgrade.
func TestNodeRPCToAServerWithoutHTTP2(t *testing.T) {
	t.Parallel()
	old := cluster.NodePortTLSForTest(clustertest.PeerTLS(t))
	old.NextProtos = nil
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns, hand := cluster.ChanListenerForTest(ln.Addr())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := tls.Server(c, old)
				b := make([]byte, 1) // the protocol byte
				if _, err := tc.Read(b); err != nil || !hand(tc) {
					c.Close()
				}
			}()
		}
	}()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	})}
	go srv.Serve(conns)
	t.Cleanup(func() { srv.Close() })
	for name, conf := range map[string]*tls.Config{"server": clustertest.PeerTLS(t), "worker": clustertest.WorkerTLS(t)} {
		c := cluster.NewRPCClientForTest(conf)
		for range 3 {
			resp, err := c.Post(cluster.RPCSchemeForTest+ln.Addr().String()+"/rpc/x", "application/json", nil)
			if err != nil {
				t.Fatalf("%s calling an HTTP/1.1 node port: %v", name, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "HTTP/1.1" {
				t.Fatalf("%s calling an HTTP/1.1 node port: %q, want HTTP/1.1", name, b)
			}
		}
	}
}
