package worker

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Limits are the resources one run may use: a job's resources.cpu and
// resources.memory_mb. A zero field means no limit.
type Limits struct {
	CPU      float64 // CPUs; 0.5 is half of one CPU
	MemoryMB int     // MiB
}

// Usage is what a run consumed.
type Usage struct {
	CPUSeconds   float64 // user plus system CPU time
	PeakMemoryMB int     // peak memory in MiB, rounded up
}

// LimitMode is how a Limiter enforces Limits.
type LimitMode string

// Limit modes.
const (
	// ModeCgroup runs every ffmpeg in a cgroup v2 of its own, created
	// under the worker's cgroup, with cpu.max and memory.max (and no
	// swap). An ffmpeg over its memory limit is killed by the kernel.
	// Usage comes from the cgroup.
	ModeCgroup LimitMode = "cgroup2"
	// ModeRlimit is the fallback where cgroup v2 cannot be used. The
	// memory limit is enforced twice: a watchdog kills ffmpeg once its
	// anonymous resident memory (RssAnon) passes the limit, as the
	// cgroup's OOM killer would, and an RLIMIT_DATA makes allocations
	// fail well beyond it, against a burst between two samples (see
	// dataLimit). A CPU limit becomes ffmpeg's -threads and a lower
	// scheduling priority (nice), which bound its parallelism but not its
	// share of the CPU. Usage comes from the process's rusage.
	ModeRlimit LimitMode = "rlimit"
)

const (
	// cgroupMount is where the unified cgroup hierarchy must be mounted
	// for ModeCgroup.
	cgroupMount = "/sys/fs/cgroup"
	// rlimitNice is the nice value of an ffmpeg with a CPU limit in
	// ModeRlimit.
	rlimitNice = 10
	// memoryPoll is how often memory use is sampled where the kernel
	// does not keep its peak: memory.current before Linux 5.19, RssAnon
	// for the watchdog of ModeRlimit.
	memoryPoll = 100 * time.Millisecond
)

// dataLimit returns the RLIMIT_DATA of ModeRlimit for a memory limit.
// RLIMIT_DATA (Linux 4.7 and later) counts a process's private writable
// mappings, touched or not. Unlike RLIMIT_AS it leaves out shared
// libraries and reserved address space, about 200 MiB for ffmpeg, but it
// counts every thread's whole stack (RLIMIT_STACK, 8 MiB by default), and
// ffmpeg starts several threads per CPU in its encoders and filter graphs
// (15 for x264 at 1080p on two CPUs), so on a large host stacks alone
// would pass a small limit. It is therefore 1.25 times the limit, for
// heap allocated but not yet touched, plus a stack for each of 4 threads
// per CPU and 16 more; the watchdog does the exact enforcement.
func dataLimit(memoryMB int) uint64 {
	// Where RLIMIT_STACK is unlimited, glibc uses an architecture
	// default; 32 MiB is at least that.
	stack := uint64(32 << 20)
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_STACK, &rl) == nil && rl.Cur != unix.RLIM_INFINITY && rl.Cur > 0 {
		stack = rl.Cur
	}
	threads := uint64(4*runtime.NumCPU() + 16)
	return uint64(memoryMB)<<20*5/4 + threads*stack
}

// Limiter enforces Limits on ffmpeg runs. Its methods are safe for
// concurrent use.
type Limiter struct {
	mode LimitMode
	cg   *cgroupTree // ModeCgroup only
	why  error       // ModeRlimit only: why cgroup v2 is not used
}

// defaultLimiter is detected once per process, as it may move the process
// into another cgroup.
var defaultLimiter = sync.OnceValue(func() *Limiter {
	cg, err := setupCgroup(cgroupMount)
	if err != nil {
		slog.Info("resource limits: cgroup v2 is not usable; using rlimits, nice and -threads", "reason", err)
		return &Limiter{mode: ModeRlimit, why: err}
	}
	slog.Info("resource limits: one cgroup v2 per run", "parent", cg.dir)
	return &Limiter{mode: ModeCgroup, cg: cg}
})

