package worker

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// fakeControl is the cluster as one worker sees it: a list of assigned
// jobs behind an index, a lease that heartbeats renew until cut, and a
// record of the finish reports, which it accepts unless told to refuse.
type fakeControl struct {
	lease time.Duration

	mu      sync.Mutex
	jobs    []*fsm.Job
	index   uint64
	changed chan struct{}
	cut     bool            // heartbeats fail, as in a partition
	renewed time.Time       // when the last successful heartbeat arrived
	refuse  map[string]bool // job IDs whose finish is refused as stale
	// lose holds job IDs whose finish is applied but whose answer never
	// arrives (a transport error), however often it is sent.
	lose     map[string]bool
	finishes []fsm.FinishJob
	finished chan fsm.FinishJob
	// exits records the exit reports, with how many finish reports had
	// arrived before each.
	exits []exitReport
	// behind makes Assignments answer as a lagging server would: an
	// empty list at index 1; lagged counts those answers.
	behind bool
	lagged int
}

func newFakeControl(lease time.Duration) *fakeControl {
	return &fakeControl{lease: lease, index: 1, changed: make(chan struct{}), refuse: map[string]bool{},
		lose: map[string]bool{}, finished: make(chan fsm.FinishJob, 16)}
}

// bump publishes a change of the assignment list; c.mu is held.
func (c *fakeControl) bump() {
	c.index++
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *fakeControl) assign(j *fsm.Job) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.jobs = append(c.jobs, j)
	c.bump()
}

func (c *fakeControl) setCut(cut bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = cut
}

func (c *fakeControl) Register(ctx context.Context, w *fsm.Worker) (*fsm.Worker, error) {
	return w, nil
}

func (c *fakeControl) Assignments(ctx context.Context, workerID string, index uint64) ([]*fsm.Job, uint64, error) {
	c.mu.Lock()
	ch := c.changed
	idx := c.index
	c.mu.Unlock()
	if idx <= index {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.behind {
		c.lagged++
		return nil, 1, nil
	}
	return slices.Clone(c.jobs), c.index, nil
}

func (c *fakeControl) Start(ctx context.Context, r fsm.Report) error { return nil }

func (c *fakeControl) Progress(ctx context.Context, r fsm.Report, p fsm.Progress) error { return nil }

type exitReport struct {
	fsm.Report
	finishesBefore int
}

func (c *fakeControl) Exit(ctx context.Context, r fsm.Report) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exits = append(c.exits, exitReport{r, len(c.finishes)})
	return nil
}

func (c *fakeControl) Finish(ctx context.Context, f *fsm.FinishJob) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finishes = append(c.finishes, *f)
	select {
	case c.finished <- *f:
	default: // a retried report the test does not wait for
	}
	if c.refuse[f.JobID] {
		return fsm.Errorf(fsm.CodeStaleAttempt, "job %s: attempt %d is stale", f.JobID, f.Attempt)
	}
	c.jobs = slices.DeleteFunc(c.jobs, func(j *fsm.Job) bool { return j.ID == f.JobID })
	c.bump()
	if c.lose[f.JobID] {
		return errors.New("connection reset by peer")
	}
	return nil
}

func (c *fakeControl) Heartbeat(ctx context.Context, workerID string) (time.Duration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return 0, errors.New("no server reachable")
	}
	c.renewed = time.Now()
	return c.lease, nil
}

var _ Control = (*fakeControl)(nil)

// testLogger logs to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitFor waits until cond holds, failing the test after runDeadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(runDeadline); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("waited for %s in vain", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ffmpegRunning reports whether a live process has needle in its command
// line.
func ffmpegRunning(t *testing.T, needle string) bool {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), needle) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(filepath.Dir(p), "stat"))
		if i := strings.LastIndexByte(string(stat), ')'); err == nil && i > 0 && i+2 < len(stat) && stat[i+2] != 'Z' {
			return true
		}
	}
	return false
}

