package worker

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// runDeadline bounds every wait on a run in these tests.
const runDeadline = 60 * time.Second

// runEnv is a media root with one tenant, t1.
type runEnv struct {
	ffmpeg, ffprobe string
	root            string // media root
	tenant          string // real path of root/t1
}

func setup(t *testing.T) runEnv {
	t.Helper()
	ffmpeg, ffprobe := tools(t)
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tenant := filepath.Join(root, "t1")
	if err := os.Mkdir(tenant, 0o750); err != nil {
		t.Fatal(err)
	}
	return runEnv{ffmpeg: ffmpeg, ffprobe: ffprobe, root: root, tenant: tenant}
}

func (e runEnv) params(plan *fsm.Plan) RunParams {
	return RunParams{FFmpeg: e.ffmpeg, FFprobe: e.ffprobe, MediaRoot: e.root, TenantID: "t1",
		Plan: plan, Encoders: softwareEncoders, Threads: 1, KillGrace: 2 * time.Second}
}

// partFiles lists the temporary output files, and the temporary
// directories of HLS outputs with what they hold, anywhere under dir.
func partFiles(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(d.Name(), ".part-") || strings.Contains(p, ".hls-part-") {
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func compile(t *testing.T, spec fsm.JobSpec) *fsm.Plan {
	t.Helper()
	plan, err := spec.Compile(fsm.Policy{})
	if err != nil {
		t.Fatalf("compile spec: %v", err)
	}
	return plan
}

// testsrcPlan is a plan of one h264 mp4 output from a generated pattern.
func testsrcPlan(t *testing.T, size string, seconds string, out string) *fsm.Plan {
	t.Helper()
	w, h, _ := strings.Cut(size, "x")
	spec := fsm.JobSpec{
		Input:   fsm.Input{URL: "testsrc://?duration=" + seconds + "&size=" + size + "&rate=30"},
		Outputs: []fsm.Output{{URL: out}},
		Video:   &fsm.VideoParams{Codec: "h264", Width: atoi(t, w), Height: atoi(t, h), FPS: 30},
	}
	return compile(t, spec)
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// progressLog records progress blocks and signals the first one with a
// frame.
type progressLog struct {
	mu      sync.Mutex
	all     []Progress
	started chan struct{}
	once    sync.Once
}

func newProgressLog() *progressLog { return &progressLog{started: make(chan struct{})} }

func (l *progressLog) add(p Progress) {
	l.mu.Lock()
	l.all = append(l.all, p)
	l.mu.Unlock()
	if p.Frame > 0 {
		l.once.Do(func() { close(l.started) })
	}
}

func (l *progressLog) last() (Progress, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.all) == 0 {
		return Progress{}, false
	}
	return l.all[len(l.all)-1], true
}

func (l *progressLog) waitStarted(t *testing.T) {
	t.Helper()
	select {
	case <-l.started:
	case <-time.After(runDeadline):
		t.Fatal("no progress from ffmpeg")
	}
}

// mustRun starts a run, waits for it and fails the test unless it
// succeeded.
func mustRun(t *testing.T, p RunParams) *fsm.Result {
	t.Helper()
	r, err := Start(t.Context(), p)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	res, tail, err := wait(t, r)
	if err != nil {
		t.Fatalf("run failed: %v\n%s", err, tail)
	}
	return res
}

// wait waits for the run and publishes it if it succeeded, as a worker
// does once the cluster accepted its result.
func wait(t *testing.T, r *Run) (*fsm.Result, string, error) {
	t.Helper()
	select {
	case <-r.Done():
	case <-time.After(runDeadline):
		r.Cancel()
		t.Fatal("run did not end")
	}
	res, tail, err := r.Wait()
	if err == nil {
		if perr := r.Publish(); perr != nil {
			t.Fatalf("Publish: %v", perr)
		}
	}
	return res, tail, err
}

func checkOutput(t *testing.T, e runEnv, got fsm.OutputResult, url, rel, codec string, w, h int, fps, dur float64) {
	t.Helper()
	path := filepath.Join(e.tenant, filepath.FromSlash(rel))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("output %s: %v", url, err)
	}
	if got.URL != url || got.Path != path || got.Codec != codec || got.Width != w || got.Height != h ||
		math.Abs(got.FPS-fps) > 0.01 || math.Abs(got.DurationSec-dur) > 0.25 || got.SizeBytes != fi.Size() {
		t.Errorf("result %+v, want %s at %s: %s %dx%d %v fps ~%v s, %d bytes", got, url, path, codec, w, h, fps, dur, fi.Size())
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("output %s has mode %v, want 0640", path, fi.Mode().Perm())
	}
	// Check the file itself, not just what Run reported.
	pr, err := Probe(t.Context(), e.ffprobe, path)
	if err != nil || pr.Codec != codec || pr.Width != w || pr.Height != h {
		t.Errorf("ffprobe of %s = %+v, %v; want %s %dx%d", path, pr, err, codec, w, h)
	}
}

// audioCodecs returns the codec names of a file's audio streams.
func audioCodecs(t *testing.T, e runEnv, path string) string {
	t.Helper()
	out, err := exec.Command(e.ffprobe, "-v", "error", "-select_streams", "a",
		"-show_entries", "stream=codec_name", "-of", "csv=p=0", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	return strings.TrimSpace(string(out))
}

func TestRunTestsrcToMP4(t *testing.T) {
	t.Parallel()
	e := setup(t)
	plan := testsrcPlan(t, "320x240", "2", "file:///out/a.mp4")
	log := newProgressLog()
	p := e.params(plan)
	p.OnProgress = log.add
	r, err := Start(t.Context(), p)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	res, tail, err := wait(t, r)
	if err != nil {
		t.Fatalf("run failed: %v\n%s", err, tail)
	}
	if len(res.Outputs) != 1 {
		t.Fatalf("got %d outputs, want 1", len(res.Outputs))
	}
	checkOutput(t, e, res.Outputs[0], "file:///out/a.mp4", "out/a.mp4", "h264", 320, 240, 30, 2)
	if got := audioCodecs(t, e, res.Outputs[0].Path); got != "aac" {
		t.Errorf("audio streams %q, want aac", got)
	}
	if last, ok := log.last(); !ok || !last.End || last.Percent < 95 || last.Frame < 55 {
		t.Errorf("last progress %+v, want the end block near 100%% and 60 frames", last)
	}
	if parts := partFiles(t, e.root); len(parts) != 0 {
		t.Errorf("temporary files left: %v", parts)
	}
	// Waiting again gives the same outcome.
	if res2, _, err2 := r.Wait(); res2 != res || err2 != nil {
		t.Errorf("second Wait = %v, %v; want the same result", res2, err2)
	}
}

func TestRunLadderFromFile(t *testing.T) {
	t.Parallel()
	e := setup(t)
	makeMedia(t, filepath.Join(e.tenant, "in", "src.mkv"), "320x240", "2", "libx264")
	plan := compile(t, fsm.JobSpec{
		Input: fsm.Input{URL: "file:///in/src.mkv"},
		Video: &fsm.VideoParams{Codec: "h264", Width: 320, Height: 240, FPS: 25},
		Outputs: []fsm.Output{
			{URL: "file:///out/hi.mp4"},
			{URL: "file:///out/lo/lo.webm", Video: &fsm.VideoParams{Codec: "vp9", Width: 160, Height: 120}},
		},
	})
	log := newProgressLog()
	p := e.params(plan)
	p.OnProgress = log.add
	res := mustRun(t, p)
	if len(res.Outputs) != 2 {
		t.Fatalf("got %d outputs, want 2", len(res.Outputs))
	}
	checkOutput(t, e, res.Outputs[0], "file:///out/hi.mp4", "out/hi.mp4", "h264", 320, 240, 25, 2)
	checkOutput(t, e, res.Outputs[1], "file:///out/lo/lo.webm", "out/lo/lo.webm", "vp9", 160, 120, 25, 2)
	if got := audioCodecs(t, e, res.Outputs[1].Path); got != "opus" {
		t.Errorf("webm audio streams %q, want opus", got)
	}
	// The input's duration was probed, so percent is known.
	if last, ok := log.last(); !ok || !last.End || last.Percent < 95 {
		t.Errorf("last progress %+v, want the end block near 100%%", last)
	}
	if parts := partFiles(t, e.root); len(parts) != 0 {
		t.Errorf("temporary files left: %v", parts)
	}
}

func TestRunEveryEncoder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		codec, encoder, out, want string
	}{
		{"h265", "libx265", "file:///a.mp4", "h265"},
		{"av1", "libsvtav1", "file:///a.mkv", "av1"},
		{"av1", "libaom-av1", "file:///a.webm", "av1"},
	}
	for _, tt := range tests {
		t.Run(tt.encoder, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			plan := compile(t, fsm.JobSpec{
				Input:   fsm.Input{URL: "testsrc://?duration=1&size=160x90&rate=10"},
				Outputs: []fsm.Output{{URL: tt.out}},
				Video:   &fsm.VideoParams{Codec: tt.codec, Width: 160, Height: 90, FPS: 10},
			})
			p := e.params(plan)
			p.Encoders = Encoders{tt.codec: tt.encoder}
			r, err := Start(t.Context(), p)
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			res, tail, err := wait(t, r)
			if err != nil {
				t.Fatalf("run failed: %v\n%s", err, tail)
			}
			if got := res.Outputs[0]; got.Codec != tt.want || got.Width != 160 || got.Height != 90 {
				t.Errorf("output %+v, want %s 160x90", got, tt.want)
			}
		})
	}
}

