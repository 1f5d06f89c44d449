package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	json "github.com/go-json-experiment/json/v1"
	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// damagedSnapshotsDir is where a node moves, at start, the snapshots it
// found damaged, out of Raft's sight (beside raft's snapshots/).
const damagedSnapshotsDir = "snapshots-damaged"

// damagedSnapshot is a local Raft snapshot that cannot be used.
type damagedSnapshot struct {
	id    string
	index uint64 // 0 if its metadata is unreadable
	err   error
}

// restoreIfBehind restores the newest snapshot into f if f's store lacks
// entries the snapshot covers (a lost or replaced state file); otherwise
// Raft would replay only the entries after the snapshot onto a store that
// lacks the ones before. The FSM index may trail the snapshot index by
// entries Raft never hands to the FSM (no-ops, barriers), so those are
// looked up in the log and do not count. A reference to the state file
// (refsnapshots.go) is never restored: the FSM is behind it only if the
// state file was lost or replaced, and then it cannot be used.
//
// A snapshot that is damaged (unreadable metadata, a checksum mismatch,
// or content its store refuses) or cannot be used (a reference to a lost
// state file) is never fatal by itself: the node falls
// back to the previous snapshot, or to its own state and the log, as long
// as the Raft log still holds every entry after the snapshot Raft will
// start from (Raft starts from the newest snapshot it can list, and
// stops on a missing entry). Then the damaged snapshots are moved to
// raft/snapshots-damaged/ and the node starts. Otherwise it refuses to
// start with an error that says what to do. Nothing is moved or changed
// for a refusal, except that a good older snapshot may have been restored
// into the state file.
func restoreIfBehind(log *slog.Logger, dir string, f *fsm.FSM, snaps *refSnapshots, logs raft.LogStore) error {
	list, err := snaps.List()
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	damaged := unlistedSnapshots(dir, list)
	for len(list) > 0 {
		err := catchUp(f, snaps, list[0], logs)
		if err == nil {
			break
		}
		var d *damagedSnapshot
		if !errors.As(err, &d) {
			return err
		}
		damaged = append(damaged, *d)
		list = list[1:]
	}
	if len(damaged) == 0 {
		return nil
	}
	var from uint64 // where Raft will start applying the log from
	if len(list) > 0 {
		from = list[0].Index
	}
	if gap, first := logGap(logs, from, damaged); gap {
		return refuseDamaged(dir, damaged, from, first)
	}
	for _, d := range damaged {
		to := filepath.Join(dir, damagedSnapshotsDir, d.id)
		if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
			return fmt.Errorf("move damaged snapshot aside: %w", err)
		}
		if err := os.Rename(filepath.Join(dir, "snapshots", d.id), to); err != nil {
			return fmt.Errorf("move damaged snapshot aside: %w", err)
		}
		log.Error("a snapshot that "+d.state()+" was moved aside; the node starts from an older snapshot or its state file and the log",
			"snapshot", d.id, "moved_to", to, "error", d.err, "start_index", from)
	}
	return nil
}

func (d *damagedSnapshot) Error() string {
	return fmt.Sprintf("snapshot %s %s: %v", d.id, d.state(), d.err)
}

// state says what is wrong with the snapshot: damaged, or a sound
// reference to a state file that is behind it.
func (d *damagedSnapshot) state() string {
	if errors.Is(d.err, errStateBehind) {
		return "cannot be used"
	}
	return "is damaged"
}

// catchUp restores the snapshot meta describes into f if f is behind it,
// as restoreSnapshot does; a reference it is behind is a
// *damagedSnapshot.
func catchUp(f *fsm.FSM, snaps *refSnapshots, meta *raft.SnapshotMeta, logs raft.LogStore) error {
	index, isRef, err := snaps.ref(meta)
	if err != nil {
		return &damagedSnapshot{id: meta.ID, index: meta.Index, err: err}
	}
	if isRef {
		if f.Index() >= index {
			return nil
		}
		return &damagedSnapshot{id: meta.ID, index: meta.Index, err: fmt.Errorf(
			"it refers to this node's state file at index %d, and the state file holds index %d: %w", index, f.Index(), errStateBehind)}
	}
	if !fsmBehind(f.Index(), meta.Index, logs) {
		return nil
	}
	return restoreSnapshot(f, snaps, meta)
}

