package fsm

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	json "github.com/go-json-experiment/json/v1"
)

// Duration is a time.Duration that encodes in JSON as a Go duration string
// such as "30m" or "1h30m".
type Duration time.Duration

// MarshalJSON encodes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON decodes a duration string such as "90s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"30m\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// Queue names the queue a job waits in. Queues are dispatched in the order
// live, default, batch.
type Queue string

// Queues.
const (
	QueueLive    Queue = "live"
	QueueDefault Queue = "default"
	QueueBatch   Queue = "batch"
)

// Queues lists the queues in dispatch order.
var Queues = []Queue{QueueLive, QueueDefault, QueueBatch}

// Priority orders jobs within a queue: high before medium before low.
type Priority string

// Priorities.
const (
	PriorityHigh   Priority = "high"
	PriorityMedium Priority = "medium"
	PriorityLow    Priority = "low"
)

// Priorities lists the priorities in dispatch order.
var Priorities = []Priority{PriorityHigh, PriorityMedium, PriorityLow}

// JobSpec is what a client submits: the structured description of one
// ffmpeg run. It never carries raw ffmpeg arguments or host paths.
type JobSpec struct {
	Name           string       `json:"name,omitempty"`
	Scenario       string       `json:"scenario,omitempty"`
	Input          Input        `json:"input"`
	Outputs        []Output     `json:"outputs"`
	Video          *VideoParams `json:"video,omitempty"`
	Audio          *AudioParams `json:"audio,omitempty"`
	Queue          Queue        `json:"queue,omitempty"`
	Priority       Priority     `json:"priority,omitempty"`
	Resources      Resources    `json:"resources"`
	Timeout        Duration     `json:"timeout,omitempty"`
	AcquireTimeout Duration     `json:"acquire_timeout,omitempty"`
	MaxRetries     *int         `json:"max_retries,omitempty"`
	// Hardware is the kind of encoder the job requires: "" (any, software
	// preferred), "software", or a hardware kind ("nvenc", "qsv",
	// "vaapi") whose encoder every rendition then uses.
	Hardware string `json:"hardware,omitempty"`
}

// retryBudget returns how many failed attempts may be retried. A compiled
// spec always sets MaxRetries; a job stored before the leader validated
// every entry may lack it, and then gets no retries rather than a panic.
func (s *JobSpec) retryBudget() int {
	if s.MaxRetries == nil {
		return 0
	}
	return *s.MaxRetries
}

// Input is the job's single input.
type Input struct {
	URL string `json:"url"`
}

// Output is one rendition of the job; Video and Audio override the
// job-wide video and audio parameters for this rendition only (a bitrate
// ladder, or opus for a webm output beside aac ones).
type Output struct {
	URL   string       `json:"url"`
	Video *VideoParams `json:"video,omitempty"`
	Audio *AudioParams `json:"audio,omitempty"`
}

// VideoParams are explicit video settings; zero fields are taken from the
// scenario.
type VideoParams struct {
	Codec       string `json:"codec,omitempty"`
	Width       int    `json:"width,omitempty"`
	Height      int    `json:"height,omitempty"`
	FPS         int    `json:"fps,omitempty"`
	BitrateKbps int    `json:"bitrate_kbps,omitempty"`
}

// AudioParams are explicit audio settings. Codec "none" drops audio.
type AudioParams struct {
	Codec       string `json:"codec,omitempty"`
	BitrateKbps int    `json:"bitrate_kbps,omitempty"`
}

// Resources is what a job reserves on a worker.
type Resources struct {
	CPU      float64 `json:"cpu,omitempty"`
	MemoryMB int     `json:"memory_mb,omitempty"`
}

// Plan is a JobSpec resolved into exactly what a worker runs: presets
// expanded, URLs parsed and checked. It is computed once at submission and
// stored with the job, so later preset changes never alter a submitted job.
type Plan struct {
	Input   PlanInput   `json:"input"`
	Outputs []Rendition `json:"outputs"`
	// Hardware is JobSpec.Hardware: it picks each rendition's encoder
	// (Worker.EncoderFor) and what encoder sessions the job holds.
	Hardware string `json:"hardware,omitempty"`
}