func TestRunPauseResume(t *testing.T) {
	t.Parallel()
	e := setup(t)
	plan := testsrcPlan(t, "160x120", "2", "file:///p.mp4")
	p := e.params(plan)
	const timeout = 3 * time.Second
	p.Timeout = timeout // the pause below is longer: it must not count
	r, err := Start(t.Context(), p)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := r.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if err := r.Pause(); err != nil {
		t.Fatalf("second Pause: %v", err)
	}
	waitState(t, r.Pid(), "stopped", stopped)
	select {
	case <-r.Done():
		_, tail, err := r.Wait()
		t.Fatalf("run ended while paused: %v\n%s", err, tail)
	case <-time.After(timeout + 500*time.Millisecond):
	}
	if st, _ := procState(t, r.Pid()); st != 'T' {
		t.Errorf("state %q while paused, want T", st)
	}
	if err := r.Resume(); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	res, tail, err := wait(t, r)
	if err != nil {
		t.Fatalf("run failed after resume: %v\n%s", err, tail)
	}
	checkOutput(t, e, res.Outputs[0], "file:///p.mp4", "p.mp4", "h264", 160, 120, 30, 2)
	if err := r.Pause(); !errors.Is(err, ErrProcessDone) {
		t.Errorf("Pause after the end = %v, want ErrProcessDone", err)
	}
}