// DefaultLimiter returns the process's Limiter. The first call detects
// the mode and logs it: ModeCgroup if /sys/fs/cgroup is a writable
// cgroup v2 hierarchy that offers the cpu and memory controllers to this
// process's cgroup, which then moves the process into a leaf "worker"
// below that cgroup, since a cgroup that hands controllers to its
// children may hold no process itself; ModeRlimit otherwise.
func DefaultLimiter() *Limiter { return defaultLimiter() }

// Mode returns how l enforces limits.
func (l *Limiter) Mode() LimitMode { return l.mode }

// String describes the mode for logs.
func (l *Limiter) String() string {
	if l.mode == ModeCgroup {
		return fmt.Sprintf("%s under %s", l.mode, l.cg.dir)
	}
	return fmt.Sprintf("%s (%v)", l.mode, l.why)
}

// threads returns the -threads of a run: in ModeRlimit a CPU limit caps
// it at the limit rounded up.
func (l *Limiter) threads(requested int, lim Limits) int {
	if l.mode != ModeRlimit || lim.CPU <= 0 {
		return requested
	}
	n := int(math.Ceil(lim.CPU))
	if requested > 0 && requested < n {
		return requested
	}
	return n
}

// confine prepares the limits of one run; name names its cgroup. Every
// confinement must end with close.
func (l *Limiter) confine(name string, lim Limits) (*confinement, error) {
	c := &confinement{limits: lim, tree: l.cg}
	if l.mode != ModeCgroup {
		return c, nil
	}
	if name == "" {
		b := make([]byte, 6)
		rand.Read(b)
		name = "run-" + hex.EncodeToString(b)
	}
	cg, err := l.cg.create(name, lim)
	if err != nil {
		return nil, err
	}
	c.cg = cg
	return c, nil
}

// confinement enforces the limits of one run and measures what it used.
type confinement struct {
	limits Limits
	tree   *cgroupTree // ModeCgroup only
	cg     *runCgroup  // ModeCgroup only

	watchdog sync.WaitGroup // ModeRlimit only
	killed   atomic.Bool    // the watchdog killed ffmpeg

	usage Usage
	oom   bool // the cgroup's OOM killer killed a process
}

// options returns how ffmpeg must be started. After a start that
// failed, retryStart says whether to try again with new options.
func (c *confinement) options() procOptions {
	if c.cg != nil {
		if c.tree.noClone3.Load() {
			return procOptions{setup: c.cg.enter}
		}
		return procOptions{cgroup: c.cg.fd}
	}
	lim := c.limits
	if lim.MemoryMB <= 0 && lim.CPU <= 0 {
		return procOptions{}
	}
	// There is no rlimit or nice attribute for exec in Go, so they are
	// set on ffmpeg right after exec (which Start waits for), before it
	// has parsed its arguments, let alone allocated frames. Nice is set
	// on the process group, which covers every thread that exists then;
	// later threads inherit it.
	return procOptions{setup: func(pid int) error {
		if lim.MemoryMB > 0 {
			n := dataLimit(lim.MemoryMB)
			if err := unix.Prlimit(pid, unix.RLIMIT_DATA, &unix.Rlimit{Cur: n, Max: n}, nil); err != nil {
				return fmt.Errorf("set memory rlimit: %w", err)
			}
		}
		if lim.CPU > 0 {
			if err := unix.Setpriority(unix.PRIO_PGRP, pid, rlimitNice); err != nil {
				return fmt.Errorf("set nice: %w", err)
			}
		}
		return nil
	}}
}

// retryStart reports whether a start with opts that failed with err
// should be tried again with options(): where the kernel or a seccomp
// profile refuses clone3 into a cgroup (ENOSYS, or EINVAL before Linux
// 5.7), every later run moves ffmpeg into its cgroup right after it
// started.
func (c *confinement) retryStart(opts procOptions, err error, log *slog.Logger) bool {
	if opts.cgroup == nil || !(errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EINVAL)) {
		return false
	}
	if !c.tree.noClone3.Swap(true) {
		log.Warn("resource limits: cannot start a process inside a cgroup (clone3); moving each ffmpeg into its cgroup after it starts", "error", err)
	}
	return true
}

// started is called once ffmpeg runs as p.
func (c *confinement) started(p *Process) {
	switch {
	case c.cg != nil:
		c.cg.watch()
	case c.limits.MemoryMB > 0:
		c.watchdog.Go(func() { c.watch(p) })
	}
}

