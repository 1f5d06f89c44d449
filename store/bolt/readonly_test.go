package bolt_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
)

// TestOpenReadOnly reads a state file without changing a byte of it, and
// refuses files that are not state files, leaving them as they were.
func TestOpenReadOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	st, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	tenant := &fsm.Tenant{ID: "acme", Name: "Acme", Meta: fsm.Meta{CreateIndex: 1, ModifyIndex: 1}}
	if err := st.Commit(context.Background(), &fsm.Batch{Index: 1, Tenants: []*fsm.Tenant{tenant}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	before, _ := os.ReadFile(path)

	ro, err := bolt.OpenReadOnly(path)
	if err != nil {
		t.Fatalf("OpenReadOnly of a state file: %v", err)
	}
	s, err := ro.Load(context.Background())
	ro.Close()
	if err != nil || s.Index != 1 || len(s.Tenants) != 1 {
		t.Fatalf("Load = %+v, %v; want index 1 and the tenant", s, err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Error("OpenReadOnly and Load changed the file")
	}

	for name, data := range map[string][]byte{"empty": nil, "text": bytes.Repeat([]byte("hello "), 2000)} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := bolt.OpenReadOnly(p); !errors.Is(err, bolt.ErrNotStateFile) {
			t.Errorf("OpenReadOnly(%s file) = %v, want ErrNotStateFile", name, err)
		}
		if got, _ := os.ReadFile(p); !bytes.Equal(got, data) {
			t.Errorf("OpenReadOnly changed the %s file", name)
		}
	}
	if _, err := bolt.OpenReadOnly(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenReadOnly(missing) = %v, want not exist", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Error("OpenReadOnly created a missing file")
	}
}
