package worker

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Control is the node side of the worker protocol, as the worker sees it.
// Dev mode implements it in-process; a remote worker reaches a node over
// the network. Every method may be retried: reports are idempotent and
// fenced by their attempt number.
type Control interface {
	// Register registers this worker (a new incarnation requeues the jobs
	// of the previous one).
	Register(ctx context.Context, w *fsm.Worker) (*fsm.Worker, error)
	// Assignments blocks until the worker's list changed after state
	// index index (or a bounded wait ends) and returns the active jobs
	// assigned to the worker, with the state index they reflect.
	Assignments(ctx context.Context, workerID string, index uint64) ([]*fsm.Job, uint64, error)
	// Start reports that ffmpeg started for an attempt.
	Start(ctx context.Context, r fsm.Report) error
	// Progress reports an attempt's progress.
	Progress(ctx context.Context, r fsm.Report, p fsm.Progress) error
	// Exit reports that an attempt's ffmpeg exited successfully and its
	// outputs are being checked, which frees its slot for the next job
	// before Finish. Best effort: a node that refuses it or does not know
	// it (an older version) frees the slot with Finish.
	Exit(ctx context.Context, r fsm.Report) error
	// Finish reports an attempt's end.
	Finish(ctx context.Context, c *fsm.FinishJob) error
	// Heartbeat renews the worker's lease and returns the lease's length
	// as the leader holds it; a worker that stops heartbeating is declared
	// gone and its jobs are requeued. The worker fences itself (see
	// FenceFor) by that length.
	Heartbeat(ctx context.Context, workerID string) (time.Duration, error)
}

// Config configures a Worker.
type Config struct {
	ID       string // stable across restarts; see LoadOrCreateID
	Name     string
	TenantID string // "" for the shared pool
	// Addr is the worker's gossip address, "" for an in-process worker.
	Addr      string
	Slots     int
	MediaRoot string
	FFmpeg    string
	FFprobe   string
	Labels    map[string]string
	Control   Control
	Logger    *slog.Logger
	// ProgressInterval throttles progress reports per job (default 1s), so
	// that progress does not dominate the Raft log.
	ProgressInterval time.Duration
	// KillGrace is the SIGTERM to SIGKILL grace period (default 5s).
	KillGrace time.Duration
	// NVENCSessions caps concurrent NVENC encoder sessions (default
	// DefaultNVENCSessions).
	NVENCSessions int
	// Net checks and pins where jobs connect (see NetGuard); a zero
	// NetGuard if nil.
	Net *NetGuard
}

// Worker runs the jobs the cluster assigns to it. It reconciles: whatever
// the node says is assigned to this worker is what runs; a process for an
// attempt that is no longer assigned (canceled, reassigned, stale) is
// stopped.
type Worker struct {
	cfg         Config
	log         *slog.Logger
	incarnation string
	info        *fsm.Worker // what the worker registers as

	mu       sync.Mutex
	attempts map[string]*attempt // by job ID
	// ran holds, per job, the last attempt this process ran or reported
	// lost, so that an attempt never runs twice here.
	ran    map[string]int
	latest []*fsm.Job // the last assignment list from the node
	wg     sync.WaitGroup
	// The self-fence: attempts may run only until fenceUntil, the send
	// time of the last heartbeat that succeeded plus FenceFor(lease).
	// fenced is set before the first heartbeat succeeds and when the
	// fence falls; while it is, no attempt starts.
	fenceUntil time.Time
	fenceTimer *time.Timer
	fenced     bool
	// rejoined tells the assignment loop to forget its index: the worker
	// registered again, perhaps with a rebuilt cluster.
	rejoined atomic.Bool
	// dog kills the attempts' ffmpeg when this process stops beating
	// (SIGSTOP, a hang), which the fence cannot do; nil if it could not
	// start.
	dog *watchdog
}

// attempt is one local run of a job's attempt.
type attempt struct {
	report fsm.Report
	cancel context.CancelCauseFunc
	mu     sync.Mutex
	run    *Run // nil until ffmpeg started
	paused bool
}

