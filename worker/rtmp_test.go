package worker

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestRunToRTMP streams a generated pattern to a real RTMP receiver on
// loopback (ffmpeg -listen 1) and checks what arrived.
func TestRunToRTMP(t *testing.T) {
	t.Parallel()
	e := setup(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	url := fmt.Sprintf("rtmp://127.0.0.1:%d/live/test", port)
	received := filepath.Join(t.TempDir(), "received.flv")

	ctx, cancel := context.WithTimeout(context.Background(), runDeadline)
	defer cancel()
	recv := exec.CommandContext(ctx, e.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
		"-listen", "1", "-f", "flv", "-i", url, "-c", "copy", "-f", "flv", received)
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recv.Process.Kill(); recv.Wait() })
	// Wait until the receiver listens, without connecting to it: it takes
	// exactly one client.
	for !listening(port) {
		if ctx.Err() != nil {
			t.Fatal("RTMP receiver did not start listening")
		}
		time.Sleep(20 * time.Millisecond)
	}

	spec := fsm.JobSpec{
		Input:   fsm.Input{URL: "testsrc://?duration=2&size=320x240&rate=30"},
		Outputs: []fsm.Output{{URL: url}},
		Video:   &fsm.VideoParams{Codec: "h264", Width: 320, Height: 240, FPS: 30},
	}
	plan, err := spec.Compile(fsm.Policy{AllowedHosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := Start(ctx, e.params(plan))
	if err != nil {
		t.Fatal(err)
	}
	if _, tail, err := wait(t, r); err != nil {
		t.Fatalf("run: %v\n%s", err, tail)
	}
	if err := recv.Wait(); err != nil {
		t.Fatalf("receiver: %v", err)
	}
	got, err := Probe(ctx, e.ffprobe, received)
	if err != nil {
		t.Fatal(err)
	}
	if got.Codec != "h264" || got.Width != 320 || got.Height != 240 || got.DurationSec < 1.8 || got.DurationSec > 2.4 {
		t.Fatalf("received %+v, want h264 320x240 about 2s", got)
	}
}

// listening reports whether a TCP socket listens on 127.0.0.1:port.
func listening(port int) bool {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == want && f[3] == "0A" {
			return true
		}
	}
	return false
}