func TestRunCancel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		cancel func(t *testing.T, r *Run, cancelCtx context.CancelFunc)
	}{
		{"running", func(t *testing.T, r *Run, _ context.CancelFunc) { r.Cancel() }},
		{"paused", func(t *testing.T, r *Run, _ context.CancelFunc) {
			if err := r.Pause(); err != nil {
				t.Fatalf("Pause: %v", err)
			}
			waitState(t, r.Pid(), "stopped", stopped)
			r.Cancel()
		}},
		{"context", func(t *testing.T, r *Run, cancelCtx context.CancelFunc) { cancelCtx() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			plan := testsrcPlan(t, "160x120", "3600", "file:///out/long.mp4")
			log := newProgressLog()
			p := e.params(plan)
			p.OnProgress = log.add
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			r, err := Start(ctx, p)
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			log.waitStarted(t)
			if parts := partFiles(t, e.root); len(parts) != 1 {
				t.Fatalf("temporary files while running: %v, want one", parts)
			}
			tt.cancel(t, r, cancel)
			res, _, err := wait(t, r)
			if !errors.Is(err, ErrCanceled) || res != nil {
				t.Fatalf("Wait = %v, %v; want ErrCanceled", res, err)
			}
			if tt.name == "context" && !errors.Is(err, context.Canceled) {
				t.Errorf("Wait = %v, want it to wrap context.Canceled", err)
			}
			waitState(t, r.Pid(), "gone", gone)
			if parts := partFiles(t, e.root); len(parts) != 0 {
				t.Errorf("temporary files left: %v", parts)
			}
			if _, err := os.Stat(filepath.Join(e.tenant, "out", "long.mp4")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("final output exists after cancel (%v)", err)
			}
			r.Cancel() // harmless after the end
		})
	}
}

