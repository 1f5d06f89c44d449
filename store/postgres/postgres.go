package postgres

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	json "github.com/go-json-experiment/json/v1"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Errors returned by the store, beside fsm.ErrNotFound.
var (
	// ErrSchemaTooNew is returned by Open and Migrate when the database has
	// a migration this binary does not know: a newer ffrtmp migrated it.
	ErrSchemaTooNew = errors.New("database schema is newer than this binary")
	// ErrBehind is returned by Restore when the database has not reached
	// the snapshot's index: it is an older copy, or not the cluster's
	// database at all. It is fsm.ErrStoreBehind.
	ErrBehind = fsm.ErrStoreBehind
	// ErrNotSnapshot is returned by Restore for a stream that is not a
	// snapshot of this store (a cluster whose nodes use different stores).
	ErrNotSnapshot = errors.New("not a PostgreSQL store snapshot")
	// ErrLiveCluster is returned by Import when it would add objects to a
	// database a cluster already runs on.
	ErrLiveCluster = errors.New("a cluster already runs on this database")
	// ErrIndexed is returned by Import for an object with a Raft index:
	// imported objects predate the log.
	ErrIndexed = errors.New("imported objects must have create and modify index 0")
)

// Defaults.
const (
	// DefaultTimeout bounds a call whose context has no deadline.
	DefaultTimeout = 30 * time.Second
	pingTimeout    = 5 * time.Second
	maxPage        = 1000
)

// Store is a PostgreSQL-backed fsm.Store. Its methods are safe for
// concurrent use, by one node or by many nodes sharing the database.
type Store struct {
	pool    *pgxpool.Pool
	timeout time.Duration
	// applied is the highest index this store has committed, found
	// committed, or loaded: what Snapshot records.
	applied atomic.Uint64
	// lagging is set when the last Commit found its batch committed by
	// another node; the next one then checks before it sends its writes.
	lagging atomic.Bool
}

var _ fsm.Store = (*Store)(nil)

// Options configure Open.
type Options struct {
	// MaxConns caps the connection pool. Zero keeps the URL's
	// pool_max_conns, else pgx's default (the larger of 4 and the number
	// of CPUs).
	MaxConns int32
	// Timeout bounds each call whose context has no deadline (default
	// DefaultTimeout). The FSM commits with a background context and
	// retries on error, so this turns a hung connection into a retry.
	Timeout time.Duration
	// SkipMigrations opens the pool without applying or checking
	// migrations, for tools that inspect a database (migrate status, dry
	// runs). A node never sets it.
	SkipMigrations bool
}

// Open connects to the database at url (a postgres:// URL or a libpq
// key=value string; pgx reads PGPASSWORD and ~/.pgpass as libpq does) and
// applies pending migrations. The schema is the first of the search_path,
// which the URL may set (…?search_path=ffrtmp). Statements are prepared
// and cached per connection (pgx's default); behind a transaction-mode
// pooler such as PgBouncer add default_query_exec_mode=exec to the URL.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres store: %w", err)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store: %w", err)
	}
	s := &Store{pool: pool, timeout: opts.Timeout}
	if !opts.SkipMigrations {
		mctx, cancel := s.bound(ctx)
		defer cancel()
		if _, err := Migrate(mctx, pool); err != nil {
			pool.Close()
			return nil, fmt.Errorf("postgres store: %w", err)
		}
	}
	return s, nil
}

// Migrate applies pending migrations; see the package-level Migrate.
func (s *Store) Migrate(ctx context.Context) ([]Migration, error) { return Migrate(ctx, s.pool) }

// MigrationStatus lists the migrations and whether each is applied.
func (s *Store) MigrationStatus(ctx context.Context) ([]MigrationStatus, error) {
	return Status(ctx, s.pool)
}

// bound gives ctx the store's timeout unless it has a deadline already.
func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.timeout)
}

// noteApplied raises the index Snapshot records to at least i.
func (s *Store) noteApplied(i uint64) {
	for {
		cur := s.applied.Load()
		if i <= cur || s.applied.CompareAndSwap(cur, i) {
			return
		}
	}
}

// interpretError maps driver errors to the store's sentinels.
func interpretError(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fsm.ErrNotFound
	}
	return err
}

