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
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"
)

// Cluster keys. A cluster key is 32 random bytes, written as base64. It is
// the one secret the servers of a cluster share, and only they hold it:
// node-to-node TLS is derived from it (below), it proves the right to
// join, and the worker gossip key is derived from it (WorkerGossipKey).
// Workers never hold it: they authenticate with worker tokens and trust
// the servers by the cluster CA's hash (CAHash, WorkerTLS).

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
		// The CA travels with the leaf, so that a worker can check it
		// against the hash it was given (WorkerTLS).
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER, caDER}, PrivateKey: priv}},
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
	// The CA travels with the leaf, so that a worker can check it against
	// the hash it was given (WorkerTLS).
	for rest := caPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			cert.Certificate = append(cert.Certificate, b.Bytes)
		}
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

// WorkerGossipKey returns the key of the gossip ring that servers and
// workers share, derived from the cluster key. Servers hand it to a worker
// only after checking its worker token; it gives no access to Raft or to
// node RPC, and the cluster key cannot be recovered from it.
func WorkerGossipKey(clusterKey []byte) []byte { return derive(clusterKey, "worker gossip v1", 32) }

// CAHashPrefix starts every CA hash.
const CAHashPrefix = "sha256:"

// CAHash returns the hash that a worker pins the servers by: the SHA-256
// of the public key (SubjectPublicKeyInfo) of the cluster CA, the last
// certificate of the node certificate's chain, as kubeadm's discovery
// hash. It is no secret.
func CAHash(conf *tls.Config) (string, error) {
	if len(conf.Certificates) == 0 || len(conf.Certificates[0].Certificate) == 0 {
		return "", errors.New("the node TLS configuration has no certificate")
	}
	chain := conf.Certificates[0].Certificate
	ca, err := x509.ParseCertificate(chain[len(chain)-1])
	if err != nil {
		return "", fmt.Errorf("cluster CA: %w", err)
	}
	return spkiHash(ca), nil
}

func spkiHash(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return CAHashPrefix + hex.EncodeToString(sum[:])
}

// ParseCAHash checks a CA hash's text form ("sha256:" and 64 hex digits).
func ParseCAHash(s string) (string, error) {
	h := strings.ToLower(strings.TrimSpace(s))
	hexPart, ok := strings.CutPrefix(h, CAHashPrefix)
	if b, err := hex.DecodeString(hexPart); !ok || err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("CA hash %q: want sha256: and 64 hex digits (printed by `ffrtmp workers token create`)", s)
	}
	return h, nil
}

// WorkerTLS returns a worker's TLS configuration for the node port: it
// presents no certificate (the node port takes such a caller for a
// worker, which must then show its worker token) and accepts a server only
// if the server's chain includes a CA whose public key hashes to caHash
// and the server's certificate chains to that CA.
func WorkerTLS(caHash string) (*tls.Config, error) {
	pin, err := ParseCAHash(caHash)
	if err != nil {
		return nil, err
	}
	verify := func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		certs := make([]*x509.Certificate, 0, len(rawCerts))
		for _, raw := range rawCerts {
			c, err := x509.ParseCertificate(raw)
			if err != nil {
				return fmt.Errorf("server certificate: %w", err)
			}
			certs = append(certs, c)
		}
		if len(certs) == 0 {
			return errors.New("the server presented no certificate")
		}
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		pinned := false
		for _, c := range certs[1:] {
			if c.IsCA && spkiHash(c) == pin {
				roots.AddCert(c)
				pinned = true
			} else {
				inter.AddCert(c)
			}
		}
		if !pinned {
			return fmt.Errorf("the server's CA does not match the CA hash %s: not this cluster's server", pin)
		}
		_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err
	}
	return &tls.Config{
		// Chains are checked by VerifyPeerCertificate, against the pinned
		// CA, without host names (servers are dialed by address).
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verify,
		MinVersion:            tls.VersionTLS13,
	}, nil
}

// nodePortTLS returns the node port's listening configuration made from
// a server's conf: a caller that presents a certificate must chain to the
// cluster CA (a server, as conf requires), and a caller that presents none
// is let through as a worker, which the mux confines to the worker
// protocol (see callerOf).
func nodePortTLS(conf *tls.Config) *tls.Config {
	c := conf.Clone()
	// Node RPC callers (newRPCClient) speak HTTP/2 when offered; Raft's
	// connections and older callers offer no protocol and get none.
	c.NextProtos = []string{"h2", "http/1.1"}
	switch c.ClientAuth {
	case tls.RequireAndVerifyClientCert:
		c.ClientAuth = tls.VerifyClientCertIfGiven
	case tls.RequireAnyClientCert:
		c.ClientAuth = tls.RequestClientCert
		if verify := c.VerifyPeerCertificate; verify != nil {
			c.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
				if len(raw) == 0 {
					return nil // a worker
				}
				return verify(raw, chains)
			}
		}
	}
	return c
}

// caller is who is at the other end of a node port connection.
type caller int

const (
	callerWorker caller = iota // no certificate: the worker protocol only, with a worker token
	callerServer               // a certificate that chains to the cluster CA
)

// String names the caller in logs and in the node port metrics.
func (c caller) String() string {
	if c == callerServer {
		return "server"
	}
	return "worker"
}

// callerOf classifies a node port connection after its handshake under
// nodePortTLS: a peer certificate was verified against the cluster CA
// during the handshake, so presenting one makes the caller a server.
func callerOf(st tls.ConnectionState) caller {
	if len(st.PeerCertificates) > 0 {
		return callerServer
	}
	return callerWorker
}
