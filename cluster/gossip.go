package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	json "github.com/go-json-experiment/json/v1"
	"github.com/hashicorp/memberlist"
)

// Gossip is a member of the cluster's memberlist pool: server nodes and
// workers find each other through it. Gossip is encrypted and
// authenticated with the worker gossip key (WorkerGossipKey), which every
// worker holds once a server has checked its worker token. So a worker,
// or whoever takes over a worker host, can say anything in gossip, and
// nothing said there is trusted: servers take no decision from it (a
// member leaving only makes the leader check worker leases, which are
// renewed by token-authenticated heartbeats), and a worker dials a server
// it learned of only over TLS pinned to the cluster CA (WorkerTLS), so a
// forged server address costs it one failed dial.
type Gossip struct {
	ml   *memberlist.Memberlist
	log  *slog.Logger
	meta []byte

	mu      sync.Mutex
	onLeave []func(name string)
	// servers holds what the alive server members advertise, by name, kept
	// from membership events: the nodes memberlist's Members returns are
	// updated under its lock, so reading them later races.
	servers map[string]serverMember
}

// Member roles.
const (
	RoleServer = "server"
	RoleWorker = "worker"
)

// GossipMeta is what a member advertises about itself.
type GossipMeta struct {
	Role string `json:"role"`
	// NodeAddr is a server's node port (Raft and node RPC).
	NodeAddr string `json:"node_addr,omitempty"`
	// APIAddr is a server's API address (host:port).
	APIAddr string `json:"api_addr,omitempty"`
}

// GossipConfig configures a Gossip member.
type GossipConfig struct {
	// Name is the member's unique name: the node or worker ID.
	Name string
	// BindAddr is host:port for gossip (TCP and UDP).
	BindAddr string
	// Advertise is host:port other members reach this one at; defaults
	// to BindAddr.
	Advertise string
	// Key is the worker gossip key (WorkerGossipKey): 32 bytes.
	Key    []byte
	Meta   GossipMeta
	Logger *slog.Logger
}

// NewGossip starts a gossip member (it joins nobody yet; see Join).
func NewGossip(cfg GossipConfig) (*Gossip, error) {
	g := &Gossip{log: cfg.Logger, servers: map[string]serverMember{}}
	meta, err := json.Marshal(cfg.Meta)
	if err != nil {
		return nil, err
	}
	g.meta = meta
	host, port, err := splitHostPort(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", cfg.BindAddr, err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = host, port
	if cfg.Advertise != "" {
		if mc.AdvertiseAddr, mc.AdvertisePort, err = splitHostPort(cfg.Advertise); err != nil {
			return nil, fmt.Errorf("gossip advertise address %q: %w", cfg.Advertise, err)
		}
	}
	if len(cfg.Key) != 32 {
		return nil, errors.New("gossip key must be 32 bytes")
	}
	mc.SecretKey = cfg.Key
	mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	mc.Delegate = &gossipDelegate{g: g}
	mc.Events = &gossipEvents{g: g}
	mc.Logger = NewStdLogger(cfg.Logger, "memberlist", slog.LevelDebug)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.BindAddr, err)
	}
	g.ml = ml
	return g, nil
}

func splitHostPort(s string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return h, port, nil
}

// Join contacts existing members; it succeeds if any answered.
func (g *Gossip) Join(addrs []string) (int, error) { return g.ml.Join(addrs) }

// Addr is the address other members reach this one at.
func (g *Gossip) Addr() string {
	n := g.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Servers returns the node ports of the alive server members, sorted.
func (g *Gossip) Servers() []string {
	return g.serverAddrs(func(m serverMember) string { return m.nodeAddr })
}

// ServerGossipAddrs returns the gossip addresses of the alive server
// members, sorted.
func (g *Gossip) ServerGossipAddrs() []string {
	return g.serverAddrs(func(m serverMember) string { return m.gossipAddr })
}

// serverAddrs returns one address of each alive server member, sorted.
func (g *Gossip) serverAddrs(addr func(serverMember) string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]string, 0, len(g.servers))
	for _, m := range g.servers {
		out = append(out, addr(m))
	}
	slices.Sort(out)
	return out
}

// serverMember is what an alive server member advertises.
type serverMember struct {
	gossipAddr string   // its gossip address
	nodeAddr   string   // its node port
	endpoints  []string // see ServerEndpoints
}

