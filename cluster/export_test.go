package cluster

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	dto "github.com/prometheus/client_model/go"
)

// RaftForTest exposes the node's Raft instance to tests that build
// multi-node clusters (membership changes, leadership transfer).
func (n *Node) RaftForTest() *raft.Raft { return n.raft }

// SetStoreStopWaitForTest sets how long Shutdown waits for the FSM's
// store, until the test ends. A test that calls it must not be parallel.
func SetStoreStopWaitForTest(t testing.TB, d time.Duration) {
	old := storeStopWait
	storeStopWait = d
	t.Cleanup(func() { storeStopWait = old })
}

// AddrForTest is the Raft address the node's transport bound.
func (n *Node) AddrForTest() string { return string(n.trans.LocalAddr()) }

// LogForTest returns the entry at index from the node's Raft log.
func (n *Node) LogForTest(index uint64) (*raft.Log, error) {
	var l raft.Log
	if err := n.logStore.GetLog(index, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// ForwardForTest sends an encoded command, as given, to the leader's
// /rpc/apply as a follower forwarding a write does.
func (n *Node) ForwardForTest(ctx context.Context, leader string, data []byte) (any, uint64, error) {
	return n.forward(ctx, leader, data)
}

// ForwardBatchedForTest sends an encoded command, as given, to the
// leader through the forward batcher, as a follower's Apply does.
func (n *Node) ForwardBatchedForTest(ctx context.Context, data []byte) (any, uint64, error) {
	return n.forwardWrite(ctx, data)
}

// ForwardCallsForTest returns how many /rpc/apply-many calls the node
// sent and the writes they carried.
func (n *Node) ForwardCallsForTest() (calls uint64, writes float64) {
	var m dto.Metric
	n.metrics.forwardItems.Write(&m)
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// WithoutApplyManyForTest makes the node answer /rpc/apply-many with 404,
// as a binary from before it.
func (n *Node) WithoutApplyManyForTest() { n.withoutApplyMany.Store(true) }

// SpeakProtocolForTest makes the node report protocol p, as a binary of
// that protocol would.
func (n *Node) SpeakProtocolForTest(p int) { n.speaks.Store(int32(p)) }

// RecheckProtocolForTest makes a leader ask every server for its protocol
// now, as after adding a server.
func (n *Node) RecheckProtocolForTest() { n.recheckProtocol() }

// Node port protocols, for tests that speak them by hand.
const (
	ProtoRaft = protoRaft
	ProtoRPC  = protoRPC
)

// DialNodeForTest opens a connection to a node port for proto.
func DialNodeForTest(ctx context.Context, conf *tls.Config, addr string, proto byte) (net.Conn, error) {
	return dialNode(ctx, conf, addr, proto)
}

// NodePortCallerForTest classifies a connection state as the node port
// does: "server" or "worker".
func NodePortCallerForTest(st tls.ConnectionState) string {
	if callerOf(st) == callerServer {
		return "server"
	}
	return "worker"
}

// NodePortTLSForTest returns the node port's listening configuration for
// a server's conf.
func NodePortTLSForTest(conf *tls.Config) *tls.Config { return nodePortTLS(conf) }

// LeaseChecksForTest returns how many heartbeats this node confirmed its
// leadership for, and in how many rounds.
func (n *Node) LeaseChecksForTest() (heartbeats, rounds uint64) {
	return n.leaseChecks.reads.Load(), n.leaseChecks.batches.Load()
}

// NewRPCClientForTest returns the HTTP client node RPC and workers use.
func NewRPCClientForTest(conf *tls.Config) *http.Client { return newRPCClient(conf) }

// RPCSchemeForTest is the URL scheme of node RPC calls.
const RPCSchemeForTest = rpcScheme

// NodePortConnsForTest returns the connections the node port accepted
// from servers and from workers.
func (n *Node) NodePortConnsForTest() (servers, workers uint64) {
	return n.mux.accepted[callerServer].Load(), n.mux.accepted[callerWorker].Load()
}

// StartAtForTest makes the client's next call start at server i of its
// list.
func (c *WorkerClient) StartAtForTest(i uint32) { c.next.Store(i) }

// ChanListenerForTest returns the node port's channel-fed listener at
// addr and a function that hands it a connection; the function returns
// false, and hands nothing, once the listener is closed.
func ChanListenerForTest(addr net.Addr) (net.Listener, func(net.Conn) bool) {
	l := newChanListener(addr, make(chan struct{}))
	return l, func(c net.Conn) bool {
		select {
		case l.ch <- c:
			return true
		case <-l.closed:
			return false
		}
	}
}
