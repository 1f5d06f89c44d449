package worker

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// makeMedia writes a small test file with ffmpeg: size WxH at 25 fps for
// sec seconds with a sine tone, encoded with vcodec.
func makeMedia(t *testing.T, path, size string, sec string, vcodec string) {
	t.Helper()
	ffmpeg, _ := tools(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size="+size+":rate=25:duration="+sec,
		"-f", "lavfi", "-i", "sine=duration="+sec,
		"-c:v", vcodec, "-pix_fmt", "yuv420p", "-c:a", "aac", path).CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", path, err, out)
	}
}

func TestProbe(t *testing.T) {
	t.Parallel()
	_, ffprobe := tools(t)
	dir := t.TempDir()
	h264 := filepath.Join(dir, "a.mp4")
	makeMedia(t, h264, "160x120", "1", "libx264")
	hevc := filepath.Join(dir, "b.mkv")
	makeMedia(t, hevc, "128x96", "1", "libx265")

	tests := []struct {
		path          string
		codec         string
		width, height int
	}{
		{h264, "h264", 160, 120},
		{hevc, "h265", 128, 96},
	}
	for _, tt := range tests {
		got, err := Probe(t.Context(), ffprobe, tt.path)
		if err != nil {
			t.Fatalf("Probe(%s): %v", tt.path, err)
		}
		fi, err := os.Stat(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if got.Codec != tt.codec || got.Width != tt.width || got.Height != tt.height ||
			got.FPS != 25 || math.Abs(got.DurationSec-1) > 0.1 || got.SizeBytes != fi.Size() || got.Path != tt.path {
			t.Errorf("Probe(%s) = %+v, want %s %dx%d 25 fps ~1 s %d bytes", tt.path, got, tt.codec, tt.width, tt.height, fi.Size())
		}
		d, err := ProbeDuration(t.Context(), ffprobe, tt.path)
		if err != nil || math.Abs(d-1) > 0.1 {
			t.Errorf("ProbeDuration(%s) = %v, %v; want ~1", tt.path, d, err)
		}
	}

	junk := filepath.Join(dir, "junk.mp4")
	if err := os.WriteFile(junk, []byte("not media\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{junk, filepath.Join(dir, "missing.mp4")} {
		if got, err := Probe(t.Context(), ffprobe, p); err == nil {
			t.Errorf("Probe(%s) = %+v, want an error", p, got)
		}
		if d, err := ProbeDuration(t.Context(), ffprobe, p); err == nil {
			t.Errorf("ProbeDuration(%s) = %v, want an error", p, d)
		}
	}
}

func TestParseRate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want float64
	}{
		{"30/1", 30}, {"30000/1001", 30000.0 / 1001}, {"0/0", 0}, {"25", 25}, {"", 0}, {"x/y", 0},
	}
	for _, tt := range tests {
		if got := parseRate(tt.in); got != tt.want {
			t.Errorf("parseRate(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