func TestRunTimeout(t *testing.T) {
	t.Parallel()
	e := setup(t)
	p := e.params(testsrcPlan(t, "160x120", "3600", "file:///long.mp4"))
	p.Timeout = time.Second
	r, err := Start(t.Context(), p)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	res, _, err := wait(t, r)
	if fsm.ErrorCode(err) != fsm.CodeTimeout || res != nil {
		t.Fatalf("Wait = %v, %v; want code %s", res, err, fsm.CodeTimeout)
	}
	if parts := partFiles(t, e.root); len(parts) != 0 {
		t.Errorf("temporary files left: %v", parts)
	}
}

func TestRunFFmpegFailure(t *testing.T) {
	t.Parallel()
	e := setup(t)
	// An audio-only input has no video stream for -map 0:v:0.
	in := filepath.Join(e.tenant, "in", "tone.m4a")
	if err := os.MkdirAll(filepath.Dir(in), 0o750); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(e.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
		"-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", in).CombinedOutput(); err != nil {
		t.Fatalf("make %s: %v\n%s", in, err, out)
	}
	plan := compile(t, fsm.JobSpec{Scenario: "240p30-h264", Input: fsm.Input{URL: "file:///in/tone.m4a"},
		Outputs: []fsm.Output{{URL: "file:///out/v.mp4"}}})
	r, err := Start(t.Context(), e.params(plan))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	res, tail, err := wait(t, r)
	if fsm.ErrorCode(err) != fsm.CodeFFmpeg || res != nil {
		t.Fatalf("Wait = %v, %v; want code %s", res, err, fsm.CodeFFmpeg)
	}
	if msg := err.Error(); !strings.Contains(msg, "exited with status") || !strings.Contains(msg, lastLine(tail)) || tail == "" {
		t.Errorf("error %q should give the exit status and the last stderr line of\n%s", msg, tail)
	}
	if parts := partFiles(t, e.root); len(parts) != 0 {
		t.Errorf("temporary files left: %v", parts)
	}
}

