package worker

import (
	"errors"
	"math"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

// tools returns the paths of ffmpeg and ffprobe. Worker tests need real
// binaries: a missing one is a failure, not a skip.
func tools(t *testing.T) (ffmpeg, ffprobe string) {
	t.Helper()
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Fatalf("ffmpeg is required for worker tests: %v", err)
	}
	ffprobe, err = exec.LookPath("ffprobe")
	if err != nil {
		t.Fatalf("ffprobe is required for worker tests: %v", err)
	}
	return ffmpeg, ffprobe
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func TestParseProgressFixture(t *testing.T) {
	t.Parallel()
	f, err := os.Open("../testdata/ffmpeg/progress.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []Progress
	if err := ParseProgress(f, 10, func(p Progress) { got = append(got, p) }); err != nil {
		t.Fatalf("ParseProgress: %v", err)
	}
	want := []Progress{
		{},          // all N/A
		{Frame: 12}, // negative out_time clamps to 0
		{Frame: 151, FPS: 149.83, Speed: 4.97, OutTimeMS: 5005, Percent: 50.05},
		{Frame: 300, FPS: 150.12, Speed: 5, OutTimeMS: 10010, Percent: 100, End: true}, // clamped
	}
	if len(got) != len(want) {
		t.Fatalf("got %d blocks, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Frame != w.Frame || !near(g.FPS, w.FPS) || !near(g.Speed, w.Speed) ||
			g.OutTimeMS != w.OutTimeMS || !near(g.Percent, w.Percent) || g.End != w.End {
			t.Errorf("block %d: got %+v, want %+v", i, g, w)
		}
	}
}

func TestParseProgressEdges(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       string
		duration float64
		want     []Progress
	}{
		{"unknown duration gives no percent", "frame=5\nout_time_us=1000000\nprogress=continue\n", 0,
			[]Progress{{Frame: 5, OutTimeMS: 1000}}},
		{"out_time alone", "out_time=00:01:00.500000\nprogress=end\n", 121,
			[]Progress{{OutTimeMS: 60500, Percent: 50, End: true}}},
		{"unfinished block is dropped", "frame=1\nprogress=continue\nframe=2\n", 0,
			[]Progress{{Frame: 1}}},
		{"no trailing newline", "frame=3\nprogress=end", 0,
			[]Progress{{Frame: 3, End: true}}},
		{"junk lines are ignored", "garbage\nframe=x\n=\nframe=7\r\nprogress=continue\n", 0,
			[]Progress{{Frame: 7}}},
		{"empty", "", 5, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got []Progress
			if err := ParseProgress(strings.NewReader(tt.in), tt.duration, func(p Progress) { got = append(got, p) }); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("block %d: got %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestParseProgressReadError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	err := ParseProgress(iotest.ErrReader(boom), 0, func(Progress) {})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want an error wrapping %v", err, boom)
	}
}

func TestParseProgressRealFFmpeg(t *testing.T) {
	t.Parallel()
	ffmpeg, _ := tools(t)
	cmd := exec.Command(ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
		"-progress", "pipe:1", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=10:duration=2",
		"-f", "null", "-")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var got []Progress
	perr := ParseProgress(out, 2, func(p Progress) { got = append(got, p) })
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ffmpeg: %v", err)
	}
	if perr != nil {
		t.Fatalf("ParseProgress: %v", perr)
	}
	if len(got) == 0 {
		t.Fatal("no progress blocks")
	}
	last := got[len(got)-1]
	if !last.End || last.Frame != 20 || last.OutTimeMS < 1900 || last.Percent < 95 {
		t.Errorf("last block = %+v, want End with frame 20 at ~2000 ms, ~100%%", last)
	}
	for _, p := range got[:len(got)-1] {
		if p.End {
			t.Errorf("block before the last has End: %+v", p)
		}
	}
}

func TestTail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		n      int
		writes []string
		want   string
	}{
		{"short", 8, []string{"abc"}, "abc"},
		{"exact", 3, []string{"abc"}, "abc"},
		{"window starts a line", 12, []string{"line1\nline2\nline3\n"}, "line2\nline3\n"},
		{"cut to the next line", 10, []string{"line1\nline2\nline3\n"}, "line3\n"},
		{"no newline keeps the bytes", 5, []string{"abcdefghij"}, "fghij"},
		{"many small writes", 6, []string{"ab\n", "cd\n", "ef\n", "gh\n", "ij\n"}, "gh\nij\n"},
		{"huge write then small", 6, []string{strings.Repeat("x", 100) + "\nab", "cd\n"}, "abcd\n"},
		{"never starts inside a rune", 3, []string{"ééé"}, "é"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tl := NewTail(tt.n)
			for _, w := range tt.writes {
				if n, err := tl.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(w))
				}
			}
			if got := tl.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTailBoundedUnderConcurrentWrites(t *testing.T) {
	t.Parallel()
	const n = 100
	tl := NewTail(n)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				tl.Write([]byte("0123456789\n"))
				if s := tl.String(); len(s) > n {
					t.Errorf("len(String()) = %d, want <= %d", len(s), n)
					return
				}
			}
		})
	}
	wg.Wait()
	s := tl.String()
	if len(s) > n || !strings.HasPrefix(s, "0123456789\n") || !strings.HasSuffix(s, "0123456789\n") {
		t.Errorf("String() = %q, want whole lines within %d bytes", s, n)
	}
	if cap(tl.buf) > 4*n {
		t.Errorf("buffer capacity %d grew past %d", cap(tl.buf), 4*n)
	}
	if NewTail(0).n != DefaultTailBytes {
		t.Errorf("NewTail(0) keeps %d bytes, want %d", NewTail(0).n, DefaultTailBytes)
	}
}

func TestLastLine(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"", ""},
		{"one", "one"},
		{"a\nb\n\n", "b"},
		{"a\r\nerror here\r\n", "error here"},
		{strings.Repeat("y", 400), strings.Repeat("y", 300) + "…"},
	}
	for _, tt := range tests {
		if got := lastLine(tt.in); got != tt.want {
			t.Errorf("lastLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
