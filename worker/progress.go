package worker

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Progress is one parsed block of ffmpeg's -progress output.
type Progress struct {
	Frame     int64
	FPS       float64
	Speed     float64 // encoding speed as a multiple of realtime
	OutTimeMS int64   // media time written so far, in milliseconds
	Percent   float64 // OutTimeMS against the input duration, 0 if unknown
	End       bool    // the last block: ffmpeg is finishing
	// CPUSeconds (CPU time so far) and MemoryBytes (memory now) are what
	// ffmpeg used when the block arrived, At; Start fills them in, not
	// ParseProgress (0 if unknown).
	CPUSeconds  float64
	MemoryBytes int64
	At          time.Time
}

// ParseProgress reads ffmpeg's -progress key=value stream from r and calls
// fn at the end of every block (the line progress=continue or
// progress=end). Percent is out_time / durationSec * 100 clamped to
// [0, 100] when durationSec > 0, else 0. Values of N/A and unknown keys are
// ignored. It returns nil when r reaches EOF and a wrapped error if reading
// fails; fn runs on the calling goroutine.
func ParseProgress(r io.Reader, durationSec float64, fn func(Progress)) error {
	br := bufio.NewReader(r)
	var p Progress
	outUS, haveOut := int64(0), false
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			key, val, ok := strings.Cut(strings.TrimSpace(line), "=")
			val = strings.TrimSpace(val)
			if ok && val != "N/A" {
				switch key {
				case "frame":
					if n, err := strconv.ParseInt(val, 10, 64); err == nil {
						p.Frame = n
					}
				case "fps":
					if f, err := strconv.ParseFloat(val, 64); err == nil {
						p.FPS = f
					}
				case "speed":
					if f, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(val, "x")), 64); err == nil {
						p.Speed = f
					}
				case "out_time_us", "out_time_ms":
					// ffmpeg writes microseconds under both keys.
					if n, err := strconv.ParseInt(val, 10, 64); err == nil {
						outUS, haveOut = n, true
					}
				case "out_time":
					if !haveOut {
						if d, ok := parseClock(val); ok {
							outUS = d.Microseconds()
						}
					}
				case "progress":
					p.OutTimeMS = max(0, outUS/1000)
					if durationSec > 0 {
						p.Percent = min(100, max(0, float64(p.OutTimeMS)/10/durationSec))
					}
					p.End = val == "end"
					fn(p)
					p, outUS, haveOut = Progress{}, 0, false
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read progress: %w", err)
		}
	}
}

// parseClock parses ffmpeg's [-]HH:MM:SS.micro time.
func parseClock(s string) (time.Duration, bool) {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return 0, false
	}
	h, err1 := strconv.Atoi(parts[0])
	m, err2 := strconv.Atoi(parts[1])
	sec, err3 := strconv.ParseFloat(parts[2], 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, false
	}
	d := time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(sec*float64(time.Second))
	if neg {
		d = -d
	}
	return d, true
}

// DefaultTailBytes is the stderr tail kept when no size is given.
const DefaultTailBytes = 32 << 10

// Tail is an io.Writer that keeps the last bytes written to it, for
// ffmpeg's stderr. It is safe for concurrent use.
type Tail struct {
	mu  sync.Mutex
	n   int
	buf []byte // at most n bytes, or more once output has been dropped
}

// NewTail returns a Tail that keeps the last n bytes (DefaultTailBytes if
// n <= 0).
func NewTail(n int) *Tail {
	if n <= 0 {
		n = DefaultTailBytes
	}
	return &Tail{n: n}
}

// Write keeps the end of p; it never fails.
func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	// One byte before the window tells String whether it starts a line.
	keep := t.n + 1
	if len(p) >= keep {
		t.buf = append(t.buf[:0], p[len(p)-keep:]...)
		return len(p), nil
	}
	t.buf = append(t.buf, p...)
	// Trim lazily so that many small writes copy rarely.
	if len(t.buf) >= 2*keep {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-keep:]...)
	}
	return len(p), nil
}

// String returns at most n of the last bytes written. When older output
// was dropped mid-line, it starts at the next line if the window holds
// one.
func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if len(b) <= t.n {
		return string(b)
	}
	prev := b[len(b)-t.n-1]
	b = b[len(b)-t.n:]
	if prev != '\n' {
		if i := bytes.IndexByte(b, '\n'); i >= 0 && i+1 < len(b) {
			b = b[i+1:]
		} else {
			// No line start: at least do not begin inside a rune.
			for len(b) > 0 && !utf8.RuneStart(b[0]) {
				b = b[1:]
			}
		}
	}
	return string(b)
}

// lastLine returns the last non-empty line of s, at most 300 bytes of it.
func lastLine(s string) string {
	s = strings.TrimRight(s, "\r\n\t ")
	if i := strings.LastIndexAny(s, "\r\n"); i >= 0 {
		s = s[i+1:]
	}
	s = strings.TrimSpace(s)
	if len(s) > 300 {
		s = strings.ToValidUTF8(s[:300], "") + "…"
	}
	return s
}
