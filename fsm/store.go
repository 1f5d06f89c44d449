package fsm

import (
	"context"
	"errors"
	"io"
	"time"
)

// Store errors. Implementations map their driver errors to these.
var (
	// ErrNotFound is returned when an object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrBadSnapshot is wrapped by every error that says a snapshot
	// stream is damaged, truncated, of another store kind or otherwise
	// not restorable.
	ErrBadSnapshot = errors.New("invalid snapshot")
	// ErrStoreBehind is returned by a shared store's Restore and
	// CheckSnapshot when the database has not reached the snapshot's
	// index: the snapshot is sound, but the database is an older copy or
	// not the cluster's at all.
	ErrStoreBehind = errors.New("database is behind the snapshot")
	// ErrAbandoned answers the entries an FSM is given after Abandon: it
	// did not apply them, and its node applies them at its next start.
	ErrAbandoned = errors.New("not applied: the node is stopping and its store did not answer")
)

// Store is the durable half of the FSM. The FSM keeps in memory only what
// scheduling needs (tenants, keys, workers and active jobs) and writes
// every change through Commit; history is read back from the store.
//
// Commit is called by one goroutine at a time, in index order. The read
// methods may be called concurrently with Commit and with each other.
type Store interface {
	// Load returns the last committed index and every object the FSM keeps
	// in memory: tenants, API keys, workers and non-terminal jobs; and
	// the head of the audit chain (the record with the highest Seq),
	// read without reading the other records.
	Load(ctx context.Context) (*State, error)
	// Commit durably writes a batch of changed objects, deletes its
	// deleted objects (keeping a tombstone of each: see Deletion), and
	// writes the index of the batch's last log entry, atomically.
	Commit(ctx context.Context, b *Batch) error
	// GetJob returns a job by ID, active or finished, or ErrNotFound.
	GetJob(ctx context.Context, id string) (*Job, error)
	// JobsExist returns, for each of ids that the store holds, the job's
	// create index; ids it does not hold are absent from the map. A purged
	// job's tombstone counts as held, with the purged job's create index:
	// a purged ID is never reused. Apply asks it once per batch, outside
	// the FSM's lock, to refuse a SubmitJob whose ID a finished (or
	// purged) job already has.
	JobsExist(ctx context.Context, ids []string) (map[string]uint64, error)
	// GetJobs returns the jobs of ids that the store holds (not
	// tombstones), by ID, in one read. Apply asks it once per batch that
	// holds a PurgeJobs, outside the FSM's lock.
	GetJobs(ctx context.Context, ids []string) (map[string]*Job, error)
	// FinishedJobs returns the IDs of at most p.Limit of p.TenantID's
	// finished jobs (succeeded, failed, canceled) whose FinishedAt is
	// before p.Before, oldest FinishedAt first, along an index: it reads
	// no other job.
	FinishedJobs(ctx context.Context, p *FinishedJobsParams) ([]string, error)
	// ListJobs returns one page of jobs, newest first.
	ListJobs(ctx context.Context, p *ListJobsParams) (*JobPage, error)
	// ListAudit returns one page of audit records that pass p's
	// filters, newest (highest Seq) first.
	ListAudit(ctx context.Context, p *ListAuditParams) (*AuditPage, error)
	// ScanAudit calls fn with every audit record whose Seq is above
	// after, in the order of the store's Seq key, reading a bounded page
	// at a time (never every record at once), until fn returns an error,
	// which it returns.
	ScanAudit(ctx context.Context, after uint64, fn func(*AuditRecord) error) error
	// Snapshot captures the committed state for a Raft snapshot. It must
	// return quickly; the returned value's WriteTo runs concurrently with
	// Commit and must write the state as of the Snapshot call.
	Snapshot(ctx context.Context) (StoreSnapshot, error)
	// Restore replaces all state with a stream written by a snapshot. It
	// checks the whole stream as CheckSnapshot does before it replaces
	// anything, and leaves the store unchanged if the check fails.
	Restore(ctx context.Context, r io.Reader) error
	// CheckSnapshot reads a whole snapshot stream and returns its header
	// if Restore would accept it, or an error wrapping ErrBadSnapshot that
	// names what is wrong. It changes nothing.
	CheckSnapshot(ctx context.Context, r io.Reader) (*SnapshotHeader, error)
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
	// Close releases the store.
	Close() error
}

