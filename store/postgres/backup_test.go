package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/postgres"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

// TestNodeRestoreBackupRefusesBadFiles gives a real node on the PostgreSQL
// store damaged and foreign backups: each is refused with
// fsm.ErrBadSnapshot before Raft sees it, and the node keeps leading,
// keeps its state and takes writes; its own backup restores.
func TestNodeRestoreBackupRefusesBadFiles(t *testing.T) {
	t.Parallel()
	f := newFSM(t, pgtest.Open(t, postgres.Options{}))
	node, err := cluster.New(cluster.Config{
		TLS: clustertest.PeerTLS(t), NodeID: "n1", DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0",
		Bootstrap: true, FSM: f, Logger: clustertest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Shutdown() })
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for !node.IsLeader() {
		if err := node.WaitLeader(wctx); err != nil {
			t.Fatal(err)
		}
	}
	apply := func(id string) {
		t.Helper()
		if _, err := node.Apply(ctx, &fsm.CreateTenant{Tenant: fsm.Tenant{ID: id, Name: id, CreatedAt: t0}}); err != nil {
			t.Fatalf("apply tenant %s: %v", id, err)
		}
	}
	apply("acme")
	var good bytes.Buffer
	if err := node.Backup(ctx, &good); err != nil {
		t.Fatalf("Backup: %v", err)
	}
	flipped := slices.Clone(good.Bytes())
	flipped[len(flipped)-40] ^= 0x02
	h, payload, err := fsm.ReadSnapshot(bytes.NewReader(good.Bytes()), postgres.Kind)
	if err != nil {
		t.Fatal(err)
	}
	var boltKind bytes.Buffer
	if _, err := fsm.WriteSnapshot(&boltKind, fsm.SnapshotHeader{Kind: "bolt", Index: h.Index, Length: h.Length}, payload); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range map[string][]byte{
		"garbage": []byte("not a snapshot"), "truncated": good.Bytes()[:good.Len()/2],
		"bitflip": flipped, "boltkind": boltKind.Bytes(),
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := node.RestoreBackup(ctx, path); !errors.Is(err, fsm.ErrBadSnapshot) {
			t.Errorf("RestoreBackup(%s) = %v, want fsm.ErrBadSnapshot", name, err)
		}
		if !node.IsLeader() {
			t.Fatalf("after RestoreBackup(%s) the node no longer leads", name)
		}
		if _, ok := f.Tenant("acme"); !ok {
			t.Fatalf("after RestoreBackup(%s) tenant acme is gone", name)
		}
		apply("after-" + name)
	}
	path := filepath.Join(dir, "good")
	if err := os.WriteFile(path, good.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := node.RestoreBackup(ctx, path); err != nil {
		t.Fatalf("RestoreBackup(its own backup): %v", err)
	}
	// The shared database is not rolled back: memory is rebuilt from it.
	for _, id := range []string{"acme", "after-garbage", "after-boltkind"} {
		if _, ok := f.Tenant(id); !ok {
			t.Errorf("tenant %s missing after the restore", id)
		}
	}
	apply("last")
}
