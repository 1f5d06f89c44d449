package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// ErrProcessDone is returned by Pause and Resume once the process has
// exited.
var ErrProcessDone = errors.New("worker: process already exited")

// Process is a started program, normally ffmpeg, in a process group of its
// own, so that signals reach anything it spawns, and killed if the worker
// dies (Linux parent-death signal). Its methods are safe for concurrent use.
type Process struct {
	cmd  *exec.Cmd
	pid  int
	done chan struct{} // closed once the process has been reaped
	err  error         // result of cmd.Wait, set before done is closed
	mu   sync.Mutex    // serializes signals with reaping
}

// StartProcess starts prog with args (no shell) in a new process group.
// stdout and stderr may be nil to discard the stream; a writer that is not
// an *os.File is fed by a goroutine that Wait waits for. Stdin is
// /dev/null.
func StartProcess(prog string, args []string, stdout, stderr io.Writer) (*Process, error) {
	return startProcess(prog, args, stdout, stderr, procOptions{})
}

// procOptions are what a process gets beyond StartProcess's defaults.
type procOptions struct {
	// cgroup, if set, is the directory of the cgroup v2 the process
	// starts in (clone3 with CLONE_INTO_CGROUP), so it never runs
	// outside it.
	cgroup *os.File
	// setup, if set, is called with the pid once the program has been
	// executed, before the process can be reaped (so the pid names no
	// other process). If it fails, the process is killed and the start
	// fails.
	setup func(pid int) error
}

// startProcess is StartProcess with opts.
func startProcess(prog string, args []string, stdout, stderr io.Writer, opts procOptions) (*Process, error) {
	cmd := exec.Command(prog, args...)
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if opts.cgroup != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(opts.cgroup.Fd())
	}
	err := cmd.Start()
	runtime.KeepAlive(opts.cgroup)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", prog, err)
	}
	if opts.setup != nil {
		if err := opts.setup(cmd.Process.Pid); err != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
			return nil, fmt.Errorf("start %s: %w", prog, err)
		}
	}
	p := &Process{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		close(p.done)
		p.mu.Unlock()
	}()
	return p, nil
}

// Pid returns the process ID, which is also its process group ID.
func (p *Process) Pid() int { return p.pid }

// Done returns a channel that is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// signal sends sig to the process group unless the process is known to
// have exited, so a recycled group ID is not signalled.
func (p *Process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return ErrProcessDone
	default:
	}
	if err := syscall.Kill(-p.pid, sig); err != nil {
		return fmt.Errorf("signal process group %d: %w", p.pid, err)
	}
	return nil
}

// Pause stops the process group with SIGSTOP.
func (p *Process) Pause() error { return p.signal(syscall.SIGSTOP) }

// Resume continues the process group with SIGCONT.
func (p *Process) Resume() error { return p.signal(syscall.SIGCONT) }

// Stop asks the process group to exit with SIGTERM (and SIGCONT, so a
// paused process can act on it), sends SIGKILL if it is still running
// after grace, and returns once the process has exited. It is safe to call
// more than once and after the process has exited.
func (p *Process) Stop(grace time.Duration) {
	if p.signal(syscall.SIGTERM) == nil {
		_ = p.signal(syscall.SIGCONT)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return
	case <-t.C:
	}
	_ = p.signal(syscall.SIGKILL)
	<-p.done
}

// Wait waits for the process to exit and returns the error of
// exec.Cmd.Wait (nil for exit status 0). It may be called from several
// goroutines, before or after Stop.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// rusage returns the resources the process used, once it has exited;
// nil before.
func (p *Process) rusage() *syscall.Rusage {
	select {
	case <-p.done:
	default:
		return nil
	}
	if p.cmd.ProcessState == nil {
		return nil
	}
	ru, _ := p.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return ru
}

// runCapture runs prog to completion and returns its stdout. It is killed
// (its whole group) when ctx ends. A failure is reported with the last line
// of stderr.
func runCapture(ctx context.Context, prog string, args []string) ([]byte, error) {
	var stdout bytes.Buffer
	stderr := NewTail(4 << 10)
	p, err := StartProcess(prog, args, &stdout, stderr)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		p.Stop(time.Second)
		return nil, fmt.Errorf("run %s: %w", prog, ctx.Err())
	}
	if err := p.Wait(); err != nil {
		if line := lastLine(stderr.String()); line != "" {
			return nil, fmt.Errorf("run %s: %w: %s", prog, err, line)
		}
		return nil, fmt.Errorf("run %s: %w", prog, err)
	}
	return stdout.Bytes(), nil
}

// exitDescription describes how a process that failed ended.
func exitDescription(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Sprintf("was killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
		}
		return fmt.Sprintf("exited with status %d", ee.ExitCode())
	}
	return err.Error()
}
