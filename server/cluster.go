package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	json "github.com/go-json-experiment/json/v1"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// The /v1/cluster endpoints operate the Raft cluster; all but init need a
// super-admin key. Any node answers: operations that need the leader are
// forwarded to it by the cluster package.

func (s *Server) clusterMembers(w http.ResponseWriter, r *http.Request) {
	s.writeMembers(w, r, false)
}

func (s *Server) clusterStatus(w http.ResponseWriter, r *http.Request) {
	s.writeMembers(w, r, true)
}

func (s *Server) writeMembers(w http.ResponseWriter, r *http.Request, status bool) {
	ms, err := s.raft.Members(r.Context(), status)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	_, leader := s.raft.Leader()
	writeJSON(w, http.StatusOK, ClusterStatus{ClusterID: s.raft.ClusterID(), Node: s.raft.ID(), Leader: leader, Members: apiMembers(ms)})
}

type nodeRequest struct {
	Node  string   `json:"node,omitempty"`
	Addrs []string `json:"addrs,omitempty"`
}

// joinTimeout bounds a join: the probe, the leader adding this node, and
// this node catching up by snapshot and log.
const joinTimeout = 5 * time.Minute

// clusterJoin makes this node join the cluster of the given Raft
// addresses, then answers with the membership as this node sees it once
// the join took effect. Authorization depends on the node: a node that
// belongs to no cluster holds no API keys, so it accepts proof of the
// cluster key (X-Ffrtmp-Cluster-Proof, purpose "join") or a super-admin
// API key that it has the cluster it joins verify over node RPC; a member
// requires a super-admin key of its own cluster, as every cluster
// operation does.
func (s *Server) clusterJoin(w http.ResponseWriter, r *http.Request) {
	var req nodeRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(req.Addrs) == 0 {
		s.writeError(w, r, fsm.Errorf(fsm.CodeInvalidArgument, "addrs: give the Raft address of a cluster node"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), joinTimeout)
	defer cancel()
	addrs, err := s.authorizeJoin(ctx, r, req.Addrs)
	if err != nil {
		s.writeError(w, r, joinError(err))
		return
	}
	if err := s.raft.JoinCluster(ctx, addrs); err != nil {
		s.writeError(w, r, joinError(err))
		return
	}
	s.log.Info("joined the cluster", "via", addrs, "cluster", s.raft.ClusterID())
	s.writeMembers(w, r, false)
}

// authorizeJoin checks the caller's right to make this node join, and
// returns the addresses to join through (for a key verified remotely,
// the one member that verified it).
func (s *Server) authorizeJoin(ctx context.Context, r *http.Request, addrs []string) ([]string, error) {
	if _, waiting := s.raft.Waiting(); !waiting {
		p, err := s.authenticate(r)
		if err != nil {
			return nil, err
		}
		if err := Authorize(p, PermClusterManage, ""); err != nil {
			return nil, err
		}
		return addrs, nil
	}
	if r.Header.Get(proofHeader) != "" {
		return addrs, s.checkProof(r, "join")
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return nil, fsm.Errorf(CodeUnauthenticated,
			"this node belongs to no cluster yet: prove the cluster key (ffrtmp cluster join --cluster-key-file FILE) or give a super-admin API key of the cluster to join")
	}
	var errs []error
	for _, a := range addrs {
		var v verifiedKey
		err := s.raft.CallRPC(ctx, a, "POST", "/rpc/verify-key", verifyKeyRequest{Token: token}, &v)
		if errors.Is(err, cluster.ErrUnreachable) {
			errs = append(errs, err)
			continue
		}
		switch {
		case err != nil:
			return nil, err
		case v.Error != "":
			return nil, fsm.Errorf(CodeUnauthenticated, "the cluster at %s refused the API key: %s", a, v.Error)
		case Authorize(&Principal{User: v.User, TenantID: v.Tenant, Role: v.Role}, PermClusterManage, "") != nil:
			return nil, fsm.Errorf(CodePermissionDenied, "role %s may not make a node join a cluster", v.Role)
		}
		return []string{a}, nil
	}
	return nil, errors.Join(errs...)
}

// verifyKeyRequest and verifiedKey are the body and answer of node RPC
// POST /rpc/verify-key, by which a node that belongs to no cluster yet
// has a member check an API key.
type verifyKeyRequest struct {
	Token string `json:"token"`
}

type verifiedKey struct {
	User   string   `json:"user,omitempty"`
	Tenant string   `json:"tenant,omitempty"`
	Role   fsm.Role `json:"role,omitempty"`
	Error  string   `json:"error,omitempty"`
}

// MountClusterRPC serves, on node RPC, the check of an API key for a node
// that joins this cluster. handle is the node's HandleRPC.
func (s *Server) MountClusterRPC(handle func(pattern string, h http.Handler)) {
	handle("POST /rpc/verify-key", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req verifyKeyRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, verifiedKey{Error: "malformed request"})
			return
		}
		ar := r.Clone(r.Context())
		ar.Header = http.Header{"Authorization": {"Bearer " + req.Token}}
		p, err := s.authenticate(ar)
		if err != nil {
			var e *fsm.Error
			if !errors.As(err, &e) {
				writeJSON(w, http.StatusServiceUnavailable, verifiedKey{Error: err.Error()})
				return
			}
			writeJSON(w, http.StatusOK, verifiedKey{Error: e.Message})
			return
		}
		writeJSON(w, http.StatusOK, verifiedKey{User: p.User, Tenant: p.TenantID, Role: p.Role})
	}))
}

