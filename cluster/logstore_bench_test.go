package cluster

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/ffrtmp/ffrtmp/store/storetest"
)

// BenchmarkLogAfterCompaction measures appends to the Raft log of a node
// that has run for a while: Raft keeps TrailingLogs entries behind each
// snapshot and deletes the older ones (DeleteRange), so the log file holds
// as many free pages as live ones. It fills a log with 8,192 entries of 2
// KiB (one submit) or 16 KiB (a batch of about a dozen), deletes the
// oldest half as a compaction does, then appends b.N entries one per
// StoreLogs (one per commit, as a leader under light load does), and
// reports the bytes written per append, the free pages, and the time the
// file then takes to open. "default" is raft-boltdb's options (bbolt's
// defaults, the raw Raft benchmark's); "node" is openLogStore's, which
// this node runs:
//
//	go test -run '^$' -bench LogAfterCompaction -benchtime 2000x ./cluster
func BenchmarkLogAfterCompaction(b *testing.B) {
	opens := []struct {
		name string
		open func(path string) (*raftboltdb.BoltStore, error)
	}{
		{"default", defaultLogStore},
		{"node", openLogStore},
	}
	for _, size := range []int{2 << 10, 16 << 10} {
		for _, v := range opens {
			b.Run(fmt.Sprintf("entry=%dKiB/options=%s", size>>10, v.name), func(b *testing.B) {
				benchLogAfterCompaction(b, v.open, size)
			})
		}
	}
}

// benchLogAfterCompaction runs BenchmarkLogAfterCompaction on a log
// opened with open, with entries of size bytes.
func benchLogAfterCompaction(b *testing.B, open func(string) (*raftboltdb.BoltStore, error), size int) {
	path := filepath.Join(b.TempDir(), "raft.db")
	ls, err := open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ls.Close() })
	const fill = 8192
	data := bytes.Repeat([]byte{'x'}, size)
	index := uint64(0)
	entries := func(n int) []*raft.Log {
		out := make([]*raft.Log, n)
		for i := range out {
			index++
			out[i] = &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
		}
		return out
	}
	for range fill / 64 {
		if err := ls.StoreLogs(entries(64)); err != nil {
			b.Fatal(err)
		}
	}
	if err := ls.DeleteRange(1, fill/2); err != nil {
		b.Fatal(err)
	}
	written := storetest.Written(b)
	b.ResetTimer()
	for range b.N {
		if err := ls.StoreLogs(entries(1)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(storetest.Written(b)-written)/float64(b.N), "written-B/append")
	st := ls.Stats()
	b.ReportMetric(float64(st.FreePageN+st.PendingPageN), "free-pages")
	// Without the list in the file, opening it walks the tree to find
	// the free pages (with the file in the page cache here).
	if err := ls.Close(); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if ls, err = open(path); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "reopen-ms")
}
