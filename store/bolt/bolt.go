// Package bolt is the bbolt implementation of fsm.Store: one file per
// node, each applied batch and its last index written in one transaction.
package bolt

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	json "github.com/go-json-experiment/json/v1"
	bbolt "go.etcd.io/bbolt"

	"github.com/ffrtmp/ffrtmp/fsm"
)

var (
	bucketMeta  = []byte("meta")
	bucketJobs  = []byte(fsm.JobKind.Bucket)   // job ID → job JSON, every job
	bucketByTen = []byte("tenant_jobs")        // tenant ID 0x00 job ID → nil
	bucketAudit = []byte(fsm.AuditKind.Bucket) // big-endian Seq → audit record JSON
	// bucketAuditByTen indexes audit records by tenant: tenant ID 0x00
	// big-endian Seq → nil.
	bucketAuditByTen = []byte("tenant_audit")
	keyIndex         = []byte("applied_index")
	keySchema        = []byte("schema_version")

	// requiredBuckets are the buckets of schema version 1: a file without
	// one of them is not a state file. A kind registered later has its
	// bucket created by Open and reads as empty from a file without it.
	requiredBuckets = bucketNames("meta", "tenants", "keys", "workers", "jobs", "active_jobs", "tenant_jobs")
	// allBuckets are the buckets Open creates: meta, tenant_jobs, and
	// each kind's (kindBuckets).
	allBuckets = allBucketNames()
)

// Every kind of fsm.Kinds has a bucket named Kind.Bucket that maps an
// object's ID to its JSON. A kind whose Load returns only some objects
// (fsm.Kind.Partial: jobs, of which only the non-terminal ones) also has
// an index bucket, "active_" + Kind.Bucket, whose keys are the IDs of
// those objects, so that Load does not read the others.
func activeBucket(k *fsm.Kind) []byte { return []byte("active_" + k.Bucket) }

func bucketNames(names ...string) [][]byte {
	out := make([][]byte, len(names))
	for i, n := range names {
		out[i] = []byte(n)
	}
	return out
}

func allBucketNames() [][]byte {
	out := [][]byte{bucketMeta, bucketByTen, bucketAuditByTen, bucketTombstones}
	for _, k := range fsm.Kinds {
		out = append(out, []byte(k.Bucket))
		if k.Partial() {
			out = append(out, activeBucket(k))
		}
	}
	return out
}

// schemaVersion is the layout version of the file; a newer file is refused.
const schemaVersion = 1

// SchemaVersion is the layout version of the state files this binary
// writes (ffrtmp version prints it).
const SchemaVersion = schemaVersion

// Store is a bbolt-backed fsm.Store. Methods are safe for concurrent use;
// Restore excludes every other call while it swaps the file.
type Store struct {
	path string

	mu sync.RWMutex // guards db against Restore
	db *bbolt.DB

	closing sync.WaitGroup // files replaced by Restore, still closing

	arena []byte // kept by Commit for the next write transaction's values
}

var _ fsm.LocalStore = (*Store)(nil)

// Open opens (creating if needed) the store file at path, and removes
// temporary files that an interrupted snapshot or restore left beside it.
func Open(path string) (*Store, error) {
	for _, pattern := range []string{path + snapshotTmp + "*", path + checkTmp + "*", path + restoreTmp} {
		leftovers, _ := filepath.Glob(pattern)
		for _, f := range leftovers {
			os.Remove(f)
		}
	}
	db, err := openDB(path)
	if err != nil {
		return nil, err
	}
	return &Store{path: path, db: db}, nil
}

// ErrNotStateFile is returned by OpenReadOnly for a file that is not an
// ffrtmp state file: empty, not a bbolt database, or without its buckets.
var ErrNotStateFile = errors.New("not an ffrtmp bolt state file")

