package worker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// ErrCanceled is returned by Run.Wait when the run was stopped by Cancel or
// by the end of the context given to Start.
var ErrCanceled = errors.New("worker: run canceled")

const (
	// DefaultKillGrace is how long a stopped ffmpeg gets between SIGTERM
	// and SIGKILL when RunParams.KillGrace is zero.
	DefaultKillGrace = 5 * time.Second
	// probeRunTimeout bounds each ffprobe call of a run.
	probeRunTimeout = 30 * time.Second
)

// RunParams describes one attempt of a job on this worker.
type RunParams struct {
	FFmpeg  string // ffmpeg program; "ffmpeg" if empty
	FFprobe string // ffprobe program; "ffprobe" if empty
	// MediaRoot is the host directory that holds every tenant's media;
	// tenant T's files live in MediaRoot/T.
	MediaRoot string
	TenantID  string
	Plan      *fsm.Plan
	Encoders  Encoders
	Threads   int // -threads per output encoder; 0 lets ffmpeg choose
	// Timeout bounds the run; time spent paused does not count. Zero
	// means no timeout.
	Timeout time.Duration
	// KillGrace is the time between SIGTERM and SIGKILL when the run is
	// stopped; DefaultKillGrace if zero.
	KillGrace time.Duration
	// OnProgress, if set, is called with every progress block, from a
	// goroutine of the run. It must return quickly: ffmpeg blocks while
	// it runs.
	OnProgress func(Progress)
	// OnExit, if set, is called once ffmpeg has exited successfully and
	// before its file outputs are probed (not for a run without file
	// outputs), from Run's own goroutine: it must not block.
	OnExit func()
	// TailBytes is how much of ffmpeg's stderr to keep; DefaultTailBytes
	// if zero.
	TailBytes int
	// Limits are the job's resources, enforced by Limiter.
	Limits Limits
	// Limiter enforces Limits; DefaultLimiter() if nil.
	Limiter *Limiter
	// Name names the run's cgroup, job-<Name>, in ModeCgroup: normally
	// "<job ID>-<attempt>". A random name is used if it is empty.
	Name string
	// Owner (the worker's ID) tags the run's temporary names, so that
	// RemoveLeftovers of that owner finds them after a crash and leaves
	// those of other workers sharing the media root alone.
	Owner string
	// Logger gets what goes wrong without failing the run;
	// slog.Default() if nil.
	Logger *slog.Logger
	// Net checks and pins the addresses of network inputs and outputs;
	// a zero NetGuard if nil.
	Net *NetGuard
}

// outputFile is where a file rendition is written and then moved.
type outputFile struct {
	final string // absolute path the output (an HLS rendition's playlist) ends up at
	temp  string // hidden sibling ffmpeg writes to: a file, or for HLS a directory
	// prefix starts the segment names of an HLS rendition, whose playlist
	// and segments ffmpeg writes into the directory temp; "" for other
	// outputs.
	prefix string
}

// dest returns the path ffmpeg writes the output, or the HLS playlist, to.
func (f outputFile) dest() string {
	if f.prefix != "" {
		return filepath.Join(f.temp, f.prefix+".m3u8")
	}
	return f.temp
}

// Run is a handle on one running attempt. Its methods are safe for
// concurrent use.
type Run struct {
	p            RunParams
	proc         *Process
	args         []string     // ffmpeg's argv, without the program
	conf         *confinement // the limits ffmpeg runs under
	files        []outputFile // by rendition; zero for network outputs
	dials        Dials        // how ffmpeg reaches network URLs
	segs         [][]string   // by rendition: an HLS rendition's segments, once collected
	stderr       *Tail
	progressDone chan struct{}

	mu        sync.Mutex
	paused    bool
	timer     *time.Timer   // nil without a timeout
	remaining time.Duration // timeout left when the timer was last armed
	armedAt   time.Time
	reason    error // why the run was stopped, nil if it was not
	published bool  // Publish or Discard was called

	done   chan struct{} // closed when the outcome below is set
	result *fsm.Result
	tail   string
	err    error
}

