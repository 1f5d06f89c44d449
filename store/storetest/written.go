package storetest

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// Written returns the bytes this process has written with write calls
// (wchar of /proc/self/io): benchmarks take the difference across their
// timed region as a store's page writes. It skips where there is no
// /proc/self/io.
func Written(tb testing.TB) int64 {
	tb.Helper()
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		tb.Skipf("no /proc/self/io: %v", err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatal("no wchar in /proc/self/io")
	return 0
}
