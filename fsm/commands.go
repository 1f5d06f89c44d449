package fsm

import (
	"fmt"
	"time"

	json "github.com/go-json-experiment/json/v1"
)

// MessageType identifies a command in the Raft log. The enum is
// append-only: never renumber or reuse a value, or old logs will be
// misread. A type with IgnoreUnknownTypeFlag set may be skipped by a node
// that does not know it (rolling upgrades); any other unknown type stops
// the node.
type MessageType uint8

// Command types. Append only.
const (
	CreateTenantType   MessageType = 1
	CreateAPIKeyType   MessageType = 2
	RevokeAPIKeyType   MessageType = 3
	RegisterWorkerType MessageType = 4
	SubmitJobType      MessageType = 5
	AssignJobType      MessageType = 6
	StartJobType       MessageType = 7
	ProgressJobType    MessageType = 8
	FinishJobType      MessageType = 9
	CancelJobType      MessageType = 10
	PauseJobType       MessageType = 11
	ResumeJobType      MessageType = 12
	RequeueJobType     MessageType = 13
	ExpireJobType      MessageType = 14
	WorkerDownType     MessageType = 15
	DrainWorkerType    MessageType = 16
	// RecordAuditType records an API call that changed no replicated
	// state (see RecordAudit).
	RecordAuditType MessageType = 29
	// EnvelopeType wraps another command with its actor (see EncodeAs):
	// its body is JSON {"actor":{...},"type":N,"command":{...}}. It has
	// no skip bit: a node that cannot read it must not skip the command
	// inside.
	EnvelopeType     MessageType = 30
	UpdateTenantType MessageType = 17
	DeleteTenantType MessageType = 18
	AdoptOrphansType MessageType = 19

	CreateWorkerTokenType MessageType = 27
	RevokeWorkerTokenType MessageType = 28

	// ExitJobType frees a running attempt's worker slot when its ffmpeg
	// has exited (see ExitJob). It has no skip bit: a node that skipped
	// it would count the slot as taken and refuse assignments the others
	// accept. The leader proposes it only once every server speaks
	// ProtocolExitJob (MinProtocol).
	ExitJobType MessageType = 36

	// IgnoreUnknownTypeFlag marks a type that older nodes may skip.
	IgnoreUnknownTypeFlag MessageType = 128
)

// Protocol is the newest cluster protocol this binary speaks. A command
// type that servers speaking an older protocol cannot apply needs a newer
// one (MinProtocol), and the leader proposes it only while every server
// speaks that (cluster protocol.go). Protocol 2 added ExitJob.
const Protocol = 2

// MinProtocol returns the cluster protocol that command type t needs.
func MinProtocol(t MessageType) int {
	if t == ExitJobType {
		return 2
	}
	return 1
}

// Command is a state change proposed through Raft. The edge (an API
// handler or the leader loop) fills in every ID before proposing, so that
// applying it is deterministic. The times it fills in decide nothing
// unless the entry lacks the leader's stamp (FSM.at).
type Command interface {
	MessageType() MessageType
}

// Encode returns the log entry for c: one type byte and a JSON body. A
// command proposed for an API caller is encoded with EncodeAs instead.
func Encode(c Command) ([]byte, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", c, err)
	}
	return append([]byte{byte(c.MessageType())}, body...), nil
}

// CreateTenant creates a tenant.
type CreateTenant struct {
	Tenant Tenant `json:"tenant"`
}

// CreateAPIKey stores a key (its hash only). With First set it is the
// cluster's first key and is refused if any key exists: initialization
// happens exactly once, however many nodes are asked at the same time.
type CreateAPIKey struct {
	Key   APIKey `json:"key"`
	First bool   `json:"first,omitempty"`
}

// RevokeAPIKey revokes a key.
type RevokeAPIKey struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

// RegisterWorker adds or refreshes a worker. A new incarnation of a known
// worker means its previous process is gone: its jobs are requeued.
type RegisterWorker struct {
	Worker Worker    `json:"worker"`
	At     time.Time `json:"at"`
}

// SubmitJob adds a queued job. Job carries its ID, tenant, compiled spec
// and submission time; RetryOf is set when it re-runs a finished job.
type SubmitJob struct {
	Job Job `json:"job"`
}

// AssignJob gives a queued job to a worker as attempt Attempt (the job's
// previous attempt plus one). Only the leader proposes it.
type AssignJob struct {
	JobID    string    `json:"job_id"`
	WorkerID string    `json:"worker_id"`
	Attempt  int       `json:"attempt"`
	At       time.Time `json:"at"`
}

// Report identifies the attempt a worker's report is about; it is the
// fencing token checked by every report.
type Report struct {
	JobID    string `json:"job_id"`
	WorkerID string `json:"worker_id"`
	Attempt  int    `json:"attempt"`
}

// StartJob records that a worker started ffmpeg for its attempt.
type StartJob struct {
	Report
	At time.Time `json:"at"`
}