// New returns a worker; Run starts it.
func New(cfg Config) *Worker {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ProgressInterval == 0 {
		cfg.ProgressInterval = time.Second
	}
	if cfg.KillGrace == 0 {
		cfg.KillGrace = 5 * time.Second
	}
	if cfg.FFmpeg == "" {
		cfg.FFmpeg = "ffmpeg"
	}
	if cfg.FFprobe == "" {
		cfg.FFprobe = "ffprobe"
	}
	if cfg.Slots <= 0 {
		cfg.Slots = max(1, runtime.NumCPU()/2)
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	b := make([]byte, 8)
	rand.Read(b)
	return &Worker{
		cfg: cfg, log: cfg.Logger.With("worker", cfg.ID),
		incarnation: hex.EncodeToString(b), attempts: make(map[string]*attempt), ran: make(map[string]int),
		fenced: true,
	}
}

// LoadOrCreateID returns the worker ID stored at path, creating a new one
// the first time, so that a worker keeps its identity across restarts.
func LoadOrCreateID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read worker id: %w", err)
	}
	r := make([]byte, 6)
	rand.Read(r)
	host, _ := os.Hostname()
	id := "w-" + sanitize(host) + "-" + hex.EncodeToString(r)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("write worker id: %w", err)
	}
	// Write and rename, so that a crash never leaves an empty file.
	if err := os.WriteFile(path+".tmp", []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write worker id: %w", err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return "", fmt.Errorf("write worker id: %w", err)
	}
	return id, nil
}

func sanitize(s string) string {
	s = strings.ToLower(s)
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' {
			out = append(out, r)
		}
	}
	if len(out) > 32 {
		out = out[:32]
	}
	return string(out)
}

// ID returns the worker's ID.
func (w *Worker) ID() string { return w.cfg.ID }

// Run probes encoders, registers, and runs assigned jobs until ctx ends;
// then it stops every ffmpeg it started and returns.
func (w *Worker) Run(ctx context.Context) error {
	if err := os.MkdirAll(w.cfg.MediaRoot, 0o750); err != nil {
		return fmt.Errorf("create media root: %w", err)
	}
	// What a killed process of this worker was writing will never be
	// published: its attempts were requeued; except what its publish
	// journal holds, settled once the worker is registered.
	pending := w.journal().load(w.log)
	var keep []string
	w.mu.Lock()
	for _, p := range pending {
		keep = append(keep, p.temps()...)
		// Its report is on its way: the attempt is not lost.
		w.ran[p.Finish.JobID] = p.Finish.Attempt
	}
	w.mu.Unlock()
	if n, err := RemoveLeftovers(w.cfg.MediaRoot, w.cfg.ID, keep...); err != nil {
		w.log.Warn("remove temporary outputs left over", "error", err)
	} else if n > 0 {
		w.log.Info("removed temporary outputs left over", "count", n)
	}
	// Detect the limit mode before any child process starts: a probe
	// ffmpeg still in the worker's cgroup would keep it from delegating.
	w.log.Info("resource limits", "mode", DefaultLimiter())
	// After the limit mode: the watchdog stays in the worker's cgroup.
	if d, err := startWatchdog(w.log, WatchdogFor(heartbeatsPerLease*defaultHeartbeatInterval)); err != nil {
		w.log.Warn("running without a watchdog: if this worker is stopped (SIGSTOP) or hangs, its ffmpeg processes keep running after the cluster gives their jobs to another worker", "error", err)
	} else {
		w.dog = d
		stop, beating := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(beating)
			d.beat(stop)
		}()
		defer func() {
			close(stop)
			<-beating
			d.close()
		}()
	}
	found, err := ProbeEncoders(ctx, w.cfg.FFmpeg)
	if err != nil {
		return fmt.Errorf("probe encoders: %w", err)
	}
	if len(found) == 0 {
		return errors.New("probe encoders: ffmpeg has no usable video encoder")
	}
	w.info = &fsm.Worker{
		ID: w.cfg.ID, TenantID: w.cfg.TenantID, Name: w.cfg.Name, Addr: w.cfg.Addr, Incarnation: w.incarnation,
		Slots: w.cfg.Slots, CPUs: runtime.NumCPU(), MemoryMB: memoryMB(), Encoders: found,
		Labels: maps.Clone(w.cfg.Labels), EncoderSessions: w.sessions(found),
	}
	if err := w.register(ctx); err != nil {
		return err
	}
	w.log.Info("worker registered", "slots", w.info.Slots, "encoders", strings.Join(found, ","))

	defer w.stopAll()
	w.wg.Add(2)
	go func() {
		defer w.wg.Done()
		w.heartbeat(ctx)
	}()
	go func() {
		defer w.wg.Done()
		w.resume(ctx, pending)
	}()
	watchAssignments(ctx, w.log, w.cfg.Control, w.cfg.ID, &w.rejoined, nil, func(jobs []*fsm.Job) { w.reconcile(ctx, jobs) })
	return nil
}

