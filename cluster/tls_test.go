package cluster_test

import (
	"crypto/tls"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
)

// handshake runs a mutual TLS handshake between a server and a client
// configuration and returns the server's error.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		errc <- tls.Server(c, server).Handshake()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tls.Client(c, client).Handshake()
	c.Close()
	return <-errc
}

func TestPeerTLSFromFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := clustertest.WriteCA(t, dir, "ops")
	other := clustertest.WriteCA(t, dir, "other")
	c1, k1 := ca.Leaf(t, dir, "node1")
	c2, k2 := ca.Leaf(t, dir, "node2")
	c3, k3 := other.Leaf(t, dir, "intruder")
	conf := func(cert, key string) *tls.Config {
		c, err := cluster.PeerTLSFromFiles(cert, key, ca.File)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if err := handshake(t, conf(c1, k1), conf(c2, k2)); err != nil {
		t.Fatalf("two nodes of the same CA: %v", err)
	}
	if err := handshake(t, conf(c1, k1), conf(c3, k3)); err == nil {
		t.Fatal("a node with a certificate from another CA was accepted")
	}
	if _, err := cluster.PeerTLSFromFiles(c1, k1, filepath.Join(dir, "missing.pem")); err == nil {
		t.Fatal("a missing CA file was accepted")
	}
}

func TestPeerTLSFromKey(t *testing.T) {
	t.Parallel()
	key := func(b byte) *tls.Config {
		k := make([]byte, cluster.KeySize)
		for i := range k {
			k[i] = b
		}
		c, err := cluster.PeerTLSFromKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if err := handshake(t, key(1), key(1)); err != nil {
		t.Fatalf("two nodes with the same cluster key: %v", err)
	}
	if err := handshake(t, key(1), key(2)); err == nil {
		t.Fatal("a node with another cluster key was accepted")
	}
	if _, err := cluster.ParseKey("short"); err == nil {
		t.Fatal("a malformed cluster key was accepted")
	}
}