func TestRunRefuses(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret.mp4")
	makeMedia(t, secret, "64x64", "1", "libx264")

	tests := []struct {
		name    string
		prepare func(t *testing.T, e runEnv)
		tenant  string
		plan    func(t *testing.T) *fsm.Plan
		enc     Encoders
		code    fsm.Code
	}{
		{
			name: "input symlink out of the tenant",
			prepare: func(t *testing.T, e runEnv) {
				symlink(t, secret, filepath.Join(e.tenant, "in", "link.mp4"))
			},
			plan: fileInput("file:///in/link.mp4"),
			code: fsm.CodeURLNotAllowed,
		},
		{
			name: "input directory symlink out of the tenant",
			prepare: func(t *testing.T, e runEnv) {
				symlink(t, outside, filepath.Join(e.tenant, "in"))
			},
			plan: fileInput("file:///in/secret.mp4"),
			code: fsm.CodeURLNotAllowed,
		},
		{
			name: "input of another tenant by symlink",
			prepare: func(t *testing.T, e runEnv) {
				makeMedia(t, filepath.Join(e.root, "t2", "v.mp4"), "64x64", "1", "libx264")
				symlink(t, filepath.Join(e.root, "t2", "v.mp4"), filepath.Join(e.tenant, "v.mp4"))
			},
			plan: fileInput("file:///v.mp4"),
			code: fsm.CodeURLNotAllowed,
		},
		{
			name: "output directory symlink out of the tenant",
			prepare: func(t *testing.T, e runEnv) {
				symlink(t, outside, filepath.Join(e.tenant, "out"))
			},
			plan: testsrcOut("file:///out/new/a.mp4"),
			code: fsm.CodeURLNotAllowed,
		},
		{
			name: "output beside an escaping symlink",
			prepare: func(t *testing.T, e runEnv) {
				symlink(t, outside, filepath.Join(e.tenant, "out"))
			},
			plan: testsrcOut("file:///out/a.mp4"),
			code: fsm.CodeURLNotAllowed,
		},
		{
			name: "path with dot-dot in a hand-made plan",
			plan: func(t *testing.T) *fsm.Plan {
				p := testsrcOut("file:///a.mp4")(t)
				p.Outputs[0].Path = "../t2/a.mp4"
				return p
			},
			code: fsm.CodeURLNotAllowed,
		},
		{
			name:   "tenant ID that is a path",
			tenant: "../t1",
			plan:   testsrcOut("file:///a.mp4"),
			code:   fsm.CodeURLNotAllowed,
		},
		{
			name: "missing input",
			plan: fileInput("file:///in/none.mp4"),
			code: fsm.CodeInvalidArgument,
		},
		{
			name: "input that is a directory",
			prepare: func(t *testing.T, e runEnv) {
				if err := os.MkdirAll(filepath.Join(e.tenant, "d.mp4"), 0o750); err != nil {
					t.Fatal(err)
				}
			},
			plan: fileInput("file:///d.mp4"),
			code: fsm.CodeInvalidArgument,
		},
		{
			name: "input that is not media",
			prepare: func(t *testing.T, e runEnv) {
				if err := os.WriteFile(filepath.Join(e.tenant, "junk.mp4"), []byte("junk"), 0o640); err != nil {
					t.Fatal(err)
				}
			},
			plan: fileInput("file:///junk.mp4"),
			code: fsm.CodeFFmpeg,
		},
		{
			// A playlist would make ffmpeg read files the plan never named.
			name: "playlist disguised as media",
			prepare: func(t *testing.T, e runEnv) {
				playlist := "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n" + secret + "\n#EXT-X-ENDLIST\n"
				if err := os.WriteFile(filepath.Join(e.tenant, "list.mp4"), []byte(playlist), 0o640); err != nil {
					t.Fatal(err)
				}
			},
			plan: fileInput("file:///list.mp4"),
			code: fsm.CodeFFmpeg,
		},
		{
			name: "HLS output directory symlink out of the tenant",
			prepare: func(t *testing.T, e runEnv) {
				symlink(t, outside, filepath.Join(e.tenant, "out"))
			},
			plan: testsrcOut("file:///out/a.m3u8"),
			code: fsm.CodeURLNotAllowed,
		},
		{
			name: "HLS segment that is another output",
			plan: testsrcOuts("file:///v/a.m3u8", "file:///v/a_00001.ts"),
			code: fsm.CodeInvalidArgument,
		},
		{
			name: "HLS segments of two playlists",
			plan: testsrcOuts("file:///v/a%20b.m3u8", "file:///v/a_b.m3u8"),
			code: fsm.CodeInvalidArgument,
		},
		{
			// The plan's paths differ; the real directories do not.
			name: "HLS segment that is another output through a symlink",
			prepare: func(t *testing.T, e runEnv) {
				if err := os.Mkdir(filepath.Join(e.tenant, "v"), 0o750); err != nil {
					t.Fatal(err)
				}
				symlink(t, filepath.Join(e.tenant, "v"), filepath.Join(e.tenant, "w"))
			},
			plan: testsrcOuts("file:///v/a.m3u8", "file:///w/a_00000.ts"),
			code: fsm.CodeInvalidArgument,
		},
		{
			// ffmpeg would read the '%' as a pattern.
			name: "HLS directory with a percent sign",
			plan: testsrcOut("file:///50%25v/a.m3u8"),
			code: fsm.CodeInvalidArgument,
		},
		{
			name: "no encoder for the codec",
			plan: testsrcOut("file:///a.mp4"),
			enc:  Encoders{"vp9": "libvpx-vp9"},
			code: fsm.CodeNoCapableWorker,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			if tt.prepare != nil {
				tt.prepare(t, e)
			}
			before := listDir(t, outside)
			p := e.params(tt.plan(t))
			if tt.tenant != "" {
				p.TenantID = tt.tenant
			}
			if tt.enc != nil {
				p.Encoders = tt.enc
			}
			r, err := Start(t.Context(), p)
			if err == nil {
				r.Cancel()
				t.Fatal("Start succeeded")
			}
			t.Logf("Start: %v", err)
			if got := fsm.ErrorCode(err); got != tt.code {
				t.Errorf("Start = %v; want code %s", err, tt.code)
			}
			if parts := partFiles(t, e.root); len(parts) != 0 {
				t.Errorf("temporary files left: %v", parts)
			}
			if after := listDir(t, outside); after != before {
				t.Errorf("directory outside the tenant changed: %q → %q", before, after)
			}
		})
	}
}