// watchAssignments long-polls the assignments of worker id until ctx
// ends, and hands each list to reconcile unless it is older than the last
// one (a server behind the one that answered before). Failed calls are
// retried with backoff, unless final (if set) says a failure is final,
// which is then returned. rejoined tells it to forget its index: the
// worker registered again, perhaps with a rebuilt cluster.
func watchAssignments(ctx context.Context, log *slog.Logger, c Control, id string, rejoined *atomic.Bool,
	final func(error) bool, reconcile func([]*fsm.Job)) error {
	var index uint64
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		jobs, idx, err := c.Assignments(cctx, id, index)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if final != nil && final(err) {
				return err
			}
			log.Warn("watch assignments", "error", err, "retry_in", backoff)
			sleep(ctx, backoff)
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if rejoined.Swap(false) {
			index = 0
		}
		if idx < index {
			// A server behind the one that answered before (a failover):
			// its list is older than what this worker already acts on.
			log.Debug("ignoring assignments older than the last seen", "index", idx, "seen", index)
			continue
		}
		reconcile(jobs)
		index = idx
	}
	return nil
}

// DefaultNVENCSessions is how many NVENC sessions a worker offers by
// default: the limit of current consumer drivers; data-centre GPUs allow
// more (Config.NVENCSessions).
const DefaultNVENCSessions = 8