// LocalStore is a Store whose committed state is a file of this node's
// own, durable at the index Load returns (bolt), rather than a database
// the nodes share. Its Raft snapshots need not copy that state: a
// snapshot can refer to the file, which only grows past the snapshot's
// index, since Apply skips entries at or below the store's index
// (cluster's snapshot store does this). The full stream is then made
// only when a follower needs it, from a view whose index and exact
// length are known before it is written.
type LocalStore interface {
	Store
	// SnapshotLocal is Snapshot, returning a view that also tells its
	// index and the exact length of its stream.
	SnapshotLocal(ctx context.Context) (LocalSnapshot, error)
}

// LocalSnapshot is a StoreSnapshot of a LocalStore.
type LocalSnapshot interface {
	StoreSnapshot
	// Index returns the applied index of the state the view holds.
	Index() uint64
	// Size returns the exact number of bytes WriteTo writes.
	Size() int64
}

// StoreSnapshot is a point-in-time view of a store.
type StoreSnapshot interface {
	// WriteTo streams the view.
	WriteTo(w io.Writer) (int64, error)
	// Release frees the view; it is always called, once.
	Release()
}

// State is what a store holds for the FSM's memory: a field per kind of
// Kinds, which a Kind reaches with Loaded and Keep.
type State struct {
	Index       uint64
	Tenants     []*Tenant
	Users       []*User
	Keys        []*APIKey
	Invitations []*Invitation
	// WorkerTokens are every worker token, revoked ones included.
	WorkerTokens []*WorkerToken
	Workers      []*Worker
	Jobs         []*Job // non-terminal only
	// AuditHead is the newest audit record's Seq and Hash (AuditKind is
	// history: State holds no record).
	AuditHead AuditHead
}

// Batch is the set of objects changed by one applied batch of log entries,
// each in its final version, sorted by ID: a field per kind of Kinds,
// which a Kind reaches with Objects and Add.
type Batch struct {
	Index        uint64
	Tenants      []*Tenant
	Users        []*User
	Keys         []*APIKey
	Invitations  []*Invitation
	WorkerTokens []*WorkerToken
	Workers      []*Worker
	Jobs         []*Job
	Audit        []*AuditRecord
	// Deleted are the objects the batch deleted, in Kinds order, then by
	// ID; an object is never both in Deleted and in its kind's field.
	Deleted []Deletion
}

// Deletion is an object deleted by the log entry at Index. A store
// removes the object unless its stored version is as new as Index or
// newer (modify index at or above it), so that deleting is idempotent,
// and keeps a tombstone of its ID and create index that JobsExist
// reports (a deleted ID is never reused) and that snapshots carry.
type Deletion struct {
	Kind        *Kind
	ID          string
	CreateIndex uint64
	Index       uint64
}

// FinishedJobsParams selects the finished jobs retention may purge.
type FinishedJobsParams struct {
	TenantID string
	// Before is the cutoff: only jobs that finished strictly before it.
	Before time.Time
	// Limit is the most IDs returned (1..1000).
	Limit int
}

// ListJobsParams selects a page of jobs.
type ListJobsParams struct {
	// TenantID limits the list to one tenant; "" lists all tenants.
	TenantID string
	// States, if not empty, keeps only jobs in one of these states.
	States []JobState
	// Queue, if set, keeps only jobs of this queue.
	Queue Queue
	// Limit is the page size (1..1000).
	Limit int
	// After is the cursor: the ID of the last job of the previous page.
	After string
}

// JobPage is one page of jobs. Next is the cursor for the following page,
// "" on the last page.
type JobPage struct {
	Jobs []*Job `json:"jobs"`
	Next string `json:"next,omitempty"`
}
