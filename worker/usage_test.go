package worker

import (
	"os"
	"testing"
	"time"
)

func TestProcUsage(t *testing.T) {
	t.Parallel()
	// Burn some CPU so that the process has at least a tick of it.
	deadline := time.Now().Add(50 * time.Millisecond)
	for n := 0; time.Now().Before(deadline); n++ {
		_ = n * n
	}
	cpu, mem := procUsage(os.Getpid())
	if cpu <= 0 || mem <= 1<<20 {
		t.Errorf("procUsage(self) = %v s, %d bytes; want CPU time and over 1 MiB resident", cpu, mem)
	}
	if cpu, mem := procUsage(1 << 30); cpu != 0 || mem != 0 {
		t.Errorf("procUsage(no such pid) = %v, %d; want 0, 0", cpu, mem)
	}
}

func TestUsageSince(t *testing.T) {
	t.Parallel()
	at := time.Unix(1000, 0)
	for _, tc := range []struct {
		name    string
		prev, p Progress
		cpu     float64
		mem     int
	}{
		{"first sample", Progress{}, Progress{CPUSeconds: 3, MemoryBytes: 100 << 20, At: at}, 0, 100},
		{"two CPUs", Progress{CPUSeconds: 3, At: at}, Progress{CPUSeconds: 7, MemoryBytes: 1, At: at.Add(2 * time.Second)}, 2, 1},
		{"same instant", Progress{CPUSeconds: 3, At: at}, Progress{CPUSeconds: 4, At: at}, 0, 0},
		{"unknown now", Progress{CPUSeconds: 3, At: at}, Progress{At: at.Add(time.Second)}, 0, 0},
	} {
		cpu, mem := usageSince(tc.prev, tc.p)
		if cpu != tc.cpu || mem != tc.mem {
			t.Errorf("%s: usageSince = %v CPUs, %d MiB; want %v, %d", tc.name, cpu, mem, tc.cpu, tc.mem)
		}
	}
}
