package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sort"
	"time"

	json "github.com/go-json-experiment/json/v1"
	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// StartOptions say how a node without Raft state finds its cluster.
type StartOptions struct {
	// Join lists node (Raft) addresses of the cluster to join.
	Join []string
	// BootstrapExpect is the number of servers that form a new cluster
	// together; 0 never bootstraps (the node only joins).
	BootstrapExpect int
}

// Start finds the cluster in the background, so that one command line
// serves first start, restart and scale-up (as rqlite does):
//
//   - A node with Raft state is already a member. If Join is set it still
//     asks to join, which is a no-op for an unchanged member and replaces
//     its entry if its address changed.
//   - A new node tries to join through each address; the node it reaches
//     forwards to the leader.
//   - While nothing answers a join, it announces itself to the Join
//     addresses; once BootstrapExpect distinct nodes (itself included)
//     have announced themselves to it, it bootstraps a cluster of exactly
//     those nodes. Every node of the set computes the same set, so they
//     all bootstrap the same configuration.
func (n *Node) Start(ctx context.Context, opts StartOptions) error {
	has, err := raft.HasExistingState(n.logStore, n.logStore, n.snaps)
	if err != nil {
		return fmt.Errorf("check raft state: %w", err)
	}
	if opts.BootstrapExpect < 0 {
		return errors.New("bootstrap-expect must not be negative")
	}
	if !has && len(opts.Join) == 0 && opts.BootstrapExpect == 0 {
		// A bare node: it waits until `ffrtmp cluster join` is run
		// against it (JoinCluster), and says so once.
		n.waitsToBeJoined.Store(true)
		n.log.Warn("this node belongs to no cluster and waits to be joined; to add it to a running cluster, run: "+n.joinCommand(),
			"api", n.cfg.APIAddr, "raft", n.Addr())
		return nil
	}
	if !has && len(opts.Join) == 0 && opts.BootstrapExpect != 1 {
		return errors.New("--bootstrap-expect above 1 needs --join addresses of the other founding nodes")
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-n.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		n.findCluster(ctx, has, opts)
	}()
	return nil
}

func (n *Node) findCluster(ctx context.Context, has bool, opts StartOptions) {
	delay := 200 * time.Millisecond
	for ctx.Err() == nil {
		if has {
			if len(opts.Join) == 0 {
				return
			}
			if addr, _ := n.Leader(); addr != "" && n.isMember() {
				return
			}
		}
		if err := n.Join(ctx, opts.Join); err == nil {
			n.log.Info("joined the cluster")
			return
		} else {
			n.log.Debug("join", "error", err)
		}
		if !has && opts.BootstrapExpect > 0 {
			if done, err := n.tryBootstrap(ctx, opts); err != nil {
				n.log.Warn("bootstrap", "error", err)
			} else if done {
				return
			}
		}
		// Full jitter, so that nodes started together do not move in
		// lockstep.
		d := delay/2 + rand.N(delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// isMember reports whether the configuration lists this node at its
// current address.
func (n *Node) isMember() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == n.cfg.NodeID {
			return string(s.Address) == n.Addr()
		}
	}
	return false
}

// Join asks the cluster reachable at any of addrs to add this node as a
// voter. A node that is not the leader names the leader, and Join follows.
// The leader answers with its cluster ID, which a new node adopts.
func (n *Node) Join(ctx context.Context, addrs []string) error {
	body, _ := json.Marshal(Peer{ID: n.cfg.NodeID, Addr: n.Addr(), ClusterID: n.ClusterID()})
	var errs []error
	for _, a := range addrs {
		if a == n.Addr() {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, applyTimeout)
		var resp struct {
			ClusterID string `json:"cluster_id"`
		}
		err := n.rpcCall(cctx, a, "POST", "/rpc/join", body, &resp)
		cancel()
		if err == nil {
			return n.ident.set(n.cfg.DataDir, resp.ClusterID)
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return errors.New("no other node to join")
	}
	return fmt.Errorf("join: %w", errors.Join(errs...))
}

// tryBootstrap announces this node to the join addresses and bootstraps
// once BootstrapExpect nodes are known.
func (n *Node) tryBootstrap(ctx context.Context, opts StartOptions) (bool, error) {
	body, _ := json.Marshal(Peer{ID: n.cfg.NodeID, Addr: n.Addr(), Nonce: n.ident.nonce})
	for _, a := range opts.Join {
		if a == n.Addr() {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := n.rpcCall(cctx, a, "POST", "/rpc/notify", body, nil); err != nil {
			n.log.Debug("notify", "addr", a, "error", err)
		}
		cancel()
	}
	n.peersMu.Lock()
	peers := map[string]string{n.cfg.NodeID: n.Addr()}
	for id, addr := range n.peers {
		peers[id] = addr
	}
	n.peersMu.Unlock()
	if len(peers) < opts.BootstrapExpect {
		n.log.Info("waiting for peers to bootstrap", "have", len(peers), "expect", opts.BootstrapExpect)
		return false, nil
	}
	ids := make([]string, 0, len(peers))
	for id := range peers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var conf raft.Configuration
	for _, id := range ids {
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(peers[id]), Suffrage: raft.Voter})
	}
	n.log.Info("bootstrapping the cluster", "servers", ids)
	if err := n.ident.set(n.cfg.DataDir, n.ident.foundingID(n.cfg.NodeID, conf)); err != nil {
		return false, err
	}
	if err := n.raft.BootstrapCluster(conf).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return false, err
	}
	return true, nil
}