// API error codes of a failed join.
const (
	CodeWrongClusterKey fsm.Code = "wrong_cluster_key"
	CodeUnreachable     fsm.Code = "unreachable"
	CodeWrongDirection  fsm.Code = "wrong_direction"
	CodeOtherCluster    fsm.Code = "other_cluster"
)

// joinError maps a failed join to an API error.
func joinError(err error) error {
	var e *fsm.Error
	if errors.As(err, &e) || errors.Is(err, cluster.ErrNoLeader) || errors.Is(err, cluster.ErrNotLeader) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return err
	}
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	for _, m := range []struct {
		err  error
		code fsm.Code
	}{
		{cluster.ErrWrongClusterKey, CodeWrongClusterKey},
		{cluster.ErrJoinDirection, CodeWrongDirection},
		{cluster.ErrOtherCluster, CodeOtherCluster},
		{cluster.ErrNoCluster, fsm.CodeInvalidArgument},
		{cluster.ErrLoopback, fsm.CodeInvalidArgument},
		{cluster.ErrUnreachable, CodeUnreachable},
	} {
		if errors.Is(err, m.err) {
			return fsm.Errorf(m.code, "%s", msg)
		}
	}
	return fsm.Errorf(CodeUnavailable, "join: %s", msg)
}

func (s *Server) clusterRemove(w http.ResponseWriter, r *http.Request) {
	var req nodeRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Node == "" {
		s.writeError(w, r, fsm.Errorf(fsm.CodeInvalidArgument, "node: give the ID of the node to remove"))
		return
	}
	if err := s.raft.Remove(r.Context(), req.Node); err != nil {
		s.writeError(w, r, clusterOpError(err))
		return
	}
	s.writeMembers(w, r, false)
}

func (s *Server) clusterTransfer(w http.ResponseWriter, r *http.Request) {
	var req nodeRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.raft.TransferLeadership(r.Context(), req.Node); err != nil {
		s.writeError(w, r, clusterOpError(err))
		return
	}
	s.writeMembers(w, r, false)
}

