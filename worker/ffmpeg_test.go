package worker

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// hasSeq reports whether seq occurs in args as consecutive elements.
func hasSeq(args []string, seq ...string) bool {
	for i := 0; i+len(seq) <= len(args); i++ {
		if slices.Equal(args[i:i+len(seq)], seq) {
			return true
		}
	}
	return false
}

// argAfter returns the element after the first occurrence of flag at or
// after index from, or "".
func argAfter(args []string, from int, flag string) string {
	for i := from; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

var softwareEncoders = Encoders{"h264": "libx264", "h265": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1"}

func rendition(kind, url, path, container, codec string, w, h, fps, kbps int, audio string) fsm.Rendition {
	return fsm.Rendition{Kind: kind, URL: url, Path: path, Container: container,
		Video: fsm.VideoParams{Codec: codec, Width: w, Height: h, FPS: fps, BitrateKbps: kbps},
		Audio: fsm.AudioParams{Codec: audio, BitrateKbps: 96}}
}

func TestBuildArgs(t *testing.T) {
	t.Parallel()
	testsrc := fsm.PlanInput{Kind: fsm.KindTestsrc, URL: "testsrc://?duration=2&size=320x240&rate=30",
		Width: 320, Height: 240, FPS: 30, DurationSec: 2}
	fileIn := fsm.PlanInput{Kind: fsm.KindFile, URL: "file:///in/a.mkv", Path: "in/a.mkv"}
	mp4 := rendition(fsm.KindFile, "file:///out/a.mp4", "out/a.mp4", "mp4", "h264", 320, 240, 30, 400, "aac")
	hostile := "rtmp://live.example/app/key;rm -rf $HOME `id`"
	hostilePinned := "rtmp://203.0.113.30/app/key;rm -rf $HOME `id`"

	tests := []struct {
		name     string
		plan     fsm.Plan
		enc      Encoders
		outputs  []string
		threads  int
		want     [][]string // sequences that must occur
		wantNot  []string   // elements that must not occur
		wantDest []string   // output destinations, in order
	}{
		{
			name:    "testsrc to h264 mp4",
			plan:    fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{mp4}},
			outputs: []string{"/media/t1/out/.a.mp4.part-1"},
			want: [][]string{
				{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=2"},
				{"-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000:duration=2"},
				{"-map", "0:v:0", "-map", "1:a:0"},
				{"-vf", "scale=320:240:force_original_aspect_ratio=decrease:force_divisible_by=2,pad=320:240:(ow-iw)/2:(oh-ih)/2,setsar=1,fps=30,format=yuv420p"},
				{"-c:v", "libx264", "-preset", "veryfast"},
				{"-b:v", "400k", "-maxrate", "400k", "-bufsize", "800k", "-g", "60"},
				{"-c:a", "aac", "-b:a", "96k", "-ar", "48000"},
				{"-movflags", "+faststart"},
				{"-protocol_whitelist", "file", "-f", "mp4", "file:/media/t1/out/.a.mp4.part-1"},
			},
			wantNot:  []string{"-re", "-threads", "-an", "-tag:v"},
			wantDest: []string{"file:/media/t1/out/.a.mp4.part-1"},
		},
		{
			name: "file input to a vp9 webm and an h265 mp4 ladder",
			plan: fsm.Plan{Input: fileIn, Outputs: []fsm.Rendition{
				rendition(fsm.KindFile, "file:///out/b.webm", "out/b.webm", "webm", "vp9", 640, 360, 25, 500, "opus"),
				rendition(fsm.KindFile, "file:///out/c.mp4", "out/c.mp4", "mp4", "h265", 320, 180, 25, 200, "none"),
			}},
			outputs: []string{"/m/b.webm.part", "/m/c.mp4.part"},
			threads: 2,
			want: [][]string{
				{"-protocol_whitelist", "file", "-format_whitelist", inputFormats, "-i", "file:/media/t1/in/a.mkv"},
				{"-map", "0:v:0", "-map", "0:a:0?"},
				{"-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1"},
				{"-c:a", "libopus", "-b:a", "96k", "-ar", "48000"},
				{"-f", "webm", "file:/m/b.webm.part"},
				{"-c:v", "libx265", "-preset", "ultrafast"},
				{"-tag:v", "hvc1"},
				{"-threads", "2"},
				{"-an", "-movflags", "+faststart"},
				{"-f", "mp4", "file:/m/c.mp4.part"},
			},
			wantNot:  []string{"-re", "1:a:0"},
			wantDest: []string{"file:/m/b.webm.part", "file:/m/c.mp4.part"},
		},
		{
			name: "https input",
			plan: fsm.Plan{Input: fsm.PlanInput{Kind: fsm.KindHTTP, URL: "https://cdn.example/a.mp4"},
				Outputs: []fsm.Rendition{mp4}},
			outputs: []string{"/m/a.mp4"},
			want: [][]string{
				{"-protocol_whitelist", "http,https,tcp,tls,crypto", "-format_whitelist", inputFormats,
					"-rw_timeout", "15000000", "-max_redirects", "0", "-tls_verify", "1", "-i", "https://cdn.example/a.mp4"},
			},
			wantDest: []string{"file:/m/a.mp4"},
		},
		{
			name: "rtmp to rtmp passes the URL as one argument",
			plan: fsm.Plan{Input: fsm.PlanInput{Kind: fsm.KindRTMP, URL: "rtmp://ingest.example/live/in"},
				Outputs: []fsm.Rendition{rendition(fsm.KindRTMP, hostile, "", "flv", "h264", 1280, 720, 30, 2800, "aac")}},
			want: [][]string{
				{"-protocol_whitelist", "rtmp,rtmps,tcp,tls", "-format_whitelist", inputFormats,
					"-rw_timeout", "15000000", "-rtmp_tcurl", "rtmp://ingest.example/live", "-i", "rtmp://203.0.113.20/live/in"},
				{"-flvflags", "no_duration_filesize"},
				{"-protocol_whitelist", "rtmp,rtmps,tcp,tls", "-rw_timeout", "15000000",
					"-rtmp_tcurl", "rtmp://live.example/app", "-f", "flv", hostilePinned},
			},
			wantNot:  []string{"-re", "-movflags"},
			wantDest: []string{hostilePinned},
		},
		{
			name: "srt input",
			plan: fsm.Plan{Input: fsm.PlanInput{Kind: fsm.KindSRT, URL: "srt://ingest.example:9000"},
				Outputs: []fsm.Rendition{mp4}},
			outputs: []string{"/m/a.mp4"},
			want: [][]string{{"-protocol_whitelist", "srt,udp", "-format_whitelist", inputFormats,
				"-rw_timeout", "15000000", "-i", "srt://203.0.113.20:9000"}},
			wantDest: []string{"file:/m/a.mp4"},
		},
		{
			name: "testsrc to rtmp is read in real time",
			plan: fsm.Plan{Input: testsrc,
				Outputs: []fsm.Rendition{rendition(fsm.KindRTMP, "rtmps://live.example/app/k", "", "flv", "h264", 320, 240, 30, 400, "aac")}},
			want: [][]string{
				{"-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=2"},
				{"-re", "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000:duration=2"},
			},
			wantDest: []string{"rtmps://live.example/app/k"},
		},
		{
			name: "no audio anywhere drops the sine input",
			plan: fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{
				rendition(fsm.KindFile, "file:///out/a.mkv", "out/a.mkv", "matroska", "av1", 320, 240, 30, 200, "none")}},
			outputs:  []string{"/m/a.mkv"},
			want:     [][]string{{"-c:v", "libsvtav1", "-preset", "12", "-b:v", "200k", "-bufsize", "400k"}, {"-an"}},
			wantNot:  []string{"-maxrate", "1:a:0", "sine=frequency=1000:sample_rate=48000:duration=2"},
			wantDest: []string{"file:/m/a.mkv"},
		},
		{
			name: "testsrc to an h264 and an h265 HLS rendition and an mp4",
			plan: fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{
				rendition(fsm.KindFile, "file:///out/a.m3u8", "out/a.m3u8", "hls", "h264", 320, 240, 30, 400, "aac"),
				rendition(fsm.KindFile, "file:///out/My Show.m3u8", "out/My Show.m3u8", "hls", "h265", 160, 120, 25, 200, "none"),
				mp4,
			}},
			outputs: []string{"/m/out/.a.hls-part-1/a.m3u8", "/m/out/.My_Show.hls-part-2/My_Show.m3u8", "/m/out/.a.mp4.part-3"},
			want: [][]string{
				// Keyframes exactly every 4 s, so every segment starts with one.
				{"-c:v", "libx264", "-preset", "veryfast", "-sc_threshold", "0", "-b:v", "400k"},
				{"-bufsize", "800k", "-g", "120"},
				{"-hls_time", "4", "-hls_playlist_type", "vod", "-hls_segment_type", "mpegts",
					"-hls_flags", "independent_segments", "-hls_segment_filename", "file:/m/out/.a.hls-part-1/a_%05d.ts",
					"-protocol_whitelist", "file", "-f", "hls", "file:/m/out/.a.hls-part-1/a.m3u8"},
				{"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:scenecut=0:open-gop=0"},
				{"-g", "100"},
				{"-hls_segment_filename", "file:/m/out/.My_Show.hls-part-2/My_Show_%05d.ts"},
				// The mp4 keeps its usual GOP and scene cuts.
				{"-c:v", "libx264", "-preset", "veryfast", "-b:v", "400k"},
				{"-g", "60"},
				{"-movflags", "+faststart", "-protocol_whitelist", "file", "-f", "mp4", "file:/m/out/.a.mp4.part-3"},
			},
			wantNot:  []string{"-tag:v", "-re"},
			wantDest: []string{"file:/m/out/.a.hls-part-1/a.m3u8", "file:/m/out/.My_Show.hls-part-2/My_Show.m3u8", "file:/m/out/.a.mp4.part-3"},
		},
		{
			name:    "libaom",
			plan:    fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{rendition(fsm.KindFile, "file:///a.webm", "a.webm", "webm", "av1", 320, 240, 30, 200, "opus")}},
			enc:     Encoders{"av1": "libaom-av1"},
			outputs: []string{"/m/a.webm"},
			want:    [][]string{{"-c:v", "libaom-av1", "-cpu-used", "8", "-row-mt", "1", "-usage", "realtime"}},
		},
		{
			name:    "qsv uploads frames to the device",
			plan:    fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{mp4}},
			enc:     Encoders{"h264": "h264_qsv"},
			outputs: []string{"/m/a.mp4"},
			want: [][]string{
				{"-y", "-init_hw_device", "qsv=hw", "-filter_hw_device", "hw"},
				{"-c:v", "h264_qsv"},
			},
		},
		{
			name:    "vaapi uploads frames to the device",
			plan:    fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{mp4}},
			enc:     Encoders{"h264": "h264_vaapi"},
			outputs: []string{"/m/a.mp4"},
			want:    [][]string{{"-vaapi_device", "/dev/dri/renderD128"}, {"-c:v", "h264_vaapi"}},
		},
		{
			name:    "nvenc",
			plan:    fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{mp4}},
			enc:     Encoders{"h264": "h264_nvenc"},
			outputs: []string{"/m/a.mp4"},
			want:    [][]string{{"-c:v", "h264_nvenc", "-preset", "p4"}},
			wantNot: []string{"-init_hw_device", "-vaapi_device"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			enc := tt.enc
			if enc == nil {
				enc = softwareEncoders
			}
			dials := exampleDials(t, &tt.plan)
			args, err := BuildArgs(&tt.plan, enc, "/media/t1/in/a.mkv", tt.outputs, tt.threads, dials)
			if err != nil {
				t.Fatalf("BuildArgs: %v", err)
			}
			prefix := []string{"-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", "-progress", "pipe:1", "-y"}
			if !slices.Equal(args[:len(prefix)], prefix) {
				t.Errorf("args start %q, want %q", args[:len(prefix)], prefix)
			}
			for _, seq := range tt.want {
				if !hasSeq(args, seq...) {
					t.Errorf("args lack %q:\n%q", seq, args)
				}
			}
			for _, a := range tt.wantNot {
				if slices.Contains(args, a) {
					t.Errorf("args contain %q:\n%q", a, args)
				}
			}
			// Each rendition ends with -f <its container> <destination>,
			// and every destination is exactly one argument.
			for i, r := range tt.plan.Outputs {
				dest := dials[r.URL].URL
				if r.Kind == fsm.KindFile {
					dest = "file:" + tt.outputs[i]
				}
				j := slices.Index(args, dest)
				if j < 2 || args[j-2] != "-f" || args[j-1] != r.Container {
					t.Errorf("output %d: %q is not preceded by -f %s:\n%q", i, dest, r.Container, args)
				}
				if n := strings.Count(strings.Join(args, "\x00"), dest); n != 1 {
					t.Errorf("output %d: destination occurs %d times", i, n)
				}
			}
			if tt.wantDest != nil && args[len(args)-1] != tt.wantDest[len(tt.wantDest)-1] {
				t.Errorf("last argument %q, want %q", args[len(args)-1], tt.wantDest[len(tt.wantDest)-1])
			}
			// One -map 0:v:0 per rendition: nothing is left to ffmpeg's
			// automatic stream selection.
			if got := strings.Count(strings.Join(args, " "), "-map 0:v:0"); got != len(tt.plan.Outputs) {
				t.Errorf("%d video maps, want %d", got, len(tt.plan.Outputs))
			}
		})
	}
}

