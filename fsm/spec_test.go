package fsm_test

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

var (
	presetHeights = []int{144, 240, 360, 480, 540, 720, 1080, 1440, 2160}
	presetFPS     = []int{24, 25, 30, 50, 60}
	presetCodecs  = []string{"h264", "h265", "vp9", "av1"}
	// wellKnownWidths are the standard 16:9 widths of the common heights.
	wellKnownWidths = map[int]int{360: 640, 480: 854, 540: 960, 720: 1280, 1080: 1920, 1440: 2560, 2160: 3840}
)

// compile compiles s with pol and fails the test on a refusal.
func compile(t *testing.T, s fsm.JobSpec, pol fsm.Policy) *fsm.Plan {
	t.Helper()
	p, err := s.Compile(pol)
	if err != nil {
		t.Fatalf("compile %+v: %v", s, err)
	}
	return p
}

func TestParseScenarioPresets(t *testing.T) {
	t.Parallel()
	for _, h := range presetHeights {
		for _, fps := range presetFPS {
			for _, c := range presetCodecs {
				name := fmt.Sprintf("%dp%d-%s", h, fps, c)
				got, err := fsm.ParseScenario(name)
				if err != nil {
					t.Errorf("ParseScenario(%q): %v", name, err)
					continue
				}
				if want := (fsm.Scenario{Height: h, FPS: fps, Codec: c}); got != want {
					t.Errorf("ParseScenario(%q) = %+v, want %+v", name, got, want)
				}
			}
		}
	}
}

func TestParseScenarioRefusals(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"", "1080p", "1080p30", "1080p30-", "p30-h264", "1080-h264",
		"1080P30-h264", "1080p30-H264", " 1080p30-h264", "1080p30-h264 ", "1080p30_h264",
		"1000p30-h264", "99p30-h264", "4320p30-h264", "21600p30-h264", // heights
		"1080p31-h264", "1080p120-h264", "1080p29-h264", "1080p3-h264", // frame rates
		"1080p30-mpeg2", "1080p30-hevc", "1080p30-vp8", "1080p30-x264", // codecs
	} {
		_, err := fsm.ParseScenario(s)
		if got := fsm.ErrorCode(err); got != fsm.CodeUnknownScenario {
			t.Errorf("ParseScenario(%q): got code %q (%v), want %q", s, got, err, fsm.CodeUnknownScenario)
		}
	}
}

func TestLadderKbps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		codec       string
		height, fps int
		want        int
	}{
		{"h264", 1080, 30, 5000},
		{"h264", 1080, 60, 7500},
		{"h264", 1080, 50, 7500},
		{"h264", 1080, 25, 5000},
		{"h265", 1080, 30, 3000},
		{"vp9", 1080, 30, 3000},
		{"av1", 1080, 30, 2500},
		{"av1", 1080, 60, 3750},
		{"h264", 720, 30, 2800},
		{"h265", 720, 50, 2520},
		{"h264", 2160, 60, 24000},
		{"av1", 2160, 24, 8000},
		{"h264", 144, 24, 200},
		{"vp9", 144, 30, 120},
		{"av1", 144, 30, 100},    // the floor
		{"h264", 1000, 30, 5401}, // not a preset: 720p scaled by pixel count
	}
	for _, tt := range tests {
		if got := fsm.LadderKbps(tt.codec, tt.height, tt.fps); got != tt.want {
			t.Errorf("LadderKbps(%s, %d, %d) = %d, want %d", tt.codec, tt.height, tt.fps, got, tt.want)
		}
	}

	// The ladder grows with height, shrinks for more efficient codecs and
	// rises by half above 30 fps, for every preset.
	for _, c := range presetCodecs {
		prev := 0
		for _, h := range presetHeights {
			k := fsm.LadderKbps(c, h, 30)
			if k < prev {
				t.Errorf("LadderKbps(%s, %d, 30) = %d, below the height beneath it (%d)", c, h, k, prev)
			}
			prev = k
			for _, fps := range presetFPS {
				got := fsm.LadderKbps(c, h, fps)
				if fps <= 30 && got != k {
					t.Errorf("LadderKbps(%s, %d, %d) = %d, want the 30 fps rate %d", c, h, fps, got, k)
				}
				if want := 1.5 * float64(k); fps > 30 && math.Abs(float64(got)-want) > 1 {
					t.Errorf("LadderKbps(%s, %d, %d) = %d, want 1.5 × %d", c, h, fps, got, k)
				}
			}
			if h264k, k := fsm.LadderKbps("h264", h, 30), fsm.LadderKbps(c, h, 30); k > h264k {
				t.Errorf("LadderKbps(%s, %d, 30) = %d, above h264's %d", c, h, k, h264k)
			}
		}
	}
}

// TestCompileScenarios compiles every preset and checks the rendition and
// the generated test input it resolves to.
func TestCompileScenarios(t *testing.T) {
	t.Parallel()
	for _, h := range presetHeights {
		for _, fps := range presetFPS {
			for _, c := range presetCodecs {
				name := fmt.Sprintf("%dp%d-%s", h, fps, c)
				t.Run(name, func(t *testing.T) {
					s := fsm.JobSpec{Scenario: name, Input: fsm.Input{URL: "testsrc://"}, Outputs: []fsm.Output{{URL: "file:///out/a.mkv"}}}
					p := compile(t, s, fsm.Policy{})
					if len(p.Outputs) != 1 {
						t.Fatalf("got %d outputs, want 1", len(p.Outputs))
					}
					v := p.Outputs[0].Video
					if v.Codec != c || v.Height != h || v.FPS != fps {
						t.Errorf("video = %+v, want codec %s height %d fps %d", v, c, h, fps)
					}
					if want := fsm.LadderKbps(c, h, fps); v.BitrateKbps != want {
						t.Errorf("bitrate = %d, want ladder %d", v.BitrateKbps, want)
					}
					if w, ok := wellKnownWidths[h]; ok && v.Width != w {
						t.Errorf("width = %d, want %d", v.Width, w)
					}
					if exact := float64(h) * 16 / 9; v.Width%2 != 0 || math.Abs(float64(v.Width)-exact) > 2 {
						t.Errorf("width = %d, want an even 16:9 width near %.1f", v.Width, exact)
					}
					in := p.Input
					if in.Kind != fsm.KindTestsrc || in.Width != v.Width || in.Height != h || in.FPS != fps || in.DurationSec != 10 {
						t.Errorf("input = %+v, want testsrc %dx%d@%d for 10s", in, v.Width, h, fps)
					}
					if got, want := p.Codecs(), []string{c}; !reflect.DeepEqual(got, want) {
						t.Errorf("Codecs() = %v, want %v", got, want)
					}
				})
			}
		}
	}
}