// clusterLeave drains this node (as a stop does: /ready 503, leadership
// handed over, Config.Drain for load balancers to notice), removes it
// from the cluster and then stops it. If the removal fails, the node is
// ready again.
func (s *Server) clusterLeave(w http.ResponseWriter, r *http.Request) {
	s.Drain(r.Context())
	if err := s.raft.Leave(r.Context()); err != nil {
		s.undrain()
		s.writeError(w, r, clusterOpError(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"node": s.raft.ID(), "status": "left"})
	if s.onLeave != nil {
		go s.onLeave()
	}
}

// clusterOpError maps a failed membership operation to an API error.
func clusterOpError(err error) error {
	if errors.Is(err, cluster.ErrNoLeader) || errors.Is(err, cluster.ErrNotLeader) {
		return err
	}
	return fsm.Errorf(fsm.CodeInvalidTransition, "%v", err)
}

// clusterSnapshotSave streams a consistent backup of the whole state.
func (s *Server) clusterSnapshotSave(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="ffrtmp-`+time.Now().UTC().Format("20060102T150405Z")+`.snap"`)
	if err := s.raft.Backup(r.Context(), w); err != nil {
		// Headers may be out; a failed stream is cut short, which the
		// client sees as a truncated body and the restore refuses.
		s.log.Error("snapshot save", "error", err)
		if ws, ok := w.(*statusWriter); !ok || ws.status == 0 {
			s.writeError(w, r, err)
		}
	}
}

// maxSnapshotBytes bounds an uploaded backup.
const maxSnapshotBytes = 64 << 30

// clusterSnapshotRestore replaces the cluster's whole state with a backup.
func (s *Server) clusterSnapshotRestore(w http.ResponseWriter, r *http.Request) {
	tmp, err := os.CreateTemp("", "ffrtmp-restore-*.snap")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := io.Copy(tmp, http.MaxBytesReader(w, r.Body, maxSnapshotBytes)); err != nil {
		s.writeError(w, r, jsonError(err))
		return
	}
	if err := s.raft.RestoreBackup(r.Context(), tmp.Name()); err != nil {
		s.writeError(w, r, snapshotRestoreError(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"restored": true, "index": s.fsm.Index()})
}

// snapshotRestoreError maps a failed restore to an API error: a file that
// is not a sound snapshot of this cluster's store kind is invalid_snapshot
// (400), a database behind the snapshot is invalid_transition (409).
func snapshotRestoreError(err error) error {
	switch {
	case errors.Is(err, fsm.ErrBadSnapshot):
		return fsm.Errorf(CodeInvalidSnapshot, "%v", err)
	case errors.Is(err, fsm.ErrStoreBehind):
		return fsm.Errorf(fsm.CodeInvalidTransition, "%v", err)
	}
	return clusterOpError(err)
}

// Cluster initialization, and joining a node that belongs to no cluster
// yet, are proven by the cluster key: the caller sends
// X-Ffrtmp-Cluster-Proof: <unix seconds>.<hex HMAC-SHA256(key, purpose+":"+seconds)>
// with purpose "init" or "join". The key itself never crosses the wire,
// a proof is good for a few minutes and for its purpose only;
// initialization succeeds only once anyway, and a replayed join proof
// can only make a node without a cluster join one that shares its key.
const proofHeader = "X-Ffrtmp-Cluster-Proof"

const proofWindow = 5 * time.Minute

// InitProof returns a cluster-key proof for POST /v1/cluster/init.
func InitProof(key []byte, now time.Time) string { return clusterProof(key, "init", now) }

// JoinProof returns a cluster-key proof for POST /v1/cluster/join.
func JoinProof(key []byte, now time.Time) string { return clusterProof(key, "join", now) }

func clusterProof(key []byte, purpose string, now time.Time) string {
	ts := strconv.FormatInt(now.Unix(), 10)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose + ":" + ts))
	return ts + "." + hex.EncodeToString(m.Sum(nil))
}

func (s *Server) checkProof(r *http.Request, purpose string) error {
	if len(s.clusterKey) == 0 {
		return fsm.Errorf(CodePermissionDenied, "this node has no cluster key")
	}
	ts, mac, ok := strings.Cut(r.Header.Get(proofHeader), ".")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil {
		return fsm.Errorf(CodeUnauthenticated, "%s needs the cluster key (%s header)", purpose, proofHeader)
	}
	if d := s.now().Sub(time.Unix(sec, 0)); d > proofWindow || d < -proofWindow {
		return fsm.Errorf(CodeUnauthenticated, "cluster key proof is stale; check the clocks")
	}
	want := clusterProof(s.clusterKey, purpose, time.Unix(sec, 0))
	if !hmac.Equal([]byte(want), []byte(ts+"."+mac)) {
		return fsm.Errorf(CodeUnauthenticated, "wrong cluster key: the proof does not match this node's cluster key")
	}
	return nil
}

// clusterInit creates the first super-admin key, once per cluster.
func (s *Server) clusterInit(w http.ResponseWriter, r *http.Request) {
	if err := s.checkProof(r, "init"); err != nil {
		s.writeError(w, r, err)
		return
	}
	token, err := s.InitCluster(r.Context())
	if fsm.ErrorCode(err) == fsm.CodeAlreadyExists {
		s.writeError(w, r, fsm.Errorf(fsm.CodeAlreadyExists, "the cluster is already initialized; its first key was shown once"))
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("cluster initialized; first super-admin key created", "user", BootstrapEmail)
	writeJSON(w, http.StatusCreated, map[string]string{"api_key": token, "user": BootstrapEmail, "tenant": DefaultTenant})
}