func TestBuildArgsRefuses(t *testing.T) {
	t.Parallel()
	testsrc := fsm.PlanInput{Kind: fsm.KindTestsrc, Width: 64, Height: 64, FPS: 10, DurationSec: 1}
	mp4 := rendition(fsm.KindFile, "file:///a.mp4", "a.mp4", "mp4", "h264", 64, 64, 10, 100, "aac")
	tests := []struct {
		name    string
		plan    *fsm.Plan
		enc     Encoders
		outputs []string
		code    fsm.Code
	}{
		{"nil plan", nil, softwareEncoders, nil, fsm.CodeInvalidArgument},
		{"missing codec", &fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{mp4}},
			Encoders{"vp9": "libvpx-vp9"}, []string{"/m/a"}, fsm.CodeNoCapableWorker},
		{"wrong encoder for codec", &fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{mp4}},
			Encoders{"h264": "libvpx-vp9"}, []string{"/m/a"}, fsm.CodeNoCapableWorker},
		{"mixed hardware families", &fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{mp4,
			rendition(fsm.KindFile, "file:///b.mp4", "b.mp4", "mp4", "h265", 64, 64, 10, 100, "aac")}},
			Encoders{"h264": "h264_qsv", "h265": "hevc_vaapi"}, []string{"/m/a", "/m/b"}, fsm.CodeNoCapableWorker},
		{"file output without a path", &fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{mp4}},
			softwareEncoders, nil, fsm.CodeInternal},
		{"relative output path", &fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{mp4}},
			softwareEncoders, []string{"-x.mp4"}, fsm.CodeInternal},
		{"rtmp output that is not rtmp", &fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{
			rendition(fsm.KindRTMP, "file:///etc/passwd", "", "flv", "h264", 64, 64, 10, 100, "aac")}},
			softwareEncoders, nil, fsm.CodeInvalidURL},
		{"http input that is not http", &fsm.Plan{Input: fsm.PlanInput{Kind: fsm.KindHTTP, URL: "-i /etc/passwd"},
			Outputs: []fsm.Rendition{mp4}}, softwareEncoders, []string{"/m/a"}, fsm.CodeInvalidURL},
		{"unknown container", &fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{
			rendition(fsm.KindFile, "file:///a.x", "a.x", "image2pipe", "h264", 64, 64, 10, 100, "aac")}},
			softwareEncoders, []string{"/m/a"}, fsm.CodeInvalidArgument},
		{"unknown input kind", &fsm.Plan{Input: fsm.PlanInput{Kind: "concat"}, Outputs: []fsm.Rendition{mp4}},
			softwareEncoders, []string{"/m/a"}, fsm.CodeInvalidArgument},
		{"HLS directory with a percent sign", &fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{
			rendition(fsm.KindFile, "file:///50%25/a.m3u8", "50%/a.m3u8", "hls", "h264", 64, 64, 10, 100, "aac")}},
			softwareEncoders, []string{"/m/50%/.a.hls-part-1/a.m3u8"}, fsm.CodeInvalidArgument},
		{"HLS without a playlist name", &fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{
			rendition(fsm.KindFile, "file:///a.m3u8", "", "hls", "h264", 64, 64, 10, 100, "aac")}},
			softwareEncoders, []string{"/m/.hls-part-1/.m3u8"}, fsm.CodeInvalidArgument},
		{"unknown audio codec", &fsm.Plan{Input: testsrc, Outputs: []fsm.Rendition{
			rendition(fsm.KindFile, "file:///a.mp4", "a.mp4", "mp4", "h264", 64, 64, 10, 100, "mp3")}},
			softwareEncoders, []string{"/m/a"}, fsm.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args, err := BuildArgs(tt.plan, tt.enc, "/m/in.mp4", tt.outputs, 0, exampleDials(t, tt.plan))
			if got := fsm.ErrorCode(err); got != tt.code {
				t.Fatalf("BuildArgs = %q, %v; want code %q", args, err, tt.code)
			}
		})
	}
}