// restoreSnapshot restores one local snapshot into f. A snapshot that
// cannot be read, fails Raft's checksum or is refused by the store is
// returned as a *damagedSnapshot; any other failure (the store's disk or
// database) as itself.
func restoreSnapshot(f *fsm.FSM, snaps raft.SnapshotStore, meta *raft.SnapshotMeta) error {
	_, rc, err := snaps.Open(meta.ID)
	if err != nil {
		return &damagedSnapshot{id: meta.ID, index: meta.Index, err: err}
	}
	if err := f.Restore(rc); err != nil {
		if errors.Is(err, fsm.ErrBadSnapshot) {
			return &damagedSnapshot{id: meta.ID, index: meta.Index, err: err}
		}
		return fmt.Errorf("restore snapshot %s: %w", meta.ID, err)
	}
	return nil
}

// unlistedSnapshots returns the snapshot directories whose metadata Raft
// cannot read: it leaves them out of its list without a word and starts
// from an older snapshot, so they count as damaged.
func unlistedSnapshots(dir string, list []*raft.SnapshotMeta) []damagedSnapshot {
	entries, _ := os.ReadDir(filepath.Join(dir, "snapshots"))
	var out []damagedSnapshot
	for _, e := range entries {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") ||
			slices.ContainsFunc(list, func(m *raft.SnapshotMeta) bool { return m.ID == e.Name() }) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "snapshots", e.Name(), "meta.json"))
		if err == nil {
			var m raft.SnapshotMeta
			if err = json.Unmarshal(b, &m); err == nil && m.ID != e.Name() {
				err = fmt.Errorf("meta.json names snapshot %q", m.ID)
			}
		}
		if err != nil {
			// Raft names a snapshot term-index-milliseconds.
			var term, index, ms uint64
			if n, _ := fmt.Sscanf(e.Name(), "%d-%d-%d", &term, &index, &ms); n != 3 {
				index = 0
			}
			out = append(out, damagedSnapshot{id: e.Name(), index: index, err: fmt.Errorf("unreadable meta.json: %w", err)})
		}
	}
	return out
}

// logGap reports whether the Raft log lacks an entry that a node starting
// from the snapshot at index needs: every entry after it up to the last
// one in the log or in a damaged snapshot (a restored backup's snapshot
// lies past the log). It also returns the log's first index.
func logGap(logs raft.LogStore, index uint64, damaged []damagedSnapshot) (bool, uint64) {
	first, err1 := logs.FirstIndex()
	last, err2 := logs.LastIndex()
	if err1 != nil || err2 != nil {
		return true, first
	}
	need := last
	for _, d := range damaged {
		if d.index == 0 {
			need = max(need, index+1) // unknown: assume it held more
		}
		need = max(need, d.index)
	}
	if need <= index {
		return false, first
	}
	return first == 0 || first > index+1 || last < need, first
}

// refuseDamaged is the error a node starts with when damaged snapshots
// leave it without the state it needs.
func refuseDamaged(dir string, damaged []damagedSnapshot, from, first uint64) error {
	var b strings.Builder
	for _, d := range damaged {
		fmt.Fprintf(&b, "snapshot %s %s (%v); ", filepath.Join(dir, "snapshots", d.id), d.state(), d.err)
	}
	fmt.Fprintf(&b, "the Raft log starts at entry %d and no usable snapshot covers the entries before it (the newest usable ends at %d), so this node cannot rebuild its state by itself. "+
		"To recover it: on a healthy node run `ffrtmp cluster remove <this node's ID>`, move this node's data directory (the one that holds %s) aside, "+
		"and start the node with an empty data directory and --join, so that it receives a snapshot from the leader (docs/operations.md, \"A snapshot is damaged\"); "+
		"on a single-node cluster, start with an empty data directory and restore a backup with `ffrtmp cluster snapshot restore`", first, from, dir)
	return errors.New(b.String())
}