// Input kinds.
const (
	KindTestsrc = "testsrc"
	KindFile    = "file"
	KindHTTP    = "http"
	KindRTMP    = "rtmp"
	KindSRT     = "srt"
)

// PlanInput is a resolved input. For KindFile, Path is relative to the
// tenant's media directory on the worker. For KindTestsrc, Width, Height,
// FPS and DurationSec describe the generated pattern.
type PlanInput struct {
	Kind        string  `json:"kind"`
	URL         string  `json:"url,omitempty"`
	Path        string  `json:"path,omitempty"`
	Width       int     `json:"width,omitempty"`
	Height      int     `json:"height,omitempty"`
	FPS         int     `json:"fps,omitempty"`
	DurationSec float64 `json:"duration_sec,omitempty"`
}

// Rendition is one resolved output.
type Rendition struct {
	Kind      string      `json:"kind"` // KindFile or KindRTMP
	URL       string      `json:"url"`
	Path      string      `json:"path,omitempty"` // tenant-relative, for KindFile
	Container string      `json:"container"`      // ffmpeg muxer name
	Video     VideoParams `json:"video"`
	Audio     AudioParams `json:"audio"`
}

// Codecs returns the distinct video codecs the plan needs, sorted.
func (p *Plan) Codecs() []string {
	var out []string
	for _, r := range p.Outputs {
		if !slices.Contains(out, r.Video.Codec) {
			out = append(out, r.Video.Codec)
		}
	}
	slices.Sort(out)
	return out
}

// Policy is the operator's URL policy applied at submission.
type Policy struct {
	// AllowedHosts lists the hosts (names or IPs, optionally host:port,
	// or CIDR prefixes such as 10.20.0.0/16 that URLs naming an IP in
	// them match) that network inputs and outputs may reach. Empty
	// refuses all. Workers check again what a name resolves to.
	AllowedHosts []string
}

func (p Policy) allows(u *url.URL) bool {
	host := strings.ToLower(u.Hostname())
	ip, ipErr := netip.ParseAddr(host)
	for _, a := range p.AllowedHosts {
		a = strings.ToLower(a)
		if a == host || a == strings.ToLower(u.Host) {
			return true
		}
		if pre, err := netip.ParsePrefix(a); err == nil && ipErr == nil && pre.Contains(ip.Unmap()) {
			return true
		}
	}
	return false
}

// Limits and defaults of job specs.
const (
	MaxOutputs            = 8
	MaxNameLen            = 200
	MaxURLLen             = 2048
	MaxTestsrcDuration    = 3600
	DefaultMaxRetries     = 2
	MaxMaxRetries         = 20
	DefaultTimeout        = Duration(6 * time.Hour)
	DefaultAcquireTimeout = Duration(10 * time.Minute)
	// MaxTimeout bounds a job's run time (a week: long live streams).
	MaxTimeout = Duration(7 * 24 * time.Hour)
	// MaxAcquireTimeout bounds how long a job may wait for a worker.
	MaxAcquireTimeout = Duration(7 * 24 * time.Hour)
	// MinFPS and MaxFPS bound a rendition's frame rate.
	MinFPS, MaxFPS = 1, 120
	// MaxPathComponentLen is the longest file name a job may use (the
	// usual file system limit); MaxPathLen bounds a whole tenant path.
	MaxPathComponentLen = 255
	MaxPathLen          = 1024
)

