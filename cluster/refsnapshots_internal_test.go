package cluster

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
)

// refSetup returns a bolt store, an FSM on it and a snapshot store that
// resolves references against it.
func refSetup(t *testing.T) (*bolt.Store, *fsm.FSM, *refSnapshots) {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f, err := fsm.New(context.Background(), fsm.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Flush() })
	fss, err := raft.NewFileSnapshotStore(dir, 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return st, f, &refSnapshots{FileSnapshotStore: fss, local: st}
}

// applyTenant applies a CreateTenant for id at index.
func applyTenant(t *testing.T, f *fsm.FSM, index uint64, id string) {
	t.Helper()
	data, err := fsm.Encode(&fsm.CreateTenant{Tenant: fsm.Tenant{ID: id, Name: id, CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}})
	if err != nil {
		t.Fatal(err)
	}
	f.ApplyBatch([]*raft.Log{{Index: index, Term: 1, Type: raft.LogCommand, Data: data}})
	f.Flush()
}

// persist takes a snapshot of f as Raft does, at Raft index index, and
// returns its ID.
func persist(t *testing.T, f raft.FSM, snaps raft.SnapshotStore, index uint64) string {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink, err := snaps.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	return sink.ID()
}

func TestReferenceOpensAsTheLiveState(t *testing.T) {
	t.Parallel()
	st, f, snaps := refSetup(t)
	applyTenant(t, f, 1, "a")
	applyTenant(t, f, 2, "b")
	// Raft's index may be past the FSM's (a no-op at 3).
	id := persist(t, refFSM{f}, snaps, 3)
	list, err := snaps.List()
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %v, %v", list, err)
	}
	if list[0].Size != int64(refLen) {
		t.Errorf("the stored snapshot is %d bytes, want a %d-byte reference (no copy of the state)", list[0].Size, refLen)
	}
	applyTenant(t, f, 4, "c") // the state moves past the reference

	meta, rc, err := snaps.Open(id)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if meta.Index != 3 || meta.ID != id {
		t.Errorf("meta = index %d, ID %s; want the reference's (3, %s)", meta.Index, meta.ID, id)
	}
	if int64(len(b)) != meta.Size {
		t.Errorf("the stream is %d bytes, meta.Size says %d (a follower refuses a short or long stream)", len(b), meta.Size)
	}
	h, err := st.CheckSnapshot(context.Background(), bytes.NewReader(b))
	if err != nil {
		t.Fatalf("the stream does not check: %v", err)
	}
	if h.Index != 4 {
		t.Errorf("the stream holds index %d, want the live state's 4", h.Index)
	}

	// A follower restores it: the state at 4, which the entries after
	// the reference's index (3) that it then replays leave as it is.
	_, g, _ := refSetup(t)
	if err := g.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got := g.Index(); got != 4 {
		t.Errorf("restored FSM at index %d, want 4", got)
	}
	for _, tn := range []string{"a", "b", "c"} {
		if _, ok := g.Tenant(tn); !ok {
			t.Errorf("restored FSM lacks tenant %s", tn)
		}
	}
}

func TestReferenceBehindItsStateFile(t *testing.T) {
	t.Parallel()
	_, f, snaps := refSetup(t)
	applyTenant(t, f, 1, "a")
	applyTenant(t, f, 2, "b")
	id := persist(t, refFSM{f}, snaps, 2)

	// The same snapshot directory over a state file that holds less (a
	// lost or replaced file).
	other, _, _ := refSetup(t)
	behind := &refSnapshots{FileSnapshotStore: snaps.FileSnapshotStore, local: other}
	if _, _, err := behind.Open(id); !errors.Is(err, errStateBehind) {
		t.Errorf("Open over a state file behind the reference = %v, want errStateBehind", err)
	}
	list, _ := snaps.List()
	_, g, _ := refSetup(t)
	err := catchUp(g, behind, list[0], nil)
	var d *damagedSnapshot
	if !errors.As(err, &d) || !errors.Is(d.err, errStateBehind) {
		t.Errorf("catchUp of an FSM behind a reference = %v, want a snapshot that cannot be used", err)
	}
	if err := catchUp(f, snaps, list[0], nil); err != nil {
		t.Errorf("catchUp of the FSM the reference was taken of = %v, want nil (nothing to restore)", err)
	}
}

func TestFullSnapshotOpensAsStored(t *testing.T) {
	t.Parallel()
	_, f, snaps := refSetup(t)
	applyTenant(t, f, 1, "a")
	id := persist(t, f, snaps, 1) // the FSM itself: a full stream
	_, want, err := snaps.FileSnapshotStore.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	wantb, _ := io.ReadAll(want)
	want.Close()
	meta, rc, err := snaps.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, wantb) || meta.Size != int64(len(wantb)) || len(wantb) <= refLen {
		t.Errorf("a full snapshot opened as %d bytes (meta %d), want its %d stored bytes", len(got), meta.Size, len(wantb))
	}
}
