package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Raft snapshots of a local store by reference.
//
// With a fsm.LocalStore (bolt), the FSM's state is a file of this node's
// own, durable at the FSM's index: Apply commits each batch with its last
// index in one transaction (Flush waits for that commit), and skips every
// entry at or below the store's index. A Raft snapshot therefore need not copy the
// file, which at a million jobs is gigabytes. The FSM that Raft sees
// (refFSM) persists a reference instead, a few bytes that hold the FSM's
// index at the snapshot, into the ordinary raft.FileSnapshotStore, which
// keeps its metadata, checksum and retention as for any snapshot.
//
// refSnapshots resolves a reference when Raft opens it, which Raft does
// to send a follower an InstallSnapshot: it streams a consistent copy of
// the live state file (one read transaction, fsm.LocalSnapshot), whose
// index M is at or past the reference's. That copy is a correct snapshot
// for the reference's Raft index N: the follower restores the state at M,
// Raft replays the entries after N, and the FSM skips those at or below M,
// the very entries that took the state from N to M. Its length is known
// before it is written (Raft sends it first). Every other snapshot (one
// received from a leader, a restored backup, one written before
// references) holds the whole stream and is opened as it is; no
// reference ever leaves the node.
//
// What a reference gives up is a second copy: if the state file is lost,
// or replaced by an older one, the node's references cannot rebuild it.
// restoreIfBehind then takes them for unusable snapshots: the node
// starts from the log if the log still holds every entry, or refuses to
// start and says how to rejoin or restore a backup. This is how Vault's
// integrated storage treats its bolt FSM.

// refMagic starts a snapshot reference: refMagic, a big-endian uint16
// version (refVersion), and the big-endian uint64 index.
const (
	refMagic   = "FFRTSREF"
	refVersion = 1
	refLen     = len(refMagic) + 2 + 8
)

// errStateBehind is returned for a reference whose state file holds an
// index before the reference's: the file was lost or replaced.
var errStateBehind = errors.New("the state file is behind the snapshot that refers to it (lost or replaced)")

func encodeRef(index uint64) []byte {
	b := append([]byte(refMagic), 0, refVersion)
	return binary.BigEndian.AppendUint64(b, index)
}

// decodeRef returns the index of a reference, and false for anything that
// is not one.
func decodeRef(b []byte) (uint64, bool) {
	if len(b) != refLen || !bytes.HasPrefix(b, []byte(refMagic)) || binary.BigEndian.Uint16(b[len(refMagic):]) != refVersion {
		return 0, false
	}
	return binary.BigEndian.Uint64(b[len(refMagic)+2:]), true
}

// refFSM is the FSM as Raft sees it when its store is a fsm.LocalStore:
// its snapshots are references (stateRef).
type refFSM struct{ *fsm.FSM }

var _ raft.BatchingFSM = refFSM{}

// Snapshot implements raft.FSM. Raft calls it between applies; once the
// last batch's commit has returned (Flush), the store holds every entry
// Raft has applied.
func (f refFSM) Snapshot() (raft.FSMSnapshot, error) { return stateRef(f.Flush()), nil }

// stateRef is a snapshot by reference: the FSM's index when it was taken.
type stateRef uint64

// Persist implements raft.FSMSnapshot.
func (r stateRef) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(encodeRef(uint64(r))); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot reference: %w", err)
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (stateRef) Release() {}

// refSnapshots is the node's raft.SnapshotStore: a raft.FileSnapshotStore
// whose references Open resolves against the local store.
type refSnapshots struct {
	*raft.FileSnapshotStore
	// local is the FSM's store if it is a fsm.LocalStore, else nil (then
	// no reference is written, and Open refuses one).
	local fsm.LocalStore
}

var _ raft.SnapshotStore = (*refSnapshots)(nil)

// ref returns the index of the snapshot meta describes if it is a
// reference. Only a snapshot of a reference's size is read. An error is a
// snapshot that cannot be read (its checksum, its file).
func (s *refSnapshots) ref(meta *raft.SnapshotMeta) (index uint64, isRef bool, err error) {
	if meta.Size != int64(refLen) {
		return 0, false, nil
	}
	_, rc, err := s.FileSnapshotStore.Open(meta.ID)
	if err != nil {
		return 0, false, err
	}
	defer rc.Close()
	return readRef(rc)
}

func readRef(r io.Reader) (uint64, bool, error) {
	b := make([]byte, refLen)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, false, err
	}
	index, isRef := decodeRef(b)
	return index, isRef, nil
}

// Open implements raft.SnapshotStore. A reference opens as a stream of the
// live state, in the snapshot envelope, with the metadata's Size set to
// that stream's exact length; the state is copied when the stream is
// read. It fails if the state file is behind the reference
// (errStateBehind).
func (s *refSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.FileSnapshotStore.Open(id)
	if err != nil || meta.Size != int64(refLen) {
		return meta, rc, err
	}
	index, isRef, err := readRef(rc)
	rc.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("open snapshot %s: %w", id, err)
	}
	if !isRef {
		return s.FileSnapshotStore.Open(id)
	}
	if s.local == nil {
		return nil, nil, fmt.Errorf("open snapshot %s: it refers to a local state file, and this node's store has none", id)
	}
	snap, err := s.local.SnapshotLocal(context.Background())
	if err != nil {
		return nil, nil, fmt.Errorf("open snapshot %s: %w", id, err)
	}
	if snap.Index() < index {
		snap.Release()
		return nil, nil, fmt.Errorf("open snapshot %s (state at index %d): %w (it holds index %d)", id, index, errStateBehind, snap.Index())
	}
	m := *meta
	m.Size = snap.Size()
	pr, pw := io.Pipe()
	go func() {
		// WriteTo releases the view; a reader that closes early makes
		// it fail at its next write.
		_, err := snap.WriteTo(pw)
		pw.CloseWithError(err)
	}()
	return &m, pr, nil
}
