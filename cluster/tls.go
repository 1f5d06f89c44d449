package cluster

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"
)

// Cluster keys. A cluster key is 32 random bytes, written as base64. It is
// the one secret every node and worker of a cluster shares: node-to-node
// TLS is derived from it (below), it proves the right to join, and it
// keys gossip encryption.

// KeySize is the length of a cluster key in bytes.
const KeySize = 32

// GenerateKey returns a new random cluster key in its text form.
func GenerateKey() string {
	b := make([]byte, KeySize)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// ParseKey decodes a cluster key's text form.
func ParseKey(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != KeySize {
		return nil, errors.New("cluster key must be 32 bytes in base64 (make one with `ffrtmp keygen`)")
	}
	return b, nil
}

// ReadKeyFile reads a cluster key from a file.
func ReadKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read cluster key: %w", err)
	}
	return ParseKey(string(b))
}

// peerName is the name in every derived node certificate.
const peerName = "ffrtmp-peer"

// derive returns a purpose-specific secret derived from the cluster key.
func derive(key []byte, purpose string, n int) []byte {
	out, err := hkdf.Key(sha256.New, key, nil, "ffrtmp "+purpose, n)
	if err != nil {
		panic(err) // only for an impossible length
	}
	return out
}

// AuditKey returns the installation's audit key, which keys the MACs of
// the audit chain (fsm.Config.AuditKey): derived from the cluster key, so
// every server has it and the database never holds it.
func AuditKey(clusterKey []byte) []byte { return derive(clusterKey, "audit v1", 32) }

// PeerTLSFromKey returns the mutual-TLS configuration for node-to-node
// traffic derived from the cluster key. Every node derives the same CA key
// pair from the cluster key and signs a fresh certificate for itself at
// start; a peer is accepted only if its certificate chains to that CA.
// So only holders of the cluster key can talk Raft or node RPC, and the
// traffic is encrypted (TLS 1.3), with no certificates to manage.
func PeerTLSFromKey(key []byte) (*tls.Config, error) {
	caKey := ed25519.NewKeyFromSeed(derive(key, "peer ca v1", ed25519.SeedSize))
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ffrtmp cluster CA"},
		NotBefore:             time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("derive peer CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("derive peer CA: %w", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	now := time.Now()
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: peerName},
		DNSNames:     []string{peerName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(20, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, ca, pub, caKey)
	if err != nil {
		return nil, fmt.Errorf("sign node certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: priv}},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ServerName:   peerName,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// PeerTLSFromFiles returns the mutual-TLS configuration for node-to-node
// traffic from operator-supplied PEM files: this node's certificate and
// key, and the CA that signs every node's certificate. Host names are not
// checked (nodes dial each other by address); a peer must present a
// certificate that chains to the CA.
func PeerTLSFromFiles(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load peer certificate: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read peer CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("peer CA %s holds no PEM certificate", caFile)
	}
	verify := func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		if len(rawCerts) == 0 {
			return errors.New("peer presented no certificate")
		}
		certs := make([]*x509.Certificate, len(rawCerts))
		for i, raw := range rawCerts {
			c, err := x509.ParseCertificate(raw)
			if err != nil {
				return fmt.Errorf("peer certificate: %w", err)
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		_, err := certs[0].Verify(x509.VerifyOptions{
			Roots: pool, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		return err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAnyClientCert,
		// Chains are checked by VerifyPeerCertificate, without host names.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verify,
		MinVersion:            tls.VersionTLS13,
	}, nil
}