func TestCompileDefaults(t *testing.T) {
	t.Parallel()
	s := spec("720p30-h264")
	p, err := s.Compile(fsm.Policy{})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	// Compile fills the defaults into the spec itself, so they are stored
	// with the job.
	if got, want := s.Queue, fsm.QueueDefault; got != want {
		t.Errorf("queue = %q, want %q", got, want)
	}
	if got, want := s.Priority, fsm.PriorityMedium; got != want {
		t.Errorf("priority = %q, want %q", got, want)
	}
	if s.MaxRetries == nil || *s.MaxRetries != 2 {
		t.Errorf("max_retries = %v, want 2", s.MaxRetries)
	}
	if got, want := time.Duration(s.Timeout), 6*time.Hour; got != want {
		t.Errorf("timeout = %v, want %v", got, want)
	}
	if got, want := time.Duration(s.AcquireTimeout), 10*time.Minute; got != want {
		t.Errorf("acquire_timeout = %v, want %v", got, want)
	}
	if s.Resources != (fsm.Resources{}) {
		t.Errorf("resources = %+v, want none", s.Resources)
	}
	want := fsm.Rendition{
		Kind: fsm.KindFile, URL: "file:///out.mp4", Path: "out.mp4", Container: "mp4",
		Video: fsm.VideoParams{Codec: "h264", Width: 1280, Height: 720, FPS: 30, BitrateKbps: 2800},
		Audio: fsm.AudioParams{Codec: "aac", BitrateKbps: 128},
	}
	if !reflect.DeepEqual(p.Outputs, []fsm.Rendition{want}) {
		t.Errorf("outputs = %+v, want [%+v]", p.Outputs, want)
	}

	// Compile is pure: compiling the completed spec again gives the same
	// plan and leaves the spec as it was.
	before := mustJSON(t, s)
	p2, err := s.Compile(fsm.Policy{})
	if err != nil {
		t.Fatalf("compile again: %v", err)
	}
	if !reflect.DeepEqual(p, p2) {
		t.Errorf("compiling twice gave different plans:\n%+v\n%+v", p, p2)
	}
	if after := mustJSON(t, s); after != before {
		t.Errorf("compiling twice changed the spec:\n%s\n%s", before, after)
	}

	// Explicit values are kept, including a zero retry budget.
	e := spec("720p30-h264")
	e.Queue, e.Priority, e.MaxRetries = fsm.QueueLive, fsm.PriorityHigh, intp(0)
	e.Timeout, e.AcquireTimeout = fsm.Duration(time.Minute), fsm.Duration(time.Second)
	if _, err := e.Compile(fsm.Policy{}); err != nil {
		t.Fatalf("compile explicit: %v", err)
	}
	if e.Queue != fsm.QueueLive || e.Priority != fsm.PriorityHigh || *e.MaxRetries != 0 ||
		e.Timeout != fsm.Duration(time.Minute) || e.AcquireTimeout != fsm.Duration(time.Second) {
		t.Errorf("explicit values changed: queue %s priority %s max_retries %d timeout %v acquire %v",
			e.Queue, e.Priority, *e.MaxRetries, e.Timeout, e.AcquireTimeout)
	}
}