// Start checks and prepares the plan's files and starts ffmpeg. The file
// input is MediaRoot/TenantID/<plan path> and must resolve, symlinks
// followed, inside MediaRoot/TenantID; file outputs are written to hidden
// temporary siblings of their final paths (.<name>.part-*), whose
// directories are created as needed and must also resolve inside it. An
// HLS output (an .m3u8 playlist) is written with its segments,
// <name>_NNNNN.ts, into a hidden temporary sibling directory
// (.<name>.hls-part-*); a segment name that would be another output's
// path is refused with fsm.CodeInvalidArgument. Nothing reaches a final
// path until Publish: the caller publishes a successful run only once the
// cluster has accepted its result, and discards it otherwise.
//
// ctx bounds the whole run, not just the start: when it ends, the run is
// stopped as by Cancel (and if it has already ended, Start returns an error
// wrapping ErrCanceled). Other errors are *fsm.Error: fsm.CodeURLNotAllowed for a
// path that escapes the tenant's directory, fsm.CodeInvalidArgument for a
// missing input, fsm.CodeFFmpeg for an input ffprobe cannot read,
// fsm.CodeNoCapableWorker if Encoders lacks a codec.
func Start(ctx context.Context, p RunParams) (*Run, error) {
	if p.Plan == nil {
		return nil, fsm.Errorf(fsm.CodeInvalidArgument, "run has no plan")
	}
	if p.FFmpeg == "" {
		p.FFmpeg = "ffmpeg"
	}
	if p.FFprobe == "" {
		p.FFprobe = "ffprobe"
	}
	if p.KillGrace <= 0 {
		p.KillGrace = DefaultKillGrace
	}
	if p.Limiter == nil {
		p.Limiter = DefaultLimiter()
	}
	if p.Logger == nil {
		p.Logger = slog.Default()
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCanceled, context.Cause(ctx))
	}
	plan := p.Plan
	r := &Run{
		p:            p,
		files:        make([]outputFile, len(plan.Outputs)),
		stderr:       NewTail(p.TailBytes),
		progressDone: make(chan struct{}),
		done:         make(chan struct{}),
	}

	hasFileOutput := false
	for _, o := range plan.Outputs {
		hasFileOutput = hasFileOutput || o.Kind == fsm.KindFile
	}
	var root, input string
	if hasFileOutput || plan.Input.Kind == fsm.KindFile {
		var err error
		if root, err = tenantRoot(p.MediaRoot, p.TenantID, hasFileOutput); err != nil {
			return nil, err
		}
	}
	if plan.Input.Kind == fsm.KindFile {
		var err error
		if input, err = resolveInput(root, plan.Input); err != nil {
			return nil, err
		}
	}
	temps := make([]string, len(plan.Outputs))
	for i, o := range plan.Outputs {
		if o.Kind != fsm.KindFile {
			continue
		}
		f, err := prepareOutput(root, o, ownerTag(p.Owner))
		if err != nil {
			r.removeTemps()
			return nil, err
		}
		r.files[i], temps[i] = f, f.dest()
	}
	if err := checkSegmentNames(plan.Outputs, r.files); err != nil {
		r.removeTemps()
		return nil, err
	}

	var durationSec float64
	switch plan.Input.Kind {
	case fsm.KindTestsrc:
		durationSec = plan.Input.DurationSec
	case fsm.KindFile:
		pctx, cancel := context.WithTimeout(ctx, probeRunTimeout)
		d, err := ProbeDuration(pctx, p.FFprobe, input)
		cancel()
		if err != nil {
			r.removeTemps()
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w: %w", ErrCanceled, context.Cause(ctx))
			}
			return nil, fsm.Errorf(fsm.CodeFFmpeg, "input %s is not readable media: %v", plan.Input.URL, err)
		}
		durationSec = d
	}

	if p.Net == nil {
		p.Net = &NetGuard{}
	}
	dials, err := p.Net.Dials(ctx, plan)
	if err != nil {
		r.removeTemps()
		return nil, err
	}
	r.dials = dials
	args, err := BuildArgs(plan, p.Encoders, input, temps, p.Limiter.threads(p.Threads, p.Limits), r.dials)
	if err != nil {
		r.removeTemps()
		return nil, err
	}
	r.args = args
	conf, err := p.Limiter.confine(p.Name, p.Limits)
	if err != nil {
		r.removeTemps()
		return nil, fsm.Errorf(fsm.CodeInternal, "apply resource limits: %v", err)
	}
	r.conf = conf

	// ffmpeg writes progress straight into a pipe that ParseProgress reads.
	pr, pw, err := os.Pipe()
	if err != nil {
		conf.close(nil, p.Logger)
		r.removeTemps()
		return nil, fsm.Errorf(fsm.CodeInternal, "progress pipe: %v", err)
	}
	opts := conf.options()
	proc, err := startProcess(p.FFmpeg, args, pw, r.stderr, opts)
	if err != nil && conf.retryStart(opts, err, p.Logger) {
		proc, err = startProcess(p.FFmpeg, args, pw, r.stderr, conf.options())
	}
	pw.Close()
	if err != nil {
		pr.Close()
		conf.close(nil, p.Logger)
		r.removeTemps()
		return nil, fsm.Errorf(fsm.CodeInternal, "start ffmpeg: %v", err)
	}
	r.proc = proc
	conf.started(proc)

	go func() {
		defer close(r.progressDone)
		defer pr.Close()
		_ = ParseProgress(pr, durationSec, func(pg Progress) {
			if p.OnProgress != nil {
				pg.CPUSeconds, pg.MemoryBytes = conf.liveUsage(proc)
				pg.At = time.Now()
				p.OnProgress(pg)
			}
		})
		// Never leave ffmpeg blocked on a full pipe.
		_, _ = io.Copy(io.Discard, pr)
	}()

	if p.Timeout > 0 {
		r.mu.Lock()
		r.remaining, r.armedAt = p.Timeout, time.Now()
		r.timer = time.AfterFunc(p.Timeout, r.onTimeout)
		r.mu.Unlock()
	}
	go func() {
		select {
		case <-ctx.Done():
			r.stop(fmt.Errorf("%w: %w", ErrCanceled, context.Cause(ctx)), r.p.KillGrace)
		case <-proc.Done():
		}
	}()
	go r.finish(ctx)
	return r, nil
}