// ProgressJob records the progress of a running attempt.
type ProgressJob struct {
	Report
	Progress Progress `json:"progress"`
}

// FinishJob records the end of an attempt: Error nil means success. A
// retryable failure with retries left puts the job back in the queue.
type FinishJob struct {
	Report
	At        time.Time `json:"at"`
	Result    *Result   `json:"result,omitempty"`
	Error     *Error    `json:"error,omitempty"`
	Retryable bool      `json:"retryable,omitempty"`
	Log       string    `json:"log,omitempty"`
	// Progress is the attempt's final progress, if any was seen.
	Progress *Progress `json:"progress,omitempty"`
}

// CancelJob cancels an active job. Canceled is terminal.
type CancelJob struct {
	JobID string    `json:"job_id"`
	At    time.Time `json:"at"`
}

// PauseJob pauses a running job.
type PauseJob struct {
	JobID string    `json:"job_id"`
	At    time.Time `json:"at"`
}

// ResumeJob resumes a paused job.
type ResumeJob struct {
	JobID string    `json:"job_id"`
	At    time.Time `json:"at"`
}

// RequeueJob takes an attempt away from its worker (lost, or dispatch
// failed) and queues the job again within its retry budget.
type RequeueJob struct {
	Report
	Reason Error     `json:"reason"`
	At     time.Time `json:"at"`
}

// ExpireJob fails a job that stayed queued past its acquire timeout.
// CountFrom, if later than the time the job became eligible, is when the
// leader began counting that timeout: when it took leadership, or when a
// worker of the job's pool came up (see Fairness.CountFrom). Apply refuses
// the command before CountFrom (or the eligible time) plus the timeout.
type ExpireJob struct {
	JobID     string    `json:"job_id"`
	Code      Code      `json:"code"`
	At        time.Time `json:"at"`
	CountFrom time.Time `json:"count_from,omitzero"`
}

