package worker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestPrintableIsWhatTheClusterAccepts: whatever ffmpeg writes, the
// cleaned log and error message pass the cluster's validation of a
// finish report.
func TestPrintableIsWhatTheClusterAccepts(t *testing.T) {
	for _, tc := range []struct{ in, log, msg string }{
		{"frame=1\rframe=2\r\nError\n", "frame=1\nframe=2\nError\n", "frame=1 frame=2 Error "},
		{"\x1b[1;31mred\x1b[0m\tx", "red\tx", "red x"},
		{"nul\x00bell\x07del\x7fc1\u0085\u009b", "nulbelldelc1", "nulbelldelc1"},
		{"bad \xff utf8 🎬", "bad \uFFFD utf8 🎬", "bad \uFFFD utf8 🎬"},
	} {
		if got := printable(tc.in, true, fsm.MaxLogLen); got != tc.log {
			t.Errorf("printable(%q, multiline) = %q, want %q", tc.in, got, tc.log)
		}
		if got := printable(tc.in, false, fsm.MaxTextLen); got != tc.msg {
			t.Errorf("printable(%q) = %q, want %q", tc.in, got, tc.msg)
		}
		fin := &fsm.FinishJob{Report: fsm.Report{JobID: "j", WorkerID: "w", Attempt: 1},
			Log: printable(tc.in, true, fsm.MaxLogLen), Error: fsm.Errorf(fsm.CodeFFmpeg, "%s", printable(tc.in, false, fsm.MaxTextLen))}
		if err := fin.Validate(); err != nil {
			t.Errorf("finish with cleaned %q refused: %v", tc.in, err)
		}
	}
	long := strings.Repeat("é", fsm.MaxTextLen)
	if got := printable(long, false, fsm.MaxTextLen); len(got) > fsm.MaxTextLen || !strings.HasSuffix(got, "é") || strings.ContainsRune(got, '\uFFFD') {
		t.Errorf("printable of a long message: %d bytes, want at most %d whole runes from the end", len(got), fsm.MaxTextLen)
	}
}

// finishRecorder is a Control that records finish reports.
type finishRecorder struct {
	Control
	got *fsm.FinishJob
}

func (r *finishRecorder) Finish(ctx context.Context, c *fsm.FinishJob) error {
	r.got = c
	return nil
}

// TestFinishSendsPrintableTextWithoutHostPaths: the report a worker sends
// carries a cleaned log, and an error message without the media root.
func TestFinishSendsPrintableTextWithoutHostPaths(t *testing.T) {
	real := t.TempDir()
	root := filepath.Join(t.TempDir(), "media")
	if err := os.Symlink(real, root); err != nil {
		t.Fatal(err)
	}
	rec := &finishRecorder{}
	w := New(Config{ID: "w1", MediaRoot: root, Control: rec})
	long := strings.Repeat("n", 300) + ".mp4"
	w.finish(context.Background(), &fsm.FinishJob{Report: fsm.Report{JobID: "j", WorkerID: "w1", Attempt: 1},
		Log:   "\x1b[31moops\x00\r\n",
		Error: fsm.Errorf(fsm.CodeInternal, "open %s/t1/out/%s: file name too long\x1b[0m; rename %s/t1/x", root, long, real)})
	if rec.got == nil {
		t.Fatal("no finish report sent")
	}
	if rec.got.Log != "oops\n" {
		t.Errorf("log sent = %q, want %q", rec.got.Log, "oops\n")
	}
	if msg := rec.got.Error.Message; strings.Contains(msg, root) || strings.Contains(msg, real) || !strings.HasPrefix(msg, "open <media>/t1/out/") || !strings.HasSuffix(msg, "rename <media>/t1/x") {
		t.Errorf("error message sent = %q, want the media root replaced", msg)
	}
	if err := rec.got.Validate(); err != nil {
		t.Errorf("the cluster would refuse the report: %v", err)
	}
}
