package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// ListAudit implements fsm.Store: one query on audit_records, newest
// first, each filter a typed column with an index.
func (s *Store) ListAudit(ctx context.Context, p *fsm.ListAuditParams) (*fsm.AuditPage, error) {
	if p.Limit <= 0 || p.Limit > maxPage {
		return nil, fmt.Errorf("list audit: limit %d out of range 1..%d", p.Limit, maxPage)
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var q conds
	add := q.add
	if p.TenantID != "" {
		add("tenant_id = $?", p.TenantID)
	}
	if p.Actor != "" {
		add("(actor_user = $? OR actor_key = $?)", p.Actor)
	}
	if p.Action != "" {
		add("action = $?", p.Action)
	}
	if !p.Since.IsZero() {
		add("at >= $?", p.Since)
	}
	if !p.Until.IsZero() {
		add("at < $?", p.Until)
	}
	if p.Before != 0 {
		add("seq < $?", int64(p.Before))
	}
	recs, more, err := queryPage[fsm.AuditRecord](ctx, s.pool, "SELECT doc FROM audit_records", q, "seq DESC", p.Limit)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	page := &fsm.AuditPage{Records: recs}
	if more {
		page.Next = recs[p.Limit-1].Seq
	}
	return page, nil
}

// auditScanPage is how many records ScanAudit reads per query.
const auditScanPage = 1000

// ScanAudit implements fsm.Store: pages of records in seq order, one
// query each, fn called between queries.
func (s *Store) ScanAudit(ctx context.Context, after uint64, fn func(*fsm.AuditRecord) error) error {
	cur := int64(after)
	for {
		var recs []*fsm.AuditRecord
		var last int64
		qctx, cancel := s.bound(ctx)
		rows, err := s.pool.Query(qctx, `SELECT seq, doc FROM audit_records WHERE seq > $1 ORDER BY seq LIMIT $2`, cur, auditScanPage)
		if err == nil {
			var doc []byte
			_, err = pgx.ForEachRow(rows, []any{&last, &doc}, func() error {
				r, err := decode[fsm.AuditRecord](doc)
				if err != nil {
					return fmt.Errorf("audit record %d: %w", last, err)
				}
				recs = append(recs, r)
				return nil
			})
		}
		cancel()
		if err != nil {
			return fmt.Errorf("scan audit: %w", interpretError(err))
		}
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(recs) < auditScanPage {
			return nil
		}
		cur = last
	}
}