// OpenReadOnly opens an existing store file to read it, for `ffrtmp
// migrate`: unlike Open it never creates, initializes or writes the file
// (bbolt's ReadOnly mode, a shared lock, so the file of a running node,
// which holds the exclusive lock, times out), and it refuses with
// ErrNotStateFile a file that Open would have turned into a new store.
func OpenReadOnly(path string) (*Store, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open state db: %w", err)
	}
	if !info.Mode().IsRegular() || info.Size() == 0 {
		return nil, fmt.Errorf("open state db %s: %w (empty or not a regular file)", path, ErrNotStateFile)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if errors.Is(err, bbolt.ErrInvalid) || errors.Is(err, bbolt.ErrVersionMismatch) || errors.Is(err, bbolt.ErrChecksum) {
		return nil, fmt.Errorf("open state db %s: %w (%v)", path, ErrNotStateFile, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open state db %s: %w", path, err)
	}
	err = db.View(func(tx *bbolt.Tx) error {
		for _, b := range requiredBuckets {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("%w: no bucket %q", ErrNotStateFile, b)
			}
		}
		v := tx.Bucket(bucketMeta).Get(keySchema)
		if len(v) != 8 {
			return fmt.Errorf("%w: no schema version", ErrNotStateFile)
		}
		if got := binary.BigEndian.Uint64(v); got > schemaVersion {
			return fmt.Errorf("state db has schema version %d, this binary knows %d", got, schemaVersion)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open state db %s: %w", path, err)
	}
	return &Store{path: path, db: db}, nil
}

func openDB(path string) (*bbolt.DB, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout: 5 * time.Second,
		// A large initial mapping means a long snapshot read transaction
		// rarely blocks a commit that would otherwise grow the map.
		InitialMmapSize: 1 << 30,
		FreelistType:    bbolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("open state db %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if tx.Bucket(bucketFinished) == nil {
			if _, err := tx.CreateBucket(bucketFinished); err != nil {
				return err
			}
			if err := backfillFinished(tx); err != nil {
				return fmt.Errorf("index finished jobs: %w", err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v != nil {
			if got := binary.BigEndian.Uint64(v); got > schemaVersion {
				return fmt.Errorf("state db has schema version %d, this binary knows %d", got, schemaVersion)
			}
		}
		return meta.Put(keySchema, u64(schemaVersion))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init state db %s: %w", path, err)
	}
	return db, nil
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func tenantJobKey(tenant, id string) []byte {
	return append(append([]byte(tenant), 0), id...)
}

func tenantAuditKey(tenant string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(tenant), 0), seq)
}

// Load implements fsm.Store.
func (s *Store) Load(ctx context.Context) (*fsm.State, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var st *fsm.State
	err := s.db.View(func(tx *bbolt.Tx) (err error) {
		st, err = loadTx(tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	return st, nil
}

// loadTx reads what Load returns: every object of every kind, or for a
// partial kind those its active bucket lists.
func loadTx(tx *bbolt.Tx) (*fsm.State, error) {
	st := &fsm.State{}
	if v := tx.Bucket(bucketMeta).Get(keyIndex); v != nil {
		st.Index = binary.BigEndian.Uint64(v)
	}
	if audit := tx.Bucket(bucketAudit); audit != nil {
		// The chain's head is the last key: no other record is read.
		if k, v := audit.Cursor().Last(); k != nil {
			r, err := decode[fsm.AuditRecord](v)
			if err != nil {
				return nil, fmt.Errorf("audit record %d: %w", binary.BigEndian.Uint64(k), err)
			}
			st.AuditHead = fsm.AuditHead{Seq: r.Seq, Hash: r.Hash}
		}
	}
	for _, k := range fsm.Kinds {
		objs := tx.Bucket([]byte(k.Bucket))
		if objs == nil || k.History() {
			continue // a file from before the kind existed, or history
		}
		keep := func(id, v []byte) error {
			o, err := k.Decode(v)
			if err != nil {
				return fmt.Errorf("%s %s: %w", k.Name, id, err)
			}
			k.Keep(st, o)
			return nil
		}
		var err error
		if active := tx.Bucket(activeBucket(k)); k.Partial() && active != nil {
			err = active.ForEach(func(id, _ []byte) error { return keep(id, objs.Get(id)) })
		} else {
			err = objs.ForEach(keep)
		}
		if err != nil {
			return nil, err
		}
	}
	return st, nil
}

func decode[T any](v []byte) (*T, error) {
	if v == nil {
		return nil, fsm.ErrNotFound
	}
	x := new(T)
	if err := json.Unmarshal(v, x); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return x, nil
}

// putGuarded writes obj under id unless the stored version's modify index
// is at or above modifyIndex.
func putGuarded(b *bbolt.Bucket, id []byte, modifyIndex uint64, obj any, values *valueArena) (bool, error) {
	if old := b.Get(id); old != nil {
		stored, err := modifyIndexOf(old)
		if err != nil {
			return false, fmt.Errorf("decode %s: %w", id, err)
		}
		if stored >= modifyIndex {
			return false, nil
		}
	}
	v, err := values.marshal(obj)
	if err != nil {
		return false, fmt.Errorf("encode %s: %w", id, err)
	}
	return true, b.Put(id, v)
}

// valueArena holds the encoded values of one write transaction, which
// bbolt needs until the transaction ends, in one buffer that the next
// transaction reuses, rather than allocating each job's JSON (kilobytes)
// afresh for every write.
type valueArena struct{ buf []byte }

// maxArena bounds the buffer a store keeps between transactions.
const maxArena = 4 << 20

// marshal appends v's JSON (as json.Marshal encodes it) to the arena and
// returns it.
func (a *valueArena) marshal(v any) ([]byte, error) {
	start := len(a.buf)
	if err := jsonv2.MarshalWrite(a, v, json.DefaultOptionsV1()); err != nil {
		a.buf = a.buf[:start]
		return nil, err
	}
	// Earlier values keep the backing array they were written to when
	// an append moves the buffer.
	return a.buf[start:len(a.buf):len(a.buf)], nil
}

func (a *valueArena) Write(p []byte) (int, error) {
	a.buf = append(a.buf, p...)
	return len(p), nil
}

// modifyIndexOf returns the modify index of a stored object: from its
// tail (modifyIndexTail) if it has the usual form, else by decoding it.
// Decoding the whole stored job (its spec and plan, kilobytes) on each of
// its updates took about a tenth of a busy server's CPU.
func modifyIndexOf(v []byte) (uint64, error) {
	if m, ok := modifyIndexTail(v); ok {
		return m, nil
	}
	var m fsm.Meta
	if err := json.Unmarshal(v, &m); err != nil {
		return 0, err
	}
	return m.ModifyIndex, nil
}

// modifyIndexTail reads the modify index at the end of an object's JSON.
// Every object type embeds fsm.Meta as its last field, so its JSON ends
// with `,"modify_index":N}`: a number right before the closing brace of
// the outermost object, after the key at its own level (a key inside a
// string would show its escaped quote). ok is false for any other form.
func modifyIndexTail(v []byte) (m uint64, ok bool) {
	const key = `"modify_index":`
	n := len(v)
	if n < len(key)+3 || v[n-1] != '}' {
		return 0, false
	}
	i := n - 1 // the number is v[i:n-1]
	for i > 0 && v[i-1] >= '0' && v[i-1] <= '9' {
		i--
	}
	k := i - len(key)
	if i == n-1 || k < 1 || string(v[k:i]) != key || (v[k-1] != ',' && v[k-1] != '{') {
		return 0, false
	}
	m, err := strconv.ParseUint(string(v[i:n-1]), 10, 64)
	return m, err == nil
}

// objectKey returns o's key in its kind's bucket: its ID, or for an audit
// record its big-endian Seq.
func objectKey(o fsm.Object) []byte {
	if r, ok := o.(*fsm.AuditRecord); ok {
		return u64(r.Seq)
	}
	return []byte(o.ObjectID())
}

// Commit implements fsm.Store. A batch at or below the stored index is
// ignored, and each object is written only if it is newer than the stored
// version, so Commit is idempotent.
func (s *Store) Commit(ctx context.Context, batch *fsm.Batch) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	err := s.db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyIndex); v != nil && binary.BigEndian.Uint64(v) >= batch.Index {
			return nil
		}
		// bbolt runs one write transaction at a time: the previous one,
		// whose values the arena held, has ended.
		values := &valueArena{buf: s.arena[:0]}
		defer func() {
			if cap(values.buf) <= maxArena {
				s.arena = values.buf
			}
		}()
		fillPages(tx)
		for _, k := range fsm.Kinds {
			if err := putKind(tx, k, k.Objects(batch), values); err != nil {
				return err
			}
		}
		if err := deleteObjects(tx, batch.Deleted); err != nil {
			return err
		}
		return meta.Put(keyIndex, u64(batch.Index))
	})
	if err != nil {
		return fmt.Errorf("commit batch %d: %w", batch.Index, err)
	}
	return nil
}

// appendFill is the fill percent of the pages Commit writes. bbolt's
// default, 0.5, suits keys inserted at random; but nearly every key the
// store writes lands at the end of its bucket or of a tenant's range in
// it: job IDs are UUIDv7s (time-ordered), audit records are keyed by
// sequence, and the tenant indexes append within a tenant. Split at half
// a page, every full page the tree grows by stays half empty for good:
// twice the pages, a deeper tree, and more pages rewritten per commit as
// the jobs accumulate. Pages filled to appendFill keep room for a job
// that grows as it changes state.
const appendFill = 0.9

// fillPages sets the fill percent of every bucket Commit writes (bbolt
// keeps it per bucket handle, for one transaction).
func fillPages(tx *bbolt.Tx) {
	for _, name := range allBuckets {
		tx.Bucket(name).FillPercent = appendFill
	}
	tx.Bucket(bucketFinished).FillPercent = appendFill
}

// putKind writes the objects of kind k that are newer than their stored
// versions, and keeps k's active bucket and, for jobs, the tenant index.
func putKind(tx *bbolt.Tx, k *fsm.Kind, objs []fsm.Object, values *valueArena) error {
	if len(objs) == 0 {
		return nil
	}
	bucket := tx.Bucket([]byte(k.Bucket))
	active := tx.Bucket(activeBucket(k))
	for _, o := range objs {
		id := objectKey(o)
		wrote, err := putGuarded(bucket, id, o.ObjectMeta().ModifyIndex, o, values)
		if err != nil {
			return err
		}
		if !wrote {
			continue // the stored version is as new or newer
		}
		switch v := o.(type) {
		case *fsm.Job:
			err = putIndex(tx.Bucket(bucketByTen), tenantJobKey(v.TenantID, v.ID))
			if err == nil {
				err = indexFinished(tx, v)
			}
		case *fsm.AuditRecord:
			err = putIndex(tx.Bucket(bucketAuditByTen), tenantAuditKey(v.Tenant, v.Seq))
		}
		if err != nil {
			return err
		}
		if !k.Partial() {
			continue
		}
		if k.Resident(o) {
			err = putIndex(active, id)
		} else {
			err = active.Delete(id)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// putIndex adds key, with no value, to the index bucket b unless it is
// there. Most writes update an object its indexes already list, and a Put
// of an existing key still copies its leaf page into the transaction and
// writes it again at commit (a Delete of a missing key, or a Seek, does
// not). Get cannot tell: it answers nil for an empty value put earlier in
// the same transaction.
func putIndex(b *bbolt.Bucket, key []byte) error {
	if k, _ := b.Cursor().Seek(key); bytes.Equal(k, key) {
		return nil
	}
	return b.Put(key, nil)
}

// GetJob implements fsm.Store.
func (s *Store) GetJob(ctx context.Context, id string) (*fsm.Job, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var j *fsm.Job
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		j, err = decode[fsm.Job](tx.Bucket(bucketJobs).Get([]byte(id)))
		return err
	})
	if err != nil {
		return nil, err
	}
	return j, nil
}

// JobsExist implements fsm.Store.
func (s *Store) JobsExist(ctx context.Context, ids []string) (map[string]uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]uint64)
	err := s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketJobs)
		for _, id := range ids {
			v := b.Get([]byte(id))
			if v == nil {
				if create, ok := tombstoneCreate(tx, fsm.JobKind, id); ok {
					out[id] = create
				}
				continue
			}
			m, err := decode[fsm.Meta](v)
			if err != nil {
				return fmt.Errorf("job %s: %w", id, err)
			}
			out[id] = m.CreateIndex
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("jobs exist: %w", err)
	}
	return out, nil
}

