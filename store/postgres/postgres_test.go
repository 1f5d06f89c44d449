package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
	"github.com/ffrtmp/ffrtmp/store/postgres"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
	"github.com/ffrtmp/ffrtmp/store/storetest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	pgtest.BaseURL(t)
	var urls sync.Map // *postgres.Store → its database URL
	storetest.Exercise(t, storetest.Capabilities{
		// The database is shared by the cluster (see the package doc).
		Peer: func(t *testing.T, st fsm.Store) fsm.Store {
			u, ok := urls.Load(st)
			if !ok {
				t.Fatal("Peer of a store the suite did not open")
			}
			return pgtest.OpenURL(t, u.(string), postgres.Options{})
		},
	}, func(t *testing.T) fsm.Store {
		u := pgtest.URL(t)
		st := pgtest.OpenURL(t, u, postgres.Options{})
		urls.Store(st, u)
		return st
	})
}

var ctx = context.Background()

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func commit(t *testing.T, st fsm.Store, b *fsm.Batch) {
	t.Helper()
	if err := st.Commit(ctx, b); err != nil {
		t.Fatalf("Commit(%d): %v", b.Index, err)
	}
}

func tenant(id string, index uint64) *fsm.Tenant {
	return &fsm.Tenant{ID: id, Name: "Tenant " + id, CreatedAt: t0, Meta: fsm.Meta{CreateIndex: index, ModifyIndex: index}}
}

func snapshotBytes(t *testing.T, st fsm.Store) []byte {
	t.Helper()
	snap, err := st.Snapshot(ctx)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	return buf.Bytes()
}

func TestSnapshotRestore(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	a := pgtest.OpenURL(t, url, postgres.Options{})
	commit(t, a, &fsm.Batch{Index: 5, Tenants: []*fsm.Tenant{tenant("acme", 5)}})
	snap := snapshotBytes(t, a)
	if len(snap) > 200 {
		t.Errorf("snapshot is %d bytes; it should carry only the applied index", len(snap))
	}
	// The cluster moves on after the snapshot.
	commit(t, a, &fsm.Batch{Index: 9, Tenants: []*fsm.Tenant{tenant("later", 9)}})

	t.Run("SharedDatabaseAhead", func(t *testing.T) {
		// Another node of the cluster installs the snapshot: its store is
		// the same database, which is past the snapshot. Nothing changes,
		// and Load (which the FSM runs next) returns the newer state.
		b := pgtest.OpenURL(t, url, postgres.Options{})
		if err := b.Restore(ctx, bytes.NewReader(snap)); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		s, err := b.Load(ctx)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if s.Index != 9 || len(s.Tenants) != 2 {
			t.Errorf("after Restore: index %d with %d tenants; want 9 with 2 (the database is not rolled back)", s.Index, len(s.Tenants))
		}
	})
	t.Run("DatabaseBehind", func(t *testing.T) {
		// A database that has not reached the snapshot (an old backup, or
		// another database) is refused: rebuilding memory from it would
		// lose the entries in between.
		other := pgtest.Open(t, postgres.Options{})
		commit(t, other, &fsm.Batch{Index: 2, Tenants: []*fsm.Tenant{tenant("old", 2)}})
		err := other.Restore(ctx, bytes.NewReader(snap))
		if !errors.Is(err, postgres.ErrBehind) {
			t.Errorf("Restore into a database at index 2 of a snapshot at 5 = %v, want ErrBehind", err)
		}
	})
	t.Run("NotASnapshot", func(t *testing.T) {
		b := pgtest.OpenURL(t, url, postgres.Options{})
		// A bolt node's snapshot is a whole bbolt file.
		bs, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer bs.Close()
		commit(t, bs, &fsm.Batch{Index: 3, Tenants: []*fsm.Tenant{tenant("acme", 3)}})
		boltSnap := snapshotBytes(t, bs)
		_, payload, err := fsm.ReadSnapshot(bytes.NewReader(boltSnap), bolt.Kind)
		if err != nil {
			t.Fatal(err)
		}
		legacyBolt, err := io.ReadAll(payload) // a bare bbolt file, as before the envelope
		if err != nil {
			t.Fatal(err)
		}
		for name, stream := range map[string][]byte{
			"Empty": nil, "Text": []byte("hello\n"), "LegacyBolt": legacyBolt,
			"OtherFormat": []byte(`{"format":"something-else","version":1,"index":1}`),
		} {
			if err := b.Restore(ctx, bytes.NewReader(stream)); !errors.Is(err, postgres.ErrNotSnapshot) || !errors.Is(err, fsm.ErrBadSnapshot) {
				t.Errorf("Restore(%s) = %v, want ErrNotSnapshot and fsm.ErrBadSnapshot", name, err)
			}
		}
		if err := b.Restore(ctx, bytes.NewReader(boltSnap)); !errors.Is(err, fsm.ErrBadSnapshot) || !strings.Contains(err.Error(), `"bolt" store`) {
			t.Errorf("Restore(a bolt snapshot) = %v, want fsm.ErrBadSnapshot naming the bolt store", err)
		}
	})
	t.Run("Legacy", func(t *testing.T) {
		// A snapshot from before the envelope: the bare JSON payload.
		b := pgtest.OpenURL(t, url, postgres.Options{})
		if err := b.Restore(ctx, strings.NewReader(`{"format":"ffrtmp-postgres-snapshot","version":1,"index":5}`+"\n")); err != nil {
			t.Errorf("Restore of a legacy snapshot at index 5: %v", err)
		}
	})
}

