package cluster_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// snapshots lists a stopped node's Raft snapshots, newest first.
func snapshots(t *testing.T, n *clustertest.Node) []*raft.SnapshotMeta {
	t.Helper()
	fss, err := raft.NewFileSnapshotStore(filepath.Join(n.Dir, "raft"), 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	list, err := fss.List()
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// damage flips a byte in the middle of a snapshot's state file.
func damage(t *testing.T, n *clustertest.Node, id string) {
	t.Helper()
	path := filepath.Join(n.Dir, "raft", "snapshots", id, "state.bin")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// compactLog deletes a stopped node's log entries up to index, as Raft
// does once enough entries follow a snapshot.
func compactLog(t *testing.T, n *clustertest.Node, index uint64) {
	t.Helper()
	ls, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(n.Dir, "raft", "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	first, _ := ls.FirstIndex()
	if err := ls.DeleteRange(first, index); err != nil {
		t.Fatal(err)
	}
}

// twoSnapshots applies tenant a, takes a snapshot, applies tenant b and
// takes another.
func twoSnapshots(t *testing.T, n *clustertest.Node) {
	t.Helper()
	n.Apply(createTenant("a"))
	if err := n.Node.Snapshot(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	n.Apply(createTenant("b"))
	if err := n.Node.Snapshot(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
}

// TestDamagedNewestSnapshotFallsBack loses the state file and damages the
// newest snapshot: the node starts from an older snapshot or the log
// (here the log: the older snapshot refers to the lost file), with
// nothing lost, and moves the damaged snapshot aside.
func TestDamagedNewestSnapshotFallsBack(t *testing.T) {
	t.Parallel()
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true})
	twoSnapshots(t, n)
	n.Apply(createTenant("c")) // only in the log
	n.Stop()

	list := snapshots(t, n)
	if len(list) != 2 {
		t.Fatalf("%d snapshots, want 2", len(list))
	}
	newest := list[0].ID
	damage(t, n, newest)
	if err := os.Remove(n.StatePath()); err != nil {
		t.Fatal(err)
	}
	n.Restart()

	for _, id := range []string{"a", "b", "c"} {
		clustertest.WaitFor(t, n.FSM, 10*time.Second, "tenant "+id, func() bool {
			_, ok := n.FSM.Tenant(id)
			return ok
		})
	}
	n.Apply(createTenant("d"))
	if _, err := os.Stat(filepath.Join(n.Dir, "raft", "snapshots-damaged", newest, "state.bin")); err != nil {
		t.Errorf("damaged snapshot not moved aside: %v", err)
	}
	if _, err := os.Stat(filepath.Join(n.Dir, "raft", "snapshots", newest)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("damaged snapshot still among Raft's snapshots: %v", err)
	}
	// The node takes new snapshots as before and, its state file lost
	// again, rebuilds it: from the log, which still holds every entry (a
	// bolt node's snapshots are references to the file that was lost).
	if err := n.Node.Snapshot(); err != nil {
		t.Fatalf("Snapshot after the fallback: %v", err)
	}
	n.Stop()
	if err := os.Remove(n.StatePath()); err != nil {
		t.Fatal(err)
	}
	n.Restart()
	for _, id := range []string{"a", "b", "c", "d"} {
		clustertest.WaitFor(t, n.FSM, 10*time.Second, "tenant "+id+" after a restart without the state file", func() bool {
			_, ok := n.FSM.Tenant(id)
			return ok
		})
	}
}

// TestDamagedMetaFallsBack damages the newest snapshot's meta.json, which
// Raft skips without a word: the node moves it aside and starts from the
// previous snapshot and the log.
func TestDamagedMetaFallsBack(t *testing.T) {
	t.Parallel()
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true})
	twoSnapshots(t, n)
	n.Stop()
	newest := snapshots(t, n)[0].ID
	if err := os.WriteFile(filepath.Join(n.Dir, "raft", "snapshots", newest, "meta.json"), []byte("{\"ID\":"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.Restart()
	clustertest.WaitFor(t, n.FSM, 10*time.Second, "tenant b", func() bool {
		_, ok := n.FSM.Tenant("b")
		return ok
	})
	n.Apply(createTenant("c"))
	if _, err := os.Stat(filepath.Join(n.Dir, "raft", "snapshots-damaged", newest)); err != nil {
		t.Errorf("snapshot with a damaged meta.json not moved aside: %v", err)
	}
}

// TestDamagedSnapshotWithoutLogRefusesToStart damages the only snapshot
// of a node that lost its state file and whose log no longer holds the
// entries before the snapshot: the node refuses to start with a message
// that names the damaged snapshot and says what to do, and changes
// nothing on disk.
func TestDamagedSnapshotWithoutLogRefusesToStart(t *testing.T) {
	t.Parallel()
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true})
	n.Apply(createTenant("a"))
	n.Apply(createTenant("b"))
	if err := n.Node.Snapshot(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	n.Stop()
	list := snapshots(t, n)
	id := list[0].ID
	damage(t, n, id)
	if err := os.Remove(n.StatePath()); err != nil {
		t.Fatal(err)
	}
	compactLog(t, n, list[0].Index)

	err := n.TryRestart()
	if err == nil {
		t.Fatal("the node started without the state before its damaged snapshot")
	}
	for _, want := range []string{filepath.Join(n.Dir, "raft", "snapshots", id), "damaged", "cluster remove", "--join", "snapshot restore", "A snapshot is damaged"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("start error does not say %q:\n%v", want, err)
		}
	}
	if _, err := os.Stat(filepath.Join(n.Dir, "raft", "snapshots", id, "state.bin")); err != nil {
		t.Errorf("the refused start moved the snapshot: %v", err)
	}
}

// TestRestoreBackupRefusesBadFile restores a damaged backup through the
// node: it is refused with fsm.ErrBadSnapshot before Raft sees it, so the
// node stays up, keeps its state, and restarts normally.
func TestRestoreBackupRefusesBadFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true})
	n.Apply(createTenant("a"))
	path := filepath.Join(t.TempDir(), "bad.snap")
	if err := os.WriteFile(path, []byte("not a snapshot at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := n.Node.RestoreBackup(ctx, path); !errors.Is(err, fsm.ErrBadSnapshot) {
		t.Fatalf("RestoreBackup(garbage) = %v, want fsm.ErrBadSnapshot", err)
	}
	n.Apply(createTenant("b"))
	n.Restart()
	for _, id := range []string{"a", "b"} {
		if _, ok := n.FSM.Tenant(id); !ok {
			t.Errorf("tenant %s missing after the refused restore and a restart", id)
		}
	}
}