func TestChoose(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		available []string
		want      Encoders
	}{
		{"none", nil, Encoders{}},
		{"software wins", []string{"h264_nvenc", "libx264", "libvpx-vp9", "libaom-av1", "libsvtav1"},
			Encoders{"h264": "libx264", "vp9": "libvpx-vp9", "av1": "libsvtav1"}},
		{"hardware when alone", []string{"hevc_nvenc", "av1_qsv", "libaom-av1"},
			Encoders{"h265": "hevc_nvenc", "av1": "libaom-av1"}},
		{"unknown names are ignored", []string{"librav1e", "h264_v4l2m2m"}, Encoders{}},
	}
	for _, tt := range tests {
		got := Choose(tt.available)
		if len(got) != len(tt.want) {
			t.Errorf("%s: Choose = %v, want %v", tt.name, got, tt.want)
			continue
		}
		for c, e := range tt.want {
			if got[c] != e {
				t.Errorf("%s: Choose[%s] = %q, want %q", tt.name, c, got[c], e)
			}
		}
	}
}

func TestProbeEncoders(t *testing.T) {
	t.Parallel()
	ffmpeg, _ := tools(t)
	got, err := ProbeEncoders(t.Context(), ffmpeg)
	if err != nil {
		t.Fatalf("ProbeEncoders: %v", err)
	}
	t.Logf("encoders: %v", got)
	if !slices.IsSorted(got) {
		t.Errorf("result %v is not sorted", got)
	}
	for _, want := range []string{"libx264", "libvpx-vp9"} {
		if !slices.Contains(got, want) {
			t.Errorf("result %v lacks %s", got, want)
		}
	}
	// Without an NVIDIA device the NVENC probes must fail, not pass.
	if _, err := os.Stat("/dev/nvidia0"); os.IsNotExist(err) {
		for _, e := range got {
			if family(e) == famNVENC {
				t.Errorf("%s reported without an NVIDIA GPU", e)
			}
		}
	}
	enc := Choose(got)
	if enc["h264"] != "libx264" || enc["vp9"] != "libvpx-vp9" {
		t.Errorf("Choose(%v) = %v, want libx264 and libvpx-vp9", got, enc)
	}
}

