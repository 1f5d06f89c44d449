package postgres

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/ffrtmp/ffrtmp/fsm"
)

const insertJobRow = `INSERT INTO jobs AS t (id, tenant_id, state, queue, priority, attempt, retries,
	worker_id, submitted_at, finished_at, create_index, modify_index, doc)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, state = excluded.state,
	queue = excluded.queue, priority = excluded.priority, attempt = excluded.attempt,
	retries = excluded.retries, worker_id = excluded.worker_id, submitted_at = excluded.submitted_at,
	finished_at = excluded.finished_at, create_index = excluded.create_index,
	modify_index = excluded.modify_index, doc = excluded.doc
WHERE excluded.modify_index > t.modify_index`

// CommitPerRow is Commit with one single-row INSERT per object (sent in
// one pgx batch) instead of one multi-row statement per table, for
// BenchmarkCommit to compare against.
func (s *Store) CommitPerRow(ctx context.Context, b *fsm.Batch) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE ffrtmp_state SET applied_index = $1 WHERE applied_index < $1`, int64(b.Index))
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		pb := &pgx.Batch{}
		for _, j := range b.Jobs {
			pb.Queue(insertJobRow, j.ID, j.TenantID, string(j.State), string(j.Spec.Queue), string(j.Spec.Priority),
				j.Attempt, j.Retries, optText(j.WorkerID), j.SubmittedAt, optTime(j.FinishedAt),
				int64(j.CreateIndex), int64(j.ModifyIndex), doc(j))
		}
		return tx.SendBatch(ctx, pb).Close()
	})
}

// CommitTx is Commit as it was before it became one round trip: BEGIN,
// the UPDATE of the applied index, then (if that advanced it) one
// unguarded multi-row statement per table, then COMMIT, each waiting for
// the server; for BenchmarkCommit to compare against.
func (s *Store) CommitTx(ctx context.Context, b *fsm.Batch) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, advanceSQL, int64(b.Index))
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		pb := &pgx.Batch{}
		for _, w := range writes(b) {
			if w.n > 0 {
				sql := strings.Replace(insertSQL[onConflictUpdate][w.kind], "WHERE "+advancedSQL+" ", "", 1)
				pb.Queue(sql, w.args...)
			}
		}
		return tx.SendBatch(ctx, pb).Close()
	})
}

// TableColumns returns the columns Commit writes for kind k, in order.
func TableColumns(k *fsm.Kind) []string {
	var out []string
	for _, c := range columns(k) {
		out = append(out, c.name)
	}
	return out
}