// sessions returns the encoder sessions the worker offers per hardware
// kind it probed: NVENC's driver limit, and for QSV and VAAPI one per slot.
func (w *Worker) sessions(found []string) map[string]int {
	out := map[string]int{}
	for _, e := range found {
		switch kind := fsm.EncoderHardware(e); kind {
		case "":
		case fsm.HardwareNVENC:
			out[kind] = cmp.Or(w.cfg.NVENCSessions, DefaultNVENCSessions)
		default:
			out[kind] = w.cfg.Slots
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// register registers the worker, retrying until the cluster answers.
func (w *Worker) register(ctx context.Context) error {
	return retry(ctx, w.log, "register", func(ctx context.Context) error {
		_, err := w.cfg.Control.Register(ctx, w.info)
		return err
	})
}

// FenceFor returns how long after sending its last successful heartbeat
// a worker may run attempts under a lease of that length: two thirds of
// it. When that time passes without another successful heartbeat, the
// worker kills (SIGKILL) every attempt and starts none until a heartbeat
// succeeds again.
//
// Why that is enough, by durations alone (no clock sync): the leader
// renews a lease with the time the heartbeat arrived, after confirming it
// still leads, which is no earlier than when the worker sent it; a new
// leader counts every lease from its own start, later still. So the leader
// cannot mark the worker down and requeue its jobs before send + lease, as
// measured by any clock that runs at the worker's rate (offsets do not
// matter; rates agree far better than a third). The worker kills its
// attempts at send + 2/3 lease, leaving a third of the lease (5 s of the
// default 15 s) for a late timer on a loaded host and for ffmpeg to die,
// and a new attempt elsewhere starts only after the leader re-assigns it.
// Gossip failure detection does not shortcut the lease: the leader marks
// a worker down early only when it left the pool gracefully, after its
// attempts ended. Files need no such margin (they are published only
// after the cluster accepted the attempt's finish); a live stream, which
// cannot wait, relies on it.
//
// The fence is a timer in the worker's process, so a worker frozen
// (SIGSTOP) or hung cannot keep it; its watchdog process does (see
// WatchdogFor): frozen at T, with no beat after T, the worker's ffmpeg is
// killed by T + lease/6. The fence runs until T = send + 2/3 lease at
// the latest, so the kill comes by send + 5/6 lease, a sixth of the lease
// (2.5 s of the default 15 s) before the leader can re-assign at
// send + lease.
func FenceFor(lease time.Duration) time.Duration { return lease - lease/3 }

// heartbeatsPerLease is how many heartbeats a worker sends per lease, so
// that a few lost ones do not cost it.
const heartbeatsPerLease = 5

// defaultHeartbeatInterval is the interval before the cluster named its
// lease.
const defaultHeartbeatInterval = 3 * time.Second

// errFenced is the cause of attempts stopped by the self-fence.
var errFenced = errors.New("no heartbeat succeeded within the fence; the cluster may give the attempt to another worker")

// errWatchdog is the cause of attempts whose ffmpeg the watchdog killed.
var errWatchdog = errors.New("the worker stopped beating (stopped or hung) and its watchdog killed ffmpeg; the cluster may give the attempt to another worker")

// heartbeat renews the lease until ctx ends, and keeps the self-fence.
func (w *Worker) heartbeat(ctx context.Context) {
	every, fence := defaultHeartbeatInterval, FenceFor(heartbeatsPerLease*defaultHeartbeatInterval)
	dogLease := heartbeatsPerLease * defaultHeartbeatInterval
	for {
		sent := time.Now()
		// A heartbeat that takes half the fence is as good as lost.
		hctx, cancel := context.WithTimeout(ctx, fence/2)
		lease, err := w.cfg.Control.Heartbeat(hctx, w.cfg.ID)
		cancel()
		switch {
		case err == nil:
			every, fence = max(lease/heartbeatsPerLease, 10*time.Millisecond), FenceFor(lease)
			if lease != dogLease {
				dogLease = lease
				w.dog.setLease(lease)
			}
			w.renew(ctx, sent, fence)
		case fsm.ErrorCode(err) == fsm.CodeWorkerLost:
			// Marked down (a partition, a lost lease): its attempts were
			// requeued; stop them now and come back as up.
			w.log.Warn("the cluster lost this worker; registering again", "error", err)
			w.fence("the cluster marked this worker down")
			if err := w.register(ctx); err != nil && ctx.Err() == nil {
				w.log.Error("register", "error", err)
			}
			w.rejoined.Store(true)
			continue
		case ctx.Err() == nil:
			w.log.Warn("heartbeat", "error", err)
		}
		sleep(ctx, every-time.Since(sent))
		if ctx.Err() != nil {
			return
		}
	}
}

// renew moves the self-fence to sent + fence after a successful heartbeat
// sent at sent, and lifts it if it had fallen.
func (w *Worker) renew(ctx context.Context, sent time.Time, fence time.Duration) {
	until := sent.Add(fence)
	w.mu.Lock()
	defer w.mu.Unlock()
	if !until.After(w.fenceUntil) || !time.Now().Before(until) {
		return // an answer that came too late to count
	}
	w.fenceUntil = until
	if w.fenceTimer != nil {
		w.fenceTimer.Stop()
	}
	w.fenceTimer = time.AfterFunc(time.Until(until), func() {
		w.mu.Lock()
		late := !time.Now().Before(w.fenceUntil)
		w.mu.Unlock()
		if late {
			w.fence("no heartbeat succeeded for " + fence.String())
		}
	})
	if w.fenced {
		w.fenced = false
		w.log.Info("lease renewed; running jobs")
		w.reconcileLocked(ctx)
	}
}

// fence stops every attempt at once and starts none until a heartbeat
// succeeds.
func (w *Worker) fence(why string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fenceUntil = time.Time{}
	if !w.fenced {
		w.log.Warn("fencing: stopping every attempt", "reason", why, "attempts", len(w.attempts))
	}
	w.fenced = true
	for _, a := range w.attempts {
		a.fence()
	}
}

// fence kills the attempt's ffmpeg without a grace period.
func (a *attempt) fence() {
	a.cancel(errFenced)
	a.mu.Lock()
	run := a.run
	a.mu.Unlock()
	if run != nil {
		go run.Kill(errFenced)
	}
}

// reconcile makes the local attempts match the assigned jobs.
func (w *Worker) reconcile(ctx context.Context, jobs []*fsm.Job) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.latest = jobs
	w.reconcileLocked(ctx)
}

func (w *Worker) reconcileLocked(ctx context.Context) {
	want := make(map[string]*fsm.Job, len(w.latest))
	for _, j := range w.latest {
		want[j.ID] = j
	}
	for id := range w.ran {
		if _, ok := want[id]; !ok {
			delete(w.ran, id)
		}
	}
	for id, a := range w.attempts {
		if j, ok := want[id]; !ok || j.Attempt != a.report.Attempt {
			w.log.Info("stopping job no longer assigned", "job", id, "attempt", a.report.Attempt)
			a.cancel(context.Canceled)
		}
	}
	for _, j := range w.latest {
		a, ok := w.attempts[j.ID]
		switch {
		case ok && a.report.Attempt == j.Attempt:
			a.setPaused(j.State == fsm.JobPaused, w.log)
		case ok:
			// The old attempt is stopping; the new one starts when it is
			// gone (see start).
		case j.Attempt <= w.ran[j.ID]:
			// Already ran here; its report is on its way.
		case w.fenced:
			// Nothing starts, or is declared lost, without a lease.
		case j.State == fsm.JobAssigned:
			w.start(ctx, j)
		default:
			// Running here per the cluster, but not in this process: the
			// attempt was lost (for example its report never arrived).
			w.lost(ctx, j)
		}
	}
}

func (a *attempt) setPaused(paused bool, log *slog.Logger) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.run == nil || a.paused == paused {
		return
	}
	var err error
	if paused {
		err = a.run.Pause()
	} else {
		err = a.run.Resume()
	}
	if err != nil {
		log.Warn("pause/resume", "job", a.report.JobID, "pause", paused, "error", err)
		return
	}
	a.paused = paused
}

// lost reports an attempt this process does not run as failed, so that
// the job is retried within its budget. w.mu is held.
func (w *Worker) lost(ctx context.Context, j *fsm.Job) {
	w.ran[j.ID] = j.Attempt
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.finish(ctx, lostFinish(w.cfg.ID, j))
	}()
}

