package worker

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Encoders maps a video codec ("h264", "h265", "vp9", "av1") to the ffmpeg
// encoder this worker uses for it.
type Encoders map[string]string

// codecs lists the video codecs a plan may ask for.
var codecs = []string{"h264", "h265", "vp9", "av1"}

// muxers lists the ffmpeg muxers a rendition may name.
var muxers = []string{"mp4", "mov", "matroska", "webm", "mpegts", "flv", "hls"}

// inputFormats is the -format_whitelist of every input that is not
// generated: the demuxers of the media files a plan may name. It keeps
// ffmpeg from reading a file as a playlist (hls, concat…) that would make
// it open other files or hosts than the one the plan names.
const inputFormats = "mov,matroska,mpegts,flv,live_flv,avi,mxf,mpeg,yuv4mpegpipe,wav,mp3,aac,flac,ogg"

const (
	// probeTimeout bounds one test encode.
	probeTimeout = 10 * time.Second
	// probeParallel bounds how many test encodes run at once.
	probeParallel = 2
	// vaapiDevice is the DRM render node VAAPI encoders use.
	vaapiDevice = "/dev/dri/renderD128"
	// netTimeoutUS is ffmpeg's -rw_timeout for network inputs and outputs,
	// in microseconds.
	netTimeoutUS = "15000000"
	// hlsSegmentSeconds is the target length of an HLS segment; every
	// segment but the last is this long because a keyframe starts each.
	hlsSegmentSeconds = 4
)

// Hardware encoder families.
const (
	famSoftware = ""
	famNVENC    = "nvenc"
	famQSV      = "qsv"
	famVAAPI    = "vaapi"
)

// family returns the hardware family of an encoder, or famSoftware.
func family(encoder string) string {
	switch {
	case strings.HasSuffix(encoder, "_nvenc"):
		return famNVENC
	case strings.HasSuffix(encoder, "_qsv"):
		return famQSV
	case strings.HasSuffix(encoder, "_vaapi"):
		return famVAAPI
	}
	return famSoftware
}

// hwDeviceArgs returns the global options that create the device a
// hardware family uploads frames to.
func hwDeviceArgs(fam string) []string {
	switch fam {
	case famQSV:
		return []string{"-init_hw_device", "qsv=hw", "-filter_hw_device", "hw"}
	case famVAAPI:
		return []string{"-vaapi_device", vaapiDevice}
	}
	return nil
}

// pixelFilter returns the end of a video filter chain that hands frames to
// an encoder of the given family in a format it takes.
func pixelFilter(fam string) string {
	switch fam {
	case famQSV:
		return "format=nv12,hwupload=extra_hw_frames=64"
	case famVAAPI:
		return "format=nv12,hwupload"
	}
	return "format=yuv420p"
}

// ProbeEncoders runs a tiny real test encode with every encoder that
// fsm.EncodersFor names for any codec, hardware ones included, and returns
// the names of those that worked, sorted. Each probe is bounded by a short
// timeout and at most two run at once; a failed probe only leaves its
// encoder out. The error is non-nil only if ffmpeg cannot be found or ctx
// ends.
func ProbeEncoders(ctx context.Context, ffmpeg string) ([]string, error) {
	if _, err := exec.LookPath(ffmpeg); err != nil {
		return nil, fmt.Errorf("probe encoders: %w", err)
	}
	var names []string
	for _, c := range codecs {
		for _, e := range fsm.EncodersFor(c) {
			if !slices.Contains(names, e) {
				names = append(names, e)
			}
		}
	}
	ok := make([]bool, len(names))
	sem := make(chan struct{}, probeParallel)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			err := probeEncoder(ctx, ffmpeg, name)
			if err != nil {
				slog.Debug("encoder probe failed", "encoder", name, "err", err)
			}
			ok[i] = err == nil
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("probe encoders: %w", err)
	}
	var found []string
	for i, name := range names {
		if ok[i] {
			found = append(found, name)
		}
	}
	slices.Sort(found)
	return found, nil
}

// probeEncoder encodes two small frames with encoder and discards them.
func probeEncoder(ctx context.Context, ffmpeg, encoder string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	fam := family(encoder)
	args := []string{"-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"}
	args = append(args, hwDeviceArgs(fam)...)
	args = append(args,
		"-f", "lavfi", "-i", "testsrc=size=256x144:rate=10",
		"-frames:v", "2", "-an",
		"-vf", pixelFilter(fam),
		"-c:v", encoder, "-b:v", "200k",
		"-f", "null", "-")
	if _, err := runCapture(ctx, ffmpeg, args); err != nil {
		return fmt.Errorf("probe %s: %w", encoder, err)
	}
	return nil
}

