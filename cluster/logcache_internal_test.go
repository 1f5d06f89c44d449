package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
)

// countingStore counts the log store reads that the cache did not
// answer, and fails StoreLogs while failing is set.
type countingStore struct {
	*raft.InmemStore
	reads   int
	failing bool
}

func (s *countingStore) GetLog(index uint64, out *raft.Log) error {
	s.reads++
	return s.InmemStore.GetLog(index, out)
}

func (s *countingStore) StoreLogs(logs []*raft.Log) error {
	if s.failing {
		return errors.New("disk full")
	}
	return s.InmemStore.StoreLogs(logs)
}

func entries(lo, hi uint64, size int, tag string) []*raft.Log {
	var out []*raft.Log
	for i := lo; i <= hi; i++ {
		data := bytes.Repeat([]byte{'x'}, size)
		copy(data, fmt.Sprintf("%s%d", tag, i))
		out = append(out, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: data})
	}
	return out
}

// TestLogCache: the cache answers the newest entries within its bounds
// of entries and bytes, older ones come from the store, and after a
// deletion that touches it, an append that does not continue it, or a
// failed append, every answer is the store's.
func TestLogCache(t *testing.T) {
	st := &countingStore{InmemStore: raft.NewInmemStore()}
	c := newLogCache(st, 8, 1000)
	// get reads index and checks that it holds tag's entry, and whether
	// the store was asked.
	get := func(index uint64, tag string, fromStore bool) {
		t.Helper()
		before := st.reads
		var l raft.Log
		if err := c.GetLog(index, &l); err != nil {
			t.Fatalf("GetLog(%d): %v", index, err)
		}
		if want := fmt.Sprintf("%s%d", tag, index); !bytes.HasPrefix(l.Data, []byte(want)) || l.Index != index {
			t.Fatalf("GetLog(%d) = %d %.8q, want %q", index, l.Index, l.Data, want)
		}
		if asked := st.reads > before; asked != fromStore {
			t.Fatalf("GetLog(%d): store asked = %v, want %v", index, asked, fromStore)
		}
	}
	store := func(logs []*raft.Log) {
		t.Helper()
		if err := c.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
	}
	del := func(lo, hi uint64) {
		t.Helper()
		if err := c.DeleteRange(lo, hi); err != nil {
			t.Fatal(err)
		}
	}
	store(entries(1, 10, 10, "a"))
	get(1, "a", true) // beyond the 8 newest
	get(2, "a", true)
	for i := uint64(3); i <= 10; i++ {
		get(i, "a", false)
	}
	// The byte bound: 300-byte entries, at most 3 of them in 1,000 bytes.
	store(entries(11, 14, 300, "b"))
	get(11, "b", true)
	get(12, "b", false)
	get(14, "b", false)
	// A follower's conflicting suffix: deleted, then overwritten.
	del(13, 14)
	get(12, "b", true)
	store(entries(13, 15, 10, "c"))
	get(13, "c", false)
	get(15, "c", false)
	// An append that does not continue the cache (after a snapshot
	// install) replaces it.
	store(entries(40, 41, 10, "d"))
	get(15, "c", true)
	get(41, "d", false)
	// A compaction far behind the cache leaves it; one that reaches it
	// empties it.
	del(1, 10)
	get(40, "d", false)
	del(11, 40)
	get(41, "d", true)
	// A failed append: the store's answers only, and no cached entry
	// that the store does not hold.
	store(entries(42, 43, 10, "e"))
	st.failing = true
	if err := c.StoreLogs(entries(44, 45, 10, "f")); err == nil {
		t.Fatal("StoreLogs on a failing store succeeded")
	}
	st.failing = false
	get(43, "e", true)
	var l raft.Log
	if err := c.GetLog(44, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(44) after the failed append = %v, want not found", err)
	}
}
