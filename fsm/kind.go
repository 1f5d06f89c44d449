package fsm

import (
	"fmt"
	"reflect"

	json "github.com/go-json-experiment/json/v1"
)

// The kind registry. Every kind of replicated object (tenant, user, API
// key, invitation, worker token, worker, job, audit record) is described
// once, by a Kind in Kinds, and everything that
// handles objects without caring what they are goes through it: the FSM's
// batch of changed objects, both stores' Commit, Load, snapshot checks and
// import, and the forwarding of apply responses between nodes. Adding a
// kind is its type (embedding Meta, with an ObjectID method), a
// field in State and Batch, one define call here, its commands (see
// commandTypes), and for PostgreSQL its table's migration and typed
// columns (store/postgres/rows.go); bolt creates the bucket itself.
//
// State and Batch keep a typed field per kind rather than a map of
// untyped objects: the FSM, the importer and the tests read them as
// typed values, and the registry's accessors reach the fields for the
// code that loops over kinds. What genuinely differs between kinds stays
// where it belongs: the FSM's per-kind memory and indexes, PostgreSQL's
// typed filter and sort columns (store/postgres), and the job-only
// tenant index that bolt's ListJobs walks.

// Object is a replicated object of a registered kind.
type Object interface {
	// ObjectID returns the object's ID, its key in every store.
	ObjectID() string
	// ObjectMeta returns the Raft indexes that created and last changed
	// the object.
	ObjectMeta() Meta
	// SetObjectMeta replaces the object's Raft indexes.
	SetObjectMeta(Meta)
}

// ObjectMeta implements Object for every type that embeds Meta.
func (m Meta) ObjectMeta() Meta { return m }

// SetObjectMeta implements Object for every type that embeds Meta.
func (m *Meta) SetObjectMeta(v Meta) { *m = v }

// ObjectID implements Object.
func (t *Tenant) ObjectID() string { return t.ID }

// ObjectID implements Object.
func (k *APIKey) ObjectID() string { return k.ID }

// ObjectID implements Object.
func (t *WorkerToken) ObjectID() string { return t.ID }

// ObjectID implements Object.
func (w *Worker) ObjectID() string { return w.ID }

// ObjectID implements Object.
func (j *Job) ObjectID() string { return j.ID }

// Kind describes one kind of replicated object. Kinds are values of the
// registry, created by define; never build one by hand.
type Kind struct {
	// Name is the kind's name in a forwarded apply response.
	Name string
	// Bucket is the bolt bucket that maps an object's ID to its JSON.
	Bucket string
	// Table is the PostgreSQL table; it has at least the columns id,
	// create_index, modify_index and doc (the object's JSON).
	Table string
	// resident reports whether Load returns an object (the FSM keeps it in
	// memory); nil means every object.
	resident func(Object) bool
	// history is set for a kind of which Load returns nothing: its
	// objects are only appended and read back by queries of their own.
	history bool

	typ   reflect.Type
	new   func() Object
	batch func(*Batch) []Object
	add   func(*Batch, Object)
	keep  func(*State, Object)
	state func(*State) []Object
}

// Kinds lists every kind in foreign key order: an object refers only to
// objects of kinds before its own (tenants first). Stores write a batch's
// kinds in this order.
var Kinds = []*Kind{TenantKind, UserKind, APIKeyKind, InvitationKind, WorkerTokenKind, WorkerKind, JobKind, AuditKind}

// The registered kinds. Bucket and table names are on-disk names: never
// change them.
var (
	TenantKind = define(Kind{Name: "tenant", Bucket: "tenants", Table: "tenants"},
		func(b *Batch) *[]*Tenant { return &b.Tenants }, func(s *State) *[]*Tenant { return &s.Tenants }, nil)
	UserKind = define(Kind{Name: "user", Bucket: "users", Table: "users"},
		func(b *Batch) *[]*User { return &b.Users }, func(s *State) *[]*User { return &s.Users }, nil)
	APIKeyKind = define(Kind{Name: "api_key", Bucket: "keys", Table: "api_keys"},
		func(b *Batch) *[]*APIKey { return &b.Keys }, func(s *State) *[]*APIKey { return &s.Keys }, nil)
	InvitationKind = define(Kind{Name: "invitation", Bucket: "invitations", Table: "invitations"},
		func(b *Batch) *[]*Invitation { return &b.Invitations }, func(s *State) *[]*Invitation { return &s.Invitations }, nil)
	WorkerTokenKind = define(Kind{Name: "worker_token", Bucket: "worker_tokens", Table: "worker_tokens"},
		func(b *Batch) *[]*WorkerToken { return &b.WorkerTokens }, func(s *State) *[]*WorkerToken { return &s.WorkerTokens }, nil)
	WorkerKind = define(Kind{Name: "worker", Bucket: "workers", Table: "workers"},
		func(b *Batch) *[]*Worker { return &b.Workers }, func(s *State) *[]*Worker { return &s.Workers }, nil)
	// JobKind's resident objects are the non-terminal jobs: finished ones
	// are read back from the store.
	JobKind = define(Kind{Name: "job", Bucket: "jobs", Table: "jobs"},
		func(b *Batch) *[]*Job { return &b.Jobs }, func(s *State) *[]*Job { return &s.Jobs },
		func(j *Job) bool { return !j.State.Terminal() })
	// AuditKind is history: Load returns none of its records (the FSM
	// keeps only the chain's head, State.AuditHead). Its ID is the
	// record's Seq in 20 digits; bolt keys its bucket by the big-endian
	// Seq instead.
	AuditKind = history(define(Kind{Name: "audit_record", Bucket: "audit", Table: "audit_records"},
		func(b *Batch) *[]*AuditRecord { return &b.Audit }, nil, nil))
)