// lostFinish is the finish report of an attempt of j that worker id was
// assigned but does not run: failed, and retryable.
func lostFinish(id string, j *fsm.Job) *fsm.FinishJob {
	return &fsm.FinishJob{Report: fsm.Report{JobID: j.ID, WorkerID: id, Attempt: j.Attempt}, Retryable: true,
		Error: fsm.Errorf(fsm.CodeWorkerLost, "worker %s does not run attempt %d", id, j.Attempt)}
}

// start runs an attempt in its own goroutine. w.mu is held.
func (w *Worker) start(ctx context.Context, j *fsm.Job) {
	actx, cancel := context.WithCancelCause(ctx)
	a := &attempt{report: fsm.Report{JobID: j.ID, WorkerID: w.cfg.ID, Attempt: j.Attempt}, cancel: cancel}
	w.attempts[j.ID] = a
	w.ran[j.ID] = j.Attempt
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer cancel(nil)
		w.runAttempt(actx, ctx, a, j)
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.attempts[j.ID] == a {
			delete(w.attempts, j.ID)
		}
		// A newer attempt of this job may be waiting for this one to end.
		if ctx.Err() == nil {
			w.reconcileLocked(ctx)
		}
	}()
}

// runAttempt runs ffmpeg for one attempt and reports on it. actx ends when
// the attempt must stop; wctx when the worker stops.
func (w *Worker) runAttempt(actx, wctx context.Context, a *attempt, j *fsm.Job) {
	log := w.log.With("job", j.ID, "attempt", j.Attempt)
	var sent Progress // the last report's sample, for the CPU rate
	progress := newThrottle(w.cfg.ProgressInterval, func(p Progress) {
		cpu, mem := usageSince(sent, p)
		sent = p
		err := w.cfg.Control.Progress(actx, a.report, fsm.Progress{
			Percent: p.Percent, Frame: p.Frame, FPS: p.FPS, Speed: p.Speed, OutTimeMS: p.OutTimeMS, CPU: cpu, MemoryMB: mem,
		})
		if err != nil && actx.Err() == nil {
			log.Debug("progress report", "error", err)
		}
	})
	defer progress.stop()
	enc := Encoders{}
	for _, codec := range j.Plan.Codecs() {
		e := w.info.EncoderFor(codec, j.Plan.Hardware)
		if e == "" {
			w.finish(wctx, &fsm.FinishJob{Report: a.report, Error: fsm.Errorf(fsm.CodeNoCapableWorker,
				"worker %s has no %q encoder for %s", w.cfg.ID, j.Plan.Hardware, codec)})
			return
		}
		enc[codec] = e
	}
	run, err := Start(actx, RunParams{
		FFmpeg: w.cfg.FFmpeg, FFprobe: w.cfg.FFprobe, MediaRoot: w.cfg.MediaRoot, TenantID: j.TenantID,
		Plan: &j.Plan, Encoders: enc, Timeout: time.Duration(j.Spec.Timeout),
		KillGrace: w.cfg.KillGrace, OnProgress: progress.set, OnExit: func() { w.exited(actx, a.report, log) },
		Limits: Limits{CPU: j.Spec.Resources.CPU, MemoryMB: j.Spec.Resources.MemoryMB},
		Name:   fmt.Sprintf("%s-%d", j.ID, j.Attempt), Owner: w.cfg.ID, Logger: log, Net: w.cfg.Net,
	})
	if errors.Is(context.Cause(actx), errFenced) {
		w.endFenced(wctx, a, run, errFenced)
		return
	}
	if err != nil {
		log.Warn("job could not start", "error", err)
		w.finish(wctx, &fsm.FinishJob{Report: a.report, Error: asFSMError(err), Retryable: retryable(err)})
		return
	}
	w.dog.add(run.Pid())
	a.mu.Lock()
	a.run = run
	a.mu.Unlock()
	if errors.Is(context.Cause(actx), errFenced) {
		run.Kill(errFenced) // the fence fell before a.run was set
	}
	if err := retry(actx, log, "start report", func(ctx context.Context) error { return w.cfg.Control.Start(ctx, a.report) }); err != nil {
		run.Cancel()
	}
	log.Info("job running", "pid", run.Pid())
	result, tail, err := run.Wait()
	w.dog.del(run.Pid()) // reaped: its group ID may be reused
	progress.stop()
	if errors.Is(context.Cause(actx), errFenced) {
		w.endFenced(wctx, a, run, errFenced)
		return
	}
	if err != nil && !errors.Is(err, ErrCanceled) && run.proc.sigkilled() && w.dog.killedGroup(run.Pid(), time.Second) {
		w.endFenced(wctx, a, run, errWatchdog)
		return
	}
	if errors.Is(err, ErrCanceled) {
		// Canceled, reassigned or worker shutdown: the cluster already
		// knows, or will requeue the attempt when this worker returns.
		log.Info("job stopped", "reason", context.Cause(actx))
		return
	}
	fin := &fsm.FinishJob{Report: a.report, Result: result, Log: tail}
	if p, ok := progress.last(); ok {
		fin.Progress = &fsm.Progress{Percent: p.Percent, Frame: p.Frame, FPS: p.FPS, Speed: p.Speed, OutTimeMS: p.OutTimeMS}
	}
	if err != nil {
		fin.Result = nil
		fin.Error = asFSMError(err)
		fin.Retryable = retryable(err)
		log.Warn("job failed", "error", err)
	}
	if fin.Error != nil {
		w.finish(wctx, fin)
		return
	}
	// Outputs reach their final paths only once the cluster accepted this
	// attempt's result: a refused (stale) attempt publishes nothing. The
	// journal entry carries the decision over a crash (see journal).
	var entry *pending
	if files := run.pendingFiles(); len(files) > 0 {
		var jerr error
		if entry, jerr = w.journal().record(fin, files); jerr != nil {
			log.Warn("publish journal entry not written: a crash before the outputs are moved into place loses them", "error", jerr)
		}
	}
	ferr := w.finish(wctx, fin)
	switch {
	case ferr != nil && wctx.Err() != nil && entry != nil:
		run.Keep()
		log.Info("worker stopping before its finish report was answered; the next start settles the outputs")
		return
	case ferr != nil:
		run.Discard()
		log.Warn("job result refused; outputs discarded", "error", ferr)
	default:
		if err := run.Publish(); err != nil {
			log.Error("job succeeded but its outputs could not be published", "error", err)
		} else {
			log.Info("job succeeded")
		}
	}
	if err := entry.done(); err != nil {
		log.Warn("remove publish journal entry", "error", err)
	}
}

