package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// SimConfig configures a simulated worker.
type SimConfig struct {
	ID       string
	Name     string
	TenantID string // "" for the shared pool
	Slots    int
	Control  Control
	// JobDuration, if positive, is how long every job "runs"; otherwise
	// a job runs for its testsrc input's duration, or one second for
	// other inputs.
	JobDuration time.Duration
	// ProgressInterval is how often a running job reports progress
	// (default 1s, as a real worker).
	ProgressInterval time.Duration
	// Stats, if set, counts what the worker does; many workers may share
	// one.
	Stats  *SimStats
	Logger *slog.Logger
}

// SimStats counts what simulated workers do. Its fields are updated
// atomically and may be read at any time.
type SimStats struct {
	Registered atomic.Int64 // workers that registered
	Running    atomic.Int64 // attempts running now
	Started    atomic.Int64 // attempts started (start report accepted)
	Succeeded  atomic.Int64 // finish reports of success accepted
	Refused    atomic.Int64 // reports the cluster refused (stale attempt, canceled job)
	Lost       atomic.Int64 // attempts reported lost (assigned as running, not running here)
}

// Sim is a simulated worker: it speaks the worker protocol through its
// Control exactly as a Worker does (register, heartbeat, long-poll
// assignments, start, progress, finish, every report fenced by its
// attempt number), but "transcodes" by sleeping for the job's duration
// and reports a result without running ffmpeg. It is the load generator
// behind `ffrtmp bench workers`.
type Sim struct {
	cfg  SimConfig
	log  *slog.Logger
	info *fsm.Worker

	mu       sync.Mutex
	attempts map[string]*simAttempt // by job ID
	ran      map[string]int         // last attempt run or reported here, by job ID
	latest   []*fsm.Job             // the last assignment list
	wg       sync.WaitGroup
	rejoined atomic.Bool
}

type simAttempt struct {
	attempt int
	cancel  context.CancelFunc
}

// SimEncoders are the software encoders a simulated worker claims: every
// one the cluster knows, so that any software job may be placed on it.
func SimEncoders() []string {
	var out []string
	for _, codec := range []string{"h264", "h265", "vp9", "av1"} {
		for _, e := range fsm.EncodersFor(codec) {
			if fsm.EncoderHardware(e) == "" {
				out = append(out, e)
			}
		}
	}
	return out
}

// NewSim returns a simulated worker; Run starts it.
func NewSim(cfg SimConfig) *Sim {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = time.Second
	}
	if cfg.Slots <= 0 {
		cfg.Slots = 1
	}
	if cfg.Stats == nil {
		cfg.Stats = &SimStats{}
	}
	b := make([]byte, 8)
	rand.Read(b)
	return &Sim{
		cfg: cfg, log: cfg.Logger.With("worker", cfg.ID),
		info: &fsm.Worker{
			ID: cfg.ID, TenantID: cfg.TenantID, Name: cfg.Name, Incarnation: hex.EncodeToString(b),
			Slots: cfg.Slots, Encoders: SimEncoders(), Labels: map[string]string{"simulated": "true"},
		},
		attempts: make(map[string]*simAttempt), ran: make(map[string]int),
	}
}

// Run registers the worker and runs what the cluster assigns to it until
// ctx ends or the cluster refuses the worker for good (its token); then
// it stops its attempts and returns. As a real worker that stops, it
// leaves its attempts to be requeued when its lease runs out.
func (s *Sim) Run(parent context.Context) error {
	ctx := parent
	if err := s.register(ctx); err != nil {
		return err
	}
	s.cfg.Stats.Registered.Add(1)
	ctx, cancel := context.WithCancelCause(parent)
	defer func() {
		cancel(nil)
		s.wg.Wait()
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.heartbeat(ctx); err != nil {
			cancel(err)
		}
	}()
	// A refusal other than "worker lost" (which the heartbeat handles)
	// is final: the token was revoked.
	final := func(err error) bool {
		var refused *fsm.Error
		return errors.As(err, &refused) && refused.Code != fsm.CodeWorkerLost
	}
	if err := watchAssignments(ctx, s.log, s.cfg.Control, s.cfg.ID, &s.rejoined, final,
		func(jobs []*fsm.Job) { s.reconcile(ctx, jobs) }); err != nil {
		return err
	}
	if parent.Err() != nil {
		return nil
	}
	return context.Cause(ctx)
}

// register registers the worker, retrying until the cluster answers.
func (s *Sim) register(ctx context.Context) error {
	return retry(ctx, s.log, "register", func(ctx context.Context) error {
		_, err := s.cfg.Control.Register(ctx, s.info)
		return err
	})
}

// heartbeat renews the lease until ctx ends; a worker the cluster marked
// down registers again. It returns the cluster's final refusal of the
// worker (its token revoked), or nil when ctx ends.
func (s *Sim) heartbeat(ctx context.Context) error {
	every := defaultHeartbeatInterval
	for {
		sent := time.Now()
		hctx, cancel := context.WithTimeout(ctx, every)
		lease, err := s.cfg.Control.Heartbeat(hctx, s.cfg.ID)
		cancel()
		var refused *fsm.Error
		switch {
		case err == nil:
			every = max(lease/heartbeatsPerLease, 10*time.Millisecond)
		case fsm.ErrorCode(err) == fsm.CodeWorkerLost:
			s.log.Warn("the cluster lost this worker; registering again", "error", err)
			s.stopAll()
			if err := s.register(ctx); err != nil && ctx.Err() == nil {
				return err
			}
			s.rejoined.Store(true)
			continue
		case errors.As(err, &refused) && ctx.Err() == nil:
			return err
		case ctx.Err() == nil:
			s.log.Warn("heartbeat", "error", err)
		}
		sleep(ctx, every-time.Since(sent))
		if ctx.Err() != nil {
			return nil
		}
	}
}