func TestProbeEncodersErrors(t *testing.T) {
	t.Parallel()
	if _, err := ProbeEncoders(t.Context(), "/nonexistent/ffmpeg"); err == nil {
		t.Error("ProbeEncoders with a missing ffmpeg succeeded")
	}
	ffmpeg, _ := tools(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := ProbeEncoders(ctx, ffmpeg); err == nil {
		t.Error("ProbeEncoders with a canceled context succeeded")
	}
}

func TestSegmentNames(t *testing.T) {
	t.Parallel()
	prefixes := []struct{ path, want string }{
		{"out/a.m3u8", "a"},
		{"a.M3U8", "a"},
		{"out/My Show.m3u8", "My_Show"},
		{"a.b-c_d.m3u8", "a_b-c_d"},
		{"vidéo.m3u8", "vid__o"}, // é is two bytes
		{"50%v%05d.m3u8", "50_v_05d"},
		{"#1?x=y.m3u8", "_1_x_y"},
	}
	for _, tt := range prefixes {
		if got := segmentPrefix(tt.path); got != tt.want {
			t.Errorf("segmentPrefix(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
	names := []struct {
		prefix, name string
		want         bool
	}{
		{"a", "a_00000.ts", true},
		{"a", "a_123456.ts", true},
		{"a_b", "a_b_00001.ts", true},
		{"a", "a_0000.ts", false},
		{"a", "a_00000.TS", false},
		{"a", "b_00000.ts", false},
		{"a", "a__0000.ts", false},
		{"a", "a_0000x.ts", false},
		{"a", "a_00000.ts.bak", false},
		{"a", "a.m3u8", false},
	}
	for _, tt := range names {
		if got := isSegment(tt.prefix, tt.name); got != tt.want {
			t.Errorf("isSegment(%q, %q) = %v, want %v", tt.prefix, tt.name, got, tt.want)
		}
	}
}
