package server

import (
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// This file holds the API's response types and their conversions from the
// FSM's structs. Handlers answer with these, never with an fsm struct, so
// that what the FSM keeps for itself (a key's hash, a worker host's path,
// a worker's address and incarnation, the Raft index that created an
// object) cannot reach a client by accident: a field appears in a
// response only if it is written here, and then it is documented in
// openapi.json and docs/api.md.
//
// The job's spec is the one exception: it is the client's own request,
// which decodes into fsm.JobSpec and is answered as it was accepted. It
// never carries host paths or raw ffmpeg arguments.
//
// One index is part of the API: modify_index, an object's version. It is
// the Raft index of the object's last change, so it only grows, and
// GET /v1/jobs/{id}?index=N waits until it passes N. It also lets a
// client order two copies of the same object. create_index stays inside.

// Job is a job as the API shows it.
type Job struct {
	ID       string       `json:"id"`
	TenantID string       `json:"tenant_id"`
	Spec     fsm.JobSpec  `json:"spec"`
	Plan     Plan         `json:"plan"`
	State    fsm.JobState `json:"state"`
	// Attempt counts the job's assignments to a worker.
	Attempt int `json:"attempt"`
	// Retries counts failed attempts that went back to the queue.
	Retries  int    `json:"retries"`
	WorkerID string `json:"worker_id,omitempty"`
	RetryOf  string `json:"retry_of,omitempty"`

	SubmittedAt time.Time `json:"submitted_at"`
	QueuedAt    time.Time `json:"queued_at"`
	NotBefore   time.Time `json:"not_before,omitzero"`
	AssignedAt  time.Time `json:"assigned_at,omitzero"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	// ExitedAt is when the running attempt's ffmpeg exited successfully:
	// its outputs are being checked, and it no longer takes a worker slot.
	ExitedAt   time.Time `json:"exited_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`

	Progress *Progress `json:"progress,omitempty"`
	Result   *Result   `json:"result,omitempty"`
	// Error is why the job failed (or its last attempt did).
	Error *fsm.Error `json:"error,omitempty"`
	// Log is the bounded tail of ffmpeg's stderr from the last attempt.
	Log string `json:"log,omitempty"`
	// ModifyIndex is the job's version: it grows with every change.
	ModifyIndex uint64 `json:"modify_index"`
}

// Plan is the spec resolved into what a worker runs: the input's kind and
// every rendition's container and parameters.
type Plan struct {
	Input    PlanInput    `json:"input"`
	Outputs  []PlanOutput `json:"outputs"`
	Hardware string       `json:"hardware,omitempty"`
}

// PlanInput is the resolved input; for a test pattern, its size, frame
// rate and duration.
type PlanInput struct {
	Kind        string  `json:"kind"`
	URL         string  `json:"url,omitempty"`
	Width       int     `json:"width,omitempty"`
	Height      int     `json:"height,omitempty"`
	FPS         int     `json:"fps,omitempty"`
	DurationSec float64 `json:"duration_sec,omitempty"`
}

// PlanOutput is one resolved rendition.
type PlanOutput struct {
	Kind      string          `json:"kind"`
	URL       string          `json:"url"`
	Container string          `json:"container"`
	Video     fsm.VideoParams `json:"video"`
	Audio     fsm.AudioParams `json:"audio"`
}

// Progress is the last progress reported for a running job.
type Progress struct {
	Percent   float64   `json:"percent"`
	Frame     int64     `json:"frame"`
	FPS       float64   `json:"fps"`
	Speed     float64   `json:"speed"`
	OutTimeMS int64     `json:"out_time_ms"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Result is what a successful job produced and what its run used.
type Result struct {
	Outputs      []OutputResult `json:"outputs"`
	CPUSeconds   float64        `json:"cpu_seconds,omitempty"`
	PeakMemoryMB int            `json:"peak_memory_mb,omitempty"`
}

// OutputResult is one output as ffprobe found it after the run, named by
// the URL the spec gave it (for HLS, the playlist's).
type OutputResult struct {
	URL         string  `json:"url"`
	Codec       string  `json:"codec,omitempty"`
	Width       int     `json:"width,omitempty"`
	Height      int     `json:"height,omitempty"`
	FPS         float64 `json:"fps,omitempty"`
	DurationSec float64 `json:"duration_sec,omitempty"`
	SizeBytes   int64   `json:"size_bytes,omitempty"`
}

// JobPage is one page of a job list, newest first; Next, if set, is the
// after= of the next page.
type JobPage struct {
	Jobs []Job  `json:"jobs"`
	Next string `json:"next,omitempty"`
}

// Worker is a worker as the API shows it, with its current load.
type Worker struct {
	ID string `json:"id"`
	// TenantID is the tenant of a dedicated worker, "" for the shared
	// pool.
	TenantID string          `json:"tenant_id,omitempty"`
	Name     string          `json:"name"`
	State    fsm.WorkerState `json:"state"`
	// Draining workers finish what they run and take nothing new.
	Draining        bool              `json:"draining,omitempty"`
	Slots           int               `json:"slots"`
	CPUs            int               `json:"cpus"`
	MemoryMB        int               `json:"memory_mb"`
	Encoders        []string          `json:"encoders"`
	EncoderSessions map[string]int    `json:"encoder_sessions,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	RegisteredAt    time.Time         `json:"registered_at"`
	// ActiveJobs is how many active jobs the worker holds that the
	// caller may see: on the shared pool, a tenant counts only its own.
	ActiveJobs int `json:"active_jobs"`
	// ModifyIndex is the worker's version: it grows with every change.
	ModifyIndex uint64 `json:"modify_index"`
}

// WorkerList is the answer of GET /v1/workers.
type WorkerList struct {
	Workers []Worker `json:"workers"`
}

// ClusterStatus is the answer of the /v1/cluster routes that show the
// membership (members, status, join, remove, transfer-leadership).
type ClusterStatus struct {
	ClusterID string          `json:"cluster_id,omitempty"`
	Node      string          `json:"node"`
	Leader    string          `json:"leader"`
	Members   []ClusterMember `json:"members"`
}

// ClusterMember is one server of the Raft configuration; Healthy, Status
// and Error are set by /v1/cluster/status only, which asks each server.
type ClusterMember struct {
	ID       string        `json:"id"`
	Addr     string        `json:"addr"`
	Voter    bool          `json:"voter"`
	Leader   bool          `json:"leader"`
	Healthy  *bool         `json:"healthy,omitempty"`
	Status   *ServerStatus `json:"status,omitempty"`
	Error    string        `json:"error,omitempty"`
	Suffrage string        `json:"suffrage"`
}

// ServerStatus is what a server reports of itself: its addresses and its
// Raft state. Raft's indexes are part of this super-admin view.
type ServerStatus struct {
	ID           string    `json:"id"`
	Addr         string    `json:"addr"`
	APIAddr      string    `json:"api_addr,omitempty"`
	GossipAddr   string    `json:"gossip_addr,omitempty"`
	State        string    `json:"state"`
	Term         uint64    `json:"term"`
	LastLogIndex uint64    `json:"last_log_index"`
	CommitIndex  uint64    `json:"commit_index"`
	AppliedIndex uint64    `json:"applied_index"`
	FSMIndex     uint64    `json:"fsm_index"`
	LastContact  string    `json:"last_contact,omitempty"`
	Leader       string    `json:"leader,omitempty"`
	LeaderID     string    `json:"leader_id,omitempty"`
	Time         time.Time `json:"time"`
	ClusterID    string    `json:"cluster_id,omitempty"`
	Waiting      bool      `json:"waiting,omitempty"`
	// Protocol is the newest cluster protocol the server's binary speaks;
	// absent (1) for a binary from before protocols.
	Protocol int `json:"protocol,omitempty"`
}

// apiMembers converts the cluster's members for a response.
func apiMembers(ms []cluster.Member) []ClusterMember {
	out := make([]ClusterMember, len(ms))
	for i, m := range ms {
		out[i] = ClusterMember{ID: m.ID, Addr: m.Addr, Voter: m.Voter, Leader: m.Leader, Healthy: m.Healthy, Error: m.Error, Suffrage: m.Suffrage}
		if s := m.Status; s != nil {
			out[i].Status = &ServerStatus{ID: s.ID, Addr: s.Addr, APIAddr: s.APIAddr, GossipAddr: s.GossipAddr, State: s.State,
				Term: s.Term, LastLogIndex: s.LastLogIndex, CommitIndex: s.CommitIndex, AppliedIndex: s.AppliedIndex, FSMIndex: s.FSMIndex,
				LastContact: s.LastContact, Leader: s.Leader, LeaderID: s.LeaderID, Time: s.Time, ClusterID: s.ClusterID, Waiting: s.Waiting,
				Protocol: s.Protocol}
		}
	}
	return out
}

// apiJob converts a job for a response.
func apiJob(j *fsm.Job) Job {
	out := Job{
		ID: j.ID, TenantID: j.TenantID, Spec: j.Spec, Plan: apiPlan(&j.Plan), State: j.State,
		Attempt: j.Attempt, Retries: j.Retries, WorkerID: j.WorkerID, RetryOf: j.RetryOf,
		SubmittedAt: j.SubmittedAt, QueuedAt: j.QueuedAt, NotBefore: j.NotBefore,
		AssignedAt: j.AssignedAt, StartedAt: j.StartedAt, ExitedAt: j.ExitedAt, FinishedAt: j.FinishedAt,
		Log: j.Log, ModifyIndex: j.ModifyIndex,
	}
	if p := j.Progress; p != nil {
		out.Progress = &Progress{Percent: p.Percent, Frame: p.Frame, FPS: p.FPS, Speed: p.Speed, OutTimeMS: p.OutTimeMS, UpdatedAt: p.UpdatedAt}
	}
	if r := j.Result; r != nil {
		out.Result = &Result{Outputs: make([]OutputResult, len(r.Outputs)), CPUSeconds: r.CPUSeconds, PeakMemoryMB: r.PeakMemoryMB}
		for i, o := range r.Outputs {
			out.Result.Outputs[i] = OutputResult{URL: o.URL, Codec: o.Codec, Width: o.Width, Height: o.Height,
				FPS: o.FPS, DurationSec: o.DurationSec, SizeBytes: o.SizeBytes}
		}
	}
	if e := j.Error; e != nil {
		out.Error = &fsm.Error{Code: e.Code, Message: e.Message}
	}
	return out
}

// apiPlan converts a plan, leaving out the tenant-relative paths a worker
// resolves files with.
func apiPlan(p *fsm.Plan) Plan {
	in := p.Input
	out := Plan{
		Input:    PlanInput{Kind: in.Kind, URL: in.URL, Width: in.Width, Height: in.Height, FPS: in.FPS, DurationSec: in.DurationSec},
		Outputs:  make([]PlanOutput, len(p.Outputs)),
		Hardware: p.Hardware,
	}
	for i, r := range p.Outputs {
		out.Outputs[i] = PlanOutput{Kind: r.Kind, URL: r.URL, Container: r.Container, Video: r.Video, Audio: r.Audio}
	}
	return out
}

// apiJobPage converts a page of jobs.
func apiJobPage(p *fsm.JobPage) JobPage {
	out := JobPage{Jobs: make([]Job, len(p.Jobs)), Next: p.Next}
	for i, j := range p.Jobs {
		out.Jobs[i] = apiJob(j)
	}
	return out
}

// apiWorker converts a worker for a response; active is its ActiveJobs.
func apiWorker(w *fsm.Worker, active int) Worker {
	return Worker{
		ID: w.ID, TenantID: w.TenantID, Name: w.Name, State: w.State, Draining: w.Draining,
		Slots: w.Slots, CPUs: w.CPUs, MemoryMB: w.MemoryMB, Encoders: w.Encoders,
		EncoderSessions: w.EncoderSessions, Labels: w.Labels, RegisteredAt: w.RegisteredAt,
		ActiveJobs: active, ModifyIndex: w.ModifyIndex,
	}
}

// ReadyWorkers is the worker connectivity /ready reports: how many
// workers are up and take jobs, up but draining, and down (their lease ran
// out), and how many readiness requires (--ready-require-workers).
type ReadyWorkers struct {
	Up       int `json:"up"`
	Draining int `json:"draining"`
	Down     int `json:"down"`
	Required int `json:"required"`
}

// JobSummary is GET /v1/jobs/summary: the active jobs of the tenant the
// request acts on (every tenant's, for a super-admin without ?tenant=)
// counted, as of the index in X-Ffrtmp-Index.
type JobSummary struct {
	// Tenant is the tenant counted; "" for every tenant.
	Tenant string `json:"tenant"`
	// States counts active jobs by state: queued, assigned, running,
	// paused. Finished jobs are listed by GET /v1/jobs?state=.
	States map[fsm.JobState]int `json:"states"`
	// Queues describes the queued jobs of each queue (live, default,
	// batch).
	Queues map[fsm.Queue]QueueSummary `json:"queues"`
	// OldestQueuedAt is when the job waiting longest in any queue was
	// queued (absent with none queued). The answer holds no age, so that
	// it depends on the state alone; its age is the response's Date
	// less this.
	OldestQueuedAt *time.Time `json:"oldest_queued_at,omitempty"`
}

// QueueSummary is one queue's queued jobs in a JobSummary.
type QueueSummary struct {
	Queued int `json:"queued"`
	// Priorities counts them by priority: high, medium, low.
	Priorities     map[fsm.Priority]int `json:"priorities"`
	OldestQueuedAt *time.Time           `json:"oldest_queued_at,omitempty"`
}