// leaderCall runs fn here if this node leads, else calls the leader's
// node RPC at path with body.
func (n *Node) leaderCall(ctx context.Context, fn func() error, path string, body any) error {
	if n.IsLeader() {
		return fn()
	}
	addr, _ := n.Leader()
	if addr == "" {
		return ErrNoLeader
	}
	b, _ := json.Marshal(body)
	return n.rpcCall(ctx, addr, "POST", path, b, nil)
}

// Remove removes a server from the cluster.
func (n *Node) Remove(ctx context.Context, id string) error {
	return n.leaderCall(ctx, func() error { return n.removeLocal(id) }, "/rpc/remove", Peer{ID: id})
}

func (n *Node) removeLocal(id string) error {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	if !slices.ContainsFunc(f.Configuration().Servers, func(s raft.Server) bool { return string(s.ID) == id }) {
		return fmt.Errorf("node %q is not a member", id)
	}
	if id == n.cfg.NodeID {
		return errors.New("the leader cannot remove itself; transfer leadership first")
	}
	n.log.Info("removing cluster member", "id", id)
	return n.raft.RemoveServer(raft.ServerID(id), 0, applyTimeout).Error()
}

// TransferLeadership hands leadership to node id, or to the most
// up-to-date follower if id is "".
func (n *Node) TransferLeadership(ctx context.Context, id string) error {
	return n.leaderCall(ctx, func() error { return n.transferLocal(id) }, "/rpc/transfer", Peer{ID: id})
}

func (n *Node) transferLocal(id string) error {
	if id == "" {
		return n.raft.LeadershipTransfer().Error()
	}
	if id == n.cfg.NodeID {
		return nil
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			return n.raft.LeadershipTransferToServer(s.ID, s.Address).Error()
		}
	}
	return fmt.Errorf("node %q is not a member", id)
}

// Leave removes this node from the cluster gracefully: a leader first
// hands leadership to another node. The caller shuts the node down after.
func (n *Node) Leave(ctx context.Context) error {
	if n.IsLeader() {
		if err := n.transferLocal(""); err != nil {
			return fmt.Errorf("leave: transfer leadership: %w", err)
		}
	}
	deadline := time.Now().Add(writeHold)
	for {
		err := n.Remove(ctx, n.cfg.NodeID)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("leave: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Backup writes a consistent copy of the state (the FSM store's snapshot
// stream) after a read barrier.
func (n *Node) Backup(ctx context.Context, w io.Writer) error {
	if err := n.ReadIndex(ctx); err != nil {
		return err
	}
	s, err := n.cfg.FSM.Store().Snapshot(ctx)
	if err != nil {
		return err
	}
	defer s.Release()
	_, err = s.WriteTo(w)
	return err
}

// RestoreBackup replaces the whole cluster's state with a backup (made by
// Backup), through Raft: the leader installs it and followers receive it
// as a snapshot. The file is uploaded to the leader if this node is not it.
// The file is checked completely first, on this node and again on the
// leader (its store's CheckSnapshot: envelope, checksum, store kind and
// content), because Raft panics when the FSM refuses a snapshot it was
// asked to restore, and keeps the file as its newest snapshot. A file
// that fails the check changes nothing and is an error wrapping
// fsm.ErrBadSnapshot.
func (n *Node) RestoreBackup(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if _, err := n.cfg.FSM.Store().CheckSnapshot(ctx, f); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if n.IsLeader() {
		meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: st.Size()}
		if err := n.raft.Restore(meta, f, 5*time.Minute); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		return nil
	}
	addr, _ := n.Leader()
	if addr == "" {
		return ErrNoLeader
	}
	req, err := http.NewRequestWithContext(ctx, "POST", rpcScheme+addr+"/rpc/restore", f)
	if err != nil {
		return err
	}
	req.ContentLength = st.Size()
	resp, err := n.rpc.Do(req)
	if err != nil {
		return fmt.Errorf("restore via leader: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && resp.StatusCode == http.StatusBadRequest {
			return fmt.Errorf("restore via leader: %w: %s", fsm.ErrBadSnapshot, e.Error)
		}
		return fmt.Errorf("restore via leader: %d %s", resp.StatusCode, b)
	}
	return nil
}

func (n *Node) handleRestore(w http.ResponseWriter, r *http.Request) {
	if n.notLeader(w) {
		return
	}
	tmp, err := os.CreateTemp(n.cfg.DataDir, "restore-*.upload")
	if err != nil {
		rpcError(w, http.StatusInternalServerError, err)
		return
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := io.Copy(tmp, r.Body); err != nil {
		rpcError(w, http.StatusBadRequest, err)
		return
	}
	if err := n.RestoreBackup(r.Context(), tmp.Name()); err != nil {
		status := http.StatusConflict
		if errors.Is(err, fsm.ErrBadSnapshot) {
			status = http.StatusBadRequest
		}
		rpcError(w, status, err)
		return
	}
	rpcJSON(w, http.StatusOK, map[string]string{})
}
