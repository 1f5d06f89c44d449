package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Node-to-node traffic and workers use one TCP port. Every connection is
// TLS; its first byte after the handshake says what it carries. A caller
// that presents a certificate of the cluster CA is a server (mutual TLS,
// see PeerTLSFromKey) and may speak Raft and node RPC. A caller that
// presents none is a worker: it may speak only HTTP, and only to the
// worker protocol's handler (workerRPC), where each request must carry a
// worker token. A worker's connection never reaches Raft, /rpc/apply,
// /rpc/join or any other server call: those handlers are not on its mux.
const (
	protoRaft byte = 'R' // hashicorp/raft's transport
	protoRPC  byte = 'H' // HTTP/1.1 node RPC (join, forwarding, status)
)

// handshakeTimeout bounds the TLS handshake and protocol byte of an
// incoming connection.
const handshakeTimeout = 10 * time.Second

// mux accepts TLS connections on the node port and routes them by their
// first byte.
type mux struct {
	ln        net.Listener
	tls       *tls.Config // a server's: to dial other servers
	listen    *tls.Config // the node port's: servers and workers (nodePortTLS)
	advertise net.Addr
	log       *slog.Logger
	raft      *chanListener
	rpc       *chanListener
	workerRPC *chanListener // HTTP from workers: the worker protocol only
	closeOnce sync.Once
	done      chan struct{}
	// accepted counts the connections handed on, by caller;
	// handshakeFailures those that failed their handshake or protocol
	// byte.
	accepted          [2]atomic.Uint64
	handshakeFailures atomic.Uint64
}

func newMux(bind, advertise string, conf *tls.Config, log *slog.Logger) (*mux, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", bind, err)
	}
	var adv net.Addr = ln.Addr()
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("resolve advertise address %q: %w", advertise, err)
		}
		adv = a
	}
	if a, ok := adv.(*net.TCPAddr); ok && (a.IP == nil || a.IP.IsUnspecified()) {
		ln.Close()
		return nil, fmt.Errorf("address %s is not reachable by other nodes; set --advertise", adv)
	}
	m := &mux{ln: ln, tls: conf, listen: nodePortTLS(conf), advertise: adv, log: log, done: make(chan struct{})}
	m.raft = newChanListener(adv, m.done)
	m.rpc = newChanListener(adv, m.done)
	m.workerRPC = newChanListener(adv, m.done)
	go m.serve()
	return m, nil
}

func (m *mux) serve() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			m.log.Warn("node port accept", "error", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go m.route(c)
	}
}

// route completes the TLS handshake, tells a server from a worker and
// hands the connection on.
func (m *mux) route(c net.Conn) {
	tc := tls.Server(c, m.listen)
	tc.SetDeadline(time.Now().Add(handshakeTimeout))
	b := make([]byte, 1)
	if _, err := tc.Read(b); err != nil {
		m.handshakeFailures.Add(1)
		m.log.Debug("node port handshake failed", "remote", c.RemoteAddr(), "error", err)
		c.Close()
		return
	}
	tc.SetDeadline(time.Time{})
	who := callerOf(tc.ConnectionState())
	l := m.listenerFor(who, b[0])
	if l == nil {
		m.log.Warn("node port: protocol refused", "remote", c.RemoteAddr(), "byte", b[0],
			"caller", who)
		tc.Close()
		return
	}
	m.accepted[who].Add(1)
	select {
	case l.ch <- tc:
	case <-m.done:
		tc.Close()
	case <-l.closed:
		tc.Close()
	}
}

// listenerFor returns where a connection of caller that speaks proto
// goes, or nil if the caller may not speak it.
func (m *mux) listenerFor(who caller, proto byte) *chanListener {
	switch {
	case who == callerServer && proto == protoRaft:
		return m.raft
	case who == callerServer && proto == protoRPC:
		return m.rpc
	case who == callerWorker && proto == protoRPC:
		return m.workerRPC
	}
	return nil
}

// dial opens a TLS connection to a node's port for protocol proto.
func (m *mux) dial(ctx context.Context, addr string, proto byte) (net.Conn, error) {
	return dialNode(ctx, m.tls, addr, proto)
}

// dialNode opens a TLS connection to a node's port for protocol proto.
func dialNode(ctx context.Context, conf *tls.Config, addr string, proto byte) (net.Conn, error) {
	d := tls.Dialer{Config: conf}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte{proto}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (m *mux) close() {
	m.closeOnce.Do(func() {
		close(m.done)
		m.ln.Close()
	})
}

// chanListener is a net.Listener fed by the mux. Closing it stops its
// Accept; the mux's listener is closed by the mux.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{} // the mux's
	closed chan struct{}
	once   sync.Once
}

func newChanListener(addr net.Addr, done chan struct{}) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: done, closed: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// raftLayer adapts the mux to raft.StreamLayer.
type raftLayer struct {
	*chanListener
	m *mux
}

var _ raft.StreamLayer = (*raftLayer)(nil)

func (r *raftLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return r.m.dial(ctx, string(addr), protoRaft)
}

// rpcIdlePerNode is how many idle node RPC connections to one node the
// pool keeps, for a server without HTTP/2 (which takes a connection per
// call in flight). Open connections are not bounded: a call never waits
// for another to free one (a worker's heartbeat must not queue behind
// slow writes).
const rpcIdlePerNode = 64

// Health checks of an HTTP/2 node RPC connection: a connection that has
// received nothing for rpcPingAfter is pinged, and closed if the answer
// takes longer than rpcPingTimeout, so that calls go to a fresh
// connection instead of one to a server that is gone or cut off.
const (
	rpcPingAfter   = 10 * time.Second
	rpcPingTimeout = 5 * time.Second
)

// rpcScheme is the URL scheme of node RPC calls. The node port is TLS, so
// the transport dials it with DialTLSContext, which it uses for https
// only.
const rpcScheme = "https://"

// newRPCClient returns an HTTP client for node RPC over the node port: a
// server's calls to other servers, and a worker's to servers.
//
// It speaks HTTP/2 where the server offers it (ALPN "h2", see
// nodePortTLS), so each caller keeps one connection per server for all its
// calls in flight. With HTTP/1.1 every call in flight held a connection of
// its own, and a call whose deadline passed (a heartbeat during a busy
// moment) closed it, because HTTP/1.1 cannot abandon a response and keep
// the connection. With 1,000 workers of 10 slots, three servers took
// about 10,700 connections, and under load the callers dialed again faster
// than the servers could complete mutual-TLS handshakes, which starved
// Raft on the same port. On HTTP/2 an abandoned call resets its stream
// only. A server that does not offer h2 (an older version during an
// upgrade) is spoken to in HTTP/1.1 as before.
func newRPCClient(conf *tls.Config) *http.Client {
	conf = conf.Clone()
	conf.NextProtos = []string{"h2", "http/1.1"}
	return &http.Client{Transport: &http.Transport{
		DialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dialNode(ctx, conf, addr, protoRPC)
		},
		ForceAttemptHTTP2:   true,
		HTTP2:               &http.HTTP2Config{SendPingTimeout: rpcPingAfter, PingTimeout: rpcPingTimeout, WriteByteTimeout: rpcPingAfter},
		MaxIdleConnsPerHost: rpcIdlePerNode,
		IdleConnTimeout:     time.Minute,
	}}
}
