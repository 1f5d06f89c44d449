package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// The /v1/cluster endpoints operate the Raft cluster; all but init need a
// super-admin key. Any node answers: operations that need the leader are
// forwarded to it by the cluster package.

type clusterStatus struct {
	Node    string           `json:"node"`
	Leader  string           `json:"leader"`
	Members []cluster.Member `json:"members"`
}

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
	writeJSON(w, http.StatusOK, clusterStatus{Node: s.raft.ID(), Leader: leader, Members: ms})
}

type nodeRequest struct {
	Node  string   `json:"node,omitempty"`
	Addrs []string `json:"addrs,omitempty"`
}

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
	if err := s.raft.Join(r.Context(), req.Addrs); err != nil {
		s.writeError(w, r, fsm.Errorf(CodeUnavailable, "%v", err))
		return
	}
	s.writeMembers(w, r, false)
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

// clusterLeave removes this node from the cluster and then stops it.
func (s *Server) clusterLeave(w http.ResponseWriter, r *http.Request) {
	if err := s.raft.Leave(r.Context()); err != nil {
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

// Cluster initialization is proven by the cluster key: the caller sends
// X-Ffrtmp-Cluster-Proof: <unix seconds>.<hex HMAC-SHA256(key, "init:"+seconds)>.
// The key itself never crosses the wire, and a proof is good for a few
// minutes; initialization succeeds only once anyway.
const proofHeader = "X-Ffrtmp-Cluster-Proof"

const proofWindow = 5 * time.Minute

// InitProof returns a cluster-key proof for POST /v1/cluster/init.
func InitProof(key []byte, now time.Time) string {
	ts := strconv.FormatInt(now.Unix(), 10)
	m := hmac.New(sha256.New, key)
	m.Write([]byte("init:" + ts))
	return ts + "." + hex.EncodeToString(m.Sum(nil))
}

func (s *Server) checkProof(r *http.Request) error {
	if len(s.clusterKey) == 0 {
		return fsm.Errorf(CodePermissionDenied, "this node has no cluster key")
	}
	ts, mac, ok := strings.Cut(r.Header.Get(proofHeader), ".")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil {
		return fsm.Errorf(CodeUnauthenticated, "initialization needs the cluster key (%s header)", proofHeader)
	}
	if d := s.now().Sub(time.Unix(sec, 0)); d > proofWindow || d < -proofWindow {
		return fsm.Errorf(CodeUnauthenticated, "cluster key proof is stale; check the clocks")
	}
	want := InitProof(s.clusterKey, time.Unix(sec, 0))
	if !hmac.Equal([]byte(want), []byte(ts+"."+mac)) {
		return fsm.Errorf(CodeUnauthenticated, "wrong cluster key")
	}
	return nil
}

// clusterInit creates the first super-admin key, once per cluster.
func (s *Server) clusterInit(w http.ResponseWriter, r *http.Request) {
	if err := s.checkProof(r); err != nil {
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
	s.log.Info("cluster initialized; first super-admin key created", "user", "admin")
	writeJSON(w, http.StatusCreated, map[string]string{"api_key": token, "user": "admin", "tenant": DefaultTenant})
}

// consistentRead makes a ?consistent=true read go through the leader.
func (s *Server) consistentRead(r *http.Request) error {
	if r.URL.Query().Get("consistent") != "true" {
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.raft.ReadIndex(ctx); err != nil {
		return fmt.Errorf("%w: %w", cluster.ErrNoLeader, err)
	}
	return nil
}