// activeStates is the SQL list of non-terminal states; it matches the
// predicate of the jobs_active partial index.
const activeStates = `('queued', 'assigned', 'running', 'paused')`

// Load implements fsm.Store. It reads in one repeatable-read transaction,
// so the index and the objects are one consistent state.
func (s *Store) Load(ctx context.Context) (*fsm.State, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	st := &fsm.State{}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(appliedIndexSQL).QueryRow(func(r pgx.Row) error {
			var i int64
			err := r.Scan(&i)
			st.Index = uint64(i)
			return err
		})
		// The audit chain's head: the one record with the highest seq.
		b.Queue(`SELECT doc FROM audit_records ORDER BY seq DESC LIMIT 1`).Query(func(rows pgx.Rows) error {
			var doc []byte
			_, err := pgx.ForEachRow(rows, []any{&doc}, func() error {
				r, err := decode[fsm.AuditRecord](doc)
				if err == nil {
					st.AuditHead = fsm.AuditHead{Seq: r.Seq, Hash: r.Hash}
				}
				return err
			})
			return err
		})
		for _, k := range fsm.Kinds {
			if k.History() {
				continue
			}
			sql := `SELECT doc FROM ` + k.Table
			if r := tables[k].resident; r != "" {
				sql += ` WHERE ` + r
			}
			queueDocs(b, sql+` ORDER BY id`, k, st)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return nil, fmt.Errorf("load: %w", interpretError(err))
	}
	s.noteApplied(st.Index)
	return st, nil
}

// queueDocs queues a query of one doc column and keeps every resident
// object of kind k it returns in st.
func queueDocs(b *pgx.Batch, sql string, k *fsm.Kind, st *fsm.State) {
	b.Queue(sql).Query(func(rows pgx.Rows) error {
		var doc []byte
		_, err := pgx.ForEachRow(rows, []any{&doc}, func() error {
			o, err := k.Decode(doc)
			if err != nil {
				return err
			}
			k.Keep(st, o)
			return nil
		})
		return err
	})
}

func decode[T any](doc []byte) (*T, error) {
	x := new(T)
	if err := json.Unmarshal(doc, x); err != nil {
		return nil, fmt.Errorf("decode %T: %w", x, err)
	}
	return x, nil
}

// The statements of a Commit that guard the shared applied index.
const (
	// appliedIndexSQL reads the applied index.
	appliedIndexSQL = `SELECT applied_index FROM ffrtmp_state`
	// advanceSQL advances the applied index to batch $1's if the batch is
	// past it, and then marks the transaction with the setting
	// ffrtmp.advanced until it ends.
	advanceSQL = `UPDATE ffrtmp_state SET applied_index = $1 WHERE applied_index < $1
RETURNING set_config('ffrtmp.advanced', 'on', true)`
	// advancedSQL is true in a transaction in which advanceSQL advanced
	// the applied index: every write of a Commit is conditional on it.
	advancedSQL = `current_setting('ffrtmp.advanced', true) = 'on'`
)

// Commit implements fsm.Store: one transaction, sent in one round trip
// (a pgx batch runs as one implicit transaction), that advances the
// shared applied index, upserts every object of the batch, each guarded
// by its modify index, and deletes its deleted objects, each only if the
// row is older than the deletion, leaving a tombstone.
//
// Every write is conditional on the first statement having advanced the
// applied index, so a batch at or below it (this node's replay after a
// restart, or a batch another node committed first) changes nothing.
// A node whose last Commit found its batch committed (a follower, as a
// rule) reads the applied index first, and encodes and sends its batch
// only if the database needs it: following the leader costs one read
// per batch.
//
// Commit is idempotent, so retrying after an error whose outcome is
// unknown (a connection lost during COMMIT) is safe.
func (s *Store) Commit(ctx context.Context, b *fsm.Batch) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := s.commit(ctx, b); err != nil {
		return fmt.Errorf("commit batch %d: %w", b.Index, interpretError(err))
	}
	s.noteApplied(b.Index)
	return nil
}