// ListJobs implements fsm.Store. It walks IDs (time-ordered) newest first
// from the cursor, filtering by state and queue.
func (s *Store) ListJobs(ctx context.Context, p *fsm.ListJobsParams) (*fsm.JobPage, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	limit := p.Limit
	if limit <= 0 || limit > 1000 {
		return nil, fmt.Errorf("list jobs: limit %d out of range 1..1000", limit)
	}
	page := &fsm.JobPage{Jobs: []*fsm.Job{}}
	err := s.db.View(func(tx *bbolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		var c *bbolt.Cursor
		var prefix, start []byte
		if p.TenantID != "" {
			c = tx.Bucket(bucketByTen).Cursor()
			prefix = tenantJobKey(p.TenantID, "")
			start = tenantJobKey(p.TenantID, p.After)
		} else {
			c = jobs.Cursor()
			start = []byte(p.After)
		}
		// Position at the last key below start (or at the very end).
		var k []byte
		if p.After == "" {
			if p.TenantID != "" {
				// One past the tenant's prefix: the separator byte + 1.
				end := append([]byte(p.TenantID), 1)
				if k, _ = c.Seek(end); k == nil {
					k, _ = c.Last()
				} else {
					k, _ = c.Prev()
				}
			} else {
				k, _ = c.Last()
			}
		} else if k, _ = c.Seek(start); k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Prev() {
			id := k[len(prefix):]
			if err := ctx.Err(); err != nil {
				return err
			}
			j, err := decode[fsm.Job](jobs.Get(id))
			if err != nil {
				return fmt.Errorf("job %s: %w", id, err)
			}
			if len(p.States) > 0 && !slices.Contains(p.States, j.State) {
				continue
			}
			if p.Queue != "" && j.Spec.Queue != p.Queue {
				continue
			}
			if len(page.Jobs) == limit {
				page.Next = page.Jobs[limit-1].ID
				return nil
			}
			page.Jobs = append(page.Jobs, j)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return page, nil
}

// Kind is the store kind this package writes into snapshot headers.
const Kind = "bolt"

type snapshot struct {
	path  string
	tx    *bbolt.Tx
	index uint64
	once  sync.Once
}

// WriteTo copies the file pinned by the read transaction to a temporary
// file beside the store, ends the transaction, and only then streams the
// copy in the snapshot envelope. A slow reader (a `cluster snapshot save`
// download) therefore holds a read transaction only for as long as a
// local disk copy takes: an open read transaction would block a Commit
// that has to grow the file's memory map, and bbolt's Close.
func (sn *snapshot) WriteTo(w io.Writer) (int64, error) {
	defer sn.Release()
	f, err := os.CreateTemp(filepath.Dir(sn.path), filepath.Base(sn.path)+snapshotTmp+"*")
	if err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	size, err := sn.tx.WriteTo(f)
	sn.Release()
	if err != nil {
		return 0, fmt.Errorf("snapshot: copy: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	return fsm.WriteSnapshot(w, fsm.SnapshotHeader{Kind: Kind, Index: sn.index, Length: size}, bufio.NewReaderSize(f, 1<<20))
}

func (sn *snapshot) Release() { sn.once.Do(func() { _ = sn.tx.Rollback() }) }

// Index implements fsm.LocalSnapshot.
func (sn *snapshot) Index() uint64 { return sn.index }

// Size implements fsm.LocalSnapshot: the envelope around the file as the
// read transaction sees it (bbolt's Tx.WriteTo writes Tx.Size bytes).
func (sn *snapshot) Size() int64 { return fsm.SnapshotLen(Kind, sn.tx.Size()) }

// Temporary files beside the store; Open removes any a crash left.
const (
	snapshotTmp = ".snapshot-"
	checkTmp    = ".check-"
	restoreTmp  = ".restore"
)

// Snapshot implements fsm.Store: a read transaction pins the file as of
// now, and WriteTo copies and streams it.
func (s *Store) Snapshot(ctx context.Context) (fsm.StoreSnapshot, error) {
	return s.SnapshotLocal(ctx)
}

// SnapshotLocal implements fsm.LocalStore, as Snapshot.
func (s *Store) SnapshotLocal(ctx context.Context) (fsm.LocalSnapshot, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	tx, err := s.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	var index uint64
	if v := tx.Bucket(bucketMeta).Get(keyIndex); v != nil {
		index = binary.BigEndian.Uint64(v)
	}
	return &snapshot{path: s.path, tx: tx, index: index}, nil
}

// Restore implements fsm.Store: the stream is written beside the store,
// checked completely (see receive), and swapped in. The old file is
// closed after the swap, outside the store's lock: bbolt's Close waits
// for read transactions still open on it, and no reader of the new file
// may wait for those. (On Linux a renamed-over file lives on for the
// transactions that still map it.)
func (s *Store) Restore(ctx context.Context, r io.Reader) error {
	tmp := s.path + restoreTmp
	if _, err := receive(r, tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore: %w", err)
	}
	s.mu.Lock()
	old := s.db
	if err := os.Rename(tmp, s.path); err != nil {
		s.mu.Unlock()
		os.Remove(tmp)
		return fmt.Errorf("restore: swap: %w", err)
	}
	db, err := openDB(s.path)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("restore: reopen: %w", err)
	}
	s.db = db
	s.mu.Unlock()
	s.closing.Add(1)
	go func() {
		defer s.closing.Done()
		if err := old.Close(); err != nil {
			slog.Warn("close replaced state db", "path", s.path, "error", err)
		}
	}()
	return nil
}

// CheckSnapshot implements fsm.Store: it receives the stream into a
// temporary file beside the store, checks it as Restore does, and
// removes it.
func (s *Store) CheckSnapshot(ctx context.Context, r io.Reader) (*fsm.SnapshotHeader, error) {
	f, err := os.CreateTemp(filepath.Dir(s.path), filepath.Base(s.path)+checkTmp+"*")
	if err != nil {
		return nil, fmt.Errorf("check snapshot: %w", err)
	}
	f.Close()
	defer os.Remove(f.Name())
	h, err := receive(r, f.Name())
	if err != nil {
		return nil, fmt.Errorf("check snapshot: %w", err)
	}
	return h, nil
}

// receive writes a snapshot stream's payload, a whole bbolt file, to path
// and checks it: the envelope (magic, version, store kind, checksum) and
// then the file itself (checkFile). A stream without the envelope is read
// as this store's format before it: a bare bbolt file, as Raft snapshots
// and `cluster snapshot save` backups were, which has no checksum of its
// own beyond bbolt's meta pages, so checkFile's page walk is all that
// vouches for it. Errors that say the stream is bad wrap
// fsm.ErrBadSnapshot.
func receive(r io.Reader, path string) (*fsm.SnapshotHeader, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var payload io.Reader = br
	var h *fsm.SnapshotHeader
	if fsm.IsSnapshotEnvelope(br) {
		var err error
		if h, payload, err = fsm.ReadSnapshot(br, Kind); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	n, err := io.Copy(f, payload)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, fsm.ErrBadSnapshot) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	index, err := checkFile(path)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return &fsm.SnapshotHeader{Kind: Kind, Index: index, Length: n}, nil
	}
	if index != h.Index {
		return nil, fsm.BadSnapshotf("the header says index %d, the state file holds %d", h.Index, index)
	}
	return h, nil
}

// Ping implements fsm.Store.
func (s *Store) Ping(ctx context.Context) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.View(func(*bbolt.Tx) error { return nil })
}

// Close implements fsm.Store.
func (s *Store) Close() error {
	defer s.closing.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.db.Close(); err != nil && !errors.Is(err, bbolt.ErrDatabaseNotOpen) {
		return fmt.Errorf("close state db: %w", err)
	}
	return nil
}

// bbolt's on-disk meta page layout (see bbolt's internal/common/meta.go):
// a 16-byte page header, then magic, version, page size, flags (4 bytes
// each), the root bucket (16), the freelist page id (8), the high water
// page id (8), txid (8) and a checksum.
const (
	boltMagic        = 0xED0CDAED
	metaOffset       = 16
	metaPgidOffset   = metaOffset + 4 + 4 + 4 + 4 + 16 + 8
	metaPageSizeOff  = metaOffset + 8
	minBoltFileBytes = 2 * 512
)

// checkFile checks that path is a whole, undamaged state file this binary
// can load, and returns its applied index. It refuses a file that is not
// a whole bbolt file before bbolt maps it (an empty file would be taken
// for a new database, and a truncated one faults (SIGBUS) when bbolt reads
// past its end), then opens it read-only, checks every page, the buckets
// and the schema version, and decodes everything Load would. Every error
// wraps fsm.ErrBadSnapshot.
func checkFile(path string) (index uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Size() < minBoltFileBytes {
		return 0, fsm.BadSnapshotf("the state file is %d bytes, too short to be a bolt state file", st.Size())
	}
	head := make([]byte, metaPgidOffset+8)
	if _, err := f.ReadAt(head, 0); err != nil {
		return 0, fmt.Errorf("read state file header: %w", err)
	}
	if binary.LittleEndian.Uint32(head[metaOffset:]) != boltMagic {
		return 0, fsm.BadSnapshotf("not an ffrtmp snapshot or a bolt state file (bad magic)")
	}
	pageSize := int64(binary.LittleEndian.Uint32(head[metaPageSizeOff:]))
	if pageSize < 512 || pageSize > 1<<20 {
		return 0, fsm.BadSnapshotf("the state file has an invalid page size %d", pageSize)
	}
	need := int64(0)
	for i := int64(0); i < 2; i++ {
		meta := make([]byte, metaPgidOffset+8)
		if _, err := f.ReadAt(meta, i*pageSize); err != nil {
			return 0, fsm.BadSnapshotf("cannot read meta page %d: %v", i, err)
		}
		if binary.LittleEndian.Uint32(meta[metaOffset:]) == boltMagic {
			need = max(need, int64(binary.LittleEndian.Uint64(meta[metaPgidOffset:]))*pageSize)
		}
	}
	if st.Size() < need {
		return 0, fsm.BadSnapshotf("the state file is truncated: %d bytes of %d", st.Size(), need)
	}
	// A damaged page can make bbolt panic rather than return an error.
	defer func() {
		if p := recover(); p != nil {
			err = fsm.BadSnapshotf("the state file is damaged: %v", p)
		}
	}()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return 0, fsm.BadSnapshotf("the state file does not open: %v", err)
	}
	defer db.Close()
	var damaged error
	err = db.View(func(tx *bbolt.Tx) error {
		for e := range tx.Check() { // drain: Check's goroutine sends all
			if damaged == nil {
				damaged = e
			}
		}
		return nil
	})
	if err == nil && damaged != nil {
		err = fsm.BadSnapshotf("the state file is damaged: %v", damaged)
	}
	if err != nil {
		return 0, err
	}
	err = db.View(func(tx *bbolt.Tx) error {
		for _, b := range requiredBuckets {
			if tx.Bucket(b) == nil {
				return fsm.BadSnapshotf("not an ffrtmp state file (no bucket %q)", b)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); len(v) != 8 {
			return fsm.BadSnapshotf("the state file has no schema version")
		} else if got := binary.BigEndian.Uint64(v); got > schemaVersion {
			return fsm.BadSnapshotf("the state file has schema version %d, this binary knows %d", got, schemaVersion)
		}
		if v := meta.Get(keyIndex); v != nil {
			if len(v) != 8 {
				return fsm.BadSnapshotf("the state file's applied index is damaged")
			}
			index = binary.BigEndian.Uint64(v)
		}
		if _, err := loadTx(tx); err != nil {
			return fsm.BadSnapshotf("the state file does not decode: %v", err)
		}
		return nil
	})
	return index, err
}