// exited tells the cluster, without waiting for the answer, that an
// attempt's ffmpeg exited, so that its slot takes the next job while the
// outputs are probed and reported. A refusal changes nothing: the slot
// then frees with the finish report.
func (w *Worker) exited(ctx context.Context, r fsm.Report, log *slog.Logger) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := w.cfg.Control.Exit(ctx, r); err != nil && ctx.Err() == nil {
			log.Debug("exit report", "error", err)
		}
	}()
}

// journal returns this worker's publish journal.
func (w *Worker) journal() journal { return newJournal(w.cfg.MediaRoot, w.cfg.ID) }

// resume settles the publications a killed process of this worker left
// (see journal): it sends each one's finish report again and publishes
// or discards its outputs on the answer. An entry whose report gets no
// answer before ctx ends stays for the next start.
func (w *Worker) resume(ctx context.Context, entries []*pending) {
	for _, p := range entries {
		log := w.log.With("job", p.Finish.JobID, "attempt", p.Finish.Attempt)
		err := w.finish(ctx, p.Finish)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			discardFiles(p.Files)
			log.Info("earlier run's result refused; outputs discarded", "error", err)
		default:
			if err := publishFiles(p.Files, true); err != nil {
				discardFiles(p.Files)
				log.Error("job succeeded but its outputs could not be published", "error", err)
			} else {
				log.Info("earlier run's outputs published")
			}
		}
		if err := p.done(); err != nil {
			log.Warn("remove publish journal entry", "error", err)
		}
	}
}

