package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// ListAudit implements fsm.Store. It walks the audit bucket, or for a
// tenant the tenant index, from the cursor down, keeping the records that
// pass the other filters.
func (s *Store) ListAudit(ctx context.Context, p *fsm.ListAuditParams) (*fsm.AuditPage, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if p.Limit <= 0 || p.Limit > 1000 {
		return nil, fmt.Errorf("list audit: limit %d out of range 1..1000", p.Limit)
	}
	page := &fsm.AuditPage{Records: []*fsm.AuditRecord{}}
	err := s.db.View(func(tx *bbolt.Tx) error {
		audit := tx.Bucket(bucketAudit)
		if audit == nil {
			return nil // a file from before the audit log, opened read-only
		}
		var c *bbolt.Cursor
		var prefix []byte
		end := u64(p.Before)
		if p.Before == 0 {
			end = nil
		}
		if p.TenantID != "" {
			c = tx.Bucket(bucketAuditByTen).Cursor()
			prefix = append([]byte(p.TenantID), 0)
			if end == nil {
				end = append([]byte(p.TenantID), 1) // past the tenant's keys
			} else {
				end = tenantAuditKey(p.TenantID, p.Before)
			}
		} else {
			c = audit.Cursor()
		}
		k := lastBelow(c, end)
		for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Prev() {
			if err := ctx.Err(); err != nil {
				return err
			}
			seq := k[len(prefix):]
			r, err := decode[fsm.AuditRecord](audit.Get(seq))
			if err != nil {
				return fmt.Errorf("audit record %d: %w", binary.BigEndian.Uint64(seq), err)
			}
			if !p.Keep(r) {
				continue
			}
			if len(page.Records) == p.Limit {
				page.Next = page.Records[p.Limit-1].Seq
				return nil
			}
			page.Records = append(page.Records, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return page, nil
}

// lastBelow positions c at the last key below end (the last key of all
// if end is nil) and returns it.
func lastBelow(c *bbolt.Cursor, end []byte) []byte {
	if end == nil {
		k, _ := c.Last()
		return k
	}
	if k, _ := c.Seek(end); k == nil {
		k, _ = c.Last()
		return k
	}
	k, _ := c.Prev()
	return k
}

// auditScanPage is how many records ScanAudit reads per read transaction.
const auditScanPage = 1000

// ScanAudit implements fsm.Store: a page of records per read
// transaction, and fn called between transactions.
func (s *Store) ScanAudit(ctx context.Context, after uint64, fn func(*fsm.AuditRecord) error) error {
	start := u64(after + 1)
	if after == ^uint64(0) {
		return nil
	}
	for {
		var recs []*fsm.AuditRecord
		var next []byte
		s.mu.RLock()
		err := s.db.View(func(tx *bbolt.Tx) error {
			audit := tx.Bucket(bucketAudit)
			if audit == nil {
				return nil // a file from before the audit log, opened read-only
			}
			c := audit.Cursor()
			for k, v := c.Seek(start); k != nil; k, v = c.Next() {
				if len(recs) == auditScanPage {
					next = bytes.Clone(k)
					return nil
				}
				r, err := decode[fsm.AuditRecord](v)
				if err != nil {
					return fmt.Errorf("audit record %d: %w", binary.BigEndian.Uint64(k), err)
				}
				recs = append(recs, r)
			}
			return nil
		})
		s.mu.RUnlock()
		if err != nil {
			return fmt.Errorf("scan audit: %w", err)
		}
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
		if next == nil {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		start = next
	}
}