// TestLostStateFileUnderReferenceRefusesToStart loses the state file of a
// node whose snapshot is a reference to that file (the bolt store's
// snapshots are) and whose log no longer holds the entries before it:
// the node cannot rebuild its state, and refuses to start, rather than
// start empty from the snapshot's index, saying what to do.
func TestLostStateFileUnderReferenceRefusesToStart(t *testing.T) {
	t.Parallel()
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true})
	n.Apply(createTenant("a"))
	if err := n.Node.Snapshot(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	n.Stop()
	list := snapshots(t, n)
	if list[0].Size > 64 {
		t.Fatalf("the snapshot is %d bytes: a copy of the state, not a reference to it", list[0].Size)
	}
	compactLog(t, n, list[0].Index)
	if err := os.Remove(n.StatePath()); err != nil {
		t.Fatal(err)
	}

	err := n.TryRestart()
	if err == nil {
		t.Fatal("the node started without the state its snapshot refers to")
	}
	for _, want := range []string{list[0].ID, "cannot be used", "lost or replaced", "cluster remove", "--join", "snapshot restore"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("start error does not say %q:\n%v", want, err)
		}
	}
}

// TestLostStateFileUnderReferenceReplaysLog loses the state file of a
// node whose snapshot is a reference, with the whole log still there: the
// node moves the reference aside and rebuilds its state from the log.
func TestLostStateFileUnderReferenceReplaysLog(t *testing.T) {
	t.Parallel()
	n := clustertest.Start(t, clustertest.Options{Bootstrap: true})
	n.Apply(createTenant("a"))
	if err := n.Node.Snapshot(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	n.Apply(createTenant("b"))
	n.Stop()
	id := snapshots(t, n)[0].ID
	if err := os.Remove(n.StatePath()); err != nil {
		t.Fatal(err)
	}
	n.Restart()
	for _, tn := range []string{"a", "b"} {
		clustertest.WaitFor(t, n.FSM, 10*time.Second, "tenant "+tn, func() bool {
			_, ok := n.FSM.Tenant(tn)
			return ok
		})
	}
	if _, err := os.Stat(filepath.Join(n.Dir, "raft", "snapshots-damaged", id)); err != nil {
		t.Errorf("the unusable reference was not moved aside: %v", err)
	}
}
