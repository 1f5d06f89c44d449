// Package store opens the fsm.Store that a URL names: a bbolt file per node
// (bolt:///path/state.db) or one PostgreSQL database shared by the cluster
// (postgres://…).
package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
	"github.com/ffrtmp/ffrtmp/store/postgres"
)

// Environment variables read by URLFrom.
const (
	// EnvURL holds the store URL.
	EnvURL = "FFRTMP_STORE"
	// EnvURLFile names a file holding the store URL.
	EnvURLFile = "FFRTMP_STORE_FILE"
)

// ErrUnknownScheme is returned for a URL that names no known store.
var ErrUnknownScheme = errors.New("unknown store URL scheme (bolt:// or postgres://)")

// Options configure Open.
type Options struct {
	// MaxConns caps the PostgreSQL connection pool; zero keeps the URL's
	// pool_max_conns or pgx's default. Ignored for bolt.
	MaxConns int32
}

// Open opens the store at rawURL:
//
//   - bolt:///var/lib/ffrtmp/state.db or bolt://data/state.db (relative):
//     a bbolt file, created if missing, locked by this process;
//   - postgres://user@host:5432/db?sslmode=verify-full&search_path=ffrtmp
//     (or postgresql://): a pgx pool; pending migrations are applied under
//     an advisory lock before Open returns.
func Open(ctx context.Context, rawURL string, opts Options) (fsm.Store, error) {
	switch {
	case strings.HasPrefix(rawURL, "bolt://"):
		path, err := BoltPath(rawURL)
		if err != nil {
			return nil, err
		}
		return bolt.Open(path)
	case strings.HasPrefix(rawURL, "postgres://"), strings.HasPrefix(rawURL, "postgresql://"):
		st, err := postgres.Open(ctx, rawURL, postgres.Options{MaxConns: opts.MaxConns})
		if err != nil {
			return nil, err
		}
		return st, nil
	}
	return nil, fmt.Errorf("open store %q: %w", Redact(rawURL), ErrUnknownScheme)
}

// BoltPath returns the file path of a bolt:// URL: everything after the
// "bolt://", so bolt:///abs/state.db is absolute and bolt://state.db is
// relative to the working directory.
func BoltPath(rawURL string) (string, error) {
	path, ok := strings.CutPrefix(rawURL, "bolt://")
	if !ok || path == "" {
		return "", fmt.Errorf("store URL %q: want bolt:///path/to/state.db", rawURL)
	}
	return path, nil
}

// BoltURL returns the bolt:// URL of a state file path.
func BoltURL(path string) string { return "bolt://" + path }

// URLFrom returns the store URL from the first of: urlFlag (a --store
// flag), the file named by fileFlag (--store-file), $FFRTMP_STORE, the
// file named by $FFRTMP_STORE_FILE. It returns "" if none is set, for the
// caller's default. A file holds the URL alone (surrounding space is
// trimmed) and keeps a password out of the process list; so do
// PGPASSWORD and ~/.pgpass, which pgx reads as libpq does.
func URLFrom(urlFlag, fileFlag string, getenv func(string) string) (string, error) {
	if urlFlag != "" && fileFlag != "" {
		return "", errors.New("give --store or --store-file, not both")
	}
	switch {
	case urlFlag != "":
		return urlFlag, nil
	case fileFlag != "":
		return readURLFile(fileFlag)
	case getenv(EnvURL) != "":
		return getenv(EnvURL), nil
	case getenv(EnvURLFile) != "":
		return readURLFile(getenv(EnvURLFile))
	}
	return "", nil
}

func readURLFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read store URL: %w", err)
	}
	u := strings.TrimSpace(string(b))
	if u == "" {
		return "", fmt.Errorf("read store URL: %s is empty", path)
	}
	return u, nil
}

// Redact returns rawURL with any password replaced by "xxxxx", for logs
// and error messages.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	switch {
	case err != nil && strings.Contains(rawURL, "@"):
		return "(a URL that does not parse)"
	case err != nil || u.User == nil:
		if strings.Contains(rawURL, "password=") { // key=value form
			return "(a connection string with a password)"
		}
		return rawURL
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// OpenPostgres opens the PostgreSQL store at rawURL without applying its
// migrations, for the tools that apply or report them.
func OpenPostgres(ctx context.Context, rawURL string) (*postgres.Store, error) {
	if !strings.HasPrefix(rawURL, "postgres://") && !strings.HasPrefix(rawURL, "postgresql://") {
		return nil, fmt.Errorf("%q is not a postgres:// URL", Redact(rawURL))
	}
	return postgres.Open(ctx, rawURL, postgres.Options{SkipMigrations: true})
}