func TestCompileVideoOverrides(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		scenario string
		video    *fsm.VideoParams
		want     fsm.VideoParams
	}{
		{"scenario only", "1080p30-h264", nil, fsm.VideoParams{Codec: "h264", Width: 1920, Height: 1080, FPS: 30, BitrateKbps: 5000}},
		{"codec", "1080p30-h264", &fsm.VideoParams{Codec: "h265"}, fsm.VideoParams{Codec: "h265", Width: 1920, Height: 1080, FPS: 30, BitrateKbps: 3000}},
		{"height recomputes width", "1080p30-h264", &fsm.VideoParams{Height: 720}, fsm.VideoParams{Codec: "h264", Width: 1280, Height: 720, FPS: 30, BitrateKbps: 2800}},
		{"fps rescales bitrate", "1080p30-h264", &fsm.VideoParams{FPS: 60}, fsm.VideoParams{Codec: "h264", Width: 1920, Height: 1080, FPS: 60, BitrateKbps: 7500}},
		{"bitrate", "1080p30-h264", &fsm.VideoParams{BitrateKbps: 4000}, fsm.VideoParams{Codec: "h264", Width: 1920, Height: 1080, FPS: 30, BitrateKbps: 4000}},
		{"width and height", "1080p30-h264", &fsm.VideoParams{Width: 1440, Height: 1080}, fsm.VideoParams{Codec: "h264", Width: 1440, Height: 1080, FPS: 30, BitrateKbps: 5000}},
		{"width only", "720p30-h264", &fsm.VideoParams{Width: 960}, fsm.VideoParams{Codec: "h264", Width: 960, Height: 720, FPS: 30, BitrateKbps: 2800}},
		{"everything", "2160p60-av1", &fsm.VideoParams{Codec: "vp9", Width: 640, Height: 360, FPS: 25, BitrateKbps: 700}, fsm.VideoParams{Codec: "vp9", Width: 640, Height: 360, FPS: 25, BitrateKbps: 700}},
		{"no scenario", "", &fsm.VideoParams{Codec: "av1"}, fsm.VideoParams{Codec: "av1", Width: 1280, Height: 720, FPS: 30, BitrateKbps: 1400}},
		{"no scenario, sized", "", &fsm.VideoParams{Codec: "h264", Height: 1080, FPS: 50}, fsm.VideoParams{Codec: "h264", Width: 1920, Height: 1080, FPS: 50, BitrateKbps: 7500}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := fsm.JobSpec{Scenario: tt.scenario, Video: tt.video, Input: fsm.Input{URL: "testsrc://"}, Outputs: []fsm.Output{{URL: "file:///o.mkv"}}}
			p := compile(t, s, fsm.Policy{})
			if got := p.Outputs[0].Video; got != tt.want {
				t.Errorf("video = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestCompileLadder builds a three-rendition ladder from per-output
// overrides; an override applies to its own output only.
func TestCompileLadder(t *testing.T) {
	t.Parallel()
	s := fsm.JobSpec{
		Scenario: "1080p30-h264",
		Input:    fsm.Input{URL: "file:///in/master.mov"},
		Outputs: []fsm.Output{
			{URL: "file:///out/720.mp4", Video: &fsm.VideoParams{Height: 720}},
			{URL: "file:///out/1080.mp4"},
			{URL: "file:///out/480.webm", Video: &fsm.VideoParams{Codec: "vp9", Height: 480, BitrateKbps: 1000}},
		},
	}
	p := compile(t, s, fsm.Policy{})
	want := []fsm.VideoParams{
		{Codec: "h264", Width: 1280, Height: 720, FPS: 30, BitrateKbps: 2800},
		{Codec: "h264", Width: 1920, Height: 1080, FPS: 30, BitrateKbps: 5000},
		{Codec: "vp9", Width: 854, Height: 480, FPS: 30, BitrateKbps: 1000},
	}
	if len(p.Outputs) != len(want) {
		t.Fatalf("got %d outputs, want %d", len(p.Outputs), len(want))
	}
	for i, r := range p.Outputs {
		if r.Video != want[i] {
			t.Errorf("outputs[%d].video = %+v, want %+v", i, r.Video, want[i])
		}
	}
	if got, want := []string{p.Outputs[0].Audio.Codec, p.Outputs[1].Audio.Codec, p.Outputs[2].Audio.Codec}, []string{"aac", "aac", "opus"}; !reflect.DeepEqual(got, want) {
		t.Errorf("audio codecs = %v, want %v", got, want)
	}
	if got, want := p.Codecs(), []string{"h264", "vp9"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Codecs() = %v, want %v", got, want)
	}
	if got, want := p.Input, (fsm.PlanInput{Kind: fsm.KindFile, URL: "file:///in/master.mov", Path: "in/master.mov"}); got != want {
		t.Errorf("input = %+v, want %+v", got, want)
	}

	// A job-wide override applies to every rendition unless one overrides
	// it again.
	s.Video = &fsm.VideoParams{FPS: 60}
	p = compile(t, s, fsm.Policy{})
	for i, wantKbps := range []int{4200, 7500, 1000} {
		if got := p.Outputs[i].Video; got.FPS != 60 || got.BitrateKbps != wantKbps {
			t.Errorf("with fps 60: outputs[%d].video = %+v, want fps 60 at %d kbps", i, got, wantKbps)
		}
	}
}

func TestCompileTestsrc(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url      string
		scenario string
		want     fsm.PlanInput // URL is not compared
		code     fsm.Code
	}{
		{url: "testsrc://", scenario: "720p30-h264", want: fsm.PlanInput{Width: 1280, Height: 720, FPS: 30, DurationSec: 10}},
		{url: "testsrc://?", scenario: "1080p60-h264", want: fsm.PlanInput{Width: 1920, Height: 1080, FPS: 60, DurationSec: 10}},
		{url: "testsrc:?duration=3", scenario: "480p25-h264", want: fsm.PlanInput{Width: 854, Height: 480, FPS: 25, DurationSec: 3}},
		{url: "testsrc://?duration=2.5&size=320x240&rate=25", scenario: "1080p30-h264", want: fsm.PlanInput{Width: 320, Height: 240, FPS: 25, DurationSec: 2.5}},
		{url: "testsrc://?size=1920x1080&rate=30&duration=10", scenario: "720p60-h265", want: fsm.PlanInput{Width: 1920, Height: 1080, FPS: 30, DurationSec: 10}},
		{url: "testsrc://?duration=3600", scenario: "720p30-h264", want: fsm.PlanInput{Width: 1280, Height: 720, FPS: 30, DurationSec: 3600}},
		{url: "testsrc://?size=16x16&rate=1", scenario: "720p30-h264", want: fsm.PlanInput{Width: 16, Height: 16, FPS: 1, DurationSec: 10}},
		{url: "testsrc://?size=7680x4320&rate=120", scenario: "720p30-h264", want: fsm.PlanInput{Width: 7680, Height: 4320, FPS: 120, DurationSec: 10}},

		{url: "testsrc://?duration=0", code: fsm.CodeInvalidURL},
		{url: "testsrc://?duration=-1", code: fsm.CodeInvalidURL},
		{url: "testsrc://?duration=3601", code: fsm.CodeInvalidURL},
		{url: "testsrc://?duration=Inf", code: fsm.CodeInvalidURL},
		{url: "testsrc://?duration=ten", code: fsm.CodeInvalidURL},
		{url: "testsrc://?duration=", code: fsm.CodeInvalidURL},
		{url: "testsrc://?duration=1&duration=2", code: fsm.CodeInvalidURL},
		{url: "testsrc://?size=15x16", code: fsm.CodeInvalidURL},
		{url: "testsrc://?size=7681x720", code: fsm.CodeInvalidURL},
		{url: "testsrc://?size=1280x4321", code: fsm.CodeInvalidURL},
		{url: "testsrc://?size=1280", code: fsm.CodeInvalidURL},
		{url: "testsrc://?size=1280x", code: fsm.CodeInvalidURL},
		{url: "testsrc://?size=axb", code: fsm.CodeInvalidURL},
		{url: "testsrc://?rate=0", code: fsm.CodeInvalidURL},
		{url: "testsrc://?rate=121", code: fsm.CodeInvalidURL},
		{url: "testsrc://?rate=29.97", code: fsm.CodeInvalidURL},
		{url: "testsrc://?pattern=smpte", code: fsm.CodeInvalidURL},
		{url: "testsrc://?duration=1&filter=drawtext", code: fsm.CodeInvalidURL},
		{url: "testsrc://?%zz=1", code: fsm.CodeInvalidURL},
		{url: "testsrc://host?duration=1", code: fsm.CodeInvalidURL},
		{url: "testsrc:///clip?duration=1", code: fsm.CodeInvalidURL},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			sc := tt.scenario
			if sc == "" {
				sc = "720p30-h264"
			}
			s := spec(sc)
			s.Input.URL = tt.url
			p, err := s.Compile(fsm.Policy{})
			if tt.code != "" {
				if got := fsm.ErrorCode(err); got != tt.code {
					t.Fatalf("got code %q (%v), want %q", got, err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			got := p.Input
			got.URL = ""
			tt.want.Kind = fsm.KindTestsrc
			if got != tt.want {
				t.Errorf("input = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestCompileTestsrcNaNDuration: a duration of NaN passes every range
// check, and the plan then cannot be encoded into a log entry.
func TestCompileTestsrcNaNDuration(t *testing.T) {
	t.Parallel()
	s := spec("720p30-h264")
	s.Input.URL = "testsrc://?duration=NaN"
	p, err := s.Compile(fsm.Policy{})
	if got, want := fsm.ErrorCode(err), fsm.CodeInvalidURL; got != want {
		_, encErr := fsm.Encode(&fsm.SubmitJob{Job: fsm.Job{ID: "j", Spec: s, Plan: *p}})
		t.Fatalf("got code %q (plan input %+v; encoding the job gives %v), want %q", got, p.Input, encErr, want)
	}
}

func TestCompileFileURLs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		input  string
		output string
		path   string // the resolved, tenant-relative path
		code   fsm.Code
	}{
		{name: "input root", input: "file:///demo.mp4", path: "demo.mp4"},
		{name: "input nested", input: "file:///in/2024/a.mov", path: "in/2024/a.mov"},
		{name: "input localhost", input: "file://localhost/demo.mp4", path: "demo.mp4"},
		{name: "input upper-case extension", input: "file:///DEMO.MP4", path: "DEMO.MP4"},
		{name: "input audio", input: "file:///music/a.flac", path: "music/a.flac"},
		{name: "input escaped space", input: "file:///my%20clip.mkv", path: "my clip.mkv"},
		{name: "input /etc/passwd", input: "file:///etc/passwd", code: fsm.CodeURLNotAllowed},
		{name: "input not media", input: "file:///a/b.txt", code: fsm.CodeURLNotAllowed},
		{name: "input dot-dot", input: "file:///../etc/x.mp4", code: fsm.CodeURLNotAllowed},
		{name: "input inner dot-dot", input: "file:///a/../../x.mp4", code: fsm.CodeURLNotAllowed},
		{name: "input harmless dot-dot", input: "file:///a/../x.mp4", code: fsm.CodeURLNotAllowed},
		{name: "input escaped dot-dot", input: "file:///%2e%2e/x.mp4", code: fsm.CodeURLNotAllowed},
		{name: "input dot", input: "file:///./x.mp4", code: fsm.CodeURLNotAllowed},
		{name: "input dot file", input: "file:///.x.mp4", code: fsm.CodeURLNotAllowed},
		{name: "input hidden dir", input: "file:///.ssh/x.mp4", code: fsm.CodeURLNotAllowed},
		{name: "input empty segment", input: "file:///a//x.mp4", code: fsm.CodeURLNotAllowed},
		{name: "input trailing slash", input: "file:///a/", code: fsm.CodeURLNotAllowed},
		{name: "input host", input: "file://evil.example.com/x.mp4", code: fsm.CodeInvalidURL},
		{name: "input host and port", input: "file://localhost:80/x.mp4", code: fsm.CodeInvalidURL},
		{name: "input user", input: "file://root@/x.mp4", code: fsm.CodeInvalidURL},
		{name: "input query", input: "file:///x.mp4?x=1", code: fsm.CodeInvalidURL},
		{name: "input fragment", input: "file:///x.mp4#t=1", code: fsm.CodeInvalidURL},
		{name: "input relative", input: "file:x.mp4", code: fsm.CodeInvalidURL},
		{name: "input empty", input: "", code: fsm.CodeInvalidURL},
		{name: "input control character", input: "file:///a\nb.mp4", code: fsm.CodeInvalidURL},
		{name: "input too long", input: "file:///" + strings.Repeat("a", fsm.MaxURLLen) + ".mp4", code: fsm.CodeInvalidURL},
		{name: "input bad escape", input: "file:///%zz.mp4", code: fsm.CodeInvalidURL},
		{name: "input unsupported scheme", input: "ftp://example.com/x.mp4", code: fsm.CodeInvalidURL},
		{name: "input pipe", input: "pipe:0", code: fsm.CodeInvalidURL},
		{name: "input bare path", input: "/etc/passwd", code: fsm.CodeInvalidURL},
		// A playlist would make ffmpeg open every file or host it names.
		{name: "input HLS playlist", input: "file:///x.m3u8", code: fsm.CodeURLNotAllowed},
		{name: "input upper-case HLS playlist", input: "file:///in/X.M3U8", code: fsm.CodeURLNotAllowed},

		{name: "output nested", output: "file:///out/x/y.mp4", path: "out/x/y.mp4"},
		{name: "output localhost", output: "file://localhost/y.mkv", path: "y.mkv"},
		{name: "output HLS playlist", output: "file:///out/hls/y.m3u8", path: "out/hls/y.m3u8"},
		{name: "output not a muxer", output: "file:///out/y.wav", code: fsm.CodeURLNotAllowed},
		{name: "output no extension", output: "file:///out/y", code: fsm.CodeURLNotAllowed},
		{name: "output dot-dot", output: "file:///out/../../y.mp4", code: fsm.CodeURLNotAllowed},
		{name: "output dot file", output: "file:///out/.y.mp4", code: fsm.CodeURLNotAllowed},
		{name: "output host", output: "file://example.com/y.mp4", code: fsm.CodeInvalidURL},
		{name: "output http", output: "http://example.com/y.mp4", code: fsm.CodeInvalidURL},
		{name: "output srt", output: "srt://example.com:9000", code: fsm.CodeInvalidURL},
		{name: "output testsrc", output: "testsrc://", code: fsm.CodeInvalidURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := spec("720p30-h264")
			if tt.input != "" || tt.output == "" {
				s.Input.URL = tt.input
			}
			if tt.output != "" {
				s.Outputs = []fsm.Output{{URL: tt.output}}
			}
			p, err := s.Compile(fsm.Policy{AllowedHosts: []string{"example.com", "evil.example.com"}})
			if tt.code != "" {
				if got := fsm.ErrorCode(err); got != tt.code {
					t.Fatalf("got code %q (%v), want %q", got, err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			if tt.output == "" {
				if p.Input.Kind != fsm.KindFile || p.Input.Path != tt.path {
					t.Errorf("input = %+v, want kind file with path %q", p.Input, tt.path)
				}
			} else if r := p.Outputs[0]; r.Kind != fsm.KindFile || r.Path != tt.path {
				t.Errorf("output = %+v, want kind file with path %q", r, tt.path)
			}
		})
	}
}

func TestCompileContainers(t *testing.T) {
	t.Parallel()
	pol := fsm.Policy{AllowedHosts: []string{"live.example.com"}}
	urls := map[string]string{
		"mp4": "file:///o.mp4", "m4v": "file:///o.m4v", "mov": "file:///o.mov", "mkv": "file:///o.mkv",
		"webm": "file:///o.webm", "ts": "file:///o.ts", "flv": "file:///o.flv", "rtmp": "rtmp://live.example.com/app/key",
		"rtmps": "rtmps://live.example.com/app/key", "m3u8": "file:///o.m3u8",
	}
	muxer := map[string]string{"mp4": "mp4", "m4v": "mp4", "mov": "mov", "mkv": "matroska", "webm": "webm",
		"ts": "mpegts", "flv": "flv", "rtmp": "flv", "rtmps": "flv", "m3u8": "hls"}
	accepts := map[string][]string{
		"mp4": presetCodecs, "m4v": presetCodecs, "mov": presetCodecs, "mkv": presetCodecs,
		"webm": {"vp9", "av1"}, "ts": {"h264", "h265"}, "flv": {"h264"}, "rtmp": {"h264"}, "rtmps": {"h264"},
		"m3u8": {"h264", "h265"},
	}
	defaultAudio := map[string]string{"webm": "opus"}
	for out, u := range urls {
		for _, c := range presetCodecs {
			t.Run(out+"/"+c, func(t *testing.T) {
				s := spec("720p30-" + c)
				s.Outputs = []fsm.Output{{URL: u}}
				p, err := s.Compile(pol)
				ok := false
				for _, a := range accepts[out] {
					ok = ok || a == c
				}
				if !ok {
					if got := fsm.ErrorCode(err); got != fsm.CodeInvalidArgument {
						t.Fatalf("got code %q (%v), want %q", got, err, fsm.CodeInvalidArgument)
					}
					return
				}
				if err != nil {
					t.Fatalf("compile: %v", err)
				}
				r := p.Outputs[0]
				if r.Container != muxer[out] {
					t.Errorf("container = %q, want %q", r.Container, muxer[out])
				}
				wantAudio := cmpOr(defaultAudio[out], "aac")
				if r.Audio != (fsm.AudioParams{Codec: wantAudio, BitrateKbps: 128}) {
					t.Errorf("audio = %+v, want %s at 128 kbps", r.Audio, wantAudio)
				}
			})
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestCompileAudio(t *testing.T) {
	t.Parallel()
	tests := []struct {
		scenario string
		out      string
		audio    *fsm.AudioParams
		want     fsm.AudioParams
		code     fsm.Code
	}{
		{"720p30-h264", "file:///o.mp4", &fsm.AudioParams{Codec: "opus", BitrateKbps: 96}, fsm.AudioParams{Codec: "opus", BitrateKbps: 96}, ""},
		{"720p30-h264", "file:///o.mp4", &fsm.AudioParams{Codec: "none"}, fsm.AudioParams{Codec: "none", BitrateKbps: 128}, ""},
		{"720p30-h264", "file:///o.mp4", &fsm.AudioParams{BitrateKbps: 8}, fsm.AudioParams{Codec: "aac", BitrateKbps: 8}, ""},
		{"720p30-vp9", "file:///o.webm", &fsm.AudioParams{BitrateKbps: 1024}, fsm.AudioParams{Codec: "opus", BitrateKbps: 1024}, ""},
		{"720p30-vp9", "file:///o.webm", &fsm.AudioParams{Codec: "aac"}, fsm.AudioParams{}, fsm.CodeInvalidArgument},
		{"720p30-h264", "file:///o.flv", &fsm.AudioParams{Codec: "opus"}, fsm.AudioParams{}, fsm.CodeInvalidArgument},
		{"720p30-h264", "file:///o.m3u8", &fsm.AudioParams{BitrateKbps: 96}, fsm.AudioParams{Codec: "aac", BitrateKbps: 96}, ""},
		{"720p30-h264", "file:///o.m3u8", &fsm.AudioParams{Codec: "opus"}, fsm.AudioParams{}, fsm.CodeInvalidArgument},
		{"720p30-h264", "file:///o.mp4", &fsm.AudioParams{Codec: "mp3"}, fsm.AudioParams{}, fsm.CodeInvalidArgument},
		{"720p30-h264", "file:///o.mp4", &fsm.AudioParams{BitrateKbps: 7}, fsm.AudioParams{}, fsm.CodeInvalidArgument},
		{"720p30-h264", "file:///o.mp4", &fsm.AudioParams{BitrateKbps: 1025}, fsm.AudioParams{}, fsm.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %+v", tt.out, *tt.audio), func(t *testing.T) {
			s := spec(tt.scenario)
			s.Outputs = []fsm.Output{{URL: tt.out}}
			s.Audio = tt.audio
			p, err := s.Compile(fsm.Policy{})
			if tt.code != "" {
				if got := fsm.ErrorCode(err); got != tt.code {
					t.Fatalf("got code %q (%v), want %q", got, err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			if got := p.Outputs[0].Audio; got != tt.want {
				t.Errorf("audio = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestCompileOutputAudio checks that an output's audio overrides the
// job's for that output only: the docs' ladder of mp4 (aac) and webm
// (opus) outputs compiles.
func TestCompileOutputAudio(t *testing.T) {
	t.Parallel()
	s := spec("720p30-h264")
	s.Audio = &fsm.AudioParams{Codec: "aac", BitrateKbps: 160}
	s.Outputs = []fsm.Output{
		{URL: "file:///o.mp4"},
		{URL: "file:///o.webm", Video: &fsm.VideoParams{Codec: "vp9"}, Audio: &fsm.AudioParams{Codec: "opus"}},
		{URL: "file:///o2.mp4", Audio: &fsm.AudioParams{BitrateKbps: 64}},
	}
	p, err := s.Compile(fsm.Policy{})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	want := []fsm.AudioParams{{Codec: "aac", BitrateKbps: 160}, {Codec: "opus", BitrateKbps: 160}, {Codec: "aac", BitrateKbps: 64}}
	for i, r := range p.Outputs {
		if r.Audio != want[i] {
			t.Errorf("outputs[%d].audio = %+v, want %+v", i, r.Audio, want[i])
		}
	}
	s.Outputs[1].Audio = nil // aac from the job into webm
	if _, err := s.Compile(fsm.Policy{}); fsm.ErrorCode(err) != fsm.CodeInvalidArgument || !strings.Contains(err.Error(), "outputs[1]") {
		t.Errorf("aac into webm: got %v, want invalid_argument naming outputs[1]", err)
	}
	s.Outputs[1].Audio = &fsm.AudioParams{Codec: "opus", BitrateKbps: 2000}
	if _, err := s.Compile(fsm.Policy{}); fsm.ErrorCode(err) != fsm.CodeInvalidArgument || !strings.Contains(err.Error(), "outputs[1]: audio.bitrate_kbps") {
		t.Errorf("output bitrate 2000: got %v, want invalid_argument naming outputs[1]: audio.bitrate_kbps", err)
	}
}

func TestCompileNetworkPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		allowed []string
		input   string
		output  string
		kind    string
		code    fsm.Code
	}{
		{name: "rtmp input refused by empty policy", input: "rtmp://live.example.com/app/key", code: fsm.CodeURLNotAllowed},
		{name: "http input refused by empty policy", input: "http://cdn.example.com/a.mp4", code: fsm.CodeURLNotAllowed},
		{name: "rtmp input allowed", allowed: []string{"live.example.com"}, input: "rtmp://live.example.com/app/key", kind: fsm.KindRTMP},
		{name: "rtmps input allowed", allowed: []string{"live.example.com"}, input: "rtmps://live.example.com/app/key", kind: fsm.KindRTMP},
		{name: "http input allowed", allowed: []string{"cdn.example.com"}, input: "http://cdn.example.com/a.mp4", kind: fsm.KindHTTP},
		{name: "https input allowed", allowed: []string{"cdn.example.com"}, input: "https://cdn.example.com/a.mp4?sig=1", kind: fsm.KindHTTP},
		{name: "srt input allowed", allowed: []string{"10.0.0.7"}, input: "srt://10.0.0.7:9000?mode=caller", kind: fsm.KindSRT},
		{name: "host case-insensitive", allowed: []string{"CDN.Example.com"}, input: "http://cdn.EXAMPLE.com/a.mp4", kind: fsm.KindHTTP},
		{name: "host allows any port", allowed: []string{"cdn.example.com"}, input: "http://cdn.example.com:8080/a.mp4", kind: fsm.KindHTTP},
		{name: "host:port allows that port", allowed: []string{"cdn.example.com:8080"}, input: "http://cdn.example.com:8080/a.mp4", kind: fsm.KindHTTP},
		{name: "host:port refuses another port", allowed: []string{"cdn.example.com:8080"}, input: "http://cdn.example.com:9090/a.mp4", code: fsm.CodeURLNotAllowed},
		{name: "host:port refuses no port", allowed: []string{"cdn.example.com:8080"}, input: "http://cdn.example.com/a.mp4", code: fsm.CodeURLNotAllowed},
		{name: "other host", allowed: []string{"cdn.example.com"}, input: "http://evil.example.net/a.mp4", code: fsm.CodeURLNotAllowed},
		{name: "subdomain is another host", allowed: []string{"example.com"}, input: "http://cdn.example.com/a.mp4", code: fsm.CodeURLNotAllowed},
		{name: "userinfo trick", allowed: []string{"cdn.example.com"}, input: "http://cdn.example.com@evil.example.net/a.mp4", code: fsm.CodeURLNotAllowed},
		{name: "metadata address", allowed: []string{"cdn.example.com"}, input: "http://169.254.169.254/latest/meta-data", code: fsm.CodeURLNotAllowed},
		{name: "no host", allowed: []string{"cdn.example.com"}, input: "http:///a.mp4", code: fsm.CodeInvalidURL},
		{name: "rtmp output allowed", allowed: []string{"live.example.com"}, output: "rtmp://live.example.com/app/key", kind: fsm.KindRTMP},
		{name: "rtmp output refused", allowed: []string{"cdn.example.com"}, output: "rtmp://live.example.com/app/key", code: fsm.CodeURLNotAllowed},
		{name: "rtmp output no host", allowed: []string{"live.example.com"}, output: "rtmp:///app/key", code: fsm.CodeInvalidURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pol := fsm.Policy{AllowedHosts: tt.allowed}
			if err := fsm.ValidatePolicy(pol); err != nil {
				t.Fatalf("ValidatePolicy(%v): %v", tt.allowed, err)
			}
			s := spec("720p30-h264")
			if tt.input != "" {
				s.Input.URL = tt.input
			}
			if tt.output != "" {
				s.Outputs = []fsm.Output{{URL: tt.output}}
			}
			p, err := s.Compile(pol)
			if tt.code != "" {
				if got := fsm.ErrorCode(err); got != tt.code {
					t.Fatalf("got code %q (%v), want %q", got, err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			if tt.input != "" {
				if p.Input.Kind != tt.kind || p.Input.URL != tt.input {
					t.Errorf("input = %+v, want kind %q url %q", p.Input, tt.kind, tt.input)
				}
			} else if r := p.Outputs[0]; r.Kind != tt.kind || r.Container != "flv" || r.URL != tt.output {
				t.Errorf("output = %+v, want kind %q container flv url %q", r, tt.kind, tt.output)
			}
		})
	}
}

func TestValidatePolicy(t *testing.T) {
	t.Parallel()
	for _, h := range []string{"example.com", "example.com:1935", "10.0.0.1", "[::1]:1935", "::1"} {
		if err := fsm.ValidatePolicy(fsm.Policy{AllowedHosts: []string{h}}); err != nil {
			t.Errorf("ValidatePolicy(%q): %v, want ok", h, err)
		}
	}
	for _, h := range []string{"", "example.com/x", "user@example.com", "a b", "example.com?", "example.com#x"} {
		if err := fsm.ValidatePolicy(fsm.Policy{AllowedHosts: []string{h}}); err == nil {
			t.Errorf("ValidatePolicy(%q): got nil, want an error", h)
		}
	}
}

// TestValidatePolicyURL: an operator who writes a URL where a host belongs
// should be told so at start-up, not find every network job refused.
func TestValidatePolicyURL(t *testing.T) {
	t.Parallel()
	for _, h := range []string{"http://cdn.example.com", "rtmp://live.example.com:1935", "cdn.example.com:http"} {
		if err := fsm.ValidatePolicy(fsm.Policy{AllowedHosts: []string{h}}); err == nil {
			t.Errorf("ValidatePolicy(%q): got nil, want an error", h)
		}
	}
}

func TestCompileRefusals(t *testing.T) {
	t.Parallel()
	outputs := func(urls ...string) []fsm.Output {
		var out []fsm.Output
		for _, u := range urls {
			out = append(out, fsm.Output{URL: u})
		}
		return out
	}
	tests := []struct {
		name string
		edit func(*fsm.JobSpec)
		code fsm.Code
	}{
		{"duplicate output", func(s *fsm.JobSpec) { s.Outputs = outputs("file:///a.mp4", "file:///b.mp4", "file:///a.mp4") }, fsm.CodeInvalidArgument},
		{"duplicate output path", func(s *fsm.JobSpec) { s.Outputs = outputs("file:///a.mp4", "file://localhost/a.mp4") }, fsm.CodeInvalidArgument},
		{"duplicate rtmp output", func(s *fsm.JobSpec) {
			s.Outputs = outputs("rtmp://live.example.com/app/k", "rtmp://live.example.com/app/k")
		}, fsm.CodeInvalidArgument},
		{"output overwrites input", func(s *fsm.JobSpec) {
			s.Input.URL = "file:///media/a.mp4"
			s.Outputs = outputs("file:///media/b.mp4", "file:///media/a.mp4")
		}, fsm.CodeInvalidArgument},
		{"output overwrites input via localhost", func(s *fsm.JobSpec) {
			s.Input.URL = "file:///media/a.mp4"
			s.Outputs = outputs("file://localhost/media/a.mp4")
		}, fsm.CodeInvalidArgument},
		{"no outputs", func(s *fsm.JobSpec) { s.Outputs = nil }, fsm.CodeInvalidArgument},
		{"too many outputs", func(s *fsm.JobSpec) {
			s.Outputs = nil
			for i := range fsm.MaxOutputs + 1 {
				s.Outputs = append(s.Outputs, fsm.Output{URL: fmt.Sprintf("file:///o%d.mp4", i)})
			}
		}, fsm.CodeInvalidArgument},
		{"no input", func(s *fsm.JobSpec) { s.Input.URL = "" }, fsm.CodeInvalidURL},
		{"long name", func(s *fsm.JobSpec) { s.Name = strings.Repeat("n", fsm.MaxNameLen+1) }, fsm.CodeInvalidArgument},
		{"queue", func(s *fsm.JobSpec) { s.Queue = "urgent" }, fsm.CodeInvalidArgument},
		{"queue case", func(s *fsm.JobSpec) { s.Queue = "Live" }, fsm.CodeInvalidArgument},
		{"priority", func(s *fsm.JobSpec) { s.Priority = "critical" }, fsm.CodeInvalidArgument},
		{"max_retries negative", func(s *fsm.JobSpec) { s.MaxRetries = intp(-1) }, fsm.CodeInvalidArgument},
		{"max_retries too many", func(s *fsm.JobSpec) { s.MaxRetries = intp(fsm.MaxMaxRetries + 1) }, fsm.CodeInvalidArgument},
		{"timeout under a second", func(s *fsm.JobSpec) { s.Timeout = fsm.Duration(500 * time.Millisecond) }, fsm.CodeInvalidArgument},
		{"timeout negative", func(s *fsm.JobSpec) { s.Timeout = fsm.Duration(-time.Hour) }, fsm.CodeInvalidArgument},
		{"acquire_timeout under a second", func(s *fsm.JobSpec) { s.AcquireTimeout = fsm.Duration(time.Millisecond) }, fsm.CodeInvalidArgument},
		{"cpu negative", func(s *fsm.JobSpec) { s.Resources.CPU = -1 }, fsm.CodeInvalidArgument},
		{"cpu too many", func(s *fsm.JobSpec) { s.Resources.CPU = 257 }, fsm.CodeInvalidArgument},
		{"memory negative", func(s *fsm.JobSpec) { s.Resources.MemoryMB = -1 }, fsm.CodeInvalidArgument},
		{"memory too much", func(s *fsm.JobSpec) { s.Resources.MemoryMB = 1<<20 + 1 }, fsm.CodeInvalidArgument},
		{"unknown scenario", func(s *fsm.JobSpec) { s.Scenario = "1080p30-mpeg2" }, fsm.CodeUnknownScenario},
		{"no scenario, no codec", func(s *fsm.JobSpec) { s.Scenario = "" }, fsm.CodeInvalidArgument},
		{"no scenario, sized, no codec", func(s *fsm.JobSpec) { s.Scenario, s.Video = "", &fsm.VideoParams{Height: 720} }, fsm.CodeInvalidArgument},
		{"video codec", func(s *fsm.JobSpec) { s.Video = &fsm.VideoParams{Codec: "mpeg2"} }, fsm.CodeInvalidArgument},
		{"odd width", func(s *fsm.JobSpec) { s.Video = &fsm.VideoParams{Width: 1279} }, fsm.CodeInvalidArgument},
		{"odd height", func(s *fsm.JobSpec) { s.Video = &fsm.VideoParams{Width: 1280, Height: 721} }, fsm.CodeInvalidArgument},
		{"too small", func(s *fsm.JobSpec) { s.Video = &fsm.VideoParams{Width: 14, Height: 14} }, fsm.CodeInvalidArgument},
		{"too large", func(s *fsm.JobSpec) { s.Video = &fsm.VideoParams{Height: 4400} }, fsm.CodeInvalidArgument},
		{"negative height", func(s *fsm.JobSpec) { s.Video = &fsm.VideoParams{Height: -720} }, fsm.CodeInvalidArgument},
		{"fps", func(s *fsm.JobSpec) { s.Video = &fsm.VideoParams{FPS: 121} }, fsm.CodeInvalidArgument},
		{"negative fps", func(s *fsm.JobSpec) { s.Video = &fsm.VideoParams{FPS: -30} }, fsm.CodeInvalidArgument},
		{"bitrate low", func(s *fsm.JobSpec) { s.Video = &fsm.VideoParams{BitrateKbps: 49} }, fsm.CodeInvalidArgument},
		{"bitrate high", func(s *fsm.JobSpec) { s.Video = &fsm.VideoParams{BitrateKbps: 200001} }, fsm.CodeInvalidArgument},
		{"per-output codec", func(s *fsm.JobSpec) { s.Outputs[0].Video = &fsm.VideoParams{Codec: "theora"} }, fsm.CodeInvalidArgument},
		{"per-output container", func(s *fsm.JobSpec) { s.Outputs[0] = fsm.Output{URL: "file:///o.webm"} }, fsm.CodeInvalidArgument},
		{"vp9 to HLS", func(s *fsm.JobSpec) {
			s.Outputs = []fsm.Output{{URL: "file:///hls/o.m3u8", Video: &fsm.VideoParams{Codec: "vp9"}}}
		}, fsm.CodeInvalidArgument},
	}
	pol := fsm.Policy{AllowedHosts: []string{"live.example.com"}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := spec("720p30-h264")
			tt.edit(&s)
			_, err := s.Compile(pol)
			if got := fsm.ErrorCode(err); got != tt.code {
				t.Fatalf("got code %q (%v), want %q", got, err, tt.code)
			}
		})
	}
}

// TestCompileOutputErrorNamesOutput: a refusal of one output says which.
func TestCompileOutputErrorNamesOutput(t *testing.T) {
	t.Parallel()
	s := spec("720p30-h264")
	s.Outputs = []fsm.Output{{URL: "file:///a.mp4"}, {URL: "file:///../b.mp4"}}
	_, err := s.Compile(fsm.Policy{})
	wantCode(t, err, fsm.CodeURLNotAllowed)
	if !strings.Contains(err.Error(), "outputs[1]") {
		t.Errorf("error %q does not name outputs[1]", err)
	}
}

// TestSpecJSON decodes the sketch from DESIGN.md and compiles it.
func TestSpecJSON(t *testing.T) {
	t.Parallel()
	const doc = `{
	  "name": "promo-1080p",
	  "scenario": "1080p30-h264",
	  "input":  {"url": "testsrc://?duration=10&size=1920x1080&rate=30"},
	  "outputs": [{"url": "file:///out/promo.mp4"}],
	  "queue": "default", "priority": "high",
	  "resources": {"cpu": 2, "memory_mb": 1024},
	  "timeout": "30m", "acquire_timeout": "10m", "max_retries": 3
	}`
	var s fsm.JobSpec
	if err := json.Unmarshal([]byte(doc), &s); err != nil {
		t.Fatalf("decode: %v", err)
	}
	p := compile(t, s, fsm.Policy{})
	if got, want := time.Duration(s.Timeout), 30*time.Minute; got != want {
		t.Errorf("timeout = %v, want %v", got, want)
	}
	if s.Priority != fsm.PriorityHigh || *s.MaxRetries != 3 || s.Resources != (fsm.Resources{CPU: 2, MemoryMB: 1024}) {
		t.Errorf("decoded spec = %+v", s)
	}
	in := p.Input
	in.URL = "" // normalized by url.URL.String; the worker reads the fields
	if got, want := in, (fsm.PlanInput{Kind: fsm.KindTestsrc, Width: 1920, Height: 1080, FPS: 30, DurationSec: 10}); got != want {
		t.Errorf("input = %+v, want %+v", got, want)
	}

	// The spec survives a JSON round trip, durations as strings.
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"timeout":"30m0s"`) {
		t.Errorf("encoded spec %s: want timeout as a duration string", b)
	}
	var s2 fsm.JobSpec
	if err := json.Unmarshal(b, &s2); err != nil {
		t.Fatalf("decode round trip: %v", err)
	}
	if !reflect.DeepEqual(s, s2) {
		t.Errorf("round trip:\ngot  %+v\nwant %+v", s2, s)
	}

	for _, bad := range []string{`{"timeout": 30}`, `{"timeout": "30"}`, `{"timeout": "soon"}`} {
		var s fsm.JobSpec
		if err := json.Unmarshal([]byte(bad), &s); err == nil {
			t.Errorf("decode %s: got nil, want an error", bad)
		}
	}
}
