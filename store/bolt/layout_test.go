package bolt_test

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
)

// TestLayoutV1 writes a state file by hand in schema version 1's layout
// (bucket names and keys spelled out here, not taken from the kind
// registry) and checks that the store reads it and writes into it in the
// same layout: the file format does not depend on how the code
// enumerates kinds.
func TestLayoutV1(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	const (
		active = "01956a3c-0000-7000-8000-000000000001"
		done   = "01956a3c-0000-7000-8000-000000000002"
	)
	raw := map[string]map[string]string{
		"meta":        {},
		"tenants":     {"acme": `{"id":"acme","name":"Acme","created_at":"2025-03-01T12:00:00Z","create_index":1,"modify_index":1}`},
		"keys":        {"k1": `{"id":"k1","tenant_id":"acme","user":"alice","role":"operator","hash":"aGFzaA==","created_at":"2025-03-01T12:00:00Z","create_index":2,"modify_index":2}`},
		"workers":     {"w1": `{"id":"w1","name":"host","state":"up","incarnation":"i1","slots":1,"cpus":2,"memory_mb":1024,"encoders":["libx264"],"registered_at":"2025-03-01T12:00:00Z","create_index":3,"modify_index":3}`},
		"jobs":        {active: `{"id":"` + active + `","tenant_id":"acme","state":"queued","create_index":4,"modify_index":4}`, done: `{"id":"` + done + `","tenant_id":"acme","state":"succeeded","create_index":5,"modify_index":5}`},
		"active_jobs": {active: ""},
		"tenant_jobs": {"acme\x00" + active: "", "acme\x00" + done: ""},
	}
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for name, kv := range raw {
			b, err := tx.CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			for k, v := range kv {
				var val []byte
				if v != "" {
					val = []byte(v)
				}
				if err := b.Put([]byte(k), val); err != nil {
					return err
				}
			}
		}
		meta := tx.Bucket([]byte("meta"))
		if err := meta.Put([]byte("schema_version"), binary.BigEndian.AppendUint64(nil, 1)); err != nil {
			return err
		}
		return meta.Put([]byte("applied_index"), binary.BigEndian.AppendUint64(nil, 5))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	st, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := st.Load(ctx)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if s.Index != 5 || len(s.Tenants) != 1 || s.Tenants[0].Name != "Acme" || len(s.Keys) != 1 || s.Keys[0].User != "alice" ||
		len(s.Workers) != 1 || s.Workers[0].Name != "host" || len(s.Jobs) != 1 || s.Jobs[0].ID != active {
		t.Fatalf("Load of a v1 file = index %d, %d tenants, %d keys, %d workers, jobs %v; want 5, 1, 1, 1, [%s]",
			s.Index, len(s.Tenants), len(s.Keys), len(s.Workers), s.Jobs, active)
	}
	page, err := st.ListJobs(ctx, &fsm.ListJobsParams{TenantID: "acme", Limit: 10})
	if err != nil || len(page.Jobs) != 2 {
		t.Fatalf("ListJobs(acme) = %+v, %v; want both jobs", page, err)
	}

	// Open indexed the finished job of the file by finish time (it has
	// none: it sorts first).
	ids, err := st.FinishedJobs(ctx, &fsm.FinishedJobsParams{TenantID: "acme", Before: time.Now(), Limit: 10})
	if err != nil || !slices.Equal(ids, []string{done}) {
		t.Fatalf("FinishedJobs(acme) of a v1 file = %v, %v; want [%s]", ids, err, done)
	}

	// Finish the active job and add a tenant: the file keeps the layout.
	finished := *s.Jobs[0]
	finished.State, finished.ModifyIndex = fsm.JobFailed, 6
	err = st.Commit(ctx, &fsm.Batch{Index: 6, Tenants: []*fsm.Tenant{{ID: "globex", Meta: fsm.Meta{CreateIndex: 6, ModifyIndex: 6}}}, Jobs: []*fsm.Job{&finished}})
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bbolt.Tx) error {
		var buckets []string
		if err := tx.ForEach(func(name []byte, _ *bbolt.Bucket) error { buckets = append(buckets, string(name)); return nil }); err != nil {
			return err
		}
		// Version 1 plus the buckets of kinds registered since.
		if want := []string{"active_jobs", "audit", "invitations", "jobs", "keys", "meta", "tenant_audit", "tenant_finished", "tenant_jobs", "tenants", "tombstones", "users", "worker_tokens", "workers"}; !slices.Equal(buckets, want) {
			t.Errorf("buckets after Open and Commit = %v, want %v", buckets, want)
		}
		if k, _ := tx.Bucket([]byte("active_jobs")).Cursor().First(); k != nil {
			t.Errorf("active_jobs lists %s after the only active job finished", k)
		}
		if v := tx.Bucket([]byte("tenants")).Get([]byte("globex")); v == nil {
			t.Errorf("tenants has no key globex after the commit")
		}
		if v := tx.Bucket([]byte("jobs")).Get([]byte(active)); !strings.Contains(string(v), `"state":"failed"`) {
			t.Errorf("jobs[%s] = %s, want the failed version", active, v)
		}
		if got := binary.BigEndian.Uint64(tx.Bucket([]byte("meta")).Get([]byte("applied_index"))); got != 6 {
			t.Errorf("applied_index = %d, want 6", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