// Pid returns the process ID of ffmpeg, which is also its process group.
func (r *Run) Pid() int { return r.proc.Pid() }

// Log returns the current tail of ffmpeg's stderr, while it runs or after.
func (r *Run) Log() string { return r.stderr.String() }

// Usage returns what ffmpeg used, once Done is closed, whether the run
// succeeded or not; zero before.
func (r *Run) Usage() Usage {
	select {
	case <-r.done:
		return r.conf.usage
	default:
		return Usage{}
	}
}

// Done returns a channel that is closed when Wait's outcome is ready.
func (r *Run) Done() <-chan struct{} { return r.done }

// Pause suspends ffmpeg (SIGSTOP) and stops the timeout clock. Pausing a
// paused run does nothing. It returns ErrProcessDone if the run is ending.
func (r *Run) Pause() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reason != nil {
		return ErrProcessDone
	}
	if r.paused {
		return nil
	}
	if err := r.proc.Pause(); err != nil {
		return err
	}
	r.paused = true
	if r.timer != nil {
		r.timer.Stop()
		r.remaining = max(0, r.remaining-time.Since(r.armedAt))
	}
	return nil
}

// Resume continues a paused ffmpeg (SIGCONT) and restarts the timeout
// clock with the time that was left. Resuming a running run does nothing.
func (r *Run) Resume() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reason != nil {
		return ErrProcessDone
	}
	if !r.paused {
		return nil
	}
	if err := r.proc.Resume(); err != nil {
		return err
	}
	r.paused = false
	if r.timer != nil {
		r.armedAt = time.Now()
		r.timer = time.AfterFunc(r.remaining, r.onTimeout)
	}
	return nil
}