// reconcile makes the local attempts match the assigned jobs, as a
// Worker does.
func (s *Sim) reconcile(ctx context.Context, jobs []*fsm.Job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latest = jobs
	s.reconcileLocked(ctx)
}

func (s *Sim) reconcileLocked(ctx context.Context) {
	jobs := s.latest
	want := make(map[string]*fsm.Job, len(jobs))
	for _, j := range jobs {
		want[j.ID] = j
	}
	for id := range s.ran {
		if _, ok := want[id]; !ok {
			delete(s.ran, id)
		}
	}
	for id, a := range s.attempts {
		if j, ok := want[id]; !ok || j.Attempt != a.attempt {
			a.cancel()
		}
	}
	for _, j := range jobs {
		_, running := s.attempts[j.ID]
		switch {
		case running, j.Attempt <= s.ran[j.ID]:
			// Runs here, or already ran (its report is on its way), or
			// an older attempt is stopping and this one starts when it
			// has (see start).
		case j.State == fsm.JobAssigned:
			s.start(ctx, j)
		default:
			// Running here per the cluster, but not in this process.
			s.ran[j.ID] = j.Attempt
			s.cfg.Stats.Lost.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.finish(ctx, lostFinish(s.cfg.ID, j))
			}()
		}
	}
}

// start runs an attempt in its own goroutine. s.mu is held.
func (s *Sim) start(ctx context.Context, j *fsm.Job) {
	actx, cancel := context.WithCancel(ctx)
	a := &simAttempt{attempt: j.Attempt, cancel: cancel}
	s.attempts[j.ID] = a
	s.ran[j.ID] = j.Attempt
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		s.runAttempt(actx, ctx, j)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.attempts[j.ID] == a {
			delete(s.attempts, j.ID)
		}
		// A newer attempt of this job may be waiting for this one to end.
		if ctx.Err() == nil {
			s.reconcileLocked(ctx)
		}
	}()
}

// runAttempt reports the start, sleeps for the job's duration with a
// progress report every ProgressInterval, and reports a result shaped
// like the plan's outputs. actx ends when the attempt must stop; wctx
// when the worker stops.
func (s *Sim) runAttempt(actx, wctx context.Context, j *fsm.Job) {
	r := fsm.Report{JobID: j.ID, WorkerID: s.cfg.ID, Attempt: j.Attempt}
	if err := retry(actx, s.log, "start report", func(ctx context.Context) error { return s.cfg.Control.Start(ctx, r) }); err != nil {
		if actx.Err() == nil {
			s.cfg.Stats.Refused.Add(1)
		}
		return
	}
	s.cfg.Stats.Started.Add(1)
	s.cfg.Stats.Running.Add(1)
	defer s.cfg.Stats.Running.Add(-1)
	d := SimDuration(j, s.cfg.JobDuration)
	begin := time.Now()
	tick := time.NewTicker(s.cfg.ProgressInterval)
	defer tick.Stop()
	done := time.NewTimer(d)
	defer done.Stop()
	for running := true; running; {
		select {
		case <-actx.Done():
			return // canceled, reassigned, or the worker stops
		case <-done.C:
			running = false
		case <-tick.C:
			el := time.Since(begin)
			p := fsm.Progress{Percent: min(100, 100*el.Seconds()/d.Seconds()), OutTimeMS: el.Milliseconds(), Speed: 1}
			if err := s.cfg.Control.Progress(actx, r, p); err != nil && actx.Err() == nil {
				s.log.Debug("progress report", "error", err)
			}
		}
	}
	res := &fsm.Result{}
	for _, o := range j.Plan.Outputs {
		res.Outputs = append(res.Outputs, fsm.OutputResult{URL: o.URL, Codec: o.Video.Codec, Width: o.Video.Width,
			Height: o.Video.Height, FPS: float64(o.Video.FPS), DurationSec: d.Seconds()})
	}
	fin := &fsm.FinishJob{Report: r, Result: res, Progress: &fsm.Progress{Percent: 100, OutTimeMS: d.Milliseconds(), Speed: 1}}
	if err := s.finish(wctx, fin); err == nil {
		s.cfg.Stats.Succeeded.Add(1)
	} else if wctx.Err() == nil {
		s.cfg.Stats.Refused.Add(1)
	}
}

// SimDuration is how long a simulated worker runs j: override if
// positive, else the testsrc input's duration, else one second.
func SimDuration(j *fsm.Job, override time.Duration) time.Duration {
	switch {
	case override > 0:
		return override
	case j.Plan.Input.Kind == fsm.KindTestsrc && j.Plan.Input.DurationSec > 0:
		return time.Duration(j.Plan.Input.DurationSec * float64(time.Second))
	}
	return time.Second
}

func (s *Sim) finish(ctx context.Context, f *fsm.FinishJob) error {
	return retry(ctx, s.log, "finish report", func(ctx context.Context) error { return s.cfg.Control.Finish(ctx, f) })
}

// stopAll stops every attempt (the cluster requeued them).
func (s *Sim) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.attempts {
		a.cancel()
	}
}