// startWorker runs a worker against c in e's media root until the test
// ends, and returns it.
func startWorker(t *testing.T, e runEnv, c *fakeControl) *Worker {
	t.Helper()
	w, _ := launchWorker(t, e, c)
	return w
}

// launchWorker starts worker w1 and returns it with a function that
// stops it and waits for its end (also called at cleanup).
func launchWorker(t *testing.T, e runEnv, c *fakeControl) (*Worker, func()) {
	t.Helper()
	w := New(Config{ID: "w1", Slots: 2, MediaRoot: e.root, FFmpeg: e.ffmpeg, FFprobe: e.ffprobe,
		Control: c, KillGrace: 2 * time.Second, Logger: testLogger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return w, stop
}

func fileJob(t *testing.T, id, seconds, out string) *fsm.Job {
	t.Helper()
	return &fsm.Job{ID: id, TenantID: "t1", WorkerID: "w1", Attempt: 1, State: fsm.JobAssigned,
		Plan: *testsrcPlan(t, "160x120", seconds, out)}
}

// nextFinish waits for the next finish report.
func nextFinish(t *testing.T, c *fakeControl) fsm.FinishJob {
	t.Helper()
	select {
	case f := <-c.finished:
		return f
	case <-time.After(runDeadline):
		t.Fatal("no finish report")
		return fsm.FinishJob{}
	}
}

// TestWorkerPublishesOnlyAcceptedResults runs two real transcodes: the
// cluster refuses the first one's finish as stale, which leaves neither
// its output nor a temporary file; it accepts the second, whose output
// then appears at its final path, once.
func TestWorkerPublishesOnlyAcceptedResults(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := newFakeControl(10 * time.Second)
	c.refuse["stale"] = true
	startWorker(t, e, c)

	c.assign(fileJob(t, "stale", "1", "file:///out/stale.mp4"))
	f := nextFinish(t, c)
	if f.JobID != "stale" || f.Error != nil || f.Result == nil {
		t.Fatalf("finish %+v, want a success of job stale", f)
	}
	if got, want := f.Result.Outputs[0].Path, filepath.Join(e.tenant, "out", "stale.mp4"); got != want {
		t.Errorf("reported path %s, want the final path %s", got, want)
	}
	c.assign(fileJob(t, "ok", "1", "file:///out/ok.mp4"))
	f = nextFinish(t, c)
	if f.JobID != "ok" || f.Error != nil {
		t.Fatalf("finish %+v, want a success of job ok", f)
	}
	// The accepted output is published after the report: wait for it.
	okPath := filepath.Join(e.tenant, "out", "ok.mp4")
	waitFor(t, "the accepted output", func() bool { _, err := os.Stat(okPath); return err == nil })
	waitFor(t, "no temporary files", func() bool { return len(partFiles(t, e.root)) == 0 })
	if _, err := os.Stat(filepath.Join(e.tenant, "out", "stale.mp4")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused attempt's output exists (%v)", err)
	}
	checkOutput(t, e, f.Result.Outputs[0], "file:///out/ok.mp4", "out/ok.mp4", "h264", 160, 120, 30, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.finishes) != 2 {
		t.Errorf("%d finish reports, want 2 (one per attempt): %+v", len(c.finishes), c.finishes)
	}
}

// TestWorkerReportsExit: a successful run reports that its ffmpeg exited
// (which frees its slot in the cluster) once, for its attempt, besides its
// finish.
func TestWorkerReportsExit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := newFakeControl(10 * time.Second)
	startWorker(t, e, c)
	j := fileJob(t, "j1", "1", "file:///out/j1.mp4")
	j.Attempt = 3
	c.assign(j)
	if f := nextFinish(t, c); f.JobID != "j1" || f.Error != nil {
		t.Fatalf("finish %+v, want a success of job j1", f)
	}
	waitFor(t, "the exit report", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.exits) > 0
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	want := fsm.Report{JobID: "j1", WorkerID: "w1", Attempt: 3}
	if len(c.exits) != 1 || c.exits[0].Report != want {
		t.Errorf("exit reports %+v, want one: %+v", c.exits, want)
	}
}

// TestWorkerPublishesAfterRestart: the cluster applies two successful
// finishes but their answers never reach the worker, which stops while it
// still retries them; nothing is published and the temporaries stay. At
// its next start the worker sends both reports again: the one the cluster
// accepts (its repeat of an applied finish) is published, a file and an
// HLS rendition, and the one it refuses as stale is deleted; nothing is
// left of either in the media root or the journal.
func TestWorkerPublishesAfterRestart(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := newFakeControl(10 * time.Second)
	c.lose["kept"], c.lose["hls"], c.lose["stale"] = true, true, true
	_, stop := launchWorker(t, e, c)
	for _, j := range []*fsm.Job{
		fileJob(t, "kept", "1", "file:///out/kept.mp4"),
		fileJob(t, "hls", "1", "file:///out/hls/s.m3u8"),
		fileJob(t, "stale", "1", "file:///out/stale.mp4"),
	} {
		c.assign(j)
		f := nextFinish(t, c)
		for f.JobID != j.ID { // repeats of the earlier jobs' reports
			f = nextFinish(t, c)
		}
		if f.Error != nil {
			t.Fatalf("finish %+v, want a success of job %s", f, j.ID)
		}
	}
	stop()
	final := func(name string) string { return filepath.Join(e.tenant, "out", name) }
	for _, name := range []string{"kept.mp4", "hls/s.m3u8", "stale.mp4"} {
		if _, err := os.Stat(final(name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s published before the cluster's answer arrived (%v)", name, err)
		}
	}
	if n := len(partFiles(t, e.root)); n == 0 {
		t.Fatal("the stopped worker left no temporary outputs")
	}
	if ents, _ := os.ReadDir(newJournal(e.root, "w1").dir); len(ents) != 3 {
		t.Fatalf("%d journal entries, want 3", len(ents))
	}

	c2 := newFakeControl(10 * time.Second)
	c2.refuse["stale"] = true
	launchWorker(t, e, c2)
	got := map[string]bool{}
	for range 3 {
		f := nextFinish(t, c2)
		if f.Attempt != 1 || f.Error != nil || f.Result == nil {
			t.Errorf("repeated finish %+v, want attempt 1's success", f)
		}
		got[f.JobID] = true
	}
	if len(got) != 3 {
		t.Fatalf("repeated finishes for %v, want kept, hls and stale", got)
	}
	waitFor(t, "the accepted outputs", func() bool {
		_, err1 := os.Stat(final("kept.mp4"))
		_, err2 := os.Stat(final("hls/s_00000.ts"))
		_, err3 := os.Stat(final("hls/s.m3u8"))
		return err1 == nil && err2 == nil && err3 == nil
	})
	waitFor(t, "no temporary outputs", func() bool { return len(partFiles(t, e.root)) == 0 })
	waitFor(t, "an empty journal", func() bool {
		ents, err := os.ReadDir(newJournal(e.root, "w1").dir)
		return err == nil && len(ents) == 0
	})
	if _, err := os.Stat(final("stale.mp4")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused attempt's output exists (%v)", err)
	}
	if fi, err := os.Stat(final("kept.mp4")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("kept.mp4: %v, mode %v; want 0640", err, fi.Mode().Perm())
	}
}

// TestWorkerFencesItself cuts the heartbeats of a worker that runs a long
// transcode: before the lease could run out on the cluster's side, the
// worker has killed ffmpeg, dropped its temporary output and reported the
// attempt lost; it starts nothing while fenced, and runs jobs again once
// a heartbeat succeeds.
func TestWorkerFencesItself(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const lease = 9 * time.Second
	c := newFakeControl(lease)
	startWorker(t, e, c)
	c.assign(fileJob(t, "long", "3600", "file:///out/fence-long.mp4")) // outlasts the fence on an idle host
	waitFor(t, "ffmpeg running", func() bool { return ffmpegRunning(t, "fence-long.mp4") })

	c.setCut(true)
	c.mu.Lock()
	deadline := c.renewed.Add(lease) // the earliest the cluster could re-assign
	c.mu.Unlock()
	f := nextFinish(t, c)
	if f.JobID != "long" || f.Error == nil || f.Error.Code != fsm.CodeWorkerLost || !f.Retryable {
		t.Fatalf("finish %+v, want job long lost (retryable worker_lost)", f)
	}
	if ffmpegRunning(t, "fence-long.mp4") {
		t.Error("ffmpeg still runs after the attempt was reported lost")
	}
	if now := time.Now(); !now.Before(deadline) {
		t.Errorf("the attempt ended %s after the lease ran out", now.Sub(deadline))
	}
	if parts := partFiles(t, e.root); len(parts) != 0 {
		t.Errorf("temporary files left: %v", parts)
	}

	// Fenced: a new assignment waits for a heartbeat.
	c.assign(fileJob(t, "after", "1", "file:///out/after.mp4"))
	select {
	case f := <-c.finished:
		t.Fatalf("a job ran while the worker was fenced: %+v", f)
	case <-time.After(2 * time.Second):
	}
	c.setCut(false)
	if f := nextFinish(t, c); f.JobID != "after" || f.Error != nil {
		t.Fatalf("finish %+v, want job after to succeed once the lease is back", f)
	}
}

// TestRemoveLeftovers removes this worker's temporary outputs, and keeps
// the ones named to keep, other workers' and everything else.
func TestRemoveLeftovers(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	mine, theirs := ownerTag("w1"), ownerTag("w2")
	files := map[string]bool{ // path: removed
		"t1/out/.a.mp4.part-" + mine + "-123":            true,
		"t1/.b.mkv.part-" + mine + "-9":                  true,
		"t1/hls/.s.hls-part-" + mine + "-7/s.m3u8":       true,
		"t1/hls/.s.hls-part-" + mine + "-7/s_00000.ts":   true,
		"t1/out/.k.mp4.part-" + mine + "-5":              false, // a journal entry holds it
		"t1/out/.a.mp4.part-" + theirs + "-123":          false,
		"t1/hls/.s.hls-part-" + theirs + "-8/s_00000.ts": false,
		"t1/out/a.mp4":                     false,
		"t1/out/a.mp4.part-" + mine + "-1": false, // not hidden: not ours
		"t2/.notes":                        false,
	}
	for p := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	n, err := RemoveLeftovers(root, "w1", filepath.Join(root, "t1/out/.k.mp4.part-"+mine+"-5"))
	if err != nil || n != 3 {
		t.Errorf("RemoveLeftovers = %d, %v; want 3 (two files, one HLS directory)", n, err)
	}
	for p, removed := range files {
		_, err := os.Stat(filepath.Join(root, filepath.FromSlash(p)))
		if gone := errors.Is(err, os.ErrNotExist); gone != removed {
			t.Errorf("%s: removed %v, want %v", p, gone, removed)
		}
	}
}

// TestWorkerIgnoresOlderAssignments: a server that lags behind the one
// that answered before returns an older, empty assignment list; the
// worker keeps running its attempt.
func TestWorkerIgnoresOlderAssignments(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := newFakeControl(30 * time.Second)
	startWorker(t, e, c)
	c.assign(fileJob(t, "kept", "120", "file:///out/kept-running.mp4"))
	waitFor(t, "ffmpeg running", func() bool { return ffmpegRunning(t, "kept-running.mp4") })
	c.mu.Lock()
	c.behind = true
	c.mu.Unlock()
	waitFor(t, "three lagging answers", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.lagged >= 3
	})
	if !ffmpegRunning(t, "kept-running.mp4") {
		t.Error("the worker stopped its attempt on an older assignment list")
	}
	select {
	case f := <-c.finished:
		t.Errorf("finish %+v after an older assignment list", f)
	default:
	}
}