// Cancel stops ffmpeg (SIGTERM, then SIGKILL after KillGrace; a paused run
// is resumed so it can exit) and returns once it has exited. Wait then
// returns ErrCanceled. Cancel does nothing if ffmpeg has already exited.
func (r *Run) Cancel() { r.stop(ErrCanceled, r.p.KillGrace) }

// Kill stops ffmpeg at once (SIGKILL after a SIGTERM, without a grace
// period) and returns once it has exited; Wait then returns an error
// wrapping ErrCanceled and cause. A self-fencing worker uses it: its
// attempts may already belong to another worker, and a live stream must
// not have two publishers.
func (r *Run) Kill(cause error) { r.stop(fmt.Errorf("%w: %w", ErrCanceled, cause), 0) }

// Wait waits for the run to end and returns the result (on success only;
// its output paths are the final ones, which Publish fills), the tail of
// ffmpeg's stderr (always), and the error: nil on success,
// ErrCanceled after Cancel or the end of Start's context, an *fsm.Error
// with code fsm.CodeTimeout after the timeout, one with code
// fsm.CodeResourceExceeded if ffmpeg failed for want of memory within
// Limits.MemoryMB, or one with code fsm.CodeFFmpeg naming the exit status
// and the last stderr line if ffmpeg failed otherwise. The result carries
// the run's CPU seconds and peak memory (see Usage). After a failure the
// temporary files are gone by the time it returns; after a success they
// stay until Publish or Discard. It may be called from several goroutines.
func (r *Run) Wait() (*fsm.Result, string, error) {
	<-r.done
	return r.result, r.tail, r.err
}

// onTimeout stops the run when its timeout expires.
func (r *Run) onTimeout() {
	r.stop(fsm.Errorf(fsm.CodeTimeout, "ffmpeg ran longer than its timeout of %s", r.p.Timeout), r.p.KillGrace)
}

// stop records why the run is being stopped, unless ffmpeg has already
// exited or another reason came first, then stops ffmpeg with that grace
// period.
func (r *Run) stop(reason error, grace time.Duration) {
	r.mu.Lock()
	select {
	case <-r.proc.Done():
		r.mu.Unlock()
		return
	default:
	}
	if r.reason == nil {
		r.reason = reason
	}
	r.mu.Unlock()
	r.proc.Stop(grace)
}

// finish waits for ffmpeg and its progress stream to end, settles the
// outcome and releases Wait.
func (r *Run) finish(ctx context.Context) {
	defer close(r.done)
	waitErr := r.proc.Wait()
	r.conf.close(r.proc, r.p.Logger)
	<-r.progressDone
	r.mu.Lock()
	if r.timer != nil {
		r.timer.Stop()
	}
	reason := r.reason
	r.mu.Unlock()

	r.tail = r.stderr.String()
	switch {
	case reason != nil:
		r.err = reason
	case waitErr != nil:
		if r.err = r.conf.exceeded(waitErr, r.tail); r.err != nil {
			break
		}
		msg := "ffmpeg " + exitDescription(waitErr)
		if line := lastLine(r.tail); line != "" {
			msg += ": " + line
		}
		r.err = fsm.Errorf(fsm.CodeFFmpeg, "%s", msg)
		if d, ok := r.dials[r.p.Plan.Input.URL]; ok && r.p.Plan.Input.Kind == fsm.KindHTTP {
			if err := redirected(context.WithoutCancel(ctx), d); err != nil {
				r.err = err
			}
		}
	default:
		if r.p.OnExit != nil && slices.ContainsFunc(r.files, func(f outputFile) bool { return f.temp != "" }) {
			r.p.OnExit()
		}
		r.result, r.err = r.collect(context.WithoutCancel(ctx))
	}
	if r.err != nil {
		r.removeTemps()
	}
}