// Choose picks, for every codec, the first encoder of fsm.EncodersFor(codec)
// that is in available, so software encoders win over hardware ones. Codecs
// with no available encoder are absent from the result.
func Choose(available []string) Encoders {
	enc := Encoders{}
	for _, c := range codecs {
		for _, e := range fsm.EncodersFor(c) {
			if slices.Contains(available, e) {
				enc[c] = e
				break
			}
		}
	}
	return enc
}

// BuildArgs returns ffmpeg's argv, without the program name, for plan.
// input is the absolute host path of a file input and is ignored for other
// inputs; outputs[i] is the absolute host path to write rendition i to when
// it is a file output and is ignored for RTMP outputs, which go to the
// rendition's URL. threads > 0 adds -threads N to every output encoder.
//
// dials says how ffmpeg reaches each network URL (NetGuard.Dials): a
// network input or RTMP output without an entry is refused with
// fsm.CodeInternal, so ffmpeg never connects to an address nobody checked.
//
// The argv is meant for exec, never a shell. Apart from the host paths and
// the URLs already validated into the plan, nothing in it comes from a
// client. If enc has no usable encoder for a codec the plan needs, the error
// is an *fsm.Error with code fsm.CodeNoCapableWorker.
func BuildArgs(plan *fsm.Plan, enc Encoders, input string, outputs []string, threads int, dials Dials) ([]string, error) {
	if plan == nil || len(plan.Outputs) == 0 {
		return nil, fsm.Errorf(fsm.CodeInvalidArgument, "plan has no outputs")
	}
	hw := famSoftware
	for _, c := range plan.Codecs() {
		e := enc[c]
		if e == "" {
			return nil, fsm.Errorf(fsm.CodeNoCapableWorker, "this worker has no encoder for video codec %q", c)
		}
		if !slices.Contains(fsm.EncodersFor(c), e) {
			return nil, fsm.Errorf(fsm.CodeNoCapableWorker, "encoder %q does not produce video codec %q", e, c)
		}
		switch f := family(e); {
		case f != famQSV && f != famVAAPI:
		case hw == famSoftware:
			hw = f
		case hw != f:
			return nil, fsm.Errorf(fsm.CodeNoCapableWorker, "this worker cannot mix %s and %s encoders in one job", hw, f)
		}
	}

	args := []string{"-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", "-progress", "pipe:1", "-y"}
	args = append(args, hwDeviceArgs(hw)...)

	in, err := inputArgs(plan, input, dials)
	if err != nil {
		return nil, err
	}
	args = append(args, in...)

	audioMap := "0:a:0?"
	if plan.Input.Kind == fsm.KindTestsrc {
		audioMap = "1:a:0"
	}
	for i, r := range plan.Outputs {
		out, err := renditionArgs(r, enc[r.Video.Codec], audioMap, threads)
		if err != nil {
			return nil, fmt.Errorf("outputs[%d]: %w", i, err)
		}
		args = append(args, out...)
		switch r.Kind {
		case fsm.KindFile:
			if i >= len(outputs) || !filepath.IsAbs(outputs[i]) {
				return nil, fsm.Errorf(fsm.CodeInternal, "outputs[%d]: no absolute host path for a file output", i)
			}
			if r.Container == "hls" {
				hls, err := hlsArgs(outputs[i], segmentPrefix(r.Path))
				if err != nil {
					return nil, fmt.Errorf("outputs[%d]: %w", i, err)
				}
				args = append(args, hls...)
			}
			args = append(args, "-protocol_whitelist", "file", "-f", r.Container, "file:"+outputs[i])
		case fsm.KindRTMP:
			d, err := dialFor(dials, r.URL, "rtmp", "rtmps")
			if err != nil {
				return nil, fmt.Errorf("outputs[%d]: %w", i, err)
			}
			args = append(args, "-protocol_whitelist", "rtmp,rtmps,tcp,tls", "-rw_timeout", netTimeoutUS)
			args = append(args, d.Opts...)
			args = append(args, "-f", r.Container, d.URL)
		default:
			return nil, fsm.Errorf(fsm.CodeInvalidArgument, "outputs[%d]: unsupported output kind %q", i, r.Kind)
		}
	}
	return args, nil
}

// hlsArgs returns the options of the hls muxer for a playlist written at
// the absolute path playlist, with its segments beside it named
// <prefix>_NNNNN.ts. ffmpeg reads '%' in the segment path as a pattern
// (and "%v" in either path as a variant), so a directory holding one is
// refused.
func hlsArgs(playlist, prefix string) ([]string, error) {
	dir := filepath.Dir(playlist)
	if strings.Contains(dir, "%") {
		return nil, fsm.Errorf(fsm.CodeInvalidArgument, "an HLS output cannot be written to a directory whose path contains '%%'")
	}
	if prefix == "" {
		return nil, fsm.Errorf(fsm.CodeInvalidArgument, "an HLS output needs a playlist file name")
	}
	return []string{"-hls_time", strconv.Itoa(hlsSegmentSeconds), "-hls_playlist_type", "vod",
		"-hls_segment_type", "mpegts", "-hls_flags", "independent_segments",
		"-hls_segment_filename", "file:" + filepath.Join(dir, prefix+"_%05d.ts")}, nil
}

