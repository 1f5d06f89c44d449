package worker

import (
	"bytes"
	"math"
	"os"
	"strconv"
	"strings"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ,
// which Linux fixes at 100 for user space).
const userHZ = 100

// liveUsage returns what ffmpeg has used so far: its CPU time and its
// memory now. Those of the run's cgroup where it has one (ffmpeg and any
// child), else of the ffmpeg process (/proc). Zero once they cannot be
// read, after ffmpeg has exited.
func (c *confinement) liveUsage(p *Process) (cpuSeconds float64, memoryBytes int64) {
	if c.cg != nil {
		stat, err := readKeyed(c.cg.dir, "cpu.stat")
		mem, err2 := readInt(c.cg.dir, "memory.current")
		if err != nil || err2 != nil {
			return 0, 0
		}
		return float64(stat["usage_usec"]) / 1e6, mem
	}
	return procUsage(p.Pid())
}

// procUsage reads a process's CPU time (user and system) and resident
// memory from /proc.
func procUsage(pid int) (cpuSeconds float64, memoryBytes int64) {
	dir := "/proc/" + strconv.Itoa(pid)
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return 0, 0
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after it. utime and stime are fields 14 and 15, the state
	// field 3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return 0, 0
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 13 {
		return 0, 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	kib, err3 := statusKiB(dir+"/status", "VmRSS:")
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0
	}
	return float64(utime+stime) / userHZ, kib << 10
}

// usageSince returns the CPUs ffmpeg used between two progress samples
// (0 for the first, or if either is unknown) and its memory in MiB at the
// later one, rounded up.
func usageSince(prev, p Progress) (cpu float64, memoryMB int) {
	if !prev.At.IsZero() && p.At.After(prev.At) && prev.CPUSeconds > 0 && p.CPUSeconds >= prev.CPUSeconds {
		cpu = (p.CPUSeconds - prev.CPUSeconds) / p.At.Sub(prev.At).Seconds()
		cpu = min(math.Round(cpu*1000)/1000, 4096)
	}
	return cpu, int((p.MemoryBytes + 1<<20 - 1) >> 20)
}