func fileInput(url string) func(t *testing.T) *fsm.Plan {
	return func(t *testing.T) *fsm.Plan {
		return compile(t, fsm.JobSpec{Scenario: "240p30-h264", Input: fsm.Input{URL: url},
			Outputs: []fsm.Output{{URL: "file:///out/o.mp4"}}})
	}
}

func testsrcOut(url string) func(t *testing.T) *fsm.Plan {
	return func(t *testing.T) *fsm.Plan { return testsrcPlan(t, "64x64", "1", url) }
}

func testsrcOuts(urls ...string) func(t *testing.T) *fsm.Plan {
	return func(t *testing.T) *fsm.Plan {
		spec := fsm.JobSpec{Input: fsm.Input{URL: "testsrc://?duration=1&size=64x64&rate=30"},
			Video: &fsm.VideoParams{Codec: "h264", Width: 64, Height: 64, FPS: 30}}
		for _, u := range urls {
			spec.Outputs = append(spec.Outputs, fsm.Output{URL: u})
		}
		return compile(t, spec)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// listDir returns the names under dir, one a line.
func listDir(t *testing.T, dir string) string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		names = append(names, p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(names, "\n")
}

// mediaPlaylist is what a test reads from an HLS playlist.
type mediaPlaylist struct {
	durations []float64 // of #EXTINF, in order
	segments  []string  // URIs, in order
	ended     bool      // has #EXT-X-ENDLIST
}

func readPlaylist(t *testing.T, path string) mediaPlaylist {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read playlist: %v", err)
	}
	var pl mediaPlaylist
	for _, l := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(l, "#EXTINF:"):
			d, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimPrefix(l, "#EXTINF:"), ","), 64)
			if err != nil {
				t.Fatalf("playlist line %q: %v", l, err)
			}
			pl.durations = append(pl.durations, d)
		case l == "#EXT-X-ENDLIST":
			pl.ended = true
		case l != "" && !strings.HasPrefix(l, "#"):
			pl.segments = append(pl.segments, l)
		}
	}
	return pl
}

// checkHLS checks the HLS rendition whose playlist is at rel: its result,
// its playlist's segments (one per 4 s of duration, the last shorter), the
// files themselves, that each segment starts with a keyframe, and that
// ffprobe finds the video and one aac audio stream through the playlist.
func checkHLS(t *testing.T, e runEnv, got fsm.OutputResult, url, rel, codec string, w, h int, fps, dur float64) {
	t.Helper()
	playlist := filepath.Join(e.tenant, filepath.FromSlash(rel))
	dir := filepath.Dir(playlist)
	if got.URL != url || got.Path != playlist || got.Codec != codec || got.Width != w || got.Height != h ||
		math.Abs(got.FPS-fps) > 0.01 || math.Abs(got.DurationSec-dur) > 0.25 {
		t.Errorf("result %+v, want %s at %s: %s %dx%d %v fps ~%v s", got, url, playlist, codec, w, h, fps, dur)
	}
	pl := readPlaylist(t, playlist)
	n := int(math.Ceil(dur / hlsSegmentSeconds))
	if !pl.ended || len(pl.segments) != n || len(pl.durations) != n {
		t.Fatalf("playlist %+v, want %d segments and #EXT-X-ENDLIST", pl, n)
	}
	size := fileSize(t, playlist)
	for i, name := range pl.segments {
		want := hlsSegmentSeconds * 1.0
		if i == n-1 {
			want = dur - hlsSegmentSeconds*float64(n-1)
		}
		if math.Abs(pl.durations[i]-want) > 0.1 {
			t.Errorf("segment %d lasts %v s, want ~%v", i, pl.durations[i], want)
		}
		if name != filepath.Base(name) {
			t.Errorf("segment URI %q is not a name beside the playlist", name)
		}
		seg := filepath.Join(dir, name)
		size += fileSize(t, seg)
		out, err := exec.Command(e.ffprobe, "-v", "error", "-select_streams", "v", "-read_intervals", "%+#1",
			"-show_entries", "frame=key_frame", "-of", "json", seg).Output()
		var frames struct {
			Frames []struct {
				KeyFrame int `json:"key_frame"`
			} `json:"frames"`
		}
		if err == nil {
			err = json.Unmarshal(out, &frames)
		}
		if err != nil || len(frames.Frames) == 0 || frames.Frames[0].KeyFrame != 1 {
			t.Errorf("first frame of %s: %s, %v; want a keyframe", name, out, err)
		}
	}
	if got.SizeBytes != size {
		t.Errorf("size %d, want %d (playlist and segments)", got.SizeBytes, size)
	}
	// ffprobe of the playlist itself, not what Run reported.
	out, err := exec.Command(e.ffprobe, "-v", "error",
		"-show_entries", "stream=codec_type,codec_name,width,height:format=duration", "-of", "json", playlist).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", playlist, err)
	}
	var po probeOutput
	if err := json.Unmarshal(out, &po); err != nil {
		t.Fatal(err)
	}
	d, _ := strconv.ParseFloat(po.Format.Duration, 64)
	wantCodec := map[string]string{"h265": "hevc"}[codec]
	if wantCodec == "" {
		wantCodec = codec
	}
	if len(po.Streams) != 2 || po.Streams[0].CodecType != "video" || po.Streams[0].CodecName != wantCodec ||
		po.Streams[0].Width != w || po.Streams[0].Height != h ||
		po.Streams[1].CodecType != "audio" || po.Streams[1].CodecName != "aac" || math.Abs(d-dur) > 0.25 {
		t.Errorf("ffprobe of %s = %s, want %s %dx%d and aac, ~%v s", playlist, out, wantCodec, w, h, dur)
	}
}