// endpoints returns each host of a server member (gossip, node port and
// API) with each of its ports.
func endpoints(n *memberlist.Node, meta GossipMeta) []string {
	hosts := []string{n.Addr.String()}
	ports := []string{strconv.Itoa(int(n.Port))}
	for _, a := range []string{meta.NodeAddr, meta.APIAddr} {
		if h, p, err := net.SplitHostPort(a); err == nil {
			hosts, ports = append(hosts, h), append(ports, p)
		}
	}
	var out []string
	for _, h := range hosts {
		for _, p := range ports {
			out = append(out, net.JoinHostPort(h, p))
		}
	}
	return out
}

// noteMember records what a member that joined or changed advertises.
func (g *Gossip) noteMember(n *memberlist.Node) {
	var meta GossipMeta
	g.mu.Lock()
	defer g.mu.Unlock()
	if json.Unmarshal(n.Meta, &meta) == nil && meta.Role == RoleServer && meta.NodeAddr != "" {
		g.servers[n.Name] = serverMember{gossipAddr: n.Address(), nodeAddr: meta.NodeAddr, endpoints: endpoints(n, meta)}
	} else {
		delete(g.servers, n.Name)
	}
}

// ServerEndpoints returns every address and port at which an alive server
// member may listen: each of its hosts (gossip, node port and API) with
// each of its ports. Workers refuse jobs that would connect to them
// (worker.NetGuard.Cluster).
func (g *Gossip) ServerEndpoints() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, m := range g.servers {
		out = append(out, m.endpoints...)
	}
	slices.Sort(out)
	return out
}

// KeepJoined joins the members at addrs, and joins them again whenever
// this member knows no alive server, with backoff (at most maxRejoinDelay)
// and forever, until ctx ends: a worker that lost every server (a
// partition, a cluster restart) finds them again by itself once they
// answer, since memberlist forgets dead members and never retries them.
func (g *Gossip) KeepJoined(ctx context.Context, addrs []string) {
	delay := minRejoinDelay
	joined := false
	for ctx.Err() == nil {
		switch servers := g.Servers(); {
		case len(servers) > 0:
			if !joined {
				g.log.Info("joined the gossip pool", "servers", strings.Join(servers, ","))
				joined = true
			}
			delay = minRejoinDelay
		default:
			if joined {
				g.log.Warn("lost every server; joining again", "addrs", strings.Join(addrs, ","))
				joined = false
			}
			if _, err := g.ml.Join(addrs); err != nil {
				g.log.Warn("join gossip", "addrs", strings.Join(addrs, ","), "error", err, "retry_in", delay)
			}
		}
		if len(g.Servers()) > 0 {
			delay = minRejoinDelay
		} else {
			delay = min(delay*2, maxRejoinDelay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// Bounds of the delay between KeepJoined's checks and joins.
const (
	minRejoinDelay = 200 * time.Millisecond
	maxRejoinDelay = 5 * time.Second
)

// OnLeave registers fn to run (on the gossip goroutine; it must not block)
// when a member leaves or is declared dead.
func (g *Gossip) OnLeave(fn func(name string)) {
	g.mu.Lock()
	g.onLeave = append(g.onLeave, fn)
	g.mu.Unlock()
}

// Leave announces the departure and stops gossiping.
func (g *Gossip) Leave() {
	if err := g.ml.Leave(memberlistLeaveTimeout); err != nil {
		g.log.Warn("gossip leave", "error", err)
	}
	g.ml.Shutdown()
}

type gossipDelegate struct{ g *Gossip }

func (d *gossipDelegate) NodeMeta(limit int) []byte                  { return d.g.meta }
func (d *gossipDelegate) NotifyMsg([]byte)                           {}
func (d *gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *gossipDelegate) LocalState(join bool) []byte                { return nil }
func (d *gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}

type gossipEvents struct{ g *Gossip }

func (e *gossipEvents) NotifyJoin(n *memberlist.Node) {
	e.g.log.Info("gossip member joined", "name", n.Name, "addr", n.Address())
	e.g.noteMember(n)
}

func (e *gossipEvents) NotifyLeave(n *memberlist.Node) {
	e.g.log.Info("gossip member left", "name", n.Name, "addr", n.Address())
	e.g.mu.Lock()
	delete(e.g.servers, n.Name)
	fns := append([]func(string){}, e.g.onLeave...)
	e.g.mu.Unlock()
	for _, fn := range fns {
		fn(n.Name)
	}
}

func (e *gossipEvents) NotifyUpdate(n *memberlist.Node) { e.g.noteMember(n) }

// memberlistLeaveTimeout bounds the leave broadcast.
const memberlistLeaveTimeout = 5 * time.Second
