package postgres

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// A table's rows are written with one multi-row statement: each column is
// sent as an array and unnest turns the arrays back into rows. The SQL is
// the same whatever the batch size, so it is prepared once per connection,
// and a batch of 500 jobs costs one statement instead of 500 (see
// BenchmarkCommit).

// column is a column and the array type its values are sent as.
type column struct{ name, array string }

type table struct {
	name string
	cols []column
}

var (
	tenantsTable = table{"tenants", []column{
		{"id", "text[]"}, {"name", "text[]"}, {"created_at", "timestamptz[]"},
		{"create_index", "bigint[]"}, {"modify_index", "bigint[]"}, {"doc", "jsonb[]"},
	}}
	keysTable = table{"api_keys", []column{
		{"id", "text[]"}, {"tenant_id", "text[]"}, {"user_name", "text[]"}, {"role", "text[]"},
		{"revoked", "boolean[]"}, {"created_at", "timestamptz[]"}, {"expires_at", "timestamptz[]"},
		{"create_index", "bigint[]"}, {"modify_index", "bigint[]"}, {"doc", "jsonb[]"},
	}}
	workersTable = table{"workers", []column{
		{"id", "text[]"}, {"tenant_id", "text[]"}, {"name", "text[]"}, {"state", "text[]"},
		{"registered_at", "timestamptz[]"}, {"create_index", "bigint[]"}, {"modify_index", "bigint[]"}, {"doc", "jsonb[]"},
	}}
	jobsTable = table{"jobs", []column{
		{"id", "text[]"}, {"tenant_id", "text[]"}, {"state", "text[]"}, {"queue", "text[]"}, {"priority", "text[]"},
		{"attempt", "integer[]"}, {"retries", "integer[]"}, {"worker_id", "text[]"},
		{"submitted_at", "timestamptz[]"}, {"finished_at", "timestamptz[]"},
		{"create_index", "bigint[]"}, {"modify_index", "bigint[]"}, {"doc", "jsonb[]"},
	}}
)

// conflict says what a write does with a row that exists.
type conflict int

const (
	// onConflictUpdate replaces the row if the new version is newer: the
	// modify index guard that makes Commit idempotent.
	onConflictUpdate conflict = iota
	// onConflictSkip keeps the row: Import never overwrites.
	onConflictSkip
)

// insert returns the table's multi-row INSERT.
func (t table) insert(c conflict) string {
	var names, params, sets []string
	for i, col := range t.cols {
		names = append(names, col.name)
		params = append(params, fmt.Sprintf("$%d::%s", i+1, col.array))
		if col.name != "id" {
			sets = append(sets, col.name+" = excluded."+col.name)
		}
	}
	sql := fmt.Sprintf("INSERT INTO %s AS t (%s) SELECT * FROM unnest(%s) ON CONFLICT (id) ",
		t.name, strings.Join(names, ", "), strings.Join(params, ", "))
	if c == onConflictSkip {
		return sql + "DO NOTHING"
	}
	return sql + "DO UPDATE SET " + strings.Join(sets, ", ") + " WHERE excluded.modify_index > t.modify_index"
}

var (
	insertSQL = map[conflict]map[string]string{}
)

func init() {
	for _, c := range []conflict{onConflictUpdate, onConflictSkip} {
		insertSQL[c] = map[string]string{}
		for _, t := range []table{tenantsTable, keysTable, workersTable, jobsTable} {
			insertSQL[c][t.name] = t.insert(c)
		}
	}
}

// upserts queues one statement per non-empty table of b. Tenants go first:
// the other tables refer to them.
func upserts(b *fsm.Batch, c conflict) *pgx.Batch {
	pb := &pgx.Batch{}
	for _, w := range writes(b) {
		if w.n > 0 {
			pb.Queue(insertSQL[c][w.table], w.args...)
		}
	}
	return pb
}

// tableWrite is the column arrays of one table's rows.
type tableWrite struct {
	table string
	n     int
	args  []any
}

// writes returns the column arrays of every table, in foreign key order.
func writes(b *fsm.Batch) []tableWrite {
	return []tableWrite{tenantRows(b.Tenants), keyRows(b.Keys), workerRows(b.Workers), jobRows(b.Jobs)}
}

func doc(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Every field of the fsm types encodes; a failure is a bug.
		panic(fmt.Sprintf("postgres store: encode %T: %v", v, err))
	}
	return string(b)
}

// optTime is NULL for the zero time.
func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// optText is NULL for "".
func optText(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func tenantRows(ts []*fsm.Tenant) tableWrite {
	n := len(ts)
	id, name, docs := make([]string, n), make([]string, n), make([]string, n)
	created := make([]time.Time, n)
	ci, mi := make([]int64, n), make([]int64, n)
	for i, t := range ts {
		id[i], name[i], created[i] = t.ID, t.Name, t.CreatedAt
		ci[i], mi[i], docs[i] = int64(t.CreateIndex), int64(t.ModifyIndex), doc(t)
	}
	return tableWrite{"tenants", n, []any{id, name, created, ci, mi, docs}}
}

func keyRows(ks []*fsm.APIKey) tableWrite {
	n := len(ks)
	id, tenant, user, role, docs := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	revoked := make([]bool, n)
	created, expires := make([]time.Time, n), make([]*time.Time, n)
	ci, mi := make([]int64, n), make([]int64, n)
	for i, k := range ks {
		id[i], tenant[i], user[i], role[i] = k.ID, k.TenantID, k.User, string(k.Role)
		revoked[i], created[i], expires[i] = k.Revoked, k.CreatedAt, optTime(k.ExpiresAt)
		ci[i], mi[i], docs[i] = int64(k.CreateIndex), int64(k.ModifyIndex), doc(k)
	}
	return tableWrite{"api_keys", n, []any{id, tenant, user, role, revoked, created, expires, ci, mi, docs}}
}

func workerRows(ws []*fsm.Worker) tableWrite {
	n := len(ws)
	id, name, state, docs := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	tenant := make([]*string, n)
	registered := make([]time.Time, n)
	ci, mi := make([]int64, n), make([]int64, n)
	for i, w := range ws {
		id[i], tenant[i], name[i], state[i] = w.ID, optText(w.TenantID), w.Name, string(w.State)
		registered[i], ci[i], mi[i], docs[i] = w.RegisteredAt, int64(w.CreateIndex), int64(w.ModifyIndex), doc(w)
	}
	return tableWrite{"workers", n, []any{id, tenant, name, state, registered, ci, mi, docs}}
}

func jobRows(js []*fsm.Job) tableWrite {
	n := len(js)
	id, tenant, state, queue, prio, docs := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	attempt, retries := make([]int32, n), make([]int32, n)
	worker := make([]*string, n)
	submitted, finished := make([]time.Time, n), make([]*time.Time, n)
	ci, mi := make([]int64, n), make([]int64, n)
	for i, j := range js {
		id[i], tenant[i], state[i], queue[i], prio[i] = j.ID, j.TenantID, string(j.State), string(j.Spec.Queue), string(j.Spec.Priority)
		attempt[i], retries[i], worker[i] = int32(j.Attempt), int32(j.Retries), optText(j.WorkerID)
		submitted[i], finished[i] = j.SubmittedAt, optTime(j.FinishedAt)
		ci[i], mi[i], docs[i] = int64(j.CreateIndex), int64(j.ModifyIndex), doc(j)
	}
	return tableWrite{"jobs", n, []any{id, tenant, state, queue, prio, attempt, retries, worker, submitted, finished, ci, mi, docs}}
}