func (s *Store) commit(ctx context.Context, b *fsm.Batch) error {
	index := int64(b.Index)
	if s.lagging.Load() {
		var applied int64
		if err := s.pool.QueryRow(ctx, appliedIndexSQL).Scan(&applied); err != nil {
			return err
		}
		if applied >= index {
			return nil
		}
	}
	pb := &pgx.Batch{}
	advanced := false
	pb.Queue(advanceSQL, index).Exec(func(tag pgconn.CommandTag) error {
		advanced = tag.RowsAffected() > 0
		return nil
	})
	queueUpserts(pb, b, onConflictUpdate)
	if err := queueDeletes(pb, b); err != nil {
		return err
	}
	if err := s.pool.SendBatch(ctx, pb).Close(); err != nil {
		return err
	}
	s.lagging.Store(!advanced)
	return nil
}

// GetJob implements fsm.Store.
func (s *Store) GetJob(ctx context.Context, id string) (*fsm.Job, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var doc []byte
	if err := s.pool.QueryRow(ctx, `SELECT doc FROM jobs WHERE id = $1`, id).Scan(&doc); err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, interpretError(err))
	}
	return decode[fsm.Job](doc)
}

// JobsExist implements fsm.Store, in one query: a job's row, or its
// tombstone if it has none.
func (s *Store) JobsExist(ctx context.Context, ids []string) (map[string]uint64, error) {
	out := make(map[string]uint64)
	if len(ids) == 0 {
		return out, nil
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT id, create_index FROM jobs WHERE id = ANY($1)
UNION ALL
SELECT id, create_index FROM tombstones t WHERE kind = 'jobs' AND id = ANY($1)
	AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = t.id)`, ids)
	if err != nil {
		return nil, fmt.Errorf("jobs exist: %w", interpretError(err))
	}
	var (
		id     string
		create int64
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &create}, func() error {
		out[id] = uint64(create)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("jobs exist: %w", interpretError(err))
	}
	return out, nil
}

// ListJobs implements fsm.Store: newest first by ID from the cursor, along
// the index that matches the filters (jobs_tenant_state_id for one tenant
// and one state, jobs_tenant_id for one tenant, jobs_state_id for one
// state, else the primary key).
func (s *Store) ListJobs(ctx context.Context, p *fsm.ListJobsParams) (*fsm.JobPage, error) {
	if p.Limit <= 0 || p.Limit > maxPage {
		return nil, fmt.Errorf("list jobs: limit %d out of range 1..%d", p.Limit, maxPage)
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var q conds
	add := q.add
	if p.TenantID != "" {
		add("tenant_id = $?", p.TenantID)
	}
	switch len(p.States) {
	case 0:
	case 1:
		// Equality, not = ANY: the planner then always picks the
		// (…, state, id) index, even for a generic plan.
		add("state = $?", string(p.States[0]))
	default:
		states := make([]string, len(p.States))
		for i, st := range p.States {
			states[i] = string(st)
		}
		add("state = ANY($?)", states)
	}
	if p.Queue != "" {
		add("queue = $?", string(p.Queue))
	}
	if p.After != "" {
		add("id < $?", p.After)
	}
	jobs, more, err := queryPage[fsm.Job](ctx, s.pool, "SELECT doc FROM jobs", q, "id DESC", p.Limit)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	page := &fsm.JobPage{Jobs: jobs}
	if more {
		page.Next = jobs[p.Limit-1].ID
	}
	return page, nil
}

// Kind is the store kind this package writes into snapshot headers.
const Kind = "postgres"

// snapshotFormat names the snapshot payload.
const snapshotFormat = "ffrtmp-postgres-snapshot"

// snapshotHeader is the whole payload: the database is the state. Before
// the snapshot envelope (fsm.WriteSnapshot) it was the whole stream, and
// Restore still reads such a stream from a node or a file of that time.
type snapshotHeader struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	Index   uint64 `json:"index"`
}

type snapshot struct{ index uint64 }

func (s *snapshot) WriteTo(w io.Writer) (int64, error) {
	b, err := json.Marshal(snapshotHeader{Format: snapshotFormat, Version: 1, Index: s.index})
	if err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	b = append(b, '\n')
	return fsm.WriteSnapshot(w, fsm.SnapshotHeader{Kind: Kind, Index: s.index, Length: int64(len(b))}, bytes.NewReader(b))
}

func (s *snapshot) Release() {}

// Snapshot implements fsm.Store. It records the index this node has
// committed, without touching the database; see the package doc.
func (s *Store) Snapshot(ctx context.Context) (fsm.StoreSnapshot, error) {
	return &snapshot{index: s.applied.Load()}, nil
}

// Restore implements fsm.Store for a shared database: it checks the
// snapshot as CheckSnapshot does and changes nothing, because the
// database already holds that state or a later one; the FSM rebuilds its
// memory from it with Load. See the package doc for why this is right.
func (s *Store) Restore(ctx context.Context, r io.Reader) error {
	if _, err := s.CheckSnapshot(ctx, r); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// CheckSnapshot implements fsm.Store: the stream must be a whole,
// undamaged snapshot of a PostgreSQL store, and the database must have
// reached its index (ErrBehind otherwise).
func (s *Store) CheckSnapshot(ctx context.Context, r io.Reader) (*fsm.SnapshotHeader, error) {
	const maxPayload = 64 << 10
	br := bufio.NewReader(r)
	var payload io.Reader = br
	var env *fsm.SnapshotHeader
	if fsm.IsSnapshotEnvelope(br) {
		var err error
		if env, payload, err = fsm.ReadSnapshot(br, Kind); err != nil {
			return nil, err
		}
		if env.Length > maxPayload {
			return nil, fsm.BadSnapshotf("a PostgreSQL snapshot payload of %d bytes; it is at most %d", env.Length, maxPayload)
		}
	}
	b, err := io.ReadAll(io.LimitReader(payload, maxPayload+1))
	if err != nil {
		return nil, err
	}
	var h snapshotHeader
	if err := json.Unmarshal(b, &h); err != nil || h.Format != snapshotFormat {
		return nil, fmt.Errorf("%w: %w (every node of a cluster must use the same store)", fsm.ErrBadSnapshot, ErrNotSnapshot)
	}
	if h.Version != 1 {
		return nil, fsm.BadSnapshotf("PostgreSQL snapshot version %d is not supported", h.Version)
	}
	if env == nil {
		env = &fsm.SnapshotHeader{Kind: Kind, Index: h.Index, Length: int64(len(b))}
	} else if env.Index != h.Index {
		return nil, fsm.BadSnapshotf("the header says index %d, the payload %d", env.Index, h.Index)
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var idx int64
	if err := s.pool.QueryRow(ctx, `SELECT applied_index FROM ffrtmp_state`).Scan(&idx); err != nil {
		return nil, fmt.Errorf("check snapshot: %w", interpretError(err))
	}
	if uint64(idx) < h.Index {
		return nil, fmt.Errorf("%w: the database is at index %d, the snapshot at %d", ErrBehind, idx, h.Index)
	}
	return env, nil
}

// Ping implements fsm.Store: it runs an empty statement on a pooled
// connection, within 5s unless ctx says otherwise.
func (s *Store) Ping(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, min(pingTimeout, s.timeout))
		defer cancel()
	}
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping postgres: %w", err)
	}
	return nil
}

// Close implements fsm.Store. It waits for connections in use to be
// returned, then closes them all.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// conds are the conditions of a query's WHERE clause, all to be true, and
// their arguments.
type conds struct {
	where []string
	args  []any
}

// add adds a condition on one argument, v, written "$?" in cond.
func (c *conds) add(cond string, v any) {
	c.args = append(c.args, v)
	c.where = append(c.where, strings.ReplaceAll(cond, "$?", "$"+strconv.Itoa(len(c.args))))
}

// queryPage runs sql (a SELECT of one doc column) with the conditions q,
// in order, and decodes at most limit rows; more reports whether another
// row followed them.
func queryPage[T any](ctx context.Context, pool *pgxpool.Pool, sql string, q conds, order string, limit int) (out []*T, more bool, err error) {
	if len(q.where) > 0 {
		sql += " WHERE " + strings.Join(q.where, " AND ")
	}
	args := append(q.args, limit+1)
	sql += " ORDER BY " + order + " LIMIT $" + strconv.Itoa(len(args))
	rows, err := pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, false, interpretError(err)
	}
	out = make([]*T, 0, min(limit, 100))
	var doc []byte
	_, err = pgx.ForEachRow(rows, []any{&doc}, func() error {
		if len(out) == limit {
			more = true
			return nil
		}
		x, err := decode[T](doc)
		if err != nil {
			return err
		}
		out = append(out, x)
		return nil
	})
	if err != nil {
		return nil, false, interpretError(err)
	}
	return out, more, nil
}
