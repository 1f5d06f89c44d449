package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	json "github.com/go-json-experiment/json/v1"
	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Node RPC is HTTP/1.1 over the node port's mutual TLS (see mux.go), so
// only nodes holding the cluster key (or the operator's peer
// certificates) can call it. A call that needs the leader and reaches a
// follower gets 421 with the leader's address, and the caller retries
// there.

// Peer is a node as another node announces itself.
type Peer struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
	// Nonce is announced before a cluster is formed (see join.go).
	Nonce string `json:"nonce,omitempty"`
	// ClusterID is the joining node's cluster, if it has one.
	ClusterID string `json:"cluster_id,omitempty"`
}

// applyResponse carries an FSM response across the wire.
type applyResponse struct {
	Index uint64          `json:"index"`
	Kind  string          `json:"kind,omitempty"`
	Value json.RawMessage `json:"value,omitempty"`
	Error *fsm.Error      `json:"error,omitempty"`
}

// encodeResponse turns an FSM response into its wire form.
func encodeResponse(index uint64, v any) (*applyResponse, error) {
	r := &applyResponse{Index: index}
	switch v := v.(type) {
	case nil:
		return r, nil
	case *fsm.Error:
		r.Error = v
		return r, nil
	}
	k := fsm.KindOf(v)
	if k == nil {
		return nil, fmt.Errorf("cannot forward a response of type %T", v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	r.Kind, r.Value = k.Name, b
	return r, nil
}

func decodeResponse(r *applyResponse) (any, error) {
	if r.Error != nil {
		return nil, r.Error
	}
	if r.Kind == "" {
		return nil, nil
	}
	k := fsm.KindNamed(r.Kind)
	if k == nil {
		return nil, fmt.Errorf("unknown forwarded response kind %q", r.Kind)
	}
	v := k.New()
	if err := json.Unmarshal(r.Value, v); err != nil {
		return nil, fmt.Errorf("decode forwarded response: %w", err)
	}
	return v, nil
}

// Status is one node's view of itself.
type Status struct {
	ID           string    `json:"id"`
	Addr         string    `json:"addr"`
	APIAddr      string    `json:"api_addr,omitempty"`
	GossipAddr   string    `json:"gossip_addr,omitempty"`
	State        string    `json:"state"`
	Term         uint64    `json:"term"`
	LastLogIndex uint64    `json:"last_log_index"`
	CommitIndex  uint64    `json:"commit_index"`
	AppliedIndex uint64    `json:"applied_index"`
	FSMIndex     uint64    `json:"fsm_index"`
	LastContact  string    `json:"last_contact,omitempty"`
	Leader       string    `json:"leader,omitempty"`
	LeaderID     string    `json:"leader_id,omitempty"`
	Time         time.Time `json:"time"`
	// ClusterID is the node's cluster; Waiting is set while it belongs to
	// none (no Raft state: it waits to be joined or to bootstrap).
	ClusterID string `json:"cluster_id,omitempty"`
	Waiting   bool   `json:"waiting,omitempty"`
	// Protocol is the newest cluster protocol the node's binary speaks
	// (fsm.Protocol; see protocol.go).
	Protocol int `json:"protocol,omitempty"`
}

const maxRPCBody = 64 << 20

func (n *Node) rpcHandler() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /rpc/join", n.handleJoin)
	mux.HandleFunc("POST /rpc/notify", n.handleNotify)
	mux.HandleFunc("POST /rpc/apply", n.handleApply)
	mux.HandleFunc("POST /rpc/apply-batch", n.handleApplyBatch)
	mux.HandleFunc("POST /rpc/apply-many", n.handleApplyMany)
	mux.HandleFunc("GET /rpc/readindex", n.handleReadIndex)
	mux.HandleFunc("GET /rpc/status", n.handleStatus)
	mux.HandleFunc("POST /rpc/remove", n.handleRemove)
	mux.HandleFunc("POST /rpc/transfer", n.handleTransfer)
	mux.HandleFunc("POST /rpc/restore", n.handleRestore)
	mux.HandleFunc("POST /rpc/heartbeat", n.handleHeartbeat)
	return mux
}

func rpcJSON(w http.ResponseWriter, status int, v any) {
	if err := WriteJSON(w, status, v, ""); err != nil {
		rpcError(w, http.StatusInternalServerError, fmt.Errorf("encode answer: %w", err))
	}
}

func rpcError(w http.ResponseWriter, status int, err error) {
	rpcJSON(w, status, map[string]string{"error": err.Error()})
}

// notLeader answers a leader-only call on a follower with the leader.
func (n *Node) notLeader(w http.ResponseWriter) bool {
	if n.IsLeader() {
		return false
	}
	addr, id := n.Leader()
	rpcJSON(w, http.StatusMisdirectedRequest, map[string]string{"leader": addr, "leader_id": id})
	return true
}

func (n *Node) handleJoin(w http.ResponseWriter, r *http.Request) {
	var p Peer
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&p); err != nil || p.ID == "" || p.Addr == "" {
		rpcError(w, http.StatusBadRequest, errors.New("join needs an id and an addr"))
		return
	}
	if n.notLeader(w) {
		return
	}
	if mine := n.ClusterID(); mine != "" && p.ClusterID != "" && p.ClusterID != mine {
		rpcError(w, http.StatusConflict, fmt.Errorf("%w: node %s belongs to cluster %s, this is cluster %s", ErrOtherCluster, p.ID, p.ClusterID, mine))
		return
	}
	if err := n.checkReachable(r.Context(), p); err != nil {
		rpcError(w, http.StatusBadGateway, err)
		return
	}
	if err := n.addVoter(p); err != nil {
		rpcError(w, http.StatusServiceUnavailable, err)
		return
	}
	rpcJSON(w, http.StatusOK, map[string]string{"leader": n.Addr(), "cluster_id": n.ClusterID()})
}

