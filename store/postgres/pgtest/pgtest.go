// Package pgtest gives each test its own schema in the PostgreSQL database
// named by FFRTMP_TEST_POSTGRES_URL, dropped when the test ends (as river's
// riverdbtest does), so that tests run in parallel on one database.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ffrtmp/ffrtmp/store/postgres"
)

// EnvURL names the environment variable holding the test database URL,
// e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable.
const EnvURL = "FFRTMP_TEST_POSTGRES_URL"

// BaseURL returns the test database URL, or skips the test if it is not
// set. CI sets it, so there an unreachable database fails the tests that
// use it rather than skipping them.
func BaseURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		t.Skipf("PostgreSQL tests skipped: set %s (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run them", EnvURL)
	}
	return u
}

// URL creates a new, empty schema and returns the test database URL with
// that schema as its search_path. The schema is dropped when the test ends.
func URL(t testing.TB) string {
	t.Helper()
	base := BaseURL(t)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	schema := "ffrtmp_test_" + hex.EncodeToString(b[:])
	Exec(t, base, "CREATE SCHEMA "+schema)
	t.Cleanup(func() { Exec(t, base, "DROP SCHEMA "+schema+" CASCADE") })
	return WithSearchPath(t, base, schema)
}

// WithSearchPath returns dbURL with search_path set to schema.
func WithSearchPath(t testing.TB, dbURL, schema string) string {
	t.Helper()
	if !strings.Contains(dbURL, "://") { // a key=value connection string
		return dbURL + " search_path=" + schema
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("parse %s: %v", EnvURL, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Exec runs statements on a new connection to dbURL, failing the test on
// any error (an unreachable database included).
func Exec(t testing.TB, dbURL, sql string, args ...any) {
	t.Helper()
	conn := Connect(t, dbURL)
	defer conn.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

// Connect opens a single connection to dbURL, closed when the test ends.
func Connect(t testing.TB, dbURL string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect to the test database (%s): %v", EnvURL, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Open opens a store on a new schema and closes it when the test ends.
func Open(t testing.TB, opts postgres.Options) *postgres.Store {
	t.Helper()
	return OpenURL(t, URL(t), opts)
}

// OpenURL opens a store at dbURL (for example a URL from URL, to open more
// stores on one schema, as the nodes of a cluster do) and closes it when
// the test ends.
func OpenURL(t testing.TB, dbURL string, opts postgres.Options) *postgres.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := postgres.Open(ctx, dbURL, opts)
	if err != nil {
		t.Fatalf("open postgres store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
