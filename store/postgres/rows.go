package postgres

import (
	"fmt"
	"strings"
	"time"

	json "github.com/go-json-experiment/json/v1"
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

// table is how the objects of one kind are stored: in the kind's Table,
// with the columns every kind has (id, create_index, modify_index and doc,
// the object's JSON, which is what the store reads back) and, between id
// and create_index, the typed columns its queries filter and sort on. A
// kind without typed columns needs no entry in tables.
type table struct {
	// cols are the typed columns.
	cols []column
	// rows returns one array per typed column for objs.
	rows func(objs []fsm.Object) []any
	// resident is the SQL condition that selects the rows Load reads, for
	// a kind of which the FSM keeps only some objects in memory; Load
	// also checks fsm.Kind.Resident, so it is an optimization.
	resident string
}

// tables are the typed columns of the kinds that have some.
var tables = map[*fsm.Kind]table{
	fsm.TenantKind: {[]column{{"name", "text[]"}, {"created_at", "timestamptz[]"}}, tenantRows, ""},
	fsm.APIKeyKind: {[]column{
		{"tenant_id", "text[]"}, {"user_name", "text[]"}, {"role", "text[]"},
		{"revoked", "boolean[]"}, {"created_at", "timestamptz[]"}, {"expires_at", "timestamptz[]"},
		{"user_id", "text[]"}, {"last_used_at", "timestamptz[]"},
	}, keyRows, ""},
	fsm.UserKind: {[]column{
		{"tenant_id", "text[]"}, {"email", "text[]"}, {"role", "text[]"}, {"disabled", "boolean[]"}, {"created_at", "timestamptz[]"},
	}, userRows, ""},
	fsm.InvitationKind: {[]column{
		{"tenant_id", "text[]"}, {"email", "text[]"}, {"role", "text[]"}, {"revoked", "boolean[]"},
		{"created_at", "timestamptz[]"}, {"expires_at", "timestamptz[]"}, {"accepted_at", "timestamptz[]"}, {"user_id", "text[]"},
	}, invitationRows, ""},
	fsm.WorkerTokenKind: {[]column{
		{"tenant_id", "text[]"}, {"name", "text[]"}, {"revoked", "boolean[]"}, {"created_at", "timestamptz[]"},
	}, workerTokenRows, ""},
	fsm.WorkerKind: {[]column{
		{"tenant_id", "text[]"}, {"name", "text[]"}, {"state", "text[]"}, {"registered_at", "timestamptz[]"},
	}, workerRows, ""},
	fsm.JobKind: {[]column{
		{"tenant_id", "text[]"}, {"state", "text[]"}, {"queue", "text[]"}, {"priority", "text[]"},
		{"attempt", "integer[]"}, {"retries", "integer[]"}, {"worker_id", "text[]"},
		{"submitted_at", "timestamptz[]"}, {"finished_at", "timestamptz[]"},
	}, jobRows, "state IN " + activeStates},
	fsm.AuditKind: {[]column{
		{"seq", "bigint[]"}, {"tenant_id", "text[]"}, {"actor_user", "text[]"}, {"actor_key", "text[]"},
		{"action", "text[]"}, {"at", "timestamptz[]"},
	}, auditRows, ""},
}

// columns returns every column of kind k's table, in the order of
// writes' arrays.
func columns(k *fsm.Kind) []column {
	cols := []column{{"id", "text[]"}}
	cols = append(cols, tables[k].cols...)
	return append(cols, column{"create_index", "bigint[]"}, column{"modify_index", "bigint[]"}, column{"doc", "jsonb[]"})
}

// conflict says what a write does with a row that exists.
type conflict int

const (
	// onConflictUpdate replaces the row if the new version is newer: the
	// modify index guard that makes Commit idempotent.
	onConflictUpdate conflict = iota
	// onConflictSkip keeps the row: Import never overwrites.
	onConflictSkip
)

// insert returns the multi-row INSERT of kind k's table. A Commit's
// version (onConflictUpdate) writes only in a transaction that advanced
// the applied index (see Commit).
func insert(k *fsm.Kind, c conflict) string {
	var names, params, sets []string
	for i, col := range columns(k) {
		names = append(names, col.name)
		params = append(params, fmt.Sprintf("$%d::%s", i+1, col.array))
		if col.name != "id" {
			sets = append(sets, col.name+" = excluded."+col.name)
		}
	}
	sql := fmt.Sprintf("INSERT INTO %s AS t (%s) SELECT * FROM unnest(%s) ",
		k.Table, strings.Join(names, ", "), strings.Join(params, ", "))
	if c == onConflictSkip {
		return sql + "ON CONFLICT (id) DO NOTHING"
	}
	return sql + "WHERE " + advancedSQL + " ON CONFLICT (id) DO UPDATE SET " +
		strings.Join(sets, ", ") + " WHERE excluded.modify_index > t.modify_index"
}

var (
	insertSQL = map[conflict]map[*fsm.Kind]string{}
)

func init() {
	for _, c := range []conflict{onConflictUpdate, onConflictSkip} {
		insertSQL[c] = map[*fsm.Kind]string{}
		for _, k := range fsm.Kinds {
			insertSQL[c][k] = insert(k, c)
		}
	}
}

// queueUpserts queues one statement per kind that b has objects of, in
// fsm.Kinds order: tenants first, the other tables refer to them.
func queueUpserts(pb *pgx.Batch, b *fsm.Batch, c conflict) {
	for _, w := range writes(b) {
		if w.n > 0 {
			pb.Queue(insertSQL[c][w.kind], w.args...)
		}
	}
}

// tableWrite is the column arrays of one kind's rows.
type tableWrite struct {
	kind *fsm.Kind
	n    int
	args []any
}

// writes returns the column arrays of every kind, in fsm.Kinds order.
func writes(b *fsm.Batch) []tableWrite {
	out := make([]tableWrite, 0, len(fsm.Kinds))
	for _, k := range fsm.Kinds {
		objs := k.Objects(b)
		n := len(objs)
		id, docs, ci, mi := make([]string, n), make([]string, n), make([]int64, n), make([]int64, n)
		for i, o := range objs {
			m := o.ObjectMeta()
			id[i], docs[i], ci[i], mi[i] = o.ObjectID(), doc(o), int64(m.CreateIndex), int64(m.ModifyIndex)
		}
		args := []any{id}
		if t, ok := tables[k]; ok {
			args = append(args, t.rows(objs)...)
		}
		out = append(out, tableWrite{k, n, append(args, ci, mi, docs)})
	}
	return out
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

// objectsOf converts objs, all of type T, back to their type.
func objectsOf[T fsm.Object](objs []fsm.Object) []T {
	out := make([]T, len(objs))
	for i, o := range objs {
		out[i] = o.(T)
	}
	return out
}

func tenantRows(objs []fsm.Object) []any {
	ts := objectsOf[*fsm.Tenant](objs)
	n := len(ts)
	name, created := make([]string, n), make([]time.Time, n)
	for i, t := range ts {
		name[i], created[i] = t.Name, t.CreatedAt
	}
	return []any{name, created}
}

func keyRows(objs []fsm.Object) []any {
	ks := objectsOf[*fsm.APIKey](objs)
	n := len(ks)
	tenant, user, role := make([]string, n), make([]string, n), make([]string, n)
	revoked := make([]bool, n)
	created, expires, used := make([]time.Time, n), make([]*time.Time, n), make([]*time.Time, n)
	userID := make([]*string, n)
	for i, k := range ks {
		tenant[i], user[i], role[i] = k.TenantID, k.User, string(k.Role)
		revoked[i], created[i], expires[i] = k.Revoked, k.CreatedAt, optTime(k.ExpiresAt)
		userID[i], used[i] = optText(k.UserID), optTime(k.LastUsedAt)
	}
	return []any{tenant, user, role, revoked, created, expires, userID, used}
}

func userRows(objs []fsm.Object) []any {
	us := objectsOf[*fsm.User](objs)
	n := len(us)
	tenant, email, role := make([]string, n), make([]string, n), make([]string, n)
	disabled, created := make([]bool, n), make([]time.Time, n)
	for i, u := range us {
		tenant[i], email[i], role[i], disabled[i], created[i] = u.TenantID, u.Email, string(u.Role), u.Disabled, u.CreatedAt
	}
	return []any{tenant, email, role, disabled, created}
}

func invitationRows(objs []fsm.Object) []any {
	is := objectsOf[*fsm.Invitation](objs)
	n := len(is)
	tenant, email, role := make([]string, n), make([]string, n), make([]string, n)
	revoked := make([]bool, n)
	created, expires, accepted := make([]time.Time, n), make([]time.Time, n), make([]*time.Time, n)
	userID := make([]*string, n)
	for i, v := range is {
		tenant[i], email[i], role[i], revoked[i] = v.TenantID, v.Email, string(v.Role), v.Revoked
		created[i], expires[i], accepted[i], userID[i] = v.CreatedAt, v.ExpiresAt, optTime(v.AcceptedAt), optText(v.UserID)
	}
	return []any{tenant, email, role, revoked, created, expires, accepted, userID}
}

func workerTokenRows(objs []fsm.Object) []any {
	ts := objectsOf[*fsm.WorkerToken](objs)
	n := len(ts)
	tenant, name := make([]*string, n), make([]string, n)
	revoked, created := make([]bool, n), make([]time.Time, n)
	for i, t := range ts {
		tenant[i], name[i], revoked[i], created[i] = optText(t.TenantID), t.Name, t.Revoked, t.CreatedAt
	}
	return []any{tenant, name, revoked, created}
}

func workerRows(objs []fsm.Object) []any {
	ws := objectsOf[*fsm.Worker](objs)
	n := len(ws)
	name, state := make([]string, n), make([]string, n)
	tenant := make([]*string, n)
	registered := make([]time.Time, n)
	for i, w := range ws {
		tenant[i], name[i], state[i], registered[i] = optText(w.TenantID), w.Name, string(w.State), w.RegisteredAt
	}
	return []any{tenant, name, state, registered}
}

func jobRows(objs []fsm.Object) []any {
	js := objectsOf[*fsm.Job](objs)
	n := len(js)
	tenant, state, queue, prio := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	attempt, retries := make([]int32, n), make([]int32, n)
	worker := make([]*string, n)
	submitted, finished := make([]time.Time, n), make([]*time.Time, n)
	for i, j := range js {
		tenant[i], state[i], queue[i], prio[i] = j.TenantID, string(j.State), string(j.Spec.Queue), string(j.Spec.Priority)
		attempt[i], retries[i], worker[i] = int32(j.Attempt), int32(j.Retries), optText(j.WorkerID)
		submitted[i], finished[i] = j.SubmittedAt, optTime(j.FinishedAt)
	}
	return []any{tenant, state, queue, prio, attempt, retries, worker, submitted, finished}
}

func auditRows(objs []fsm.Object) []any {
	rs := objectsOf[*fsm.AuditRecord](objs)
	n := len(rs)
	seq := make([]int64, n)
	tenant, user, key, action := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	at := make([]time.Time, n)
	for i, r := range rs {
		seq[i], tenant[i], user[i], key[i], action[i], at[i] = int64(r.Seq), r.Tenant, r.User, r.KeyID, r.Action, r.Time
	}
	return []any{seq, tenant, user, key, action, at}
}
