package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Import writes objects into the database without going through Raft, for
// `ffrtmp migrate`; Commit is the wrong tool for that, for three reasons.
// Imported objects predate the new cluster's log, whose indexes start at
// 1: they must carry create and modify index 0, below every entry's, and
// the applied index must stay where it is, or the new cluster would skip
// its first entries as already applied. And a second run must change
// nothing, even for an object the cluster has changed since: Import only
// inserts (ON CONFLICT DO NOTHING), never updates.

// Count is how many objects of one table a batch has, and how many of
// those the database has (Present) or had before Import (Existing).
type Count struct {
	Total    int
	Existing int
}

// Counts are a batch's Count per table, by table name (one of Tables):
// a new kind needs nothing here. The zero value is empty.
type Counts struct{ tables map[string]*Count }

// Table returns the count of table name, one of Tables.
func (c *Counts) Table(name string) *Count {
	if !slices.Contains(Tables, name) {
		panic("postgres: unknown table " + name)
	}
	if c.tables[name] == nil {
		if c.tables == nil {
			c.tables = map[string]*Count{}
		}
		c.tables[name] = &Count{}
	}
	return c.tables[name]
}

// Tables lists the tables in the order Import writes them: those of
// fsm.Kinds.
var Tables = tableNames()

func tableNames() []string {
	out := make([]string, len(fsm.Kinds))
	for i, k := range fsm.Kinds {
		out[i] = k.Table
	}
	return out
}

func totals(b *fsm.Batch) *Counts {
	c := &Counts{}
	for _, k := range fsm.Kinds {
		c.Table(k.Table).Total = len(k.Objects(b))
	}
	return c
}

// ImportOptions configure Import.
type ImportOptions struct {
	// DryRun runs the whole import and rolls it back: the counts, and any
	// refusal, are those a real run would give, and nothing is written.
	DryRun bool
}

// errDryRun rolls back a dry run's transaction.
var errDryRun = errors.New("dry run")

// Import inserts the objects of the batches that the database does not
// have (by ID), all in one transaction, so that an import is all or
// nothing, and leaves the ones it has untouched. Every object must have
// create and modify index 0 and every batch's Index must be 0; see above.
// If a cluster has already committed to the database, adding objects
// behind its nodes' memory would make them diverge, so Import then
// refuses with ErrLiveCluster unless there is nothing to add. It is
// bounded by ctx alone: a large import can outlast the store's timeout.
func (s *Store) Import(ctx context.Context, batches []*fsm.Batch, opts ImportOptions) (*Counts, error) {
	c := &Counts{}
	for _, b := range batches {
		if err := checkPrehistoric(b); err != nil {
			return nil, err
		}
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var applied int64
		// FOR UPDATE: a node's Commit waits for the import, and the other
		// way round.
		if err := tx.QueryRow(ctx, `SELECT applied_index FROM ffrtmp_state FOR UPDATE`).Scan(&applied); err != nil {
			return err
		}
		inserted := 0
		for _, b := range batches {
			pb := &pgx.Batch{}
			queueUpserts(pb, b, onConflictSkip)
			br := tx.SendBatch(ctx, pb)
			for _, w := range writes(b) {
				if w.n == 0 {
					continue
				}
				tag, err := br.Exec()
				if err != nil {
					br.Close()
					return fmt.Errorf("%s: %w", w.kind.Table, err)
				}
				n := int(tag.RowsAffected())
				cnt := c.Table(w.kind.Table)
				cnt.Total += w.n
				cnt.Existing += w.n - n
				inserted += n
			}
			if err := br.Close(); err != nil {
				return err
			}
		}
		if applied > 0 && inserted > 0 {
			return LiveClusterError(uint64(applied))
		}
		if opts.DryRun {
			return errDryRun
		}
		return nil
	})
	if errors.Is(err, errDryRun) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("import: %w", interpretError(err))
	}
	return c, nil
}

// LiveClusterError is Import's refusal to add objects to a database on
// which a cluster has committed up to applied, for a dry run to predict.
func LiveClusterError(applied uint64) error {
	return fmt.Errorf("%w (applied index %d): import into a database before starting the cluster on it", ErrLiveCluster, applied)
}

// Present counts, per table, the objects of b that the database has by
// ID, in Existing. It changes nothing.
func (s *Store) Present(ctx context.Context, b *fsm.Batch) (*Counts, error) {
	c := totals(b)
	ctx, cancel := s.bound(ctx)
	defer cancel()
	pb := &pgx.Batch{}
	for _, w := range writes(b) {
		if w.n == 0 {
			continue
		}
		cnt := c.Table(w.kind.Table)
		pb.Queue(`SELECT count(*) FROM `+w.kind.Table+` WHERE id = ANY($1)`, w.args[0]).QueryRow(func(r pgx.Row) error {
			return r.Scan(&cnt.Existing)
		})
	}
	if err := s.pool.SendBatch(ctx, pb).Close(); err != nil {
		return nil, fmt.Errorf("count present objects: %w", interpretError(err))
	}
	return c, nil
}

// AppliedIndex returns the index of the last batch any node committed; 0
// means no cluster has run on the database yet.
func (s *Store) AppliedIndex(ctx context.Context) (uint64, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var i int64
	if err := s.pool.QueryRow(ctx, `SELECT applied_index FROM ffrtmp_state`).Scan(&i); err != nil {
		return 0, fmt.Errorf("read applied index: %w", interpretError(err))
	}
	return uint64(i), nil
}

func checkPrehistoric(b *fsm.Batch) error {
	bad := b.Index != 0
	for _, k := range fsm.Kinds {
		for _, o := range k.Objects(b) {
			bad = bad || o.ObjectMeta() != fsm.Meta{}
		}
	}
	if bad {
		return fmt.Errorf("import: %w", ErrIndexed)
	}
	return nil
}
