package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	json "github.com/go-json-experiment/json/v1"
	"github.com/hashicorp/raft"
)

// Joining a running cluster by command (`ffrtmp cluster join`): a node
// started with neither join addresses nor bootstrap-expect has no Raft
// state and waits; JoinCluster, asked of it, probes the address it is
// given over node RPC (which proves that both hold the same cluster key),
// asks that cluster's leader to add it as a voter, and returns once it has
// caught up. Each wrong use fails with a JoinError naming what to do.
//
// Cluster identity: every cluster has an ID, stamped when it is formed and
// kept beside the Raft state (raft/cluster-id). A cluster formed with
// bootstrap-expect derives it from the nonces its founding nodes
// announced, so they all compute the same ID without a leader; a
// single-node bootstrap draws a random one; a node that joins gets it
// from the leader in the join response. The ID is not part of the
// replicated state: a cluster formed before IDs existed has none (""),
// and an empty ID matches nothing and conflicts with nothing.

// Errors of JoinCluster, each wrapped in a *JoinError.
var (
	// ErrWrongClusterKey means the node at the address refused this
	// node's TLS (derived from the cluster key), or it refused ours.
	ErrWrongClusterKey = errors.New("wrong cluster key")
	// ErrUnreachable means no node answered at the address.
	ErrUnreachable = errors.New("no node answers")
	// ErrJoinDirection means a cluster member was asked to join a node
	// that has no cluster: the command belongs on the new node.
	ErrJoinDirection = errors.New("join asked of the wrong node")
	// ErrOtherCluster means this node already belongs to a different
	// cluster than the node at the address.
	ErrOtherCluster = errors.New("node belongs to another cluster")
	// ErrNoCluster means the node at the address belongs to no cluster
	// either, or the address is this node's own.
	ErrNoCluster = errors.New("no cluster at the address")
	// ErrLoopback means this node advertises a loopback Raft address to
	// a cluster on other hosts, which could not reach it there.
	ErrLoopback = errors.New("this node's Raft address is a loopback address")
)

// JoinError is a failed join: Err is one of the errors above and the
// message tells the operator what to do instead.
type JoinError struct {
	Err error
	Msg string
}

// Error returns the message with the operator's next step.
func (e *JoinError) Error() string { return e.Msg }

// Unwrap returns the sentinel error.
func (e *JoinError) Unwrap() error { return e.Err }

// identity is this node's cluster ID and, before the cluster is formed,
// the bootstrap nonces announced by the nodes it may form it with.
type identity struct {
	mu        sync.Mutex
	clusterID string
	nonce     string
	nonces    map[string]string
}

const (
	clusterIDFile = "cluster-id"
	nonceFile     = "bootstrap-nonce"
)

// load reads the stored cluster ID and bootstrap nonce of the Raft data
// directory dir, creating the nonce the first time.
func (id *identity) load(dir string) error {
	id.mu.Lock()
	defer id.mu.Unlock()
	id.nonces = map[string]string{}
	b, err := os.ReadFile(filepath.Join(dir, clusterIDFile))
	switch {
	case err == nil:
		id.clusterID = strings.TrimSpace(string(b))
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("read cluster id: %w", err)
	}
	b, err = os.ReadFile(filepath.Join(dir, nonceFile))
	switch {
	case err == nil:
		id.nonce = strings.TrimSpace(string(b))
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("read bootstrap nonce: %w", err)
	}
	id.nonce = randomHex(16)
	return writeFileAtomic(filepath.Join(dir, nonceFile), id.nonce)
}

// set stores the cluster ID if it is new; it never replaces a different
// one (a node belongs to one cluster for the life of its data).
func (id *identity) set(dir, clusterID string) error {
	id.mu.Lock()
	defer id.mu.Unlock()
	if clusterID == "" || id.clusterID != "" {
		return nil
	}
	if err := writeFileAtomic(filepath.Join(dir, clusterIDFile), clusterID); err != nil {
		return fmt.Errorf("store cluster id: %w", err)
	}
	id.clusterID = clusterID
	return nil
}

func (id *identity) get() string {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.clusterID
}

