// Package bolt is the bbolt implementation of fsm.Store: one file per
// node, each applied batch and its last index written in one transaction.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/ffrtmp/ffrtmp/fsm"
)

var (
	bucketMeta    = []byte("meta")
	bucketTenants = []byte("tenants")
	bucketKeys    = []byte("keys")
	bucketWorkers = []byte("workers")
	bucketJobs    = []byte("jobs")        // job ID → job JSON, every job
	bucketActive  = []byte("active_jobs") // job ID → nil, non-terminal jobs
	bucketByTen   = []byte("tenant_jobs") // tenant ID 0x00 job ID → nil
	keyIndex      = []byte("applied_index")
	keySchema     = []byte("schema_version")

	allBuckets = [][]byte{bucketMeta, bucketTenants, bucketKeys, bucketWorkers, bucketJobs, bucketActive, bucketByTen}
)

// schemaVersion is the layout version of the file; a newer file is refused.
const schemaVersion = 1

// Store is a bbolt-backed fsm.Store. Methods are safe for concurrent use;
// Restore excludes every other call while it swaps the file.
type Store struct {
	path string

	mu sync.RWMutex // guards db against Restore
	db *bbolt.DB
}

var _ fsm.Store = (*Store)(nil)

// Open opens (creating if needed) the store file at path.
func Open(path string) (*Store, error) {
	db, err := openDB(path)
	if err != nil {
		return nil, err
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

// Load implements fsm.Store.
func (s *Store) Load(ctx context.Context) (*fsm.State, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := &fsm.State{}
	err := s.db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyIndex); v != nil {
			st.Index = binary.BigEndian.Uint64(v)
		}
		var err error
		if st.Tenants, err = loadAll[fsm.Tenant](tx.Bucket(bucketTenants)); err != nil {
			return err
		}
		if st.Keys, err = loadAll[fsm.APIKey](tx.Bucket(bucketKeys)); err != nil {
			return err
		}
		if st.Workers, err = loadAll[fsm.Worker](tx.Bucket(bucketWorkers)); err != nil {
			return err
		}
		jobs := tx.Bucket(bucketJobs)
		return tx.Bucket(bucketActive).ForEach(func(k, _ []byte) error {
			j, err := decode[fsm.Job](jobs.Get(k))
			if err != nil {
				return fmt.Errorf("job %s: %w", k, err)
			}
			st.Jobs = append(st.Jobs, j)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	return st, nil
}

func loadAll[T any](b *bbolt.Bucket) ([]*T, error) {
	var out []*T
	err := b.ForEach(func(k, v []byte) error {
		x, err := decode[T](v)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		out = append(out, x)
		return nil
	})
	return out, err
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
func putGuarded(b *bbolt.Bucket, id string, modifyIndex uint64, obj any) (bool, error) {
	if old := b.Get([]byte(id)); old != nil {
		var m fsm.Meta
		if err := json.Unmarshal(old, &m); err != nil {
			return false, fmt.Errorf("decode %s: %w", id, err)
		}
		if m.ModifyIndex >= modifyIndex {
			return false, nil
		}
	}
	v, err := json.Marshal(obj)
	if err != nil {
		return false, fmt.Errorf("encode %s: %w", id, err)
	}
	return true, b.Put([]byte(id), v)
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
		for _, t := range batch.Tenants {
			if _, err := putGuarded(tx.Bucket(bucketTenants), t.ID, t.ModifyIndex, t); err != nil {
				return err
			}
		}
		for _, k := range batch.Keys {
			if _, err := putGuarded(tx.Bucket(bucketKeys), k.ID, k.ModifyIndex, k); err != nil {
				return err
			}
		}
		for _, w := range batch.Workers {
			if _, err := putGuarded(tx.Bucket(bucketWorkers), w.ID, w.ModifyIndex, w); err != nil {
				return err
			}
		}
		jobs, active, byTen := tx.Bucket(bucketJobs), tx.Bucket(bucketActive), tx.Bucket(bucketByTen)
		for _, j := range batch.Jobs {
			wrote, err := putGuarded(jobs, j.ID, j.ModifyIndex, j)
			if err != nil {
				return err
			}
			if !wrote {
				continue // the stored version is as new or newer
			}
			if err := byTen.Put(tenantJobKey(j.TenantID, j.ID), nil); err != nil {
				return err
			}
			if j.State.Terminal() {
				err = active.Delete([]byte(j.ID))
			} else {
				err = active.Put([]byte(j.ID), nil)
			}
			if err != nil {
				return err
			}
		}
		return meta.Put(keyIndex, u64(batch.Index))
	})
	if err != nil {
		return fmt.Errorf("commit batch %d: %w", batch.Index, err)
	}
	return nil
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

type snapshot struct {
	tx   *bbolt.Tx
	once sync.Once
}

func (s *snapshot) WriteTo(w io.Writer) (int64, error) { return s.tx.WriteTo(w) }
func (s *snapshot) Release()                           { s.once.Do(func() { _ = s.tx.Rollback() }) }

// Snapshot implements fsm.Store: a read transaction pins the file as of
// now, and WriteTo streams it.
func (s *Store) Snapshot(ctx context.Context) (fsm.StoreSnapshot, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	tx, err := s.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &snapshot{tx: tx}, nil
}

// Restore implements fsm.Store: the stream (a whole bbolt file) is written
// beside the store, checked by opening it, and swapped in.
func (s *Store) Restore(ctx context.Context, r io.Reader) error {
	tmp := s.path + ".restore"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore: write: %w", err)
	}
	if err := checkFile(tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("restore: close: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("restore: swap: %w", err)
	}
	db, err := openDB(s.path)
	if err != nil {
		return fmt.Errorf("restore: reopen: %w", err)
	}
	s.db = db
	return nil
}

// Ping implements fsm.Store.
func (s *Store) Ping(ctx context.Context) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.View(func(*bbolt.Tx) error { return nil })
}

// Close implements fsm.Store.
func (s *Store) Close() error {
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

// checkFile refuses a stream that is not a whole bbolt file before bbolt
// maps it: an empty file would be taken for a new database, and a
// truncated one faults (SIGBUS) when bbolt reads past its end. Then it
// opens the file and checks every page.
func checkFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < minBoltFileBytes {
		return fmt.Errorf("snapshot is %d bytes, too short to be a state file", st.Size())
	}
	head := make([]byte, metaPgidOffset+8)
	if _, err := f.ReadAt(head, 0); err != nil {
		return fmt.Errorf("read snapshot header: %w", err)
	}
	if binary.LittleEndian.Uint32(head[metaOffset:]) != boltMagic {
		return errors.New("snapshot is not a state file (bad magic)")
	}
	pageSize := int64(binary.LittleEndian.Uint32(head[metaPageSizeOff:]))
	if pageSize < 512 || pageSize > 1<<20 {
		return fmt.Errorf("snapshot has an invalid page size %d", pageSize)
	}
	need := int64(0)
	for i := int64(0); i < 2; i++ {
		meta := make([]byte, metaPgidOffset+8)
		if _, err := f.ReadAt(meta, i*pageSize); err != nil {
			return fmt.Errorf("read snapshot meta page %d: %w", i, err)
		}
		if binary.LittleEndian.Uint32(meta[metaOffset:]) == boltMagic {
			need = max(need, int64(binary.LittleEndian.Uint64(meta[metaPgidOffset:]))*pageSize)
		}
	}
	if st.Size() < need {
		return fmt.Errorf("snapshot is truncated: %d bytes of %d", st.Size(), need)
	}
	db, err := openDB(path)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bbolt.Tx) error {
		var first error
		for err := range tx.Check() { // drain: Check's goroutine sends all
			if first == nil {
				first = fmt.Errorf("snapshot is corrupt: %w", err)
			}
		}
		return first
	})
}