func TestSnapshotRecordsCommittedIndex(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	a := pgtest.OpenURL(t, url, postgres.Options{})
	b := pgtest.OpenURL(t, url, postgres.Options{})
	commit(t, a, &fsm.Batch{Index: 4, Tenants: []*fsm.Tenant{tenant("acme", 4)}})
	commit(t, b, &fsm.Batch{Index: 3, Tenants: []*fsm.Tenant{tenant("acme", 3)}}) // behind: skipped
	for name, st := range map[string]*postgres.Store{"a": a, "b": b} {
		if got := string(snapshotBytes(t, st)); !strings.Contains(got, `"index":4`) && name == "a" {
			t.Errorf("snapshot of the committing store = %s, want index 4", got)
		} else if name == "b" && !strings.Contains(got, `"index":3`) {
			t.Errorf("snapshot of a store whose last batch (3) was already committed = %s, want index 3", got)
		}
	}
}

func TestMigrations(t *testing.T) {
	t.Parallel()
	all, err := postgres.Migrations()
	if err != nil || len(all) == 0 {
		t.Fatalf("Migrations() = %v, %v", all, err)
	}

	t.Run("StatusChangesNothing", func(t *testing.T) {
		t.Parallel()
		url := pgtest.URL(t)
		st := pgtest.OpenURL(t, url, postgres.Options{SkipMigrations: true})
		status, err := st.MigrationStatus(ctx)
		if err != nil {
			t.Fatalf("MigrationStatus: %v", err)
		}
		for _, s := range status {
			if !s.AppliedAt.IsZero() {
				t.Errorf("migration %d applied on a fresh schema", s.Version)
			}
		}
		if len(status) != len(all) {
			t.Errorf("status lists %d migrations, want %d", len(status), len(all))
		}
		var tables int
		if err := pgtest.Connect(t, url).QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()`).Scan(&tables); err != nil {
			t.Fatal(err)
		}
		if tables != 0 {
			t.Errorf("status created %d tables", tables)
		}
	})

	t.Run("Idempotent", func(t *testing.T) {
		t.Parallel()
		url := pgtest.URL(t)
		st := pgtest.OpenURL(t, url, postgres.Options{}) // applies all
		commit(t, st, &fsm.Batch{Index: 1, Tenants: []*fsm.Tenant{tenant("acme", 1)}})
		again, err := st.Migrate(ctx)
		if err != nil || len(again) != 0 {
			t.Errorf("second Migrate = %d applied, %v; want none", len(again), err)
		}
		st2 := pgtest.OpenURL(t, url, postgres.Options{})
		if s, err := st2.Load(ctx); err != nil || s.Index != 1 || len(s.Tenants) != 1 {
			t.Errorf("Load after reopening = %+v, %v; want the committed tenant at index 1", s, err)
		}
		status, err := st2.MigrationStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range status {
			if s.AppliedAt.IsZero() || s.Unknown {
				t.Errorf("migration %+v not applied after Open", s)
			}
		}
	})

	t.Run("ConcurrentOpens", func(t *testing.T) {
		t.Parallel()
		url := pgtest.URL(t)
		const n = 4
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := postgres.Open(ctx, url, postgres.Options{})
				if err == nil {
					st.Close()
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("Open %d of %d at once: %v", i+1, n, err)
			}
		}
		var rows, distinct int
		err := pgtest.Connect(t, url).QueryRow(ctx, `SELECT count(*), count(DISTINCT version) FROM ffrtmp_migrations`).Scan(&rows, &distinct)
		if err != nil {
			t.Fatal(err)
		}
		if rows != len(all) || distinct != len(all) {
			t.Errorf("version table has %d rows (%d distinct) after %d concurrent Opens; want %d", rows, distinct, n, len(all))
		}
	})

	t.Run("NewerSchemaRefused", func(t *testing.T) {
		t.Parallel()
		url := pgtest.URL(t)
		pgtest.OpenURL(t, url, postgres.Options{})
		pgtest.Exec(t, url, `INSERT INTO ffrtmp_migrations (version, name) VALUES (999, 'from_the_future')`)
		st, err := postgres.Open(ctx, url, postgres.Options{})
		if err == nil {
			st.Close()
		}
		if !errors.Is(err, postgres.ErrSchemaTooNew) {
			t.Errorf("Open of a database with migration 999 = %v, want ErrSchemaTooNew", err)
		}
		st = pgtest.OpenURL(t, url, postgres.Options{SkipMigrations: true})
		status, err := st.MigrationStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if last := status[len(status)-1]; last.Version != 999 || !last.Unknown {
			t.Errorf("last status = %+v, want version 999 marked unknown", last)
		}
	})
}

func TestPingAndTimeout(t *testing.T) {
	t.Parallel()
	st := pgtest.Open(t, postgres.Options{})
	if err := st.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	st.Close()
	if err := st.Ping(ctx); err == nil {
		t.Error("Ping of a closed store succeeded")
	}
}
