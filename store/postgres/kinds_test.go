package postgres_test

import (
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/postgres"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

// TestEveryKindHasTable: after the migrations, every registered kind has
// its table with every column Commit writes, and Import counts it, so
// registering a kind without its migration fails here rather than at a
// node's first commit.
func TestEveryKindHasTable(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	pgtest.OpenURL(t, url, postgres.Options{})
	conn := pgtest.Connect(t, url)
	for _, k := range fsm.Kinds {
		for _, col := range postgres.TableColumns(k) {
			var n int
			err := conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns
				WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2`, k.Table, col).Scan(&n)
			if err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Errorf("kind %s: table %s has no column %s", k.Name, k.Table, col)
			}
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("kind %s: Counts.Table(%q) panics: %v", k.Name, k.Table, p)
				}
			}()
			(&postgres.Counts{}).Table(k.Table)
		}()
	}
}