// fileSize returns the size of a regular file with mode 0640.
func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o640 {
		t.Errorf("%s has mode %v, want a regular file with mode 0640", path, fi.Mode())
	}
	return fi.Size()
}

// dirNames returns the sorted names in dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestRunHLS(t *testing.T) {
	t.Parallel()
	e := setup(t)
	dir := filepath.Join(e.tenant, "vod")
	// Segments an earlier, longer rendition to the same playlist left, a
	// gap after them, and files that are not its segments.
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a_00001.ts", "a_00002.ts", "a_00003.ts", "a_00005.ts", "b_00002.ts", "a_x.ts"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("old"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	plan := testsrcPlan(t, "320x240", "6", "file:///vod/a.m3u8")
	res := mustRun(t, e.params(plan))
	checkHLS(t, e, res.Outputs[0], "file:///vod/a.m3u8", "vod/a.m3u8", "h264", 320, 240, 30, 6)
	want := []string{"a.m3u8", "a_00000.ts", "a_00001.ts", "a_00005.ts", "a_x.ts", "b_00002.ts"}
	if got := dirNames(t, dir); !slices.Equal(got, want) {
		t.Errorf("directory holds %q, want %q", got, want)
	}
	if parts := partFiles(t, e.root); len(parts) != 0 {
		t.Errorf("temporary files left: %v", parts)
	}
}

func TestRunHLSCancel(t *testing.T) {
	t.Parallel()
	e := setup(t)
	plan := testsrcPlan(t, "160x120", "3600", "file:///live/c.m3u8")
	log := newProgressLog()
	p := e.params(plan)
	p.OnProgress = log.add
	r, err := Start(t.Context(), p)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	log.waitStarted(t)
	if parts := partFiles(t, e.root); len(parts) == 0 {
		t.Fatal("no temporary directory while running")
	}
	r.Cancel()
	res, _, err := wait(t, r)
	if !errors.Is(err, ErrCanceled) || res != nil {
		t.Fatalf("Wait = %v, %v; want ErrCanceled", res, err)
	}
	if parts := partFiles(t, e.root); len(parts) != 0 {
		t.Errorf("temporary files left: %v", parts)
	}
	if got := dirNames(t, filepath.Join(e.tenant, "live")); len(got) != 0 {
		t.Errorf("output directory holds %q after cancel, want nothing", got)
	}
}

