package cluster_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
)

// writeCA makes a CA and returns it with its key and the CA file's path.
func writeCA(t *testing.T, dir, name string) (*x509.Certificate, ed25519.PrivateKey, string) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	path := filepath.Join(dir, name+"-ca.pem")
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	return ca, priv, path
}

// writeLeaf makes a node certificate signed by ca and returns its files.
func writeLeaf(t *testing.T, dir, name string, ca *x509.Certificate, caKey ed25519.PrivateKey) (string, string) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(priv)
	cert, key := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	return cert, key
}

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
	ca, caKey, caFile := writeCA(t, dir, "ops")
	other, otherKey, _ := writeCA(t, dir, "other")
	c1, k1 := writeLeaf(t, dir, "node1", ca, caKey)
	c2, k2 := writeLeaf(t, dir, "node2", ca, caKey)
	c3, k3 := writeLeaf(t, dir, "intruder", other, otherKey)
	conf := func(cert, key string) *tls.Config {
		c, err := cluster.PeerTLSFromFiles(cert, key, caFile)
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
