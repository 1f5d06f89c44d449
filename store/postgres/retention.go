package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// deleteSQL removes the rows a batch deleted, each only if its version
// is older than the deletion: a row written by a later entry stays.
// It deletes only in a transaction that advanced the applied index (see
// Commit).
const deleteSQL = `DELETE FROM %s AS t USING unnest($1::text[], $2::bigint[]) AS d(id, idx)
WHERE ` + advancedSQL + ` AND t.id = d.id AND t.modify_index < d.idx`

// tombstoneSQL records the tombstones of a kind's deletions, after
// deleteSQL: a row still there is newer than its deletion and gets none.
const tombstoneSQL = `INSERT INTO tombstones (kind, id, create_index, delete_index)
SELECT $1, d.* FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS d(id, create_index, delete_index)
WHERE ` + advancedSQL + ` AND NOT EXISTS (SELECT 1 FROM %s AS t WHERE t.id = d.id)
ON CONFLICT (kind, id) DO UPDATE SET delete_index = greatest(tombstones.delete_index, excluded.delete_index)`

// queueDeletes queues a batch's deletions in reverse fsm.Kinds order
// (rows before the rows they refer to). Both statements are idempotent.
func queueDeletes(pb *pgx.Batch, b *fsm.Batch) error {
	for _, k := range slices.Backward(fsm.Kinds) {
		ds := k.Deletions(b)
		if len(ds) == 0 {
			continue
		}
		if k.History() {
			return fmt.Errorf("delete %s: history is never deleted", k.Name)
		}
		n := len(ds)
		ids, creates, idxs := make([]string, n), make([]int64, n), make([]int64, n)
		for i, d := range ds {
			ids[i], creates[i], idxs[i] = d.ID, int64(d.CreateIndex), int64(d.Index)
		}
		pb.Queue(fmt.Sprintf(deleteSQL, k.Table), ids, idxs)
		pb.Queue(fmt.Sprintf(tombstoneSQL, k.Table), k.Table, ids, creates, idxs)
	}
	return nil
}

// GetJobs implements fsm.Store, in one query.
func (s *Store) GetJobs(ctx context.Context, ids []string) (map[string]*fsm.Job, error) {
	out := make(map[string]*fsm.Job, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT doc FROM jobs WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("get jobs: %w", interpretError(err))
	}
	var doc []byte
	_, err = pgx.ForEachRow(rows, []any{&doc}, func() error {
		j, err := decode[fsm.Job](doc)
		if err == nil {
			out[j.ID] = j
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get jobs: %w", interpretError(err))
	}
	return out, nil
}

// terminalStates is the SQL list of finished states; it matches the
// predicate of the jobs_tenant_finished partial index.
const terminalStates = `('succeeded', 'failed', 'canceled')`

// FinishedJobs implements fsm.Store along jobs_tenant_finished.
func (s *Store) FinishedJobs(ctx context.Context, p *fsm.FinishedJobsParams) ([]string, error) {
	if p.Limit <= 0 || p.Limit > maxPage {
		return nil, fmt.Errorf("finished jobs: limit %d out of range 1..%d", p.Limit, maxPage)
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT id FROM jobs
WHERE tenant_id = $1 AND state IN `+terminalStates+` AND (finished_at IS NULL OR finished_at < $2)
ORDER BY finished_at NULLS FIRST, id LIMIT $3`, p.TenantID, p.Before.UTC().Truncate(time.Microsecond), p.Limit)
	if err != nil {
		return nil, fmt.Errorf("finished jobs: %w", interpretError(err))
	}
	out := []string{}
	var id string
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error { out = append(out, id); return nil }); err != nil {
		return nil, fmt.Errorf("finished jobs: %w", interpretError(err))
	}
	return out, nil
}
