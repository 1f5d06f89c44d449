package fsm

import (
	"slices"
	"time"
)

// Meta is carried by every replicated object: the Raft index that created
// it and the one that last changed it. Applying an entry at or below
// ModifyIndex is a no-op, which makes Apply idempotent.
type Meta struct {
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// Tenant is a customer of the installation. Every other object belongs to
// exactly one tenant. Its Name is its ID, a slug (TenantNamePattern);
// both fields exist because tenants made before names were IDs have a
// display name that differs.
//
// A deleted tenant stays as a tombstone (DeletedAt set) so that every
// store, the shared PostgreSQL one too, converges on the deletion: it is
// hidden from lists, its name is never reused, and every command naming it
// is refused.
type Tenant struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Plan   string `json:"plan,omitempty"`
	Limits Limits `json:"limits"`
	// CreatedBy is the principal (user, or user and key) that created the
	// tenant, stamped by the edge.
	CreatedBy string    `json:"created_by,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Disabled tenants' keys stop working (except a super-admin's), and
	// their jobs are neither accepted nor placed.
	Disabled  bool      `json:"disabled,omitempty"`
	DeletedAt time.Time `json:"deleted_at,omitzero"`
	// Retention is how long the tenant's finished jobs are kept before
	// the leader purges them (PurgeJobs); 0 keeps them forever, nil
	// means the installation default (ffrtmp server --retention).
	Retention *Duration `json:"retention,omitempty"`
	Meta
}

// Deleted reports whether t is a tombstone.
func (t *Tenant) Deleted() bool { return !t.DeletedAt.IsZero() }

// Limits are a tenant's quotas, enforced by Apply and by the scheduler.
// Zero means unlimited.
type Limits struct {
	// MaxJobs bounds the tenant's active jobs: queued, assigned, running
	// and paused. SubmitJob is refused at the limit.
	MaxJobs int `json:"max_jobs"`
	// MaxConcurrentJobs bounds the jobs that hold a worker: assigned,
	// running and paused (an assigned job starts without asking again, and
	// a paused one keeps its process and slot). The scheduler does not
	// place past it.
	MaxConcurrentJobs int `json:"max_concurrent_jobs"`
	// MaxWorkers bounds the tenant's dedicated workers that are up.
	// RegisterWorker is refused at the limit.
	MaxWorkers int `json:"max_workers"`
	// MaxCPU bounds the sum of resources.cpu of the jobs that hold a
	// worker. With it set, a job must state resources.cpu.
	MaxCPU float64 `json:"max_cpu"`
}

// Role is what a principal may do.
type Role string

// Roles, from most to least powerful.
const (
	RoleSuperAdmin  Role = "superadmin"
	RoleTenantAdmin Role = "tenant_admin"
	RoleOperator    Role = "operator"
	RoleViewer      Role = "viewer"
)

// APIKey is a credential. Only the SHA-256 of its secret is stored; the
// secret is shown once, when the key is created.
type APIKey struct {
	ID        string    `json:"id"`
	TenantID  string    `json:"tenant_id"`
	User      string    `json:"user"`
	Role      Role      `json:"role"`
	Hash      []byte    `json:"hash"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Revoked   bool      `json:"revoked,omitempty"`
	// UserID is the user the key belongs to; "" for a key made before
	// keys had users, which acts with its own tenant and role.
	UserID string `json:"user_id,omitempty"`
	// Name is a label its owner chose.
	Name string `json:"name,omitempty"`
	// Scopes, if any, are the only permissions the key has: they narrow
	// its user's role, never widen it.
	Scopes []string `json:"scopes,omitempty"`
	// LastUsedAt is when a node last saw the key used, to within a
	// minute (TouchAPIKeys).
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	// RotatedFrom is the key this one replaced; RotatedTo the key that
	// replaced this one (RotateAPIKey).
	RotatedFrom string `json:"rotated_from,omitempty"`
	RotatedTo   string `json:"rotated_to,omitempty"`
	Meta
}