var (
	heights     = []int{144, 240, 360, 480, 540, 720, 1080, 1440, 2160}
	frameRates  = []int{24, 25, 30, 50, 60}
	videoCodecs = []string{"h264", "h265", "vp9", "av1"}
	scenarioRE  = regexp.MustCompile(`^(\d{3,4})p(\d{2})-([a-z0-9]+)$`)

	// baseKbps is the H.264 bitrate at 30 fps for each preset height.
	baseKbps = map[int]int{144: 200, 240: 400, 360: 800, 480: 1400, 540: 2000,
		720: 2800, 1080: 5000, 1440: 8000, 2160: 16000}
	// codecFactor scales the H.264 bitrate for more efficient codecs.
	codecFactor = map[string]float64{"h264": 1, "h265": 0.6, "vp9": 0.6, "av1": 0.5}

	inputExts = []string{".mp4", ".m4v", ".mov", ".mkv", ".webm", ".ts", ".m2ts",
		".mts", ".flv", ".avi", ".mxf", ".mpg", ".mpeg", ".y4m", ".wav", ".mp3",
		".aac", ".m4a", ".flac", ".ogg", ".opus"}
	// containers maps an output file extension to its muxer.
	containers = map[string]string{".mp4": "mp4", ".m4v": "mp4", ".mov": "mov",
		".mkv": "matroska", ".webm": "webm", ".ts": "mpegts", ".flv": "flv",
		// An HLS output is a playlist; its segments go beside it.
		".m3u8": "hls"}
	// containerCodecs lists the video codecs each muxer accepts.
	containerCodecs = map[string][]string{
		"mp4": videoCodecs, "mov": videoCodecs, "matroska": videoCodecs,
		"webm": {"vp9", "av1"}, "mpegts": {"h264", "h265"}, "flv": {"h264"}, "hls": {"h264", "h265"},
	}
)

// Scenario is a parsed preset name `<height>p<fps>-<codec>`.
type Scenario struct {
	Height int
	FPS    int
	Codec  string
}

// ParseScenario parses a preset such as "1080p30-h264".
func ParseScenario(s string) (Scenario, error) {
	m := scenarioRE.FindStringSubmatch(s)
	if m == nil {
		return Scenario{}, Errorf(CodeUnknownScenario, "scenario %q is not of the form <height>p<fps>-<codec>, e.g. 720p30-h264", s)
	}
	h, _ := strconv.Atoi(m[1])
	fps, _ := strconv.Atoi(m[2])
	sc := Scenario{Height: h, FPS: fps, Codec: m[3]}
	if !slices.Contains(heights, h) {
		return Scenario{}, Errorf(CodeUnknownScenario, "scenario %q: height must be one of %v", s, heights)
	}
	if !slices.Contains(frameRates, fps) {
		return Scenario{}, Errorf(CodeUnknownScenario, "scenario %q: frame rate must be one of %v", s, frameRates)
	}
	if !slices.Contains(videoCodecs, sc.Codec) {
		return Scenario{}, Errorf(CodeUnknownScenario, "scenario %q: codec must be one of %v", s, videoCodecs)
	}
	return sc, nil
}

// LadderKbps returns the preset video bitrate for a codec, height and frame
// rate: the H.264 ladder scaled by codec efficiency and by 1.5 above 30 fps.
func LadderKbps(codec string, height, fps int) int {
	base, ok := baseKbps[height]
	if !ok {
		// Interpolate by pixel count from 720p for non-preset heights.
		base = int(float64(baseKbps[720]) * float64(height*height) / (720 * 720))
	}
	k := float64(base) * codecFactor[codec]
	if fps > 30 {
		k *= 1.5
	}
	return max(100, int(k))
}

// widthFor returns the 16:9 width for a height, rounded to the nearest
// even number (240 → 426, 480 → 854, 720 → 1280).
func widthFor(height int) int {
	return int(math.Round(float64(height)*16/9/2)) * 2
}

