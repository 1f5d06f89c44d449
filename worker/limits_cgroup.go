package worker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// cpuPeriod is the cpu.max period, in microseconds.
	cpuPeriod = 100000
	// workerLeaf is the cgroup, below its own, that the worker process
	// moves into.
	workerLeaf = "worker"
	// runPrefix starts the name of every run cgroup.
	runPrefix = "job-"
)

// cgroupTree is the worker's cgroup v2, the parent of one cgroup per run.
type cgroupTree struct {
	dir string // absolute path of the worker's cgroup
	// noClone3 is set once starting a process inside a cgroup failed;
	// runs then move ffmpeg into its cgroup right after it started.
	noClone3 atomic.Bool
}

// setupCgroup checks that mount is a cgroup v2 hierarchy and delegates
// this process's cgroup in it (see delegate).
func setupCgroup(mount string) (*cgroupTree, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(mount, &st); err != nil {
		return nil, fmt.Errorf("statfs %s: %w", mount, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return nil, fmt.Errorf("%s is not a cgroup v2 hierarchy (cgroup v1 or hybrid layout)", mount)
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("read own cgroup: %w", err)
	}
	rel, err := parseSelfCgroup(b)
	if err != nil {
		return nil, err
	}
	return delegate(filepath.Join(mount, rel), os.Getpid())
}

// parseSelfCgroup returns the cgroup v2 path of a /proc/<pid>/cgroup
// file: the path of its "0::" line.
func parseSelfCgroup(b []byte) (string, error) {
	for line := range strings.Lines(string(b)) {
		if p, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "0::"); ok {
			if !strings.HasPrefix(p, "/") {
				return "", fmt.Errorf("own cgroup v2 path %q is not absolute (another cgroup namespace?)", p)
			}
			return p, nil
		}
	}
	return "", errors.New("this process is in no cgroup v2")
}

// delegate makes own, pid's cgroup, the parent of run cgroups: it checks
// that own offers the cpu and memory controllers, moves pid into the leaf
// own/worker (a cgroup that enables controllers for its children may hold
// no process), enables cpu and memory for own's children and removes run
// cgroups a previous worker left behind, killing what they hold. If any
// step fails, pid is moved back into own.
func delegate(own string, pid int) (*cgroupTree, error) {
	b, err := os.ReadFile(filepath.Join(own, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("read controllers of %s: %w", own, err)
	}
	have := strings.Fields(string(b))
	for _, c := range []string{"cpu", "memory"} {
		if !slices.Contains(have, c) {
			return nil, fmt.Errorf("the %s controller is not available in %s (not delegated to this process)", c, own)
		}
	}
	leaf := filepath.Join(own, workerLeaf)
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create cgroup %s: %w", leaf, err)
	}
	pidText := strconv.Itoa(pid)
	if err := writeCgroup(leaf, "cgroup.procs", pidText); err != nil {
		_ = os.Remove(leaf)
		return nil, fmt.Errorf("move this process into %s: %w", leaf, err)
	}
	if err := writeCgroup(own, "cgroup.subtree_control", "+cpu +memory"); err != nil {
		_ = writeCgroup(own, "cgroup.procs", pidText)
		_ = os.Remove(leaf)
		hint := ""
		if errors.Is(err, syscall.EBUSY) {
			hint = " (other processes share this cgroup; run the worker in a cgroup of its own, e.g. a systemd unit with Delegate=yes)"
		}
		return nil, fmt.Errorf("enable cpu and memory controllers in %s: %w%s", own, err, hint)
	}
	entries, _ := os.ReadDir(own)
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), runPrefix) {
			_ = removeCgroup(filepath.Join(own, e.Name()))
		}
	}
	return &cgroupTree{dir: own}, nil
}

// create makes the cgroup of one run, named job-<name>, with lim.
func (t *cgroupTree) create(name string, lim Limits) (*runCgroup, error) {
	dir := filepath.Join(t.dir, runPrefix+cgroupName(name))
	err := os.Mkdir(dir, 0o755)
	if errors.Is(err, os.ErrExist) {
		// Left over by an earlier run of the same name.
		if err := removeCgroup(dir); err != nil {
			return nil, fmt.Errorf("remove stale cgroup %s: %w", dir, err)
		}
		err = os.Mkdir(dir, 0o755)
	}
	if err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	c := &runCgroup{dir: dir}
	if err := c.limit(lim); err != nil {
		_ = os.Remove(dir)
		return nil, err
	}
	fd, err := os.Open(dir)
	if err != nil {
		_ = os.Remove(dir)
		return nil, fmt.Errorf("open cgroup %s: %w", dir, err)
	}
	c.fd = fd
	return c, nil
}