// collect checks and describes the finished outputs in their temporary
// places, under their final paths, and keeps the names of the HLS
// segments for Publish.
func (r *Run) collect(ctx context.Context) (*fsm.Result, error) {
	outs := r.p.Plan.Outputs
	r.segs = make([][]string, len(outs))
	u := r.conf.usage
	res := &fsm.Result{Outputs: make([]fsm.OutputResult, 0, len(outs)), CPUSeconds: u.CPUSeconds, PeakMemoryMB: u.PeakMemoryMB}
	for i, o := range outs {
		if o.Kind != fsm.KindFile {
			res.Outputs = append(res.Outputs, fsm.OutputResult{URL: o.URL})
			continue
		}
		// An HLS rendition is checked while it is still in its private
		// directory, where nothing but this run writes, since ffprobe
		// follows its playlist to the segments.
		f := r.files[i]
		pctx, cancel := context.WithTimeout(ctx, probeRunTimeout)
		var pr *fsm.OutputResult
		var err error
		if f.prefix != "" {
			pr, r.segs[i], err = probeHLS(pctx, r.p.FFprobe, f.dest(), f.prefix)
		} else {
			pr, err = r.probeFile(pctx, o, f.temp)
		}
		cancel()
		if err != nil {
			return nil, fsm.Errorf(fsm.CodeFFmpeg, "output %s is not readable media: %v", o.URL, err)
		}
		pr.URL, pr.Path = o.URL, f.final
		res.Outputs = append(res.Outputs, *pr)
	}
	return res, nil
}

// probeFile describes a file output: an MP4 or QuickTime file in process
// (probeMP4) where it can, otherwise (or if that reader cannot vouch for
// the file) with ffprobe.
func (r *Run) probeFile(ctx context.Context, o fsm.Rendition, path string) (*fsm.OutputResult, error) {
	if o.Container == "mp4" || o.Container == "mov" {
		pr, err := probeMP4(path)
		if err == nil {
			return pr, nil
		}
		r.p.Logger.Debug("in-process probe could not read the output; asking ffprobe", "output", o.URL, "error", err)
	}
	return Probe(ctx, r.p.FFprobe, path)
}

// Publish moves the outputs of a successful run from their temporary
// places to their final paths (an HLS rendition's segments before its
// playlist), once; the caller calls it only after the cluster accepted the
// run's result for its attempt. Publish after a failed run, a second
// Publish or a Publish after Discard does nothing.
func (r *Run) Publish() error {
	if !r.settle() {
		return nil
	}
	if err := publishFiles(r.pendingFiles(), false); err != nil {
		r.removeTemps()
		return err
	}
	return nil
}

// pendingFiles returns the file outputs of a successful run, waiting in
// their temporary places.
func (r *Run) pendingFiles() []pendingFile {
	var out []pendingFile
	for i, f := range r.files {
		if f.temp == "" {
			continue
		}
		p := pendingFile{Temp: f.temp, Final: f.final, Prefix: f.prefix}
		if f.prefix != "" {
			p.Segments = r.segs[i]
		}
		out = append(out, p)
	}
	return out
}

// Discard deletes the temporary outputs of a successful run whose result
// the cluster refused (a stale attempt), so that nothing of it is ever
// published. It does nothing after Publish.
func (r *Run) Discard() {
	if r.settle() {
		r.removeTemps()
	}
}

// Keep gives up the run's outputs without touching them: a journal entry
// now owns them (see journal). Publish and Discard then do nothing.
func (r *Run) Keep() { r.settle() }

// settle waits for the run's end and reports whether its outputs are
// still to be published or discarded, marking them settled.
func (r *Run) settle() bool {
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.published || r.err != nil {
		return false
	}
	r.published = true
	return true
}

// removeTemps deletes the temporary output files and directories that
// still exist.
func (r *Run) removeTemps() {
	for _, f := range r.files {
		switch {
		case f.prefix != "":
			_ = os.RemoveAll(f.temp)
		case f.temp != "":
			_ = os.Remove(f.temp)
		}
	}
}