// addVoter adds p to the configuration. It is idempotent, and a node that
// rejoins with a changed address (or an address reused by a new ID)
// replaces the old entry.
func (n *Node) addVoter(p Peer) error {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID(p.ID) && s.Address == raft.ServerAddress(p.Addr) {
			return nil
		}
		if s.ID == raft.ServerID(p.ID) || s.Address == raft.ServerAddress(p.Addr) {
			n.log.Info("replacing cluster member", "id", s.ID, "addr", s.Address, "new_id", p.ID, "new_addr", p.Addr)
			if err := n.raft.RemoveServer(s.ID, 0, applyTimeout).Error(); err != nil {
				return fmt.Errorf("remove old entry of %s: %w", s.ID, err)
			}
		}
	}
	n.log.Info("adding cluster member", "id", p.ID, "addr", p.Addr)
	n.recheckProtocol()
	if err := n.raft.AddVoter(raft.ServerID(p.ID), raft.ServerAddress(p.Addr), 0, applyTimeout).Error(); err != nil {
		return fmt.Errorf("add voter %s: %w", p.ID, err)
	}
	return nil
}

func (n *Node) handleNotify(w http.ResponseWriter, r *http.Request) {
	var p Peer
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&p); err != nil || p.ID == "" || p.Addr == "" {
		rpcError(w, http.StatusBadRequest, errors.New("notify needs an id and an addr"))
		return
	}
	n.peersMu.Lock()
	n.peers[p.ID] = p.Addr
	n.peersMu.Unlock()
	n.ident.noteNonce(p.ID, p.Nonce)
	rpcJSON(w, http.StatusOK, map[string]string{})
}

func (n *Node) handleApply(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxRPCBody))
	if err != nil || len(data) == 0 {
		rpcError(w, http.StatusBadRequest, errors.New("apply needs a command"))
		return
	}
	if _, err := fsm.DecodeCommand(data); err != nil {
		// Refused before the log: the caller maps the typed error back
		// for its client.
		rpcJSON(w, http.StatusBadRequest, applyResponse{Error: err.(*fsm.Error)})
		return
	}
	if n.notLeader(w) {
		return
	}
	v, index, err := n.applyLocal(data, applyTimeout)
	if err != nil && !isDomainError(err) {
		if errors.Is(err, ErrNotLeader) {
			n.notLeader(w)
			return
		}
		rpcError(w, http.StatusServiceUnavailable, err)
		return
	}
	if err != nil {
		v = err
	}
	resp, err := encodeResponse(index, v)
	if err != nil {
		rpcError(w, http.StatusInternalServerError, err)
		return
	}
	rpcJSON(w, http.StatusOK, resp)
}

func isDomainError(err error) bool {
	var e *fsm.Error
	return errors.As(err, &e)
}

func (n *Node) handleReadIndex(w http.ResponseWriter, r *http.Request) {
	if n.notLeader(w) {
		return
	}
	// Followers' read barriers join this node's own in one batch.
	index, err := n.reads.leader.do(r.Context(), n.leaderReadIndex)
	if err != nil {
		rpcError(w, http.StatusServiceUnavailable, err)
		return
	}
	rpcJSON(w, http.StatusOK, map[string]uint64{"index": index})
}

func (n *Node) handleStatus(w http.ResponseWriter, r *http.Request) {
	rpcJSON(w, http.StatusOK, n.LocalStatus())
}

func (n *Node) handleRemove(w http.ResponseWriter, r *http.Request) {
	var p Peer
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&p); err != nil || p.ID == "" {
		rpcError(w, http.StatusBadRequest, errors.New("remove needs an id"))
		return
	}
	if n.notLeader(w) {
		return
	}
	if err := n.removeLocal(p.ID); err != nil {
		rpcError(w, http.StatusConflict, err)
		return
	}
	rpcJSON(w, http.StatusOK, map[string]string{})
}

