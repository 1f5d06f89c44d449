package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	bbolt "go.etcd.io/bbolt"

	"github.com/ffrtmp/ffrtmp/fsm"
)

var (
	// bucketFinished indexes finished jobs by tenant and finish time:
	// tenant ID 0x00 big-endian FinishedAt in Unix nanoseconds (0 for a
	// job without one) job ID → nil. Retention pages it (FinishedJobs).
	bucketFinished = []byte("tenant_finished")
	// bucketTombstones holds a tombstone per deleted object: its kind's
	// bucket name 0x00 ID → big-endian create index and delete index.
	bucketTombstones = []byte("tombstones")
)

func finishedKey(j *fsm.Job) []byte {
	var ns uint64
	if !j.FinishedAt.IsZero() && j.FinishedAt.Unix() > 0 {
		ns = uint64(j.FinishedAt.UnixNano())
	}
	return append(binary.BigEndian.AppendUint64(append([]byte(j.TenantID), 0), ns), j.ID...)
}

func tombstoneKey(k *fsm.Kind, id string) []byte {
	return append(append([]byte(k.Bucket), 0), id...)
}

// indexFinished adds j to the finish-time index if it is finished.
func indexFinished(tx *bbolt.Tx, j *fsm.Job) error {
	if !j.State.Terminal() {
		return nil
	}
	return putIndex(tx.Bucket(bucketFinished), finishedKey(j))
}

// backfillFinished fills the finish-time index of a file written before
// it existed: run once, when Open creates the bucket.
func backfillFinished(tx *bbolt.Tx) error {
	return tx.Bucket(bucketJobs).ForEach(func(id, v []byte) error {
		j, err := decode[fsm.Job](v)
		if err != nil {
			return fmt.Errorf("job %s: %w", id, err)
		}
		return indexFinished(tx, j)
	})
}

// deleteObjects applies a batch's deletions, in reverse fsm.Kinds order
// (objects before the objects they refer to): each object is removed with
// its index entries unless its stored version is as new as the deletion,
// and leaves a tombstone.
func deleteObjects(tx *bbolt.Tx, deleted []fsm.Deletion) error {
	tombs := tx.Bucket(bucketTombstones)
	for _, d := range slices.Backward(deleted) {
		if d.Kind.History() {
			return fmt.Errorf("delete %s %s: history is never deleted", d.Kind.Name, d.ID)
		}
		bucket := tx.Bucket([]byte(d.Kind.Bucket))
		id := []byte(d.ID)
		if old := bucket.Get(id); old != nil {
			o, err := d.Kind.Decode(old)
			if err != nil {
				return err
			}
			if o.ObjectMeta().ModifyIndex >= d.Index {
				continue // a newer version: the deletion is older than it
			}
			if err := bucket.Delete(id); err != nil {
				return err
			}
			if d.Kind.Partial() {
				if err := tx.Bucket(activeBucket(d.Kind)).Delete(id); err != nil {
					return err
				}
			}
			if j, ok := o.(*fsm.Job); ok {
				if err := tx.Bucket(bucketByTen).Delete(tenantJobKey(j.TenantID, j.ID)); err != nil {
					return err
				}
				if err := tx.Bucket(bucketFinished).Delete(finishedKey(j)); err != nil {
					return err
				}
			}
		}
		v := binary.BigEndian.AppendUint64(u64(d.CreateIndex), d.Index)
		if err := tombs.Put(tombstoneKey(d.Kind, d.ID), v); err != nil {
			return err
		}
	}
	return nil
}

// GetJobs implements fsm.Store, in one read transaction.
func (s *Store) GetJobs(ctx context.Context, ids []string) (map[string]*fsm.Job, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]*fsm.Job, len(ids))
	err := s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketJobs)
		for _, id := range ids {
			v := b.Get([]byte(id))
			if v == nil {
				continue
			}
			j, err := decode[fsm.Job](v)
			if err != nil {
				return fmt.Errorf("job %s: %w", id, err)
			}
			out[id] = j
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("get jobs: %w", err)
	}
	return out, nil
}

// FinishedJobs implements fsm.Store: it walks the tenant's part of the
// finish-time index from its start and stops at p.Before.
func (s *Store) FinishedJobs(ctx context.Context, p *fsm.FinishedJobsParams) ([]string, error) {
	if p.Limit <= 0 || p.Limit > 1000 {
		return nil, fmt.Errorf("finished jobs: limit %d out of range 1..1000", p.Limit)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	before := uint64(0)
	if p.Before.Unix() > 0 {
		before = uint64(p.Before.UnixNano())
	}
	prefix := append([]byte(p.TenantID), 0)
	out := []string{}
	err := s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketFinished)
		if b == nil {
			return nil // a read-only file from before the index
		}
		c := b.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(out) < p.Limit; k, _ = c.Next() {
			rest := k[len(prefix):]
			if len(rest) < 8 {
				continue
			}
			if ns := binary.BigEndian.Uint64(rest); ns != 0 && ns >= before {
				break
			}
			out = append(out, string(rest[8:]))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("finished jobs: %w", err)
	}
	return out, nil
}

// tombstoneCreate returns the create index of a deleted object of kind k,
// if its tombstone is held.
func tombstoneCreate(tx *bbolt.Tx, k *fsm.Kind, id string) (uint64, bool) {
	b := tx.Bucket(bucketTombstones)
	if b == nil {
		return 0, false
	}
	v := b.Get(tombstoneKey(k, id))
	if len(v) < 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(v), true
}
