package worker

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestProbeMP4MatchesFFprobe runs real transcodes into every MP4 and
// QuickTime layout the worker writes (each video codec, with audio, at a
// frame rate other than 30) and checks that the in-process reader
// describes each output as ffprobe does.
func TestProbeMP4MatchesFFprobe(t *testing.T) {
	t.Parallel()
	tests := []struct{ codec, encoder, out string }{
		{"h264", "libx264", "file:///a.mp4"},
		{"h264", "libx264", "file:///a.mov"},
		{"h264", "libx264", "file:///a.m4v"},
		{"h265", "libx265", "file:///a.mp4"},
		{"av1", "libsvtav1", "file:///a.mp4"},
		{"vp9", "libvpx-vp9", "file:///a.mp4"},
	}
	for _, tt := range tests {
		t.Run(tt.encoder+"/"+filepath.Ext(tt.out), func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			plan := compile(t, fsm.JobSpec{
				Input:   fsm.Input{URL: "testsrc://?duration=2&size=320x180&rate=25"},
				Outputs: []fsm.Output{{URL: tt.out}},
				Video:   &fsm.VideoParams{Codec: tt.codec, Width: 320, Height: 180, FPS: 25},
			})
			p := e.params(plan)
			p.Encoders = Encoders{tt.codec: tt.encoder}
			res := mustRun(t, p)
			path := res.Outputs[0].Path
			got, err := probeMP4(path)
			if err != nil {
				t.Fatalf("probeMP4: %v", err)
			}
			want, err := Probe(context.Background(), e.ffprobe, path)
			if err != nil {
				t.Fatalf("ffprobe: %v", err)
			}
			if got.Codec != want.Codec || got.Width != want.Width || got.Height != want.Height || got.SizeBytes != want.SizeBytes ||
				math.Abs(got.FPS-want.FPS) > 0.01 || math.Abs(got.DurationSec-want.DurationSec) > 0.05 {
				t.Errorf("probeMP4 %+v\nffprobe  %+v", *got, *want)
			}
			if got.Codec != tt.codec || got.Width != 320 || got.Height != 180 {
				t.Errorf("probeMP4 %+v, want %s 320x180", *got, tt.codec)
			}
		})
	}
}

// TestProbeMP4RefusesDamage: a truncated file, a file that is not MP4
// and every single damaged byte of a real one's header area give an
// error or a description, never a panic; truncation and a missing ftyp
// are refused.
func TestProbeMP4RefusesDamage(t *testing.T) {
	t.Parallel()
	e := setup(t)
	res := mustRun(t, e.params(testsrcPlan(t, "160x120", "1", "file:///d.mp4")))
	data, err := os.ReadFile(res.Outputs[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	try := func(name string, b []byte) error {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := probeMP4(p)
		return err
	}
	if err := try("whole.mp4", data); err != nil {
		t.Fatalf("the undamaged file: %v", err)
	}
	for _, n := range []int{0, 7, 8, 100, len(data) / 2, len(data) - 1} {
		if err := try("short.mp4", data[:n]); err == nil {
			t.Errorf("truncated to %d of %d bytes: no error", n, len(data))
		}
	}
	if err := try("text.mp4", []byte("#EXTM3U\n#EXT-X-ENDLIST\n")); err == nil {
		t.Error("a playlist read as MP4: no error")
	}
	// Every byte of the boxes before the media data, damaged in turn.
	limit := min(len(data), 8192)
	for i := range limit {
		b := append([]byte(nil), data...)
		b[i] ^= 0xff
		try("flip.mp4", b) // must not panic or hang
	}
}