// checkSegmentNames refuses outputs of which an HLS rendition would write
// a segment where another output goes.
func checkSegmentNames(outs []fsm.Rendition, files []outputFile) error {
	for i, f := range files {
		if f.prefix == "" {
			continue
		}
		dir := filepath.Dir(f.final)
		for j, g := range files {
			if j == i || g.final == "" || filepath.Dir(g.final) != dir {
				continue
			}
			if isSegment(f.prefix, filepath.Base(g.final)) {
				return fsm.Errorf(fsm.CodeInvalidArgument, "output %s would be overwritten by a segment (%s_NNNNN.ts) of the HLS output %s",
					outs[j].URL, f.prefix, outs[i].URL)
			}
			if g.prefix == f.prefix {
				return fsm.Errorf(fsm.CodeInvalidArgument, "the HLS outputs %s and %s would write the same segments %s_NNNNN.ts",
					outs[i].URL, outs[j].URL, f.prefix)
			}
		}
	}
	return nil
}

// tenantRoot returns the symlink-resolved absolute path of the tenant's
// media directory, creating it first if create is set.
func tenantRoot(mediaRoot, tenant string, create bool) (string, error) {
	if mediaRoot == "" {
		return "", fsm.Errorf(fsm.CodeInternal, "this worker has no media root for file inputs and outputs")
	}
	if tenant == "" || !filepath.IsLocal(tenant) || strings.ContainsRune(tenant, filepath.Separator) || strings.HasPrefix(tenant, ".") {
		return "", fsm.Errorf(fsm.CodeURLNotAllowed, "tenant ID %q cannot name a media directory", tenant)
	}
	abs, err := filepath.Abs(mediaRoot)
	if err != nil {
		return "", fsm.Errorf(fsm.CodeInternal, "media root: %v", err)
	}
	dir := filepath.Join(abs, tenant)
	if create {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return "", fsm.Errorf(fsm.CodeInternal, "create tenant media directory: %v", err)
		}
	}
	real, err := filepath.EvalSymlinks(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fsm.Errorf(fsm.CodeInvalidArgument, "the tenant has no media directory on this worker")
	}
	if err != nil {
		return "", fsm.Errorf(fsm.CodeInternal, "resolve tenant media directory: %v", err)
	}
	return real, nil
}

// within reports whether path is root or below it; both must be clean
// absolute paths.
func within(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && filepath.IsLocal(rel)
}