// endFenced ends an attempt the self-fence or the watchdog stopped (the
// cause): ffmpeg is killed, its temporary outputs are dropped, and it is
// reported lost (retryable), fenced by its attempt number, so that the
// job moves on even if the cluster did not mark this worker down.
func (w *Worker) endFenced(wctx context.Context, a *attempt, run *Run, cause error) {
	if run != nil {
		run.Kill(cause)
		run.Discard()
	}
	w.log.Warn("job stopped by the fence", "job", a.report.JobID, "attempt", a.report.Attempt, "cause", cause)
	w.finish(wctx, &fsm.FinishJob{Report: a.report, Retryable: true,
		Error: fsm.Errorf(fsm.CodeWorkerLost, "worker %s stopped attempt %d: %v", w.cfg.ID, a.report.Attempt, cause)})
}

// finish delivers a finish report, retrying until the node takes it
// (nil) or refuses it for good (an *fsm.Error), or ctx ends. The log and
// the error message are made printable and free of host paths first.
func (w *Worker) finish(ctx context.Context, c *fsm.FinishJob) error {
	c.Log = printable(w.noHostPaths(c.Log), true, fsm.MaxLogLen)
	if c.Error != nil {
		e := *c.Error
		e.Message = printable(w.noHostPaths(e.Message), false, fsm.MaxTextLen)
		c.Error = &e
	}
	return retry(ctx, w.log, "finish report", func(ctx context.Context) error { return w.cfg.Control.Finish(ctx, c) })
}

// noHostPaths returns s with the media root, as configured and as
// resolved (the files' real parents), written as <media>: ffmpeg names
// the files it opens, and the cluster must not learn this host's paths.
func (w *Worker) noHostPaths(s string) string {
	for _, root := range mediaRoots(w.cfg.MediaRoot) {
		s = strings.ReplaceAll(s, root, "<media>")
	}
	return s
}