func (n *Node) handleTransfer(w http.ResponseWriter, r *http.Request) {
	var p Peer
	json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&p)
	if n.notLeader(w) {
		return
	}
	if err := n.transferLocal(p.ID); err != nil {
		rpcError(w, http.StatusConflict, err)
		return
	}
	rpcJSON(w, http.StatusOK, map[string]string{})
}

// rpcCall is one node RPC. It follows a 421 to the leader it names, at
// most twice.
func (n *Node) rpcCall(ctx context.Context, addr, method, path string, body []byte, out any) error {
	for hop := 0; ; hop++ {
		req, err := http.NewRequestWithContext(ctx, method, rpcScheme+addr+path, bytes.NewReader(body))
		if err != nil {
			return err
		}
		resp, err := n.rpc.Do(req)
		if err != nil {
			return &rpcUnreachable{addr: addr, err: err}
		}
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxRPCBody))
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusMisdirectedRequest:
			var l struct {
				Leader string `json:"leader"`
			}
			json.Unmarshal(data, &l)
			if l.Leader == "" || hop >= 2 {
				return ErrNoLeader
			}
			addr = l.Leader
			continue
		case resp.StatusCode == http.StatusNotFound:
			return fmt.Errorf("%s%s on %s: %w", method, path, addr, errNoRPC)
		case resp.StatusCode >= 300:
			var e struct {
				Error json.RawMessage `json:"error"`
			}
			json.Unmarshal(data, &e)
			var typed fsm.Error
			if resp.StatusCode == http.StatusBadRequest && json.Unmarshal(e.Error, &typed) == nil && typed.Code != "" {
				return &typed // a refusal with a stable code, for the client
			}
			var msg string
			json.Unmarshal(e.Error, &msg)
			return fmt.Errorf("%s%s on %s: %d %s", method, path, addr, resp.StatusCode, msg)
		}
		if out != nil {
			return json.Unmarshal(data, out)
		}
		return nil
	}
}

// rpcUnreachable means the call never reached the node: it is safe to
// retry even for a write.
type rpcUnreachable struct {
	addr string
	err  error
}

func (e *rpcUnreachable) Error() string { return fmt.Sprintf("node %s unreachable: %v", e.addr, e.err) }
func (e *rpcUnreachable) Unwrap() error { return e.err }

// sentNothing reports whether err means the request was never sent.
func sentNothing(err error) bool {
	var u *rpcUnreachable
	if !errors.As(err, &u) {
		return errors.Is(err, ErrNoLeader)
	}
	var op *net.OpError
	return errors.As(u.err, &op) && op.Op == "dial"
}

// LocalStatus returns this node's Raft status.
func (n *Node) LocalStatus() Status {
	st := n.raft.Stats()
	u := func(k string) uint64 { v, _ := strconv.ParseUint(st[k], 10, 64); return v }
	addr, id := n.Leader()
	return Status{
		ID: n.cfg.NodeID, Addr: n.Addr(), APIAddr: n.cfg.APIAddr, GossipAddr: n.gossipAddr(), State: n.raft.State().String(),
		Term: u("term"), LastLogIndex: u("last_log_index"), CommitIndex: n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(), FSMIndex: n.cfg.FSM.Index(), LastContact: st["last_contact"],
		Leader: addr, LeaderID: id, Time: time.Now().UTC(), ClusterID: n.ClusterID(), Waiting: !n.hasState(),
		Protocol: int(n.speaks.Load()),
	}
}

// Member is a server in the Raft configuration with its status, if it
// answered. Healthy is set only when the status was asked for (nil, and
// absent from JSON, otherwise): health is known only by asking.
type Member struct {
	ID       string  `json:"id"`
	Addr     string  `json:"addr"`
	Voter    bool    `json:"voter"`
	Leader   bool    `json:"leader"`
	Healthy  *bool   `json:"healthy,omitempty"`
	Status   *Status `json:"status,omitempty"`
	Error    string  `json:"error,omitempty"`
	Suffrage string  `json:"suffrage"`
}

// Members returns the configuration's servers; with status, each is asked
// for its status (in parallel, with a short timeout).
func (n *Node) Members(ctx context.Context, status bool) ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	leader, _ := n.Leader()
	servers := f.Configuration().Servers
	out := make([]Member, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		out[i] = Member{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter,
			Leader: string(s.Address) == leader, Suffrage: s.Suffrage.String()}
		if !status {
			continue
		}
		wg.Add(1)
		go func(m *Member) {
			defer wg.Done()
			healthy := false
			m.Healthy = &healthy
			if m.ID == n.cfg.NodeID {
				st := n.LocalStatus()
				m.Status, healthy = &st, true
				return
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			var st Status
			if err := n.rpcCall(cctx, m.Addr, "GET", "/rpc/status", nil, &st); err != nil {
				m.Error = err.Error()
				return
			}
			m.Status, healthy = &st, st.State == "Leader" || st.State == "Follower"
		}(&out[i])
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