// Compile validates the spec, fills in defaults and resolves it into a
// Plan. It is pure: the same spec and policy always give the same result.
// Refusals are *Error with a specific code.
func (s *JobSpec) Compile(pol Policy) (*Plan, error) {
	if err := validText("name", s.Name, MaxNameLen, ""); err != nil {
		return nil, err
	}
	if s.Queue == "" {
		s.Queue = QueueDefault
	}
	if !slices.Contains(Queues, s.Queue) {
		return nil, Errorf(CodeInvalidArgument, "queue %q must be one of live, default, batch", s.Queue)
	}
	if s.Priority == "" {
		s.Priority = PriorityMedium
	}
	if !slices.Contains(Priorities, s.Priority) {
		return nil, Errorf(CodeInvalidArgument, "priority %q must be one of high, medium, low", s.Priority)
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.AcquireTimeout == 0 {
		s.AcquireTimeout = DefaultAcquireTimeout
	}
	if s.Timeout < Duration(time.Second) || s.AcquireTimeout < Duration(time.Second) {
		return nil, Errorf(CodeInvalidArgument, "timeout and acquire_timeout must be at least 1s")
	}
	if s.Timeout > MaxTimeout || s.AcquireTimeout > MaxAcquireTimeout {
		return nil, Errorf(CodeInvalidArgument, "timeout must be at most %s and acquire_timeout at most %s", time.Duration(MaxTimeout), time.Duration(MaxAcquireTimeout))
	}
	if s.MaxRetries == nil {
		n := DefaultMaxRetries
		s.MaxRetries = &n
	}
	if *s.MaxRetries < 0 || *s.MaxRetries > MaxMaxRetries {
		return nil, Errorf(CodeInvalidArgument, "max_retries must be between 0 and %d", MaxMaxRetries)
	}
	if s.Resources.CPU < 0 || s.Resources.CPU > 256 || s.Resources.MemoryMB < 0 || s.Resources.MemoryMB > 1<<20 {
		return nil, Errorf(CodeInvalidArgument, "resources out of range (cpu 0..256, memory_mb 0..1048576)")
	}
	if s.Hardware != HardwareAny && s.Hardware != HardwareSoftware && !slices.Contains(HardwareKinds, s.Hardware) {
		return nil, Errorf(CodeInvalidArgument, "hardware %q must be one of software, nvenc, qsv, vaapi (or empty for any)", s.Hardware)
	}

	base := VideoParams{}
	if s.Scenario != "" {
		sc, err := ParseScenario(s.Scenario)
		if err != nil {
			return nil, err
		}
		base = VideoParams{Codec: sc.Codec, Height: sc.Height, FPS: sc.FPS}
	}
	base = overlay(base, s.Video)
	if base.Codec == "" {
		return nil, Errorf(CodeInvalidArgument, "a scenario (e.g. 720p30-h264) or video.codec is required")
	}

	in, err := compileInput(s.Input.URL, pol, base)
	if err != nil {
		return nil, err
	}
	plan := &Plan{Input: in}

	if len(s.Outputs) == 0 {
		return nil, Errorf(CodeInvalidArgument, "at least one output is required")
	}
	if len(s.Outputs) > MaxOutputs {
		return nil, Errorf(CodeInvalidArgument, "at most %d outputs are allowed", MaxOutputs)
	}
	audio := overlayAudio(AudioParams{BitrateKbps: 128}, s.Audio)
	if err := audio.checkBitrate("audio"); err != nil {
		return nil, err
	}
	for i, o := range s.Outputs {
		oa := overlayAudio(audio, o.Audio)
		err := oa.checkBitrate("audio")
		var r Rendition
		if err == nil {
			r, err = compileOutput(o, overlay(base, o.Video), oa, pol)
		}
		if err != nil {
			var e *Error
			if errors.As(err, &e) {
				e.Message = fmt.Sprintf("outputs[%d]: %s", i, e.Message)
			}
			return nil, err
		}
		for _, prev := range plan.Outputs {
			if prev.URL == r.URL || (r.Kind == KindFile && prev.Path == r.Path) {
				return nil, Errorf(CodeInvalidArgument, "outputs[%d]: duplicate output %q", i, o.URL)
			}
		}
		if r.Kind == KindFile && in.Kind == KindFile && r.Path == in.Path {
			return nil, Errorf(CodeInvalidArgument, "outputs[%d]: output would overwrite the input", i)
		}
		if slices.Contains(HardwareKinds, s.Hardware) && !hardwareEncodes(s.Hardware, r.Video.Codec) {
			return nil, Errorf(CodeInvalidArgument, "outputs[%d]: codec %s has no %s encoder", i, r.Video.Codec, s.Hardware)
		}
		plan.Outputs = append(plan.Outputs, r)
	}
	plan.Hardware = s.Hardware
	return plan, nil
}

// overlayAudio returns base with the fields o sets.
func overlayAudio(base AudioParams, o *AudioParams) AudioParams {
	if o == nil {
		return base
	}
	if o.Codec != "" {
		base.Codec = o.Codec
	}
	if o.BitrateKbps != 0 {
		base.BitrateKbps = o.BitrateKbps
	}
	return base
}

// checkBitrate refuses an audio bitrate out of range; field names the
// parameters in the refusal.
func (a AudioParams) checkBitrate(field string) error {
	if a.BitrateKbps < 8 || a.BitrateKbps > 1024 {
		return Errorf(CodeInvalidArgument, "%s.bitrate_kbps must be between 8 and 1024", field)
	}
	return nil
}

// overlay returns base with the non-zero fields of o applied.
func overlay(base VideoParams, o *VideoParams) VideoParams {
	if o == nil {
		return base
	}
	if o.Codec != "" {
		base.Codec = o.Codec
	}
	if o.Height != 0 {
		base.Height = o.Height
		if o.Width == 0 {
			base.Width = 0 // recomputed from the new height
		}
	}
	if o.Width != 0 {
		base.Width = o.Width
	}
	if o.FPS != 0 {
		base.FPS = o.FPS
	}
	if o.BitrateKbps != 0 {
		base.BitrateKbps = o.BitrateKbps
	}
	return base
}

func completeVideo(v VideoParams) (VideoParams, error) {
	if !slices.Contains(videoCodecs, v.Codec) {
		return v, Errorf(CodeInvalidArgument, "video codec %q must be one of %v", v.Codec, videoCodecs)
	}
	if v.Height == 0 {
		v.Height = 720
	}
	if v.FPS == 0 {
		v.FPS = 30
	}
	if v.Width == 0 {
		v.Width = widthFor(v.Height)
	}
	if v.Width < 16 || v.Height < 16 || v.Width > 7680 || v.Height > 4320 || v.Width%2 != 0 || v.Height%2 != 0 {
		return v, Errorf(CodeInvalidArgument, "video size %dx%d must be even and between 16x16 and 7680x4320", v.Width, v.Height)
	}
	if v.FPS < MinFPS || v.FPS > MaxFPS {
		return v, Errorf(CodeInvalidArgument, "video fps %d must be between %d and %d", v.FPS, MinFPS, MaxFPS)
	}
	if v.BitrateKbps == 0 {
		v.BitrateKbps = LadderKbps(v.Codec, v.Height, v.FPS)
	}
	if v.BitrateKbps < 50 || v.BitrateKbps > 200000 {
		return v, Errorf(CodeInvalidArgument, "video bitrate_kbps %d must be between 50 and 200000", v.BitrateKbps)
	}
	return v, nil
}

func parseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, Errorf(CodeInvalidURL, "url is required")
	}
	if len(raw) > MaxURLLen {
		return nil, Errorf(CodeInvalidURL, "url is longer than %d bytes", MaxURLLen)
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return nil, Errorf(CodeInvalidURL, "url contains control characters")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, Errorf(CodeInvalidURL, "url %q does not parse", raw)
	}
	return u, nil
}

