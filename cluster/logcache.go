package cluster

import (
	"sync"

	"github.com/hashicorp/raft"
)

// Bounds of the log cache: the newest entries, at most this many and this
// many bytes (entry data and extensions).
const (
	logCacheEntries = 4096
	logCacheBytes   = 8 << 20
)

// logCache keeps the newest Raft log entries in memory in front of the
// log store. Raft reads back the entries it has just appended: the leader
// to send them to each follower (and the one before them, for its term),
// a follower to hand committed entries to the FSM. raft.LogCache does
// that for a fixed number of entries whatever their size, so it had to be
// small (32) for a cache of full submit batches to stay small; but worker
// reports are one small entry each, and Raft appends up to
// MaxAppendEntries (512) of them at a time, so most reads missed the
// cache and cost a bolt read and a msgpack decode each. This cache is
// bounded by entries and by bytes: thousands of reports, or a few
// batches.
//
// The cached entries have consecutive indexes. An append that does not
// continue them (a follower's log overwritten from a conflicting index,
// or restarted after a snapshot install) and a deletion that touches them
// empty the cache, so that it never answers an entry the store no longer
// holds as cached.
type logCache struct {
	raft.LogStore
	maxEntries, maxBytes int

	mu    sync.RWMutex
	logs  []*raft.Log // logs[i].Index == logs[0].Index+i
	bytes int
}

func newLogCache(store raft.LogStore, maxEntries, maxBytes int) *logCache {
	return &logCache{LogStore: store, maxEntries: maxEntries, maxBytes: maxBytes}
}

// IsMonotonic implements raft.MonotonicLogStore for a store that does.
func (c *logCache) IsMonotonic() bool {
	m, ok := c.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

// GetLog implements raft.LogStore.
func (c *logCache) GetLog(index uint64, out *raft.Log) error {
	c.mu.RLock()
	if n := uint64(len(c.logs)); n > 0 && index >= c.logs[0].Index && index-c.logs[0].Index < n {
		*out = *c.logs[index-c.logs[0].Index]
		c.mu.RUnlock()
		return nil
	}
	c.mu.RUnlock()
	return c.LogStore.GetLog(index, out)
}

// StoreLog implements raft.LogStore.
func (c *logCache) StoreLog(l *raft.Log) error {
	return c.StoreLogs([]*raft.Log{l})
}

// StoreLogs implements raft.LogStore: the store first, then the cache.
func (c *logCache) StoreLogs(logs []*raft.Log) error {
	err := c.LogStore.StoreLogs(logs)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.clear() // what the store holds is not known
		return err
	}
	for _, l := range logs {
		if n := len(c.logs); n > 0 && l.Index != c.logs[n-1].Index+1 {
			c.clear()
		}
		c.logs = append(c.logs, l)
		c.bytes += logSize(l)
	}
	for len(c.logs) > 0 && (len(c.logs) > c.maxEntries || c.bytes > c.maxBytes) {
		c.bytes -= logSize(c.logs[0])
		c.logs[0] = nil
		c.logs = c.logs[1:]
	}
	return nil
}

// DeleteRange implements raft.LogStore. Raft deletes the oldest entries
// after a snapshot, far behind the cache's, and a follower deletes a
// conflicting suffix before it appends the leader's entries.
func (c *logCache) DeleteRange(lo, hi uint64) error {
	c.mu.Lock()
	if n := len(c.logs); n > 0 && lo <= c.logs[n-1].Index && hi >= c.logs[0].Index {
		c.clear()
	}
	c.mu.Unlock()
	return c.LogStore.DeleteRange(lo, hi)
}

// clear empties the cache. c.mu is held.
func (c *logCache) clear() {
	c.logs, c.bytes = nil, 0
}

// logSize is what an entry counts against the cache's byte bound.
func logSize(l *raft.Log) int {
	return len(l.Data) + len(l.Extensions)
}
