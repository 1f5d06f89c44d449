package worker

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

func TestParseSelfCgroup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"unified", "0::/system.slice/ffrtmp.service\n", "/system.slice/ffrtmp.service", true},
		{"hybrid", "4:memory:/x\n1:name=systemd:/\n0::/user.slice/s.scope\n", "/user.slice/s.scope", true},
		{"root", "0::/\n", "/", true},
		{"v1 only", "4:memory:/x\n3:cpu:/\n", "", false},
		{"other namespace", "0::../x\n", "", false},
	}
	for _, tt := range tests {
		got, err := parseSelfCgroup([]byte(tt.in))
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("%s: parseSelfCgroup = %q, %v; want %q, ok %v", tt.name, got, err, tt.want, tt.ok)
		}
	}
}

// fakeCgroup makes a directory that stands for a cgroup v2 offering the
// given controllers. Plain files stand in for its interface files, so
// what the code writes can be read back; the kernel's side (moving
// processes, removing a cgroup with files in it) does not happen.
func fakeCgroup(t *testing.T, controllers string) string {
	t.Helper()
	dir := t.TempDir()
	for file, content := range map[string]string{
		"cgroup.controllers": controllers, "cgroup.procs": "", "cgroup.subtree_control": "",
	} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDelegate(t *testing.T) {
	t.Parallel()
	own := fakeCgroup(t, "cpuset cpu io memory pids\n")
	stale := filepath.Join(own, "job-old-1")
	if err := os.Mkdir(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	tree, err := delegate(own, 4242)
	if err != nil {
		t.Fatalf("delegate: %v", err)
	}
	if tree.dir != own {
		t.Errorf("tree at %s, want %s", tree.dir, own)
	}
	if got := readFile(t, filepath.Join(own, "worker", "cgroup.procs")); got != "4242" {
		t.Errorf("worker/cgroup.procs = %q, want the worker's pid 4242", got)
	}
	if got := readFile(t, filepath.Join(own, "cgroup.subtree_control")); got != "+cpu +memory" {
		t.Errorf("cgroup.subtree_control = %q, want +cpu +memory", got)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale run cgroup %s not removed: %v", stale, err)
	}
}

func TestDelegateRefuses(t *testing.T) {
	t.Parallel()
	t.Run("no memory controller", func(t *testing.T) {
		own := fakeCgroup(t, "cpu io pids\n")
		if _, err := delegate(own, 4242); err == nil || !strings.Contains(err.Error(), "memory controller") {
			t.Errorf("delegate = %v, want an error naming the memory controller", err)
		}
		if _, err := os.Stat(filepath.Join(own, "worker")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("worker leaf created although the controllers are missing")
		}
	})
	t.Run("controllers cannot be enabled", func(t *testing.T) {
		own := fakeCgroup(t, "cpu memory\n")
		// A directory in place of the file makes the write fail.
		sc := filepath.Join(own, "cgroup.subtree_control")
		if err := os.Remove(sc); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(sc, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := delegate(own, 4242); err == nil || !strings.Contains(err.Error(), "enable cpu and memory") {
			t.Errorf("delegate = %v, want an error about enabling the controllers", err)
		}
		if got := readFile(t, filepath.Join(own, "cgroup.procs")); got != "4242" {
			t.Errorf("cgroup.procs = %q: the worker was not moved back into its cgroup", got)
		}
	})
}

func TestCgroupLimitFiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		lim             Limits
		cpuMax, memMax  string // "" for no file
		name, wantDirAt string
	}{
		{Limits{CPU: 0.5, MemoryMB: 64}, "50000 100000", "67108864", "j-1-2", "job-j-1-2"},
		{Limits{CPU: 2}, "200000 100000", "", "j/../x", "job-j____x"},
		{Limits{CPU: 0.001}, "1000 100000", "", "tiny", "job-tiny"}, // the kernel's least quota
		{Limits{MemoryMB: 1024}, "", "1073741824", "m", "job-m"},
		{Limits{}, "", "", "none", "job-none"},
	}
	for _, tt := range tests {
		tree := &cgroupTree{dir: fakeCgroup(t, "cpu memory")}
		c, err := tree.create(tt.name, tt.lim)
		if err != nil {
			t.Fatalf("create %+v: %v", tt.lim, err)
		}
		if want := filepath.Join(tree.dir, tt.wantDirAt); c.dir != want {
			t.Errorf("cgroup of %q at %s, want %s", tt.name, c.dir, want)
		}
		for file, want := range map[string]string{"cpu.max": tt.cpuMax, "memory.max": tt.memMax} {
			b, err := os.ReadFile(filepath.Join(c.dir, file))
			if got := string(b); (err == nil) != (want != "") || got != want {
				t.Errorf("%+v: %s = %q (%v), want %q", tt.lim, file, got, err, want)
			}
		}
		// This kernel has no swap accounting: nothing to write.
		if _, err := os.Stat(filepath.Join(c.dir, "memory.swap.max")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("memory.swap.max written where the kernel has none")
		}
		c.fd.Close()
	}
}

func TestCgroupUsage(t *testing.T) {
	t.Parallel()
	write := func(t *testing.T, dir string, files map[string]string) {
		t.Helper()
		for f, s := range files {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("memory.peak and an OOM kill", func(t *testing.T) {
		tree := &cgroupTree{dir: fakeCgroup(t, "cpu memory")}
		c, err := tree.create("a-1", Limits{MemoryMB: 64})
		if err != nil {
			t.Fatal(err)
		}
		write(t, c.dir, map[string]string{
			"cpu.stat":      "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
			"memory.peak":   "104857600\n",
			"memory.events": "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n",
		})
		c.watch()
		u, kills, _ := c.close() // a fake cgroup with files cannot be removed
		if u != (Usage{CPUSeconds: 2.5, PeakMemoryMB: 100}) || kills != 1 {
			t.Errorf("close = %+v, %d OOM kills; want 2.5 s, 100 MiB, 1", u, kills)
		}
	})
	t.Run("memory.current sampled without memory.peak", func(t *testing.T) {
		tree := &cgroupTree{dir: fakeCgroup(t, "cpu memory")}
		c, err := tree.create("b-1", Limits{})
		if err != nil {
			t.Fatal(err)
		}
		write(t, c.dir, map[string]string{"cpu.stat": "usage_usec 10\n", "memory.current": "50000000\n",
			"memory.events": "oom_kill 0\n"})
		c.watch()
		u, kills, _ := c.close()
		if u.PeakMemoryMB != 48 || kills != 0 {
			t.Errorf("close = %+v, %d OOM kills; want 48 MiB (50,000,000 bytes rounded up), 0", u, kills)
		}
	})
}

// exitError returns how sh fails when it runs script.
func exitError(t *testing.T, script string) error {
	t.Helper()
	err := exec.Command("sh", "-c", script).Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("sh -c %q: %v, want an exit error", script, err)
	}
	return err
}

func TestExceeded(t *testing.T) {
	t.Parallel()
	x265 := "  Stream #0:0 -> #0:0 (rawvideo (native) -> hevc (libx265))\n" +
		"x265 [error]: Unable to allocate scaling list arrays\n" +
		"[libx265 @ 0x5] Cannot open libx265 encoder.\nConversion failed!\n"
	x264 := "x264 [error]: malloc of size 21414530 failed\nConversion failed!\n"
	av := "[vist#0:0] Error while decoding: Cannot allocate memory\nConversion failed!\n"
	threads := "pthread_create failed: Resource temporarily unavailable. Try to increase `ulimit -v` or decrease `ulimit -s`.\nConversion failed!\n"
	other := "Output file #0 does not contain any stream\n"
	status1 := exitError(t, "exit 1")
	segv := exitError(t, "kill -SEGV $$")
	term := exitError(t, "kill -TERM $$")
	cg := &cgroupTree{}
	cgroup := func(oom bool) *confinement {
		return &confinement{limits: Limits{MemoryMB: 64}, tree: cg, cg: &runCgroup{}, oom: oom}
	}
	rlimit := func(mb int) *confinement { return &confinement{limits: Limits{MemoryMB: mb}} }
	killed := rlimit(64)
	killed.killed.Store(true)
	tests := []struct {
		name    string
		c       *confinement
		waitErr error
		tail    string
		want    string // "" for no resource_exceeded error
	}{
		{"cgroup OOM kill", cgroup(true), status1, "", "ffmpeg exceeded its memory limit of 64 MiB and was killed"},
		{"cgroup failure without OOM", cgroup(false), segv, x265, ""},
		{"watchdog kill", killed, status1, "", "ffmpeg exceeded its memory limit of 64 MiB and was killed"},
		{"rlimit x265", rlimit(64), status1, x265,
			"ffmpeg exceeded its memory limit of 64 MiB: x265 [error]: Unable to allocate scaling list arrays"},
		{"rlimit x264", rlimit(80), status1, x264,
			"ffmpeg exceeded its memory limit of 80 MiB: x264 [error]: malloc of size 21414530 failed"},
		{"rlimit ENOMEM", rlimit(64), status1, av,
			"ffmpeg exceeded its memory limit of 64 MiB: [vist#0:0] Error while decoding: Cannot allocate memory"},
		{"rlimit thread stack", rlimit(64), status1, threads,
			"ffmpeg exceeded its memory limit of 64 MiB: pthread_create failed: Resource temporarily unavailable. Try to increase `ulimit -v` or decrease `ulimit -s`."},
		{"rlimit crash", rlimit(64), segv, other,
			"ffmpeg crashed (segmentation fault) under its memory limit of 64 MiB, most likely when an allocation beyond the limit was refused"},
		{"rlimit other failure", rlimit(64), status1, other, ""},
		{"rlimit other signal", rlimit(64), term, other, ""},
		{"no memory limit", &confinement{limits: Limits{CPU: 1}}, segv, x265, ""},
	}
	for _, tt := range tests {
		err := tt.c.exceeded(tt.waitErr, tt.tail)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: exceeded = %v, want nil", tt.name, err)
		case tt.want != "" && (fsm.ErrorCode(err) != fsm.CodeResourceExceeded || !strings.HasSuffix(err.Error(), tt.want)):
			t.Errorf("%s: exceeded = %v, want %s: %s", tt.name, err, fsm.CodeResourceExceeded, tt.want)
		}
	}
}

func TestLimiterThreads(t *testing.T) {
	t.Parallel()
	rl, cg := &Limiter{mode: ModeRlimit}, &Limiter{mode: ModeCgroup}
	tests := []struct {
		l         *Limiter
		requested int
		cpu       float64
		want      int
	}{
		{rl, 0, 0, 0},
		{rl, 0, 0.5, 1},
		{rl, 0, 2.5, 3},
		{rl, 8, 2, 2},
		{rl, 1, 4, 1},
		{cg, 0, 2, 0}, // cpu.max does the limiting
		{cg, 3, 2, 3},
	}
	for _, tt := range tests {
		if got := tt.l.threads(tt.requested, Limits{CPU: tt.cpu}); got != tt.want {
			t.Errorf("%s: threads(%d, cpu %v) = %d, want %d", tt.l.mode, tt.requested, tt.cpu, got, tt.want)
		}
	}
}

// realCgroupTree makes a cgroup below this process's own in a writable
// cgroup v2 hierarchy, if the machine has one, to hold run cgroups. It is
// not delegated (the test process is not moved), so it may offer no
// controllers; the runs in it still exercise starting ffmpeg inside a
// cgroup, its CPU accounting and the removal of the cgroup.
func realCgroupTree(t *testing.T) *cgroupTree {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Skipf("no mountinfo: %v", err)
	}
	defer f.Close()
	var mount string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options... - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep > 4 && sep+1 < len(fields) && fields[sep+1] == "cgroup2" && fields[3] == "/" {
			mount = fields[4]
			break
		}
	}
	if mount == "" {
		t.Skip("no cgroup v2 hierarchy is mounted")
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Skipf("own cgroup: %v", err)
	}
	rel, err := parseSelfCgroup(b)
	if err != nil {
		t.Skipf("own cgroup: %v", err)
	}
	r := make([]byte, 4)
	rand.Read(r)
	dir := filepath.Join(mount, rel, "ffrtmp-test-"+hex.EncodeToString(r))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cgroup v2 at %s is not writable here: %v", mount, err)
	}
	t.Cleanup(func() {
		if err := removeCgroup(dir); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	return &cgroupTree{dir: dir}
}

// procCgroup returns the cgroup v2 path of a process.
func procCgroup(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	p, err := parseSelfCgroup(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunInRealCgroup(t *testing.T) {
	t.Parallel()
	tree := realCgroupTree(t)
	e := setup(t)
	for _, moved := range []bool{false, true} {
		// moved: ffmpeg is moved into its cgroup after it starts, as
		// where clone3 is refused.
		tree.noClone3.Store(moved)
		p := e.params(testsrcPlan(t, "320x240", "1", "file:///out/c.mp4"))
		p.Limiter = &Limiter{mode: ModeCgroup, cg: tree}
		p.Name = "t-" + strconv.FormatBool(moved)
		r, err := Start(t.Context(), p)
		if err != nil {
			t.Fatalf("moved %v: Start: %v", moved, err)
		}
		if err := r.Pause(); err != nil {
			t.Fatalf("moved %v: Pause: %v", moved, err)
		}
		runDir := filepath.Join(tree.dir, "job-"+p.Name)
		if got := procCgroup(t, r.Pid()); !strings.HasSuffix(runDir, got) || !strings.HasSuffix(got, "/job-"+p.Name) {
			t.Errorf("moved %v: ffmpeg runs in cgroup %s, want %s", moved, got, runDir)
		}
		if err := r.Resume(); err != nil {
			t.Fatal(err)
		}
		res, tail, err := wait(t, r)
		if err != nil {
			t.Fatalf("moved %v: run failed: %v\n%s", moved, err, tail)
		}
		// cpu.stat is kept with or without the cpu controller.
		if res.CPUSeconds <= 0 || r.Usage().CPUSeconds != res.CPUSeconds {
			t.Errorf("moved %v: result CPU seconds %v, Usage %+v; want the same, above 0", moved, res.CPUSeconds, r.Usage())
		}
		if _, err := os.Stat(runDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("moved %v: run cgroup %s left behind (%v)", moved, runDir, err)
		}
	}
}

// threadNices returns the nice value of every thread of a process.
func threadNices(t *testing.T, pid int) []int {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var nices []int
	for _, task := range tasks {
		s := readFile(t, filepath.Join(dir, task.Name(), "stat"))
		// Field 19 is nice; fields after the ")" that ends the name start at 3.
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		nices = append(nices, atoi(t, fields[19-3]))
	}
	return nices
}

// procDataLimit returns the soft "Max data size" of a process in bytes.
func procDataLimit(t *testing.T, pid int) string {
	t.Helper()
	for line := range strings.Lines(readFile(t, "/proc/"+strconv.Itoa(pid)+"/limits")) {
		if rest, ok := strings.CutPrefix(line, "Max data size"); ok {
			return strings.Fields(rest)[0]
		}
	}
	t.Fatal("no Max data size in limits")
	return ""
}

// TestRunWithinLimits runs a small job with a CPU and a generous memory
// limit in the mode this machine supports and checks that the limits
// were applied and the usage reported.
func TestRunWithinLimits(t *testing.T) {
	t.Parallel()
	e := setup(t)
	lim := DefaultLimiter()
	t.Logf("limits: %s", lim)
	p := e.params(testsrcPlan(t, "320x240", "2", "file:///out/l.mp4"))
	p.Threads = 0
	p.Limits = Limits{CPU: 0.5, MemoryMB: 512}
	p.Name = "within-1"
	r, err := Start(t.Context(), p)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	// Stopped, ffmpeg can be looked at before it ends.
	if err := r.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	switch lim.Mode() {
	case ModeCgroup:
		dir := filepath.Join(lim.cg.dir, "job-within-1")
		if got := procCgroup(t, r.Pid()); !strings.HasSuffix(dir, got) {
			t.Errorf("ffmpeg runs in cgroup %s, want %s", got, dir)
		}
		if got := readFile(t, filepath.Join(dir, "cpu.max")); got != "50000 100000\n" {
			t.Errorf("cpu.max = %q, want 50000 100000", got)
		}
		if got := readFile(t, filepath.Join(dir, "memory.max")); got != "536870912\n" {
			t.Errorf("memory.max = %q, want 512 MiB", got)
		}
	case ModeRlimit:
		if i := slices.Index(r.args, "-threads"); i < 0 || r.args[i+1] != "1" {
			t.Errorf("ffmpeg args %q, want -threads 1 for cpu 0.5", r.args)
		}
		if got, want := procDataLimit(t, r.Pid()), strconv.FormatUint(dataLimit(512), 10); got != want {
			t.Errorf("ffmpeg's data rlimit %s, want %s", got, want)
		}
		for _, n := range threadNices(t, r.Pid()) {
			if n != rlimitNice {
				t.Errorf("ffmpeg thread nice %v, want %d", n, rlimitNice)
			}
		}
	}
	if err := r.Resume(); err != nil {
		t.Fatal(err)
	}
	res, tail, err := wait(t, r)
	if err != nil {
		t.Fatalf("run failed: %v\n%s", err, tail)
	}
	checkOutput(t, e, res.Outputs[0], "file:///out/l.mp4", "out/l.mp4", "h264", 320, 240, 30, 2)
	if res.CPUSeconds <= 0 || res.PeakMemoryMB <= 0 || res.PeakMemoryMB > 512 {
		t.Errorf("result uses %v CPU seconds and %d MiB at peak; want both above 0, within 512 MiB", res.CPUSeconds, res.PeakMemoryMB)
	}
	if u := r.Usage(); u.CPUSeconds != res.CPUSeconds || u.PeakMemoryMB != res.PeakMemoryMB {
		t.Errorf("Usage %+v differs from the result %+v", u, res)
	}
}

// TestRunOverMemoryLimit encodes 1080p HEVC, which needs a few hundred
// MiB, within 64 MiB.
func TestRunOverMemoryLimit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	p := e.params(compile(t, fsm.JobSpec{
		Input:   fsm.Input{URL: "testsrc://?duration=2&size=1920x1080&rate=30"},
		Outputs: []fsm.Output{{URL: "file:///out/big.mp4"}},
		Video:   &fsm.VideoParams{Codec: "h265", Width: 1920, Height: 1080, FPS: 30},
	}))
	p.Limits = Limits{MemoryMB: 64}
	p.Name = "over-1"
	r, err := Start(t.Context(), p)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	res, tail, err := wait(t, r)
	if fsm.ErrorCode(err) != fsm.CodeResourceExceeded || res != nil {
		t.Fatalf("Wait = %v, %v; want code %s\n%s", res, err, fsm.CodeResourceExceeded, tail)
	}
	t.Logf("%s mode: %v", DefaultLimiter().Mode(), err)
	if !strings.Contains(err.Error(), "memory limit of 64 MiB") {
		t.Errorf("error %q does not say which limit was exceeded", err)
	}
	if r.Usage().CPUSeconds <= 0 {
		t.Errorf("Usage %+v of a failed run, want CPU seconds above 0", r.Usage())
	}
	if parts := partFiles(t, e.root); len(parts) != 0 {
		t.Errorf("temporary files left: %v", parts)
	}
}

func TestDataLimit(t *testing.T) {
	t.Parallel()
	// One stack per expected thread on top of 1.25 times the limit.
	stacks := dataLimit(0)
	if stacks < uint64(4*runtime.NumCPU()+16)<<20 {
		t.Errorf("dataLimit(0) = %d, want room for the stacks of %d threads", stacks, 4*runtime.NumCPU()+16)
	}
	if got, want := dataLimit(64), 80<<20+stacks; got != want {
		t.Errorf("dataLimit(64) = %d, want 80 MiB + %d", got, stacks)
	}
}

// TestRunWatchdog checks, in rlimit mode, that an ffmpeg whose anonymous
// resident memory passes its limit is killed and the run fails with
// resource_exceeded, even when no allocation failed.
func TestRunWatchdog(t *testing.T) {
	t.Parallel()
	e := setup(t)
	// A few seconds of encoding at well above 4 MiB of heap.
	p := e.params(testsrcPlan(t, "640x360", "20", "file:///out/w.mp4"))
	p.Limiter = &Limiter{mode: ModeRlimit}
	p.Limits = Limits{MemoryMB: 4}
	r, err := Start(t.Context(), p)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	res, tail, err := wait(t, r)
	if fsm.ErrorCode(err) != fsm.CodeResourceExceeded || res != nil ||
		!strings.Contains(err.Error(), "ffmpeg exceeded its memory limit of 4 MiB and was killed") {
		t.Fatalf("Wait = %v, %v; want %s: ffmpeg exceeded its memory limit of 4 MiB and was killed\n%s", res, err, fsm.CodeResourceExceeded, tail)
	}
	if u := r.Usage(); u.PeakMemoryMB <= 4 {
		t.Errorf("Usage %+v, want a peak above the 4 MiB limit", u)
	}
}

func TestRetryStartWithoutClone3(t *testing.T) {
	t.Parallel()
	tree := &cgroupTree{dir: fakeCgroup(t, "cpu memory")}
	c, err := (&Limiter{mode: ModeCgroup, cg: tree}).confine("r-1", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.cg.fd.Close()
	log := slog.New(slog.DiscardHandler)
	opts := c.options()
	if opts.cgroup == nil || opts.setup != nil {
		t.Fatalf("options %+v, want a start inside the cgroup", opts)
	}
	if c.retryStart(opts, &os.PathError{Op: "fork/exec", Path: "ffmpeg", Err: syscall.ENOENT}, log) {
		t.Errorf("retry after ENOENT, want none")
	}
	if !c.retryStart(opts, &os.PathError{Op: "fork/exec", Path: "ffmpeg", Err: syscall.ENOSYS}, log) {
		t.Fatalf("no retry after ENOSYS from clone3")
	}
	if opts := c.options(); opts.cgroup != nil || opts.setup == nil {
		t.Errorf("options after ENOSYS %+v, want ffmpeg moved in after it starts", opts)
	}
	// A start that did not use clone3 is not retried.
	if c.retryStart(c.options(), &os.PathError{Op: "fork/exec", Path: "ffmpeg", Err: syscall.ENOSYS}, log) {
		t.Errorf("retry of a start without clone3")
	}
}