// tenantPath checks a file:// URL and returns its path relative to the
// tenant's media directory. The URL path names a place inside that
// directory: file:///in/a.mp4 is <media-root>/<tenant>/in/a.mp4.
func tenantPath(u *url.URL, exts []string) (string, error) {
	if u.Host != "" && u.Host != "localhost" {
		return "", Errorf(CodeInvalidURL, "file URL must have the form file:///path (got host %q)", u.Host)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", Errorf(CodeInvalidURL, "file URL must not have a query, fragment or user")
	}
	p := u.Path
	if !strings.HasPrefix(p, "/") {
		return "", Errorf(CodeInvalidURL, "file URL path must be absolute within the tenant's media area")
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == ".." || seg == "." || seg == "" || strings.HasPrefix(seg, ".") {
			return "", Errorf(CodeURLNotAllowed, "file path %q leaves or hides in the tenant's media area (no empty, '.', '..' or dot-file segments)", p)
		}
	}
	ext := strings.ToLower(path.Ext(p))
	if !slices.Contains(exts, ext) {
		return "", Errorf(CodeURLNotAllowed, "file %q is not a media file this endpoint accepts (extensions %s)", p, strings.Join(exts, " "))
	}
	if err := validPath(path.Clean(p[1:])); err != nil {
		return "", err
	}
	return path.Clean(p[1:]), nil
}