// watch kills ffmpeg once its anonymous resident memory passes the
// memory limit. It returns when ffmpeg has exited or been killed.
func (c *confinement) watch(p *Process) {
	limitKiB := int64(c.limits.MemoryMB) << 10
	status := "/proc/" + strconv.Itoa(p.Pid()) + "/status"
	t := time.NewTicker(memoryPoll)
	defer t.Stop()
	for {
		if kib, err := statusKiB(status, "RssAnon:"); err == nil && kib > limitKiB {
			// signal refuses once ffmpeg has been reaped, so an exit
			// (and a recycled pid) is never taken for a kill.
			if p.signal(syscall.SIGKILL) == nil {
				c.killed.Store(true)
			}
			return
		}
		select {
		case <-p.Done():
			return
		case <-t.C:
		}
	}
}

// statusKiB reads a "Key: N kB" line of a /proc/<pid>/status file.
func statusKiB(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, key); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, key)
}

// close ends the confinement after ffmpeg has exited (p nil if it never
// started): it records the usage and whether the OOM killer struck, and
// removes the cgroup.
func (c *confinement) close(p *Process, log *slog.Logger) {
	if c.cg != nil {
		u, kills, err := c.cg.close()
		c.usage, c.oom = u, kills > 0
		if err != nil {
			log.Warn("remove run cgroup", "cgroup", c.cg.dir, "error", err)
		}
		return
	}
	c.watchdog.Wait()
	if p == nil {
		return
	}
	if ru := p.rusage(); ru != nil {
		c.usage = Usage{
			CPUSeconds:   float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9,
			PeakMemoryMB: int((ru.Maxrss + 1023) / 1024), // KiB on Linux
		}
	}
}

// exceeded returns the error of a run that failed with waitErr because
// it ran out of its memory limit, or nil. In ModeCgroup that is an OOM
// kill in its cgroup. In ModeRlimit it is a kill by the watchdog; or an
// allocation refused by RLIMIT_DATA, which ffmpeg and its encoders
// report in their own words (found in tail) or, where the failure goes
// unchecked, do not report at all and crash: a crash under a memory
// limit is counted as exceeding it.
func (c *confinement) exceeded(waitErr error, tail string) error {
	mb := c.limits.MemoryMB
	if mb <= 0 {
		return nil
	}
	if c.oom || c.killed.Load() {
		return fsm.Errorf(fsm.CodeResourceExceeded, "ffmpeg exceeded its memory limit of %d MiB and was killed", mb)
	}
	if c.cg != nil {
		return nil
	}
	if line := allocFailure(tail); line != "" {
		return fsm.Errorf(fsm.CodeResourceExceeded, "ffmpeg exceeded its memory limit of %d MiB: %s", mb, line)
	}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() &&
			(ws.Signal() == syscall.SIGSEGV || ws.Signal() == syscall.SIGBUS || ws.Signal() == syscall.SIGABRT) {
			return fsm.Errorf(fsm.CodeResourceExceeded,
				"ffmpeg crashed (%v) under its memory limit of %d MiB, most likely when an allocation beyond the limit was refused",
				ws.Signal(), mb)
		}
	}
	return nil
}

// allocMessages are how ffmpeg, its libraries and the C++ runtime report
// a failed allocation, in lower case.
var allocMessages = []string{
	"cannot allocate memory", // strerror(ENOMEM), AVERROR(ENOMEM)
	"out of memory",
	"bad_alloc",          // C++ std::bad_alloc (x265, SVT-AV1)
	"malloc of size",     // x264: "malloc of size N failed"
	"unable to allocate", // x265
	"failed to allocate", // libvpx, libaom
	"memory allocation failed",
	// ffmpeg when a thread's stack cannot be mapped: "pthread_create
	// failed: Resource temporarily unavailable. Try to increase `ulimit
	// -v`…"
	"pthread_create failed",
}

// allocFailure returns the last line of tail that reports a failed
// allocation, or "".
func allocFailure(tail string) string {
	lines := strings.Split(tail, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.ToLower(lines[i])
		for _, m := range allocMessages {
			if strings.Contains(l, m) {
				return lastLine(lines[i])
			}
		}
	}
	return ""
}