// WorkerToken is a worker's credential: a remote worker authenticates
// with it on the node port, where it may call only the worker protocol.
// Only the SHA-256 of its secret is stored; the secret is shown once,
// when the token is created. TenantID "" makes the worker a member of the
// shared pool, otherwise a dedicated worker of that tenant: the worker's
// tenant always comes from its token. The first worker that registers
// with the token binds it (WorkerID); the token then speaks for that
// worker only.
type WorkerToken struct {
	ID        string    `json:"id"`
	TenantID  string    `json:"tenant_id,omitempty"`
	Name      string    `json:"name,omitempty"`
	Hash      []byte    `json:"hash"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
	Revoked   bool      `json:"revoked,omitempty"`
	WorkerID  string    `json:"worker_id,omitempty"`
	Meta
}

// JobState is where a job is in its life.
type JobState string

// Job states. queued → assigned → running → succeeded | failed | canceled;
// running ⇄ paused; a failed attempt with retries left goes back to queued.
const (
	JobQueued    JobState = "queued"
	JobAssigned  JobState = "assigned"
	JobRunning   JobState = "running"
	JobPaused    JobState = "paused"
	JobSucceeded JobState = "succeeded"
	JobFailed    JobState = "failed"
	JobCanceled  JobState = "canceled"
)

// JobStates lists every state in lifecycle order.
var JobStates = []JobState{JobQueued, JobAssigned, JobRunning, JobPaused, JobSucceeded, JobFailed, JobCanceled}

// Terminal reports whether s never changes again.
func (s JobState) Terminal() bool {
	return s == JobSucceeded || s == JobFailed || s == JobCanceled
}

// Valid reports whether s is a known state.
func (s JobState) Valid() bool { return slices.Contains(JobStates, s) }

// Job is one unit of work: a compiled spec and its life.
type Job struct {
	ID       string   `json:"id"`
	TenantID string   `json:"tenant_id"`
	Spec     JobSpec  `json:"spec"`
	Plan     Plan     `json:"plan"`
	State    JobState `json:"state"`
	// Attempt counts assignments; it is the fencing token a worker's
	// reports must carry.
	Attempt int `json:"attempt"`
	// Retries counts failed attempts that were put back in the queue.
	Retries  int    `json:"retries"`
	WorkerID string `json:"worker_id,omitempty"`
	RetryOf  string `json:"retry_of,omitempty"`

	SubmittedAt time.Time `json:"submitted_at"`
	QueuedAt    time.Time `json:"queued_at"`
	NotBefore   time.Time `json:"not_before,omitzero"`
	AssignedAt  time.Time `json:"assigned_at,omitzero"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	// ExitedAt is when the running attempt's ffmpeg exited successfully
	// (ExitJob): its outputs are being checked, and it no longer takes a
	// worker slot.
	ExitedAt   time.Time `json:"exited_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`

	Progress *Progress `json:"progress,omitempty"`
	Result   *Result   `json:"result,omitempty"`
	Error    *Error    `json:"error,omitempty"`
	// Log is the bounded tail of ffmpeg's stderr from the last attempt.
	Log string `json:"log,omitempty"`
	Meta
}

// Progress is the last progress a worker reported for a running job.
type Progress struct {
	Percent   float64   `json:"percent"`
	Frame     int64     `json:"frame"`
	FPS       float64   `json:"fps"`
	Speed     float64   `json:"speed"`
	OutTimeMS int64     `json:"out_time_ms"`
	UpdatedAt time.Time `json:"updated_at"`
	// CPU is the CPUs ffmpeg used since the worker's previous report, and
	// MemoryMB its memory at this one (its cgroup's where the worker uses
	// cgroup v2, else its resident set); 0 if unknown.
	CPU      float64 `json:"cpu,omitempty"`
	MemoryMB int     `json:"memory_mb,omitempty"`
}

// Result describes what a successful job produced and what its run used.
type Result struct {
	Outputs []OutputResult `json:"outputs"`
	// CPUSeconds is the user plus system CPU time of the ffmpeg run.
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	// PeakMemoryMB is the run's peak memory in MiB, rounded up: its
	// cgroup's peak (page cache included) where the worker uses cgroup
	// v2, else ffmpeg's peak resident set.
	PeakMemoryMB int `json:"peak_memory_mb,omitempty"`
}

// OutputResult is one output as ffprobe found it after the run.
type OutputResult struct {
	URL         string  `json:"url"`
	Path        string  `json:"path,omitempty"` // absolute path on the worker host
	Codec       string  `json:"codec,omitempty"`
	Width       int     `json:"width,omitempty"`
	Height      int     `json:"height,omitempty"`
	FPS         float64 `json:"fps,omitempty"`
	DurationSec float64 `json:"duration_sec,omitempty"`
	SizeBytes   int64   `json:"size_bytes,omitempty"`
}

// WorkerState is whether a worker takes jobs.
type WorkerState string

// Worker states.
const (
	WorkerUp   WorkerState = "up"
	WorkerDown WorkerState = "down"
)