func compileInput(raw string, pol Policy, v VideoParams) (PlanInput, error) {
	u, err := parseURL(raw)
	if err != nil {
		return PlanInput{}, err
	}
	switch u.Scheme {
	case "testsrc":
		return compileTestsrc(raw, u, v)
	case "file":
		p, err := tenantPath(u, inputExts)
		if err != nil {
			return PlanInput{}, err
		}
		return PlanInput{Kind: KindFile, URL: raw, Path: p}, nil
	case "http", "https", "rtmp", "rtmps", "srt":
		if u.Host == "" {
			return PlanInput{}, Errorf(CodeInvalidURL, "input URL %q has no host", raw)
		}
		if !pol.allows(u) {
			return PlanInput{}, Errorf(CodeURLNotAllowed, "input host %q is not in the operator's allowed hosts", u.Host)
		}
		kind := map[string]string{"http": KindHTTP, "https": KindHTTP, "rtmp": KindRTMP, "rtmps": KindRTMP, "srt": KindSRT}[u.Scheme]
		return PlanInput{Kind: kind, URL: raw}, nil
	default:
		return PlanInput{}, Errorf(CodeInvalidURL, "input scheme %q is not supported (testsrc, file, http, https, rtmp, rtmps, srt)", u.Scheme)
	}
}

func compileTestsrc(raw string, u *url.URL, v VideoParams) (PlanInput, error) {
	in := PlanInput{Kind: KindTestsrc, URL: raw, DurationSec: 10, FPS: v.FPS, Height: v.Height, Width: v.Width}
	if u.Host != "" || (u.Path != "" && u.Path != "/") {
		return in, Errorf(CodeInvalidURL, "testsrc URL takes only query parameters: testsrc://?duration=10&size=1280x720&rate=30")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return in, Errorf(CodeInvalidURL, "testsrc query does not parse")
	}
	for k, vals := range q {
		if len(vals) != 1 {
			return in, Errorf(CodeInvalidURL, "testsrc parameter %q given more than once", k)
		}
		val := vals[0]
		switch k {
		case "duration":
			d, err := strconv.ParseFloat(val, 64)
			if err != nil || !(d > 0 && d <= MaxTestsrcDuration) { // also refuses NaN
				return in, Errorf(CodeInvalidURL, "testsrc duration must be a number of seconds in (0, %d]", MaxTestsrcDuration)
			}
			in.DurationSec = d
		case "size":
			w, h, ok := strings.Cut(val, "x")
			wi, err1 := strconv.Atoi(w)
			hi, err2 := strconv.Atoi(h)
			if !ok || err1 != nil || err2 != nil || wi < 16 || hi < 16 || wi > 7680 || hi > 4320 {
				return in, Errorf(CodeInvalidURL, "testsrc size must be WIDTHxHEIGHT between 16x16 and 7680x4320")
			}
			in.Width, in.Height = wi, hi
		case "rate":
			r, err := strconv.Atoi(val)
			if err != nil || r < 1 || r > 120 {
				return in, Errorf(CodeInvalidURL, "testsrc rate must be an integer between 1 and 120")
			}
			in.FPS = r
		default:
			return in, Errorf(CodeInvalidURL, "unknown testsrc parameter %q (duration, size, rate)", k)
		}
	}
	if in.FPS == 0 {
		in.FPS = 30
	}
	if in.Height == 0 {
		in.Height = 720
	}
	if in.Width == 0 {
		in.Width = widthFor(in.Height)
	}
	return in, nil
}

