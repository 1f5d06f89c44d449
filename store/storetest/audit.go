package storetest

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// exerciseAudit checks the audit records of a store: written by Commit,
// never loaded (only the head), paged newest first with every filter,
// scanned in Seq order across pages, carried by snapshots.
func exerciseAudit(t *testing.T, caps Capabilities, newStore func(t *testing.T) fsm.Store) {
	ctx := context.Background()

	t.Run("AuditPagesAndFilters", func(t *testing.T) {
		t.Parallel()
		st := newStore(t)
		if h := load(t, st).AuditHead; h.Seq != 0 || h.Hash != nil {
			t.Errorf("AuditHead of an empty store = %+v, want zero", h)
		}
		tenants := []string{"acme", "globex", ""}
		actions := []string{"submitJob", "cancelJob", "drainWorker"}
		var all []*fsm.AuditRecord
		const n = 1203 // more than one ScanAudit page
		index := uint64(10)
		for seq := uint64(1); seq <= n; {
			b := &fsm.Batch{Index: index}
			for i := 0; i < 300 && seq <= n; i, seq = i+1, seq+1 {
				r := newAudit(seq, tenants[seq%3], index)
				r.Tenant = tenants[seq%3]
				r.Action = actions[seq%5%3]
				if seq%7 == 0 {
					r.User, r.KeyID = "bob@acme", "kbob"
				}
				b.Audit = append(b.Audit, r)
				all = append(all, r)
			}
			commit(t, st, b)
			// Committing the batch again changes nothing.
			if err := st.Commit(ctx, b); err != nil {
				t.Fatalf("Commit again: %v", err)
			}
			index++
		}
		s := load(t, st)
		if last := all[n-1]; s.AuditHead.Seq != last.Seq || !bytes.Equal(s.AuditHead.Hash, last.Hash) {
			t.Errorf("AuditHead = %d %q, want %d %q", s.AuditHead.Seq, s.AuditHead.Hash, last.Seq, last.Hash)
		}

		var scanned []*fsm.AuditRecord
		if err := st.ScanAudit(ctx, 0, func(r *fsm.AuditRecord) error { scanned = append(scanned, r); return nil }); err != nil {
			t.Fatalf("ScanAudit: %v", err)
		}
		assertSame(t, "ScanAudit from 0", normAudits(scanned), normAudits(all))
		scanned = nil
		if err := st.ScanAudit(ctx, 1000, func(r *fsm.AuditRecord) error { scanned = append(scanned, r); return nil }); err != nil {
			t.Fatalf("ScanAudit: %v", err)
		}
		assertSame(t, "ScanAudit after 1000", normAudits(scanned), normAudits(all[1000:]))

		for _, p := range []fsm.ListAuditParams{
			{Limit: 100},
			{Limit: 1000},
			{Limit: 77, TenantID: "acme"},
			{Limit: 50, TenantID: "nobody"},
			{Limit: 40, Actor: "bob@acme"},
			{Limit: 40, Actor: "kbob"},
			{Limit: 90, Action: "cancelJob", TenantID: "globex"},
			{Limit: 30, Since: t0.Add(100 * time.Second), Until: t0.Add(250 * time.Second)},
			{Limit: 30, Since: t0.Add(1100 * time.Second), Action: "submitJob"},
		} {
			var want []*fsm.AuditRecord
			for _, r := range slices.Backward(all) {
				if p.Keep(r) {
					want = append(want, r)
				}
			}
			got := collectAudit(t, st, p)
			assertSame(t, fmt.Sprintf("ListAudit pages of %+v", p), normAudits(got), normAudits(want))
		}
	})

	t.Run("AuditSnapshot", func(t *testing.T) {
		t.Parallel()
		src := newStore(t)
		b := &fsm.Batch{Index: 3, Tenants: []*fsm.Tenant{newTenant("acme", 1)},
			Audit: []*fsm.AuditRecord{newAudit(1, "acme", 2), newAudit(2, "acme", 3)}}
		commit(t, src, b)
		var buf bytes.Buffer
		writeSnapshot(t, src, &buf)
		dst := newStore(t)
		if caps.Peer != nil {
			dst = caps.Peer(t, src)
		}
		if err := dst.Restore(ctx, &buf); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		if h := load(t, dst).AuditHead; h.Seq != 2 || string(h.Hash) != "hash-2" {
			t.Errorf("AuditHead after Restore = %d %q, want 2 hash-2", h.Seq, h.Hash)
		}
		got := collectAudit(t, dst, fsm.ListAuditParams{Limit: 10})
		assertSame(t, "records after Restore", normAudits(got), normAudits([]*fsm.AuditRecord{b.Audit[1], b.Audit[0]}))
	})
}

// collectAudit reads every page of ListAudit from p's cursor on.
func collectAudit(t *testing.T, st fsm.Store, p fsm.ListAuditParams) []*fsm.AuditRecord {
	t.Helper()
	var out []*fsm.AuditRecord
	for range 10000 {
		page, err := st.ListAudit(context.Background(), &p)
		if err != nil {
			t.Fatalf("ListAudit(%+v): %v", p, err)
		}
		if len(page.Records) > p.Limit {
			t.Fatalf("ListAudit(%+v) returned %d records, more than the limit", p, len(page.Records))
		}
		out = append(out, page.Records...)
		if page.Next == 0 {
			return out
		}
		p.Before = page.Next
	}
	t.Fatalf("ListAudit(%+v) never ended", p)
	return nil
}

func normAudits(rs []*fsm.AuditRecord) []*fsm.AuditRecord {
	out := make([]*fsm.AuditRecord, 0, len(rs))
	for _, r := range rs {
		c := *r
		utc(&c.Time)
		out = append(out, &c)
	}
	return out
}