// cgroupName makes name safe as a cgroup directory name.
func cgroupName(name string) string {
	b := []byte(name)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			b[i] = '_'
		}
	}
	return string(b[:min(len(b), 200)])
}

// runCgroup is the cgroup of one run.
type runCgroup struct {
	dir string
	fd  *os.File // the directory, for clone3 into the cgroup

	peak    atomic.Int64 // largest memory.current seen, without memory.peak
	stop    chan struct{}
	stopped sync.WaitGroup
}

// limit writes cpu.max, memory.max and memory.swap.max for lim, and makes
// an OOM kill take the whole cgroup.
func (c *runCgroup) limit(lim Limits) error {
	if lim.CPU > 0 {
		quota := max(1000, int64(math.Ceil(lim.CPU*cpuPeriod)))
		if err := writeCgroup(c.dir, "cpu.max", fmt.Sprintf("%d %d", quota, cpuPeriod)); err != nil {
			return fmt.Errorf("limit cpu: %w", err)
		}
	}
	if lim.MemoryMB > 0 {
		if err := writeCgroup(c.dir, "memory.max", strconv.FormatInt(int64(lim.MemoryMB)<<20, 10)); err != nil {
			return fmt.Errorf("limit memory: %w", err)
		}
		// Without swap accounting (swapaccount=0) there is no such file,
		// and no swap to limit through it.
		if _, err := os.Stat(filepath.Join(c.dir, "memory.swap.max")); err == nil {
			if err := writeCgroup(c.dir, "memory.swap.max", "0"); err != nil {
				return fmt.Errorf("limit swap: %w", err)
			}
		}
	}
	// Best effort: before Linux 4.19 the OOM killer takes one process,
	// which for a lone ffmpeg is the same.
	_ = writeCgroup(c.dir, "memory.oom.group", "1")
	return nil
}

// enter moves pid into the cgroup; it is how a process gets there when
// it cannot be started inside.
func (c *runCgroup) enter(pid int) error {
	if err := writeCgroup(c.dir, "cgroup.procs", strconv.Itoa(pid)); err != nil {
		return fmt.Errorf("move ffmpeg into %s: %w", c.dir, err)
	}
	return nil
}

// watch samples memory.current until close where the kernel keeps no
// memory.peak.
func (c *runCgroup) watch() {
	if _, err := os.Stat(filepath.Join(c.dir, "memory.peak")); err == nil {
		return
	}
	c.stop = make(chan struct{})
	c.stopped.Go(func() {
		t := time.NewTicker(memoryPoll)
		defer t.Stop()
		for {
			c.sampleMemory()
			select {
			case <-c.stop:
				return
			case <-t.C:
			}
		}
	})
}

func (c *runCgroup) sampleMemory() {
	if n, err := readInt(c.dir, "memory.current"); err == nil && n > c.peak.Load() {
		c.peak.Store(n)
	}
}

// close stops sampling, reads what the run used and how many processes
// the OOM killer killed, and removes the cgroup. The usage is read even
// if removal fails.
func (c *runCgroup) close() (u Usage, oomKills int64, err error) {
	if c.stop != nil {
		close(c.stop)
		c.stopped.Wait()
		c.sampleMemory()
	}
	if stat, err := readKeyed(c.dir, "cpu.stat"); err == nil {
		u.CPUSeconds = float64(stat["usage_usec"]) / 1e6
	}
	peak, err := readInt(c.dir, "memory.peak")
	if err != nil {
		peak = c.peak.Load()
	}
	u.PeakMemoryMB = int((peak + 1<<20 - 1) >> 20)
	if ev, err := readKeyed(c.dir, "memory.events"); err == nil {
		oomKills = ev["oom_kill"]
	}
	if c.fd != nil {
		_ = c.fd.Close()
	}
	return u, oomKills, removeCgroup(c.dir)
}

// removeCgroup removes a cgroup directory. One that still holds
// processes has them killed (cgroup.kill, Linux 5.14) and is retried
// for up to a second while they exit.
func removeCgroup(dir string) error {
	err := os.Remove(dir)
	if err == nil || errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if !errors.Is(err, syscall.EBUSY) {
		return err
	}
	_ = writeCgroup(dir, "cgroup.kill", "1")
	for range 20 {
		time.Sleep(50 * time.Millisecond)
		if err = os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
	}
	return err
}

// writeCgroup writes value to a cgroup interface file.
func writeCgroup(dir, file, value string) error {
	return os.WriteFile(filepath.Join(dir, file), []byte(value), 0o644)
}

// readInt reads a cgroup file that holds one integer.
func readInt(dir, file string) (int64, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
}

// readKeyed reads a flat keyed cgroup file ("key value" lines).
func readKeyed(dir, file string) (map[string]int64, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return nil, err
	}
	m := make(map[string]int64)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			m[k] = n
		}
	}
	return m, nil
}
