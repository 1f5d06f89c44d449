package cluster

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// TestLogStoreOpensEitherWay: a Raft log written with raft-boltdb's
// default options (by an earlier version of the node) opens with
// openLogStore's, which do not write the free page list, with every entry
// and its free pages; and a log written by openLogStore opens with the
// defaults again (a node downgraded). Each round appends entries and
// deletes the oldest, as Raft's compaction does.
func TestLogStoreOpensEitherWay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	data := func(i uint64) []byte { return fmt.Appendf(nil, "entry %d %0512d", i, i) }
	next := uint64(1)
	for round, open := range []func(string) (*raftboltdb.BoltStore, error){defaultLogStore, openLogStore, defaultLogStore, openLogStore} {
		ls, err := open(path)
		if err != nil {
			t.Fatalf("round %d: open: %v", round, err)
		}
		first, _ := ls.FirstIndex()
		last, _ := ls.LastIndex()
		if want := max(1, next-100); round > 0 && (first != want || last != next-1) {
			t.Errorf("round %d: log holds %d..%d, want %d..%d", round, first, last, want, next-1)
		}
		for i := first; round > 0 && i <= last; i++ {
			var l raft.Log
			if err := ls.GetLog(i, &l); err != nil || string(l.Data) != string(data(i)) {
				t.Fatalf("round %d: entry %d = %q, %v", round, i, l.Data, err)
			}
		}
		var logs []*raft.Log
		for range 200 {
			logs = append(logs, &raft.Log{Index: next, Term: 1, Type: raft.LogCommand, Data: data(next)})
			next++
		}
		if err := ls.StoreLogs(logs); err != nil {
			t.Fatalf("round %d: store: %v", round, err)
		}
		if first, _ = ls.FirstIndex(); first == 0 {
			first = 1
		}
		if err := ls.DeleteRange(first, next-101); err != nil {
			t.Fatalf("round %d: delete: %v", round, err)
		}
		if st := ls.Stats(); round > 0 && st.FreePageN+st.PendingPageN == 0 {
			t.Errorf("round %d: no free pages after deleting entries", round)
		}
		if err := ls.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// defaultLogStore opens a Raft log with raft-boltdb's default options, as
// nodes before openLogStore did and as the raw Raft benchmark does.
func defaultLogStore(path string) (*raftboltdb.BoltStore, error) {
	return raftboltdb.New(raftboltdb.Options{Path: path})
}