// noteNonce records the bootstrap nonce another node announced.
func (id *identity) noteNonce(nodeID, nonce string) {
	id.mu.Lock()
	defer id.mu.Unlock()
	if nonce != "" {
		id.nonces[nodeID] = nonce
	}
}

// foundingID derives the ID of a cluster formed by conf from the nonces
// of its founding servers (this node's own is self).
func (id *identity) foundingID(self string, conf raft.Configuration) string {
	id.mu.Lock()
	defer id.mu.Unlock()
	h := sha256.New()
	for _, s := range conf.Servers {
		nonce := id.nonces[string(s.ID)]
		if string(s.ID) == self {
			nonce = id.nonce
		}
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00", s.ID, s.Address, nonce)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// writeFileAtomic writes text and a newline to path by write and rename,
// so that a crash never leaves a partial file.
func writeFileAtomic(path, text string) error {
	if err := os.WriteFile(path+".tmp", []byte(text+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// ClusterID returns the ID of the cluster this node belongs to, "" if it
// belongs to none yet (or to a cluster formed before IDs existed).
func (n *Node) ClusterID() string { return n.ident.get() }

// hasState reports whether this node has Raft state (belongs to a
// cluster, or did).
func (n *Node) hasState() bool {
	has, err := raft.HasExistingState(n.logStore, n.logStore, n.snaps)
	return err != nil || has
}

// Waiting reports whether this node belongs to no cluster yet, and what
// the operator should do about it: run the join command (if it was started
// without join addresses or bootstrap-expect) or wait for it to find its
// cluster.
func (n *Node) Waiting() (hint string, waiting bool) {
	if n.hasState() {
		return "", false
	}
	if n.waitsToBeJoined.Load() {
		return "waiting to be joined: run `" + n.joinCommand() + "`", true
	}
	return "looking for its cluster (join addresses, bootstrap-expect)", true
}

// joinCommand is the command that joins this node to a cluster.
func (n *Node) joinCommand() string {
	return "ffrtmp cluster join --addr " + n.cfg.APIAddr + " <member Raft address>"
}

// CallRPC calls node RPC at addr (following a "not leader" answer) and
// decodes the JSON answer into out. A failed TLS handshake or an address
// that does not answer comes back as a *JoinError.
func (n *Node) CallRPC(ctx context.Context, addr, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = b
	}
	return classifyRPCError(addr, n.rpcCall(ctx, addr, method, path, body, out))
}

// classifyRPCError turns a failed TLS handshake into ErrWrongClusterKey
// and a node that does not answer into ErrUnreachable.
func classifyRPCError(addr string, err error) error {
	if err == nil {
		return nil
	}
	var (
		verify  *tls.CertificateVerificationError
		alert   tls.AlertError
		unknown x509.UnknownAuthorityError
		header  tls.RecordHeaderError
		down    *rpcUnreachable
	)
	switch {
	case errors.As(err, &verify), errors.As(err, &alert), errors.As(err, &unknown):
		return &JoinError{Err: ErrWrongClusterKey, Msg: fmt.Sprintf(
			"the node at %s and this node do not share a cluster key (TLS handshake failed: %v); start every node of a cluster with the same key file", addr, err)}
	case errors.As(err, &header):
		return &JoinError{Err: ErrUnreachable, Msg: fmt.Sprintf(
			"%s does not speak the node protocol: give a node's Raft address (its --raft-addr), not its API address", addr)}
	case errors.As(err, &down), errors.Is(err, context.DeadlineExceeded):
		return &JoinError{Err: ErrUnreachable, Msg: fmt.Sprintf("no node answers at %s: %v", addr, err)}
	}
	return err
}

// joinProbeTimeout bounds the status call to each given address.
const joinProbeTimeout = 5 * time.Second

// probe returns the status of the first of addrs that answers.
func (n *Node) probe(ctx context.Context, addrs []string) (string, *Status, error) {
	var errs []error
	for _, a := range addrs {
		if a == n.Addr() {
			errs = append(errs, &JoinError{Err: ErrNoCluster, Msg: fmt.Sprintf(
				"%s is this node's own Raft address; give the address of a member of the cluster to join", a)})
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, joinProbeTimeout)
		var st Status
		err := n.CallRPC(cctx, a, "GET", "/rpc/status", nil, &st)
		cancel()
		if err == nil {
			return a, &st, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 1 {
		return "", nil, errs[0]
	}
	return "", nil, errors.Join(errs...)
}

// JoinCluster makes this node join the cluster that the node at one of
// addrs belongs to, and returns once this node is a voter, knows the
// leader and has applied what the cluster had committed. It is
// idempotent: asked of a node that is already a member of that cluster,
// it changes nothing and succeeds. A member is never moved to another
// cluster: asked to join a node that has no cluster, it fails with
// ErrJoinDirection; asked to join another cluster, with ErrOtherCluster.
func (n *Node) JoinCluster(ctx context.Context, addrs []string) error {
	target, st, err := n.probe(ctx, addrs)
	if err != nil {
		return err
	}
	if n.hasState() {
		switch {
		case st.Waiting:
			return &JoinError{Err: ErrJoinDirection, Msg: fmt.Sprintf(
				"this node (%s) is a cluster member and %s belongs to no cluster: run the join against the new node: ffrtmp cluster join --addr %s %s",
				n.Addr(), target, st.APIAddr, n.Addr())}
		case !n.sameCluster(st):
			return &JoinError{Err: ErrOtherCluster, Msg: fmt.Sprintf(
				"this node already belongs to cluster %s and %s to cluster %s; a node belongs to one cluster (to move it, remove it from its cluster and start it with an empty data directory)",
				orUnknown(n.ClusterID()), target, orUnknown(st.ClusterID))}
		case n.isMember():
			return nil
		}
	} else if st.Waiting {
		return &JoinError{Err: ErrNoCluster, Msg: fmt.Sprintf(
			"the node at %s belongs to no cluster either; give the Raft address of a member of the running cluster", target)}
	}
	if isLoopback(n.Addr()) && !isLoopback(target) {
		return &JoinError{Err: ErrLoopback, Msg: fmt.Sprintf(
			"this node's Raft address %s is a loopback address, which the cluster at %s cannot reach; set --raft-addr (FFRTMP_RAFT_ADDR), or --advertise, to an address the other nodes reach",
			n.Addr(), target)}
	}
	if err := n.Join(ctx, []string{target}); err != nil {
		return err
	}
	return n.waitJoined(ctx)
}

// checkReachable makes sure the leader reaches a joining node at the
// address it gave before adding it as a voter: a voter nobody reaches
// would only weaken the quorum.
func (n *Node) checkReachable(ctx context.Context, p Peer) error {
	if p.ID == n.cfg.NodeID {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, joinProbeTimeout)
	defer cancel()
	var st Status
	if err := n.rpcCall(cctx, p.Addr, "GET", "/rpc/status", nil, &st); err != nil {
		return fmt.Errorf("the leader %s cannot reach node %s at %s (check its --advertise address and the firewall): %w", n.Addr(), p.ID, p.Addr, err)
	}
	if st.ID != p.ID {
		return fmt.Errorf("the node at %s is %s, not %s", p.Addr, st.ID, p.ID)
	}
	return nil
}

// sameCluster reports whether the node with status st is in this node's
// cluster: the same cluster ID, or (for clusters without one) listed in
// this node's configuration.
func (n *Node) sameCluster(st *Status) bool {
	if mine := n.ClusterID(); mine != "" && st.ClusterID != "" {
		return mine == st.ClusterID
	}
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	return slices.ContainsFunc(f.Configuration().Servers, func(s raft.Server) bool { return string(s.ID) == st.ID })
}

// isLoopback reports whether the host of addr is a loopback IP or
// "localhost".
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	return host == "localhost"
}

// orUnknown names an empty cluster ID in messages.
func orUnknown(id string) string {
	if id == "" {
		return "(unknown id)"
	}
	return id
}

// waitJoined waits until this node is in the configuration, knows a
// leader and has applied everything the leader had committed.
func (n *Node) waitJoined(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := n.Leader(); addr != "" && n.isMember() {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("join: wait until the cluster lists this node: %w", ctx.Err())
		case <-t.C:
		}
	}
	if err := n.ReadIndex(ctx); err != nil {
		return fmt.Errorf("join: catch up: %w", err)
	}
	return nil
}
