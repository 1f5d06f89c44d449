package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.up.sql
var migrationFiles embed.FS

// migrationName is the file name of a migration: a number (versions are
// unique and ascending; a gap is allowed, since numbers are reserved for
// changes developed side by side and Migrate applies every version the
// database lacks, whatever its place), a name, and ".up.sql". There are no down
// migrations: a schema change that must be undone is undone by a new one.
var migrationName = regexp.MustCompile(`^(\d{3,})_([a-z0-9_]+)\.up\.sql$`)

// lockClass is the first key of the advisory lock that serializes
// migrations; the second is a hash of the schema, so that installations in
// different schemas of one database do not wait for each other.
const lockClass = 0x46465254 // "FFRT"

// Migration is one embedded schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// MigrationStatus is a migration and when it was applied (zero: pending).
type MigrationStatus struct {
	Version   int
	Name      string
	AppliedAt time.Time
	// Unknown is set for a version the database has and this binary does
	// not: the database was migrated by a newer ffrtmp.
	Unknown bool
}

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var out []Migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %q is not named NNN_name.up.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		b, err := fs.ReadFile(migrationFiles, "migrations/"+e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		out = append(out, Migration{Version: v, Name: m[2], SQL: string(b)})
	}
	slices.SortFunc(out, func(a, b Migration) int { return a.Version - b.Version })
	for i, m := range out {
		if m.Version < 1 || (i > 0 && m.Version == out[i-1].Version) {
			return nil, fmt.Errorf("migration versions must be unique and start at 1; found %d twice or below 1", m.Version)
		}
	}
	return out, nil
}

const createVersionTable = `CREATE TABLE IF NOT EXISTS ffrtmp_migrations (
	version    integer PRIMARY KEY,
	name       text NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`

// Migrate applies the pending migrations in the schema the pool's
// search_path selects, each in its own transaction, and returns those it
// applied. It holds a PostgreSQL advisory lock while it works, so nodes
// starting together apply each migration exactly once: the others wait,
// then find nothing to do. A database with a version this binary does not
// know is refused with ErrSchemaTooNew.
func Migrate(ctx context.Context, pool *pgxpool.Pool) ([]Migration, error) {
	all, err := Migrations()
	if err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", interpretError(err))
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1, hashtext(current_schema()))`, lockClass); err != nil {
		return nil, fmt.Errorf("migrate: lock: %w", interpretError(err))
	}
	defer func() {
		// A connection that broke took its session lock with it.
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1, hashtext(current_schema()))`, lockClass)
	}()
	if _, err := conn.Exec(ctx, createVersionTable); err != nil {
		return nil, fmt.Errorf("migrate: create version table: %w", interpretError(err))
	}
	applied, err := appliedVersions(ctx, conn.Conn())
	if err != nil {
		return nil, err
	}
	if err := checkKnown(applied, all); err != nil {
		return nil, err
	}
	var done []Migration
	for _, m := range all {
		if _, ok := applied[m.Version]; ok {
			continue
		}
		err := pgx.BeginFunc(ctx, conn.Conn(), func(tx pgx.Tx) error {
			// No arguments: pgx sends the file with the simple protocol,
			// which runs every statement in it.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO ffrtmp_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
			return err
		})
		if err != nil {
			return done, fmt.Errorf("migrate: apply %03d_%s: %w", m.Version, m.Name, interpretError(err))
		}
		done = append(done, m)
	}
	return done, nil
}

// Status lists every migration this binary knows, applied or pending, and
// any version the database has that it does not know. It changes nothing:
// on a database that was never migrated, every migration is pending.
func Status(ctx context.Context, pool *pgxpool.Pool) ([]MigrationStatus, error) {
	all, err := Migrations()
	if err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("migration status: %w", interpretError(err))
	}
	defer conn.Release()
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('ffrtmp_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("migration status: %w", interpretError(err))
	}
	applied := map[int]appliedVersion{}
	if exists {
		if applied, err = appliedVersions(ctx, conn.Conn()); err != nil {
			return nil, err
		}
	}
	var out []MigrationStatus
	for _, m := range all {
		out = append(out, MigrationStatus{Version: m.Version, Name: m.Name, AppliedAt: applied[m.Version].at})
		delete(applied, m.Version)
	}
	for v, a := range applied {
		out = append(out, MigrationStatus{Version: v, Name: a.name, AppliedAt: a.at, Unknown: true})
	}
	slices.SortFunc(out, func(a, b MigrationStatus) int { return a.Version - b.Version })
	return out, nil
}

type appliedVersion struct {
	name string
	at   time.Time
}

func appliedVersions(ctx context.Context, conn *pgx.Conn) (map[int]appliedVersion, error) {
	rows, err := conn.Query(ctx, `SELECT version, name, applied_at FROM ffrtmp_migrations`)
	if err != nil {
		return nil, fmt.Errorf("read migration versions: %w", interpretError(err))
	}
	out := map[int]appliedVersion{}
	var v int
	var a appliedVersion
	_, err = pgx.ForEachRow(rows, []any{&v, &a.name, &a.at}, func() error {
		out[v] = a
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read migration versions: %w", interpretError(err))
	}
	return out, nil
}

func checkKnown(applied map[int]appliedVersion, all []Migration) error {
	for v := range applied {
		if !slices.ContainsFunc(all, func(m Migration) bool { return m.Version == v }) {
			return fmt.Errorf("%w: it has migration %d, which this binary does not know (it knows up to %d)", ErrSchemaTooNew, v, all[len(all)-1].Version)
		}
	}
	return nil
}