func TestRunHLSLadder(t *testing.T) {
	t.Parallel()
	e := setup(t)
	plan := compile(t, fsm.JobSpec{
		Input: fsm.Input{URL: "testsrc://?duration=5&size=320x240&rate=30"},
		Video: &fsm.VideoParams{Codec: "h264", Width: 320, Height: 240, FPS: 30},
		Outputs: []fsm.Output{
			{URL: "file:///ladder/hi.m3u8"},
			{URL: "file:///ladder/lo.m3u8", Video: &fsm.VideoParams{Codec: "h265", Width: 160, Height: 120, FPS: 15}},
			{URL: "file:///ladder/lo.mp4", Video: &fsm.VideoParams{Width: 160, Height: 120}},
		},
	})
	res := mustRun(t, e.params(plan))
	if len(res.Outputs) != 3 {
		t.Fatalf("got %d outputs, want 3", len(res.Outputs))
	}
	checkHLS(t, e, res.Outputs[0], "file:///ladder/hi.m3u8", "ladder/hi.m3u8", "h264", 320, 240, 30, 5)
	checkHLS(t, e, res.Outputs[1], "file:///ladder/lo.m3u8", "ladder/lo.m3u8", "h265", 160, 120, 15, 5)
	checkOutput(t, e, res.Outputs[2], "file:///ladder/lo.mp4", "ladder/lo.mp4", "h264", 160, 120, 30, 5)
	if parts := partFiles(t, e.root); len(parts) != 0 {
		t.Errorf("temporary files left: %v", parts)
	}
}

func TestParsePlaylist(t *testing.T) {
	t.Parallel()
	const head = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n" +
		"#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n"
	const good = head + "#EXTINF:4.000000,\na_00000.ts\n#EXTINF:2.000000,\na_00001.ts\n#EXT-X-ENDLIST\n"
	tests := []struct {
		name, playlist string
		want           []string // nil: refused
	}{
		{"ffmpeg's", good, []string{"a_00000.ts", "a_00001.ts"}},
		{"CRLF", strings.ReplaceAll(good, "\n", "\r\n"), []string{"a_00000.ts", "a_00001.ts"}},
		{"comment after the end", good + "# done\n", nil},
		{"comment", head + "# x\n#EXTINF:4,\na_00000.ts\n#EXT-X-ENDLIST\n", []string{"a_00000.ts"}},
		{"key", head + "#EXT-X-KEY:METHOD=AES-128,URI=\"/etc/passwd\"\n#EXTINF:4,\na_00000.ts\n#EXT-X-ENDLIST\n", nil},
		{"init section", head + "#EXT-X-MAP:URI=\"/etc/passwd\"\n#EXTINF:4,\na_00000.ts\n#EXT-X-ENDLIST\n", nil},
		{"variant", "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na_00000.ts\n#EXT-X-ENDLIST\n", nil},
		{"parent directory", head + "#EXTINF:4,\n../a_00000.ts\n#EXT-X-ENDLIST\n", nil},
		{"absolute path", head + "#EXTINF:4,\n/tmp/a_00000.ts\n#EXT-X-ENDLIST\n", nil},
		{"URL", head + "#EXTINF:4,\nhttp://example.com/a_00000.ts\n#EXT-X-ENDLIST\n", nil},
		{"another rendition's segment", head + "#EXTINF:4,\nb_00000.ts\n#EXT-X-ENDLIST\n", nil},
		{"no end", head + "#EXTINF:4,\na_00000.ts\n", nil},
		{"no segments", head + "#EXT-X-ENDLIST\n", nil},
		{"segment after the end", good + "#EXTINF:4,\na_00002.ts\n", nil},
		{"not a playlist", "a_00000.ts\n#EXT-X-ENDLIST\n", nil},
	}
	for _, tt := range tests {
		got, err := parsePlaylist([]byte(tt.playlist), "a")
		if tt.want == nil && err == nil {
			t.Errorf("%s: parsePlaylist = %q, want an error", tt.name, got)
		}
		if tt.want != nil && (err != nil || !slices.Equal(got, tt.want)) {
			t.Errorf("%s: parsePlaylist = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

func TestProbeHLSRefusesLinkedSegment(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secret := filepath.Join(t.TempDir(), "secret.ts")
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	symlink(t, secret, filepath.Join(dir, "a_00000.ts"))
	playlist := filepath.Join(dir, "a.m3u8")
	if err := os.WriteFile(playlist, []byte("#EXTM3U\n#EXTINF:4,\na_00000.ts\n#EXT-X-ENDLIST\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// ffprobe is never reached.
	if res, _, err := probeHLS(t.Context(), "/nonexistent/ffprobe", playlist, "a"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("probeHLS = %+v, %v; want a refusal of the linked segment", res, err)
	}
}