// mediaRoots returns the absolute and the symlink-resolved form of a
// media root, longest first.
func mediaRoots(root string) []string {
	var out []string
	if abs, err := filepath.Abs(root); err == nil && abs != "/" {
		out = append(out, abs)
		if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs && real != "/" {
			out = append(out, real)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// ansiEscape matches terminal escape sequences: CSI (colors, cursor
// moves) and two-byte escapes.
var ansiEscape = regexp.MustCompile(`\x1b(\[[0-?]*[ -/]*[@-~]|[@-_])`)

// printable makes ffmpeg's words storable and printable, as the cluster's
// validation requires: valid UTF-8, no terminal escapes, carriage returns
// (ffmpeg's progress lines) as newlines, no other control characters;
// newlines and tabs only if multiline, else spaces. It keeps the last
// max bytes, as a tail does.
func printable(s string, multiline bool, max int) string {
	s = ansiEscape.ReplaceAllString(strings.ToValidUTF8(s, "\uFFFD"), "")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.Map(func(r rune) rune {
		switch {
		case !multiline && (r == '\r' || r == '\n' || r == '\t'):
			return ' '
		case r == '\r':
			return '\n'
		case r == '\n' || r == '\t':
			return r
		case unicode.IsControl(r):
			return -1
		}
		return r
	}, s)
	if len(s) > max {
		s = strings.ToValidUTF8(s[len(s)-max:], "")
	}
	return s
}

// callTimeout bounds one call of the worker protocol (an assignments
// long-poll waits at most 30 s on the server), so that a connection a
// partition left half-open cannot stall the worker.
const callTimeout = 45 * time.Second

// retry calls fn, each time bounded by callTimeout, until it succeeds, a
// domain error (*fsm.Error) refuses it, or ctx ends.
func retry(ctx context.Context, log *slog.Logger, what string, fn func(context.Context) error) error {
	delay := 100 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		err := fn(cctx)
		cancel()
		var de *fsm.Error
		if err == nil || errors.As(err, &de) {
			if err != nil {
				log.Info(what+" refused", "error", err)
			}
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn(what+" failed; retrying", "error", err, "retry_in", delay)
		sleep(ctx, delay)
		delay = min(delay*2, 5*time.Second)
	}
}

func asFSMError(err error) *fsm.Error {
	var e *fsm.Error
	if errors.As(err, &e) {
		return e
	}
	return fsm.Errorf(fsm.CodeFFmpeg, "%v", err)
}

// retryable reports whether a failed attempt may succeed if run again:
// refusals of the job itself (bad paths or arguments) are not.
func retryable(err error) bool {
	switch fsm.ErrorCode(err) {
	case fsm.CodeURLNotAllowed, fsm.CodeInvalidArgument, fsm.CodeInvalidURL, fsm.CodeNoCapableWorker, fsm.CodeResourceExceeded:
		return false
	}
	return true
}

// JobLog returns the live stderr tail of a job this worker runs. It
// implements server.LogSource for an in-process worker.
func (w *Worker) JobLog(ctx context.Context, workerID, jobID string) (string, error) {
	if workerID != w.cfg.ID {
		return "", fmt.Errorf("worker %s is not local", workerID)
	}
	w.mu.Lock()
	a := w.attempts[jobID]
	w.mu.Unlock()
	if a == nil {
		return "", fmt.Errorf("job %s is not running here", jobID)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.run == nil {
		return "", nil
	}
	return w.noHostPaths(a.run.Log()), nil
}

// stopAll stops every attempt and waits for them.
func (w *Worker) stopAll() {
	w.mu.Lock()
	for _, a := range w.attempts {
		a.cancel(context.Canceled)
	}
	if w.fenceTimer != nil {
		w.fenceTimer.Stop()
	}
	w.mu.Unlock()
	w.wg.Wait()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// memoryMB returns the host's total memory from /proc/meminfo, 0 if
// unknown.
func memoryMB() int {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, _ := strconv.Atoi(fields[1])
			return kb / 1024
		}
	}
	return 0
}

// throttle delivers the latest value at most once per interval, from its
// own goroutine, and drops values in between.
type throttle struct {
	mu      sync.Mutex
	latest  *Progress // not yet sent
	seen    *Progress // the last value set
	stopped chan struct{}
	once    sync.Once
	done    chan struct{}
}

func newThrottle(every time.Duration, send func(Progress)) *throttle {
	t := &throttle{stopped: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(t.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-t.stopped:
				return
			case <-tick.C:
			}
			t.mu.Lock()
			p := t.latest
			t.latest = nil
			t.mu.Unlock()
			if p != nil {
				send(*p)
			}
		}
	}()
	return t
}

func (t *throttle) set(p Progress) {
	t.mu.Lock()
	t.latest = &p
	t.seen = &p
	t.mu.Unlock()
}

// last returns the last value set.
func (t *throttle) last() (Progress, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seen == nil {
		return Progress{}, false
	}
	return *t.seen, true
}

// stop ends the throttle and waits for an in-flight send.
func (t *throttle) stop() {
	t.once.Do(func() { close(t.stopped) })
	<-t.done
}