// Worker is a machine (or process) that runs ffmpeg. TenantID "" means the
// shared pool; otherwise the worker runs only that tenant's jobs.
type Worker struct {
	ID       string `json:"id"`
	TenantID string `json:"tenant_id,omitempty"`
	// TokenID is the worker token the worker registered with; "" for an
	// in-process worker (dev mode).
	TokenID string      `json:"token_id,omitempty"`
	Name    string      `json:"name"`
	Addr    string      `json:"addr,omitempty"`
	State   WorkerState `json:"state"`
	// Incarnation changes every time the worker process starts; a new
	// incarnation means the jobs of the previous one are lost.
	Incarnation string `json:"incarnation"`
	// Draining workers finish what they run and take nothing new.
	Draining bool     `json:"draining,omitempty"`
	Slots    int      `json:"slots"`
	CPUs     int      `json:"cpus"`
	MemoryMB int      `json:"memory_mb"`
	Encoders []string `json:"encoders"`
	// EncoderSessions is how many encoder sessions of each hardware kind
	// (HardwareNVENC, HardwareQSV, HardwareVAAPI) the worker can hold open
	// at once, e.g. {"nvenc": 8}. A kind it does not list has none: its
	// encoders of that kind are never chosen.
	EncoderSessions map[string]int    `json:"encoder_sessions,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	RegisteredAt    time.Time         `json:"registered_at"`
	Meta
}

// CanEncode reports whether the worker has an encoder for every codec.
func (w *Worker) CanEncode(codecs []string) bool {
	for _, c := range codecs {
		ok := false
		for _, e := range encodersFor(c) {
			if slices.Contains(w.Encoders, e) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// Hardware names what kind of encoder a job requires (JobSpec.Hardware)
// and, for the hardware kinds, what a worker offers sessions of
// (Worker.EncoderSessions).
const (
	// HardwareAny takes any encoder the worker has, software first.
	HardwareAny = ""
	// HardwareSoftware takes only software (lib*) encoders.
	HardwareSoftware = "software"
	HardwareNVENC    = "nvenc"
	HardwareQSV      = "qsv"
	HardwareVAAPI    = "vaapi"
)

// HardwareKinds lists the hardware encoder kinds, in EncodersFor's order.
var HardwareKinds = slices.Clone(hardwareKinds[:])

var hardwareKinds = [...]string{HardwareNVENC, HardwareQSV, HardwareVAAPI}

// EncoderHardware returns the hardware kind of an ffmpeg encoder
// ("h264_nvenc" → "nvenc"), or "" for a software encoder.
func EncoderHardware(encoder string) string {
	if i := hwIndex(encoder); i >= 0 {
		return hardwareKinds[i]
	}
	return ""
}

// hwIndex returns the index in HardwareKinds of an encoder's kind, or -1.
func hwIndex(encoder string) int {
	for i, k := range hardwareKinds {
		if len(encoder) > len(k) && encoder[len(encoder)-len(k)-1] == '_' && encoder[len(encoder)-len(k):] == k {
			return i
		}
	}
	return -1
}

// EncoderFor returns the encoder the worker uses for a video codec in a
// job that requires hardware (a Hardware value): the first encoder of
// EncodersFor(codec) that the worker has, that is of the required kind,
// and, for a hardware encoder, of a kind it has sessions of. "" if there
// is none. Scheduler and worker both choose with it, so the sessions the
// scheduler counts are the ones the worker opens.
func (w *Worker) EncoderFor(codec, hardware string) string {
	for _, e := range encodersFor(codec) {
		i := hwIndex(e)
		switch {
		case hardware == HardwareSoftware && i >= 0,
			hardware != HardwareAny && hardware != HardwareSoftware && (i < 0 || hardwareKinds[i] != hardware),
			i >= 0 && w.EncoderSessions[hardwareKinds[i]] < 1,
			!slices.Contains(w.Encoders, e):
			continue
		}
		return e
	}
	return ""
}

// EncodersFor lists the ffmpeg encoders able to produce a codec, software
// first.
func EncodersFor(codec string) []string { return slices.Clone(encodersFor(codec)) }

var encoders = map[string][]string{
	"h264": {"libx264", "h264_nvenc", "h264_qsv", "h264_vaapi"},
	"h265": {"libx265", "hevc_nvenc", "hevc_qsv", "hevc_vaapi"},
	"vp9":  {"libvpx-vp9", "vp9_qsv", "vp9_vaapi"},
	"av1":  {"libsvtav1", "libaom-av1", "av1_nvenc", "av1_qsv", "av1_vaapi"},
}

// encodersFor is EncodersFor without the copy, for the scheduler's hot
// path; callers must not modify the result.
func encodersFor(codec string) []string { return encoders[codec] }

// hardwareEncodes reports whether a hardware kind has an encoder for
// codec.
func hardwareEncodes(hardware, codec string) bool {
	return slices.ContainsFunc(encodersFor(codec), func(e string) bool { return EncoderHardware(e) == hardware })
}