// history marks k as a kind Load never returns (see Kind.History).
func history(k *Kind) *Kind {
	k.history = true
	k.resident = func(Object) bool { return false }
	return k
}

// define completes a Kind for the object type PT, whose objects a Batch
// holds in the field batch returns and a State in the field state
// returns (nil for a history kind, of which a State holds none).
// resident, if not nil, says which objects Load returns.
func define[T any, PT interface {
	*T
	Object
}](k Kind, batch func(*Batch) *[]PT, state func(*State) *[]PT, resident func(PT) bool) *Kind {
	k.typ = reflect.TypeFor[PT]()
	k.new = func() Object { return PT(new(T)) }
	k.batch = func(b *Batch) []Object { return objects(*batch(b)) }
	k.add = func(b *Batch, o Object) { p := batch(b); *p = append(*p, o.(PT)) }
	k.state = func(*State) []Object { return nil }
	k.keep = func(*State, Object) {}
	if state != nil {
		k.state = func(s *State) []Object { return objects(*state(s)) }
		k.keep = func(s *State, o Object) { p := state(s); *p = append(*p, o.(PT)) }
	}
	if resident != nil {
		k.resident = func(o Object) bool { return resident(o.(PT)) }
	}
	return &k
}

func objects[PT Object](objs []PT) []Object {
	out := make([]Object, len(objs))
	for i, o := range objs {
		out[i] = o
	}
	return out
}

// Decode decodes an object of the kind from its JSON.
func (k *Kind) Decode(doc []byte) (Object, error) {
	o := k.new()
	if err := json.Unmarshal(doc, o); err != nil {
		return nil, fmt.Errorf("decode %s: %w", k.Name, err)
	}
	return o, nil
}

// New returns an empty object of the kind, to decode into.
func (k *Kind) New() Object { return k.new() }

// Objects returns the objects of the kind in b, in b's order.
func (k *Kind) Objects(b *Batch) []Object { return k.batch(b) }

// Loaded returns the objects of the kind in st.
func (k *Kind) Loaded(st *State) []Object { return k.state(st) }

// Deletions returns the deletions of objects of the kind in b, in b's
// order.
func (k *Kind) Deletions(b *Batch) []Deletion {
	var out []Deletion
	for _, d := range b.Deleted {
		if d.Kind == k {
			out = append(out, d)
		}
	}
	return out
}

// Add appends o, an object of the kind, to b.
func (k *Kind) Add(b *Batch, o Object) { k.add(b, o) }

// Keep appends o, an object of the kind, to st if Load returns it
// (Resident), and reports whether it did.
func (k *Kind) Keep(st *State, o Object) bool {
	if !k.Resident(o) {
		return false
	}
	k.keep(st, o)
	return true
}

// Resident reports whether Load returns o: whether the FSM keeps it in
// memory.
func (k *Kind) Resident(o Object) bool { return k.resident == nil || k.resident(o) }

// Partial reports whether Load returns only some of the kind's objects
// (Resident is not always true), so a store that reads them back must
// filter or keep an index of the resident ones. A History kind is not
// partial: Load returns none.
func (k *Kind) Partial() bool { return k.resident != nil && !k.history }

// History reports whether Load returns none of the kind's objects
// (audit records): a store's Load skips the kind entirely.
func (k *Kind) History() bool { return k.history }

// KindOf returns the kind of v, or nil if v is not a registered object.
func KindOf(v any) *Kind {
	t := reflect.TypeOf(v)
	for _, k := range Kinds {
		if k.typ == t {
			return k
		}
	}
	return nil
}

// KindNamed returns the kind with the given Name, or nil.
func KindNamed(name string) *Kind {
	for _, k := range Kinds {
		if k.Name == name {
			return k
		}
	}
	return nil
}
