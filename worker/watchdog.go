package worker

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// watchdogEnv switches a re-executed worker binary into the watchdog; its
// value is the first deadline (a Go duration).
const watchdogEnv = "FFRTMP_WORKER_WATCHDOG"

// watchdogBeat is the longest interval between two beats.
const watchdogBeat = 250 * time.Millisecond

// WatchdogFor returns how long the watchdog waits for a beat, under a
// lease of that length, before it kills every ffmpeg of the worker: a
// sixth of it.
//
// Why a sixth: a worker frozen (SIGSTOP, a hang) at T sends no beat after
// T, and its ffmpeg dies by T + lease/6. The latest T at which its own
// fence has not yet fired is send + 2/3 lease (see FenceFor), so the
// ffmpeg of a frozen worker is dead by send + 5/6 lease, still a sixth of
// the lease (2.5 s of the default 15 s) before the leader can re-assign
// the job at send + lease. A third would leave no margin at all.
func WatchdogFor(lease time.Duration) time.Duration { return lease / 6 }

// init turns this process into the watchdog when the worker re-executed
// it so: any binary that links this package (ffrtmp itself, or a test
// binary) can serve, without each main function knowing. It never returns
// then.
func init() {
	v, ok := os.LookupEnv(watchdogEnv)
	if !ok {
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "watchdog")
	deadline, err := time.ParseDuration(v)
	if err != nil || deadline <= 0 {
		log.Error("bad deadline", "variable", watchdogEnv, "value", v)
		os.Exit(2)
	}
	// A service manager stopping the unit signals every process in it:
	// the worker stops its ffmpeg gracefully, and the pipe closes when it
	// has exited.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	serveWatchdog(os.Stdin, os.Stdout, deadline, log)
	os.Exit(0)
}

// serveWatchdog runs the watchdog's side of the protocol until in ends
// (the worker exited or died), then kills every registered process
// group. It reads lines from the worker: "beat", "add PGID", "del PGID"
// and "deadline NANOSECONDS"; when no beat came for the deadline it kills
// every registered group, writing "killed PGID" to out before each kill,
// and forgets them. It writes "ready" first.
func serveWatchdog(in io.Reader, out io.Writer, deadline time.Duration, log *slog.Logger) {
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	groups := map[int]bool{}
	killAll := func(why string) {
		if len(groups) == 0 {
			return
		}
		pgids := slices.Sorted(maps.Keys(groups))
		log.Warn("killing the worker's ffmpeg processes", "reason", why, "process_groups", pgids)
		for _, g := range pgids {
			fmt.Fprintf(out, "killed %d\n", g)
			_ = syscall.Kill(-g, syscall.SIGKILL)
		}
		clear(groups)
	}
	fmt.Fprintln(out, "ready")
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			killAll("no beat from the worker for " + deadline.String())
			timer.Reset(deadline)
		case line, ok := <-lines:
			if !ok {
				killAll("the worker died")
				return
			}
			verb, arg, _ := strings.Cut(line, " ")
			n, err := strconv.ParseInt(arg, 10, 64)
			switch {
			case verb == "beat":
				timer.Reset(deadline)
			case err != nil || n <= 0:
				log.Warn("bad line from the worker", "line", line)
			case verb == "add":
				groups[int(n)] = true
			case verb == "del":
				delete(groups, int(n))
			case verb == "deadline":
				deadline = time.Duration(n)
				timer.Reset(deadline)
			default:
				log.Warn("bad line from the worker", "line", line)
			}
		}
	}
}

// watchdog is the worker's end of its watchdog process: the same binary
// re-executed, in a process group of its own so that a SIGSTOP or SIGKILL
// aimed at the worker does not reach it, that kills the worker's ffmpeg
// process groups when the worker stops beating (frozen or hung) or dies.
// Its methods are safe for concurrent use, and do nothing once the
// watchdog is gone.
type watchdog struct {
	log  *slog.Logger
	cmd  *exec.Cmd
	read chan struct{} // closed when the watchdog's output ends

	mu      sync.Mutex
	in      *os.File // nil once broken or closed
	every   time.Duration
	killed  map[int]bool
	changed chan struct{} // closed and replaced when killed grows
}