// segmentPrefix returns the name an HLS rendition's segments start with:
// the playlist's file name without its extension, with every byte other
// than an ASCII letter, digit, '-' or '_' replaced by '_'. Segment names
// are written into the playlist as relative URIs, so they keep to
// characters that need no escaping there or in ffmpeg's patterns.
func segmentPrefix(playlist string) string {
	base := path.Base(playlist)
	base = strings.TrimSuffix(base, path.Ext(base))
	b := []byte(base)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// isSegment reports whether name is an HLS segment name of prefix:
// <prefix>_ followed by at least five digits and .ts.
func isSegment(prefix, name string) bool {
	rest, ok := strings.CutPrefix(name, prefix+"_")
	if !ok {
		return false
	}
	num, ok := strings.CutSuffix(rest, ".ts")
	return ok && len(num) >= 5 && strings.Trim(num, "0123456789") == ""
}

// needsAudio reports whether any rendition of plan carries audio.
func needsAudio(plan *fsm.Plan) bool {
	return slices.ContainsFunc(plan.Outputs, func(r fsm.Rendition) bool { return r.Audio.Codec != "none" })
}

// inputArgs returns the options and -i of plan's input.
func inputArgs(plan *fsm.Plan, input string, dials Dials) ([]string, error) {
	in := plan.Input
	// A generated or stored input sent to a live RTMP output is read at
	// its native rate, as a live source would deliver it.
	var re []string
	if slices.ContainsFunc(plan.Outputs, func(r fsm.Rendition) bool { return r.Kind == fsm.KindRTMP }) {
		re = []string{"-re"}
	}
	switch in.Kind {
	case fsm.KindTestsrc:
		if in.Width <= 0 || in.Height <= 0 || in.FPS <= 0 || in.DurationSec <= 0 {
			return nil, fsm.Errorf(fsm.CodeInvalidArgument, "testsrc input needs a size, rate and duration")
		}
		dur := strconv.FormatFloat(in.DurationSec, 'f', -1, 64)
		args := append(slices.Clone(re), "-f", "lavfi", "-i",
			fmt.Sprintf("testsrc2=size=%dx%d:rate=%d:duration=%s", in.Width, in.Height, in.FPS, dur))
		if needsAudio(plan) {
			args = append(args, re...)
			args = append(args, "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000:duration="+dur)
		}
		return args, nil
	case fsm.KindFile:
		if !filepath.IsAbs(input) {
			return nil, fsm.Errorf(fsm.CodeInternal, "no absolute host path for the file input")
		}
		args := []string{"-protocol_whitelist", "file", "-format_whitelist", inputFormats}
		return append(append(args, re...), "-i", "file:"+input), nil
	case fsm.KindHTTP:
		return networkInput(dials, in.URL, "http,https,tcp,tls,crypto", "http", "https")
	case fsm.KindRTMP:
		return networkInput(dials, in.URL, "rtmp,rtmps,tcp,tls", "rtmp", "rtmps")
	case fsm.KindSRT:
		return networkInput(dials, in.URL, "srt,udp", "srt")
	}
	return nil, fsm.Errorf(fsm.CodeInvalidArgument, "unsupported input kind %q", in.Kind)
}

// networkInput returns the options and -i of a network input.
func networkInput(dials Dials, raw, whitelist string, schemes ...string) ([]string, error) {
	d, err := dialFor(dials, raw, schemes...)
	if err != nil {
		return nil, err
	}
	args := []string{"-protocol_whitelist", whitelist, "-format_whitelist", inputFormats, "-rw_timeout", netTimeoutUS}
	return append(append(args, d.Opts...), "-i", d.URL), nil
}

// dialFor returns how ffmpeg reaches the network URL raw of one of schemes.
func dialFor(dials Dials, raw string, schemes ...string) (Dial, error) {
	if err := checkScheme(raw, schemes...); err != nil {
		return Dial{}, err
	}
	d, ok := dials[raw]
	if !ok {
		return Dial{}, fsm.Errorf(fsm.CodeInternal, "no checked address for %s", raw)
	}
	if err := checkScheme(d.URL, schemes...); err != nil {
		return Dial{}, err
	}
	return d, nil
}

// checkScheme refuses a URL whose scheme is not one of schemes. The plan's
// URLs were validated at submission; this keeps a corrupt plan from
// reaching ffmpeg as an option or another protocol.
func checkScheme(raw string, schemes ...string) error {
	u, err := url.Parse(raw)
	if err != nil || !slices.Contains(schemes, u.Scheme) || u.Host == "" {
		return fsm.Errorf(fsm.CodeInvalidURL, "URL %q is not a %s URL", raw, strings.Join(schemes, "/"))
	}
	return nil
}

// renditionArgs returns the per-output options of r up to, not including,
// the muxer and destination.
func renditionArgs(r fsm.Rendition, encoder, audioMap string, threads int) ([]string, error) {
	v := r.Video
	if v.Width <= 0 || v.Height <= 0 || v.FPS <= 0 || v.BitrateKbps <= 0 {
		return nil, fsm.Errorf(fsm.CodeInvalidArgument, "video needs a size, fps and bitrate")
	}
	if !slices.Contains(muxers, r.Container) {
		return nil, fsm.Errorf(fsm.CodeInvalidArgument, "unsupported container %q", r.Container)
	}
	args := []string{"-map", "0:v:0"}
	if r.Audio.Codec != "none" {
		args = append(args, "-map", audioMap)
	}
	filter := fmt.Sprintf("scale=%[1]d:%[2]d:force_original_aspect_ratio=decrease:force_divisible_by=2,"+
		"pad=%[1]d:%[2]d:(ow-iw)/2:(oh-ih)/2,setsar=1,fps=%[3]d,%[4]s",
		v.Width, v.Height, v.FPS, pixelFilter(family(encoder)))
	kbps := strconv.Itoa(v.BitrateKbps) + "k"
	// An HLS segment must start with a keyframe, so its GOPs have a fixed
	// length that divides the segment length.
	hls := r.Container == "hls"
	gop := 2 * v.FPS
	if hls {
		gop = hlsSegmentSeconds * v.FPS
	}
	args = append(args, "-vf", filter, "-c:v", encoder)
	args = append(args, encoderArgs(encoder, hls)...)
	if v.Codec == "h265" && (r.Container == "mp4" || r.Container == "mov") {
		args = append(args, "-tag:v", "hvc1")
	}
	args = append(args, "-b:v", kbps)
	// SVT-AV1 refuses a maximum rate equal to the target; its VBR mode
	// keeps to the target on its own.
	if encoder != "libsvtav1" {
		args = append(args, "-maxrate", kbps)
	}
	args = append(args, "-bufsize", strconv.Itoa(2*v.BitrateKbps)+"k", "-g", strconv.Itoa(gop))
	if threads > 0 {
		args = append(args, "-threads", strconv.Itoa(threads))
	}

	abr := r.Audio.BitrateKbps
	if abr <= 0 {
		abr = 128
	}
	switch r.Audio.Codec {
	case "none":
		args = append(args, "-an")
	case "aac", "opus":
		codec := map[string]string{"aac": "aac", "opus": "libopus"}[r.Audio.Codec]
		args = append(args, "-c:a", codec, "-b:a", strconv.Itoa(abr)+"k", "-ar", "48000", "-ac", "2")
	default:
		return nil, fsm.Errorf(fsm.CodeInvalidArgument, "unsupported audio codec %q", r.Audio.Codec)
	}

	switch {
	case r.Container == "mp4" || r.Container == "mov":
		args = append(args, "-movflags", "+faststart")
	case r.Container == "flv" && r.Kind == fsm.KindRTMP:
		args = append(args, "-flvflags", "no_duration_filesize")
	}
	return args, nil
}

// encoderArgs returns speed-oriented settings for an encoder. fixedGOP
// turns off the scene-cut keyframes and open GOPs of x264 and x265, so
// that keyframes come exactly every -g frames and each closes the GOP
// before it.
func encoderArgs(encoder string, fixedGOP bool) []string {
	switch {
	case encoder == "libx264" && fixedGOP:
		return []string{"-preset", "veryfast", "-sc_threshold", "0"}
	case encoder == "libx265" && fixedGOP:
		return []string{"-preset", "ultrafast", "-x265-params", "log-level=error:scenecut=0:open-gop=0"}
	}
	switch encoder {
	case "libx264":
		return []string{"-preset", "veryfast"}
	case "libx265":
		return []string{"-preset", "ultrafast", "-x265-params", "log-level=error"}
	case "libvpx-vp9":
		return []string{"-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1"}
	case "libsvtav1":
		return []string{"-preset", "12"}
	case "libaom-av1":
		return []string{"-cpu-used", "8", "-row-mt", "1", "-usage", "realtime"}
	}
	switch family(encoder) {
	case famNVENC:
		return []string{"-preset", "p4"}
	case famQSV:
		return []string{"-preset", "veryfast"}
	case famVAAPI:
		return []string{"-rc_mode", "VBR"}
	}
	return nil
}