// resolveInput returns the real path of a file input, refusing one that
// resolves outside root or is not a regular file.
func resolveInput(root string, in fsm.PlanInput) (string, error) {
	if !filepath.IsLocal(filepath.FromSlash(in.Path)) {
		return "", fsm.Errorf(fsm.CodeURLNotAllowed, "input %s is outside the tenant's media area", in.URL)
	}
	real, err := filepath.EvalSymlinks(filepath.Join(root, filepath.FromSlash(in.Path)))
	if errors.Is(err, fs.ErrNotExist) {
		return "", fsm.Errorf(fsm.CodeInvalidArgument, "input file %s does not exist", in.URL)
	}
	if err != nil {
		return "", fsm.Errorf(fsm.CodeInvalidArgument, "input file %s cannot be resolved: %v", in.URL, err)
	}
	if !within(root, real) {
		return "", fsm.Errorf(fsm.CodeURLNotAllowed, "input %s resolves outside the tenant's media area", in.URL)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fsm.Errorf(fsm.CodeInvalidArgument, "input file %s cannot be read: %v", in.URL, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fsm.Errorf(fsm.CodeInvalidArgument, "input %s is not a regular file", in.URL)
	}
	return real, nil
}

// Temporary output names: ".<name>.part-<tag>-<random>" for a file,
// ".<prefix>.hls-part-<tag>-<random>" for an HLS directory, where tag is
// ownerTag of the worker that writes them.
const (
	partMark    = ".part-"
	hlsPartMark = ".hls-part-"
)

// ownerTag returns the short tag of an owner's temporary names: 8 hex
// digits of its hash, so that a long worker ID cannot push a name past
// the file system's limit.
func ownerTag(owner string) string {
	h := fnv.New32a()
	h.Write([]byte(owner))
	return fmt.Sprintf("%08x", h.Sum32())
}

// RemoveLeftovers deletes the temporary outputs (.part files and HLS
// directories) that runs of owner left under mediaRoot, and returns how
// many it removed. Call it before that owner starts any run: a run's
// temporaries outlive it only if its process was killed, and then its
// attempt was requeued and will never be published, unless a journal
// entry still holds them (keep: the paths its publication needs).
// Temporaries of other owners sharing the media root are left alone;
// symlinks are not followed.
func RemoveLeftovers(mediaRoot, owner string, keep ...string) (int, error) {
	tag := ownerTag(owner) + "-"
	n := 0
	// Journal entries name real paths: walk the real media root.
	if abs, err := filepath.Abs(mediaRoot); err == nil {
		if real, err := filepath.EvalSymlinks(abs); err == nil {
			mediaRoot = real
		}
	}
	err := filepath.WalkDir(mediaRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		name := d.Name()
		if !strings.HasPrefix(name, ".") || path == mediaRoot {
			return nil
		}
		switch {
		case slices.Contains(keep, path):
			if d.IsDir() {
				return fs.SkipDir
			}
		case d.IsDir() && strings.Contains(name, hlsPartMark+tag):
			if err := os.RemoveAll(path); err != nil {
				return err
			}
			n++
			return fs.SkipDir
		case d.Type().IsRegular() && strings.Contains(name, partMark+tag):
			if err := os.Remove(path); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("remove leftovers: %w", err)
	}
	return n, nil
}

// prepareOutput creates the directory of a file output inside root and
// reserves a hidden temporary file beside the final path, or for an HLS
// output a hidden temporary directory.
func prepareOutput(root string, o fsm.Rendition, tag string) (outputFile, error) {
	rel := filepath.FromSlash(o.Path)
	if !filepath.IsLocal(rel) {
		return outputFile{}, fsm.Errorf(fsm.CodeURLNotAllowed, "output %s is outside the tenant's media area", o.URL)
	}
	final := filepath.Join(root, rel)
	parent := filepath.Dir(final)

	// Check the deepest directory that exists before creating anything
	// below it, so that a symlink cannot make us create directories
	// elsewhere.
	existing := parent
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) || existing == root {
			return outputFile{}, fsm.Errorf(fsm.CodeInvalidArgument, "output %s: cannot create its directory: %v", o.URL, err)
		}
		existing = filepath.Dir(existing)
	}
	escape := fsm.Errorf(fsm.CodeURLNotAllowed, "output %s resolves outside the tenant's media area", o.URL)
	if real, err := filepath.EvalSymlinks(existing); err != nil || !within(root, real) {
		return outputFile{}, escape
	}
	if err := os.MkdirAll(parent, 0o750); err != nil {
		return outputFile{}, fsm.Errorf(fsm.CodeInvalidArgument, "output %s: cannot create its directory: %v", o.URL, err)
	}
	realParent, err := filepath.EvalSymlinks(parent)
	if err != nil || !within(root, realParent) {
		return outputFile{}, escape
	}

	base := filepath.Base(final)
	final = filepath.Join(realParent, base)
	if fi, err := os.Lstat(final); err == nil && fi.IsDir() {
		return outputFile{}, fsm.Errorf(fsm.CodeInvalidArgument, "output %s is a directory", o.URL)
	}
	if o.Container == "hls" {
		prefix := segmentPrefix(o.Path)
		dir, err := os.MkdirTemp(realParent, "."+prefix+hlsPartMark+tag+"-*")
		if err != nil {
			return outputFile{}, fsm.Errorf(fsm.CodeInternal, "output %s: create temporary directory: %v", o.URL, err)
		}
		return outputFile{final: final, temp: dir, prefix: prefix}, nil
	}
	f, err := os.CreateTemp(realParent, "."+base+partMark+tag+"-*")
	if err != nil {
		return outputFile{}, fsm.Errorf(fsm.CodeInternal, "output %s: create temporary file: %v", o.URL, err)
	}
	// Outputs are meant to be read by others in the operator's group.
	err = f.Chmod(0o640)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return outputFile{}, fsm.Errorf(fsm.CodeInternal, "output %s: create temporary file: %v", o.URL, err)
	}
	return outputFile{final: final, temp: f.Name()}, nil
}