// startWatchdog starts the watchdog with a deadline (see WatchdogFor)
// and waits until it answers.
func startWatchdog(log *slog.Logger, deadline time.Duration) (*watchdog, error) {
	if _, nested := os.LookupEnv(watchdogEnv); nested {
		return nil, errors.New("start watchdog: this process is a watchdog")
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), watchdogEnv+"="+deadline.String())
	cmd.Stderr = os.Stderr
	// Its own group, so that a signal to the worker's group does not
	// reach it; the parent-death signal ends it with the worker even if
	// something else held the pipe open (ffmpeg dies by its own).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	pr, in, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	defer pr.Close()
	cmd.Stdin = pr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	if err := cmd.Start(); err != nil {
		in.Close()
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	d := &watchdog{log: log, cmd: cmd, read: make(chan struct{}), in: in,
		every: beatEvery(deadline), killed: map[int]bool{}, changed: make(chan struct{})}
	ready := make(chan bool, 1)
	go d.readLoop(out, ready)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case ok := <-ready:
		if ok {
			return d, nil
		}
	case <-t.C:
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	d.close()
	return nil, fmt.Errorf("start watchdog: %s did not answer as a watchdog", exe)
}

// beatEvery returns the beat interval for a deadline: a fifth of it, at
// most watchdogBeat.
func beatEvery(deadline time.Duration) time.Duration {
	return max(min(deadline/5, watchdogBeat), time.Millisecond)
}

// readLoop reads the watchdog's output: "ready", then one "killed PGID"
// per group it killed.
func (d *watchdog) readLoop(out io.Reader, ready chan<- bool) {
	defer close(d.read)
	sc := bufio.NewScanner(out)
	first := true
	for sc.Scan() {
		if first {
			ready <- sc.Text() == "ready"
			first = false
			continue
		}
		pgid, ok := strings.CutPrefix(sc.Text(), "killed ")
		if n, err := strconv.Atoi(pgid); ok && err == nil {
			d.mu.Lock()
			d.killed[n] = true
			close(d.changed)
			d.changed = make(chan struct{})
			d.mu.Unlock()
		}
	}
	if first {
		ready <- false
	}
}

// send writes one line; the first failure is logged and ends the
// watchdog's use.
func (d *watchdog) send(format string, args ...any) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.in == nil {
		return
	}
	// A stopped watchdog must not wedge the worker once the pipe is full.
	_ = d.in.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := fmt.Fprintf(d.in, format+"\n", args...); err != nil {
		d.log.Warn("the watchdog is gone; a frozen worker's ffmpeg processes will no longer be killed", "error", err)
		d.in.Close()
		d.in = nil
	}
}

// add registers an ffmpeg process group, del unregisters it (before its
// ID can be reused: as soon as the process has been reaped).
func (d *watchdog) add(pgid int) {
	if d == nil {
		return
	}
	d.mu.Lock()
	delete(d.killed, pgid) // a reused ID
	d.mu.Unlock()
	d.send("add %d", pgid)
}

func (d *watchdog) del(pgid int) { d.send("del %d", pgid) }

// setLease sets the deadline from the cluster's lease.
func (d *watchdog) setLease(lease time.Duration) {
	if d == nil {
		return
	}
	deadline := WatchdogFor(lease)
	d.mu.Lock()
	d.every = beatEvery(deadline)
	d.mu.Unlock()
	d.send("deadline %d", int64(deadline))
}

// beat sends beats until stop is closed.
func (d *watchdog) beat(stop <-chan struct{}) {
	if d == nil {
		return
	}
	for {
		d.send("beat")
		d.mu.Lock()
		every := d.every
		d.mu.Unlock()
		t := time.NewTimer(every)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// killedGroup reports whether the watchdog killed the process group,
// waiting up to wait for its word (it writes it before it kills, but it
// may not have been read yet).
func (d *watchdog) killedGroup(pgid int, wait time.Duration) bool {
	if d == nil {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		d.mu.Lock()
		killed, changed := d.killed[pgid], d.changed
		if killed {
			delete(d.killed, pgid)
		}
		d.mu.Unlock()
		if killed {
			return true
		}
		select {
		case <-changed:
		case <-d.read:
			d.mu.Lock()
			killed = d.killed[pgid]
			d.mu.Unlock()
			return killed
		case <-t.C:
			return false
		}
	}
}

// close closes the pipe, so that the watchdog kills whatever is still
// registered and exits, and waits for it.
func (d *watchdog) close() {
	if d == nil {
		return
	}
	d.mu.Lock()
	if d.in != nil {
		d.in.Close()
		d.in = nil
	}
	d.mu.Unlock()
	<-d.read
	_ = d.cmd.Wait()
}

// sigkilled reports whether the process has exited and was killed by
// SIGKILL, as the watchdog kills.
func (p *Process) sigkilled() bool {
	select {
	case <-p.done:
	default:
		return false
	}
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}