func compileOutput(o Output, v VideoParams, audio AudioParams, pol Policy) (Rendition, error) {
	u, err := parseURL(o.URL)
	if err != nil {
		return Rendition{}, err
	}
	r := Rendition{URL: o.URL}
	switch u.Scheme {
	case "file":
		exts := make([]string, 0, len(containers))
		for e := range containers {
			exts = append(exts, e)
		}
		slices.Sort(exts)
		p, err := tenantPath(u, exts)
		if err != nil {
			return r, err
		}
		r.Kind, r.Path, r.Container = KindFile, p, containers[strings.ToLower(path.Ext(p))]
	case "rtmp", "rtmps":
		if u.Host == "" {
			return r, Errorf(CodeInvalidURL, "output URL %q has no host", o.URL)
		}
		if !pol.allows(u) {
			return r, Errorf(CodeURLNotAllowed, "output host %q is not in the operator's allowed hosts", u.Host)
		}
		r.Kind, r.Container = KindRTMP, "flv"
	default:
		return r, Errorf(CodeInvalidURL, "output scheme %q is not supported (file, rtmp, rtmps)", u.Scheme)
	}
	if r.Video, err = completeVideo(v); err != nil {
		return r, err
	}
	if !slices.Contains(containerCodecs[r.Container], r.Video.Codec) {
		return r, Errorf(CodeInvalidArgument, "codec %s cannot be written to a %s output (accepts %v)", r.Video.Codec, r.Container, containerCodecs[r.Container])
	}
	r.Audio = audio
	if r.Audio.Codec == "" {
		r.Audio.Codec = "aac"
		if r.Container == "webm" {
			r.Audio.Codec = "opus"
		}
	}
	switch {
	case r.Audio.Codec == "none":
	case r.Audio.Codec == "opus" && r.Container == "flv":
		return r, Errorf(CodeInvalidArgument, "audio codec opus cannot be written to an flv/rtmp output")
	case r.Audio.Codec == "opus" && r.Container == "hls":
		return r, Errorf(CodeInvalidArgument, "audio codec opus cannot be written to an HLS output (its MPEG-TS segments take aac)")
	case r.Audio.Codec == "aac" && r.Container == "webm":
		return r, Errorf(CodeInvalidArgument, "audio codec aac cannot be written to a webm output")
	case r.Audio.Codec != "aac" && r.Audio.Codec != "opus":
		return r, Errorf(CodeInvalidArgument, "audio codec %q must be aac, opus or none", r.Audio.Codec)
	}
	return r, nil
}

// hostPort reports whether s is a valid host, host:port or CIDR prefix
// for a policy.
func hostPort(s string) bool {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr().Zone() == "" && !p.Addr().Is4In6()
	}
	if s == "" || strings.ContainsAny(s, "/?#@ ") {
		return false
	}
	if h, port, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.Atoi(port)
		return h != "" && err == nil && n > 0 && n < 65536
	}
	return !strings.Contains(s, ":") || net.ParseIP(s) != nil
}

// ValidatePolicy checks an operator-supplied policy.
func ValidatePolicy(p Policy) error {
	for _, h := range p.AllowedHosts {
		if !hostPort(h) {
			return fmt.Errorf("allowed host %q is not a host, host:port or CIDR prefix", h)
		}
	}
	return nil
}