// MarkWorkerDown marks a worker gone (its gossip member died or its lease
// ran out): its attempts are lost and their jobs go back to the queue
// within their retry budgets. Only the leader proposes it.
type MarkWorkerDown struct {
	WorkerID string    `json:"worker_id"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

// DrainWorker sets or clears a worker's drain flag: a draining worker
// finishes what it runs and is given nothing new.
type DrainWorker struct {
	WorkerID string    `json:"worker_id"`
	Drain    bool      `json:"drain"`
	At       time.Time `json:"at"`
}

// UpdateTenant changes a tenant's plan, limits, retention or disabled flag; a nil
// field is left as it is. Lowering a limit below the tenant's usage is
// allowed: nothing running stops, nothing new is accepted past it.
type UpdateTenant struct {
	ID                string   `json:"id"`
	Plan              *string  `json:"plan,omitempty"`
	MaxJobs           *int     `json:"max_jobs,omitempty"`
	MaxConcurrentJobs *int     `json:"max_concurrent_jobs,omitempty"`
	MaxWorkers        *int     `json:"max_workers,omitempty"`
	MaxCPU            *float64 `json:"max_cpu,omitempty"`
	Disabled          *bool    `json:"disabled,omitempty"`
	// Retention, if set, becomes the tenant's own retention (0 keeps
	// finished jobs forever); DefaultRetention instead drops it, so that
	// the installation default applies. At most one of them is set.
	Retention        *Duration `json:"retention,omitempty"`
	DefaultRetention bool      `json:"default_retention,omitempty"`
	At               time.Time `json:"at"`
}

// DeleteTenant tombstones a tenant (Tenant.DeletedAt). It is refused with
// tenant_has_active_jobs while the tenant has a queued, assigned, running
// or paused job.
type DeleteTenant struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

// AdoptOrphans gives tenant TenantID every object without a tenant: each
// active job and each dedicated worker whose tenant is "" (a job) or names
// no tenant the FSM knows, deleted ones included (a deleted tenant's
// objects are its own, not orphans). It covers what memory holds: active
// jobs and workers; finished jobs live only in the store and keep their
// tenant (an import always writes its tenant with them). Applying it
// again adopts nothing more.
type AdoptOrphans struct {
	TenantID string    `json:"tenant_id"`
	At       time.Time `json:"at"`
}

// CreateWorkerToken stores a worker token (its hash only).
type CreateWorkerToken struct {
	Token WorkerToken `json:"token"`
}

// RevokeWorkerToken revokes a worker token. The worker bound to it is
// marked down at once (its jobs go back to the queue) and can register
// again only with another token.
type RevokeWorkerToken struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

// ExitJob records that a running attempt's ffmpeg exited successfully:
// the worker is checking and reporting its outputs, and the attempt no
// longer takes one of the worker's slots, so the next job can start while
// its FinishJob is on the way. The job stays running, with ExitedAt set,
// until that report; a worker lost before it requeues the job as before.
type ExitJob struct {
	Report
	At time.Time `json:"at"`
}

// MessageType implementations.
func (*CreateTenant) MessageType() MessageType      { return CreateTenantType }
func (*CreateAPIKey) MessageType() MessageType      { return CreateAPIKeyType }
func (*RevokeAPIKey) MessageType() MessageType      { return RevokeAPIKeyType }
func (*RegisterWorker) MessageType() MessageType    { return RegisterWorkerType }
func (*SubmitJob) MessageType() MessageType         { return SubmitJobType }
func (*AssignJob) MessageType() MessageType         { return AssignJobType }
func (*StartJob) MessageType() MessageType          { return StartJobType }
func (*ProgressJob) MessageType() MessageType       { return ProgressJobType }
func (*FinishJob) MessageType() MessageType         { return FinishJobType }
func (*CancelJob) MessageType() MessageType         { return CancelJobType }
func (*PauseJob) MessageType() MessageType          { return PauseJobType }
func (*ResumeJob) MessageType() MessageType         { return ResumeJobType }
func (*RequeueJob) MessageType() MessageType        { return RequeueJobType }
func (*ExpireJob) MessageType() MessageType         { return ExpireJobType }
func (*MarkWorkerDown) MessageType() MessageType    { return WorkerDownType }
func (*DrainWorker) MessageType() MessageType       { return DrainWorkerType }
func (*UpdateTenant) MessageType() MessageType      { return UpdateTenantType }
func (*DeleteTenant) MessageType() MessageType      { return DeleteTenantType }
func (*AdoptOrphans) MessageType() MessageType      { return AdoptOrphansType }
func (*CreateWorkerToken) MessageType() MessageType { return CreateWorkerTokenType }
func (*RevokeWorkerToken) MessageType() MessageType { return RevokeWorkerTokenType }
func (*ExitJob) MessageType() MessageType           { return ExitJobType }

// Backoff is the delay before retry n (1-based): 2s doubling, at most 5m.
func Backoff(n int) time.Duration {
	d := 2 * time.Second
	for i := 1; i < n && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

// commandType is one entry of the command table: how to make an empty
// command of a type (DecodeCommand and applyEntry decode into it) and how
// to apply it.
type commandType struct {
	new   func() Command
	apply func(f *FSM, index uint64, c Command, b *batchBuilder) any
}

// command makes a table entry from a command's applyX method.
func command[T any, PT interface {
	*T
	Command
}](apply func(*FSM, uint64, PT, *batchBuilder) any) commandType {
	return commandType{
		new:   func() Command { return PT(new(T)) },
		apply: func(f *FSM, index uint64, c Command, b *batchBuilder) any { return apply(f, index, c.(PT), b) },
	}
}

// commandTypes is the command table: every type the log may hold, for
// both DecodeCommand (validation before the log) and applyEntry. A new
// command is one MessageType, one struct with Validate, one applyX and one
// line here.
var commandTypes = map[MessageType]commandType{
	CreateTenantType:   command((*FSM).applyCreateTenant),
	CreateAPIKeyType:   command((*FSM).applyCreateAPIKey),
	RevokeAPIKeyType:   command((*FSM).applyRevokeAPIKey),
	RegisterWorkerType: command((*FSM).applyRegisterWorker),
	SubmitJobType:      command((*FSM).applySubmitJob),
	AssignJobType:      command((*FSM).applyAssignJob),
	StartJobType:       command((*FSM).applyStartJob),
	ProgressJobType:    command((*FSM).applyProgressJob),
	ExitJobType:        command((*FSM).applyExitJob),
	FinishJobType:      command((*FSM).applyFinishJob),
	CancelJobType:      command((*FSM).applyCancelJob),
	PauseJobType:       command((*FSM).applyPauseJob),
	ResumeJobType:      command((*FSM).applyResumeJob),
	RequeueJobType:     command((*FSM).applyRequeueJob),
	ExpireJobType:      command((*FSM).applyExpireJob),
	WorkerDownType:     command((*FSM).applyWorkerDown),
	DrainWorkerType:    command((*FSM).applyDrainWorker),
	RecordAuditType:    command((*FSM).applyRecordAudit),
	UpdateTenantType:   command((*FSM).applyUpdateTenant),
	DeleteTenantType:   command((*FSM).applyDeleteTenant),
	AdoptOrphansType:   command((*FSM).applyAdoptOrphans),

	CreateUserType:       command((*FSM).applyCreateUser),
	UpdateUserType:       command((*FSM).applyUpdateUser),
	CreateInvitationType: command((*FSM).applyCreateInvitation),
	AcceptInvitationType: command((*FSM).applyAcceptInvitation),
	RevokeInvitationType: command((*FSM).applyRevokeInvitation),
	RotateAPIKeyType:     command((*FSM).applyRotateAPIKey),
	TouchAPIKeysType:     command((*FSM).applyTouchAPIKeys),

	CreateWorkerTokenType: command((*FSM).applyCreateWorkerToken),
	RevokeWorkerTokenType: command((*FSM).applyRevokeWorkerToken),

	PurgeJobsType:  command((*FSM).applyPurgeJobs),
	SubmitJobsType: command((*FSM).applySubmitJobs),
}
