package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	json "github.com/go-json-experiment/json/v1"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// probeOutput is the part of ffprobe's JSON that Probe reads.
type probeOutput struct {
	Streams []struct {
		CodecType    string `json:"codec_type"`
		CodecName    string `json:"codec_name"`
		Width        int    `json:"width"`
		Height       int    `json:"height"`
		AvgFrameRate string `json:"avg_frame_rate"`
		Duration     string `json:"duration"`
	} `json:"streams"`
	Format struct {
		Duration string `json:"duration"`
		Size     string `json:"size"`
	} `json:"format"`
}

// hlsFormats is the -format_whitelist of the probe of an HLS rendition
// this worker wrote: its playlist and MPEG-TS segments. It is never used
// for an input: a tenant's playlist could name any file or host.
const hlsFormats = "hls,mpegts"

// probeEntries are the ffprobe entries Probe and probeHLS read.
const probeEntries = "format=duration,size:stream=codec_type,codec_name,width,height,avg_frame_rate,duration"

// ffprobe runs ffprobe on a local file, read only as one of formats (a
// -format_whitelist), and decodes the entries asked for.
func ffprobe(ctx context.Context, ffprobe, path, formats, entries string) (*probeOutput, error) {
	args := []string{"-v", "error", "-protocol_whitelist", "file", "-format_whitelist", formats,
		"-show_entries", entries, "-of", "json", "file:" + path}
	out, err := runCapture(ctx, ffprobe, args)
	if err != nil {
		return nil, err
	}
	var po probeOutput
	if err := json.Unmarshal(out, &po); err != nil {
		return nil, fmt.Errorf("decode ffprobe output: %w", err)
	}
	return &po, nil
}

// codecNames maps ffprobe codec names to the job vocabulary where they
// differ.
var codecNames = map[string]string{"hevc": "h265"}

// Probe runs ffprobe on the file at path and describes its first video
// stream: codec (in the job vocabulary, so HEVC is "h265"), width, height,
// frame rate (from avg_frame_rate), duration and size. Path is set to path;
// URL is left empty.
func Probe(ctx context.Context, ffprobePath, path string) (*fsm.OutputResult, error) {
	po, err := ffprobe(ctx, ffprobePath, path, inputFormats, probeEntries)
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", path, err)
	}
	res, err := describe(po, path)
	if err != nil {
		return nil, err
	}
	if n, err := strconv.ParseInt(po.Format.Size, 10, 64); err == nil {
		res.SizeBytes = n
	} else if fi, err := os.Stat(path); err == nil {
		res.SizeBytes = fi.Size()
	}
	return res, nil
}

// describe returns what po says of the first video stream of the media at
// path, without its size.
func describe(po *probeOutput, path string) (*fsm.OutputResult, error) {
	res := &fsm.OutputResult{Path: path, DurationSec: parseSeconds(po.Format.Duration)}
	found := false
	for _, s := range po.Streams {
		if s.CodecType != "video" {
			continue
		}
		res.Codec = s.CodecName
		if c, ok := codecNames[s.CodecName]; ok {
			res.Codec = c
		}
		res.Width, res.Height = s.Width, s.Height
		res.FPS = parseRate(s.AvgFrameRate)
		if res.DurationSec == 0 {
			res.DurationSec = parseSeconds(s.Duration)
		}
		found = true
		break
	}
	if !found {
		return nil, fmt.Errorf("probe %s: no video stream", path)
	}
	return res, nil
}

// hlsTags are the playlist tags the hls muxer writes for a VOD rendition
// of MPEG-TS segments. None of them names another file.
var hlsTags = []string{"#EXTM3U", "#EXT-X-VERSION", "#EXT-X-TARGETDURATION", "#EXT-X-MEDIA-SEQUENCE",
	"#EXT-X-PLAYLIST-TYPE", "#EXT-X-INDEPENDENT-SEGMENTS", "#EXTINF", "#EXT-X-DISCONTINUITY", "#EXT-X-ENDLIST"}

// parsePlaylist returns the segment names of a complete HLS media
// playlist whose segments are named <prefix>_NNNNN.ts, in order. It
// refuses anything else: a tag outside hlsTags (a key, an init section, a
// variant), a URI that is not such a name in the playlist's own
// directory, or a playlist without segments or #EXT-X-ENDLIST.
func parsePlaylist(data []byte, prefix string) ([]string, error) {
	lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	if lines[0] != "#EXTM3U" {
		return nil, errors.New("playlist does not start with #EXTM3U")
	}
	var segs []string
	ended := false
	for _, l := range lines {
		tag, _, _ := strings.Cut(l, ":")
		switch {
		case l == "":
		case ended:
			return nil, fmt.Errorf("playlist has %q after #EXT-X-ENDLIST", l)
		case l == "#EXT-X-ENDLIST":
			ended = true
		case strings.HasPrefix(l, "#EXT"):
			if !slices.Contains(hlsTags, tag) {
				return nil, fmt.Errorf("playlist has unexpected tag %s", tag)
			}
		case strings.HasPrefix(l, "#"): // a comment
		case isSegment(prefix, l):
			segs = append(segs, l)
		default:
			return nil, fmt.Errorf("playlist names %q, not a segment %s_NNNNN.ts beside it", l, prefix)
		}
	}
	if !ended || len(segs) == 0 {
		return nil, errors.New("playlist is incomplete (no segments or no #EXT-X-ENDLIST)")
	}
	return segs, nil
}

// probeHLS describes the HLS rendition whose playlist is at path and whose
// segments, named <prefix>_NNNNN.ts, are beside it: what Probe tells of a
// file, read through the playlist, with SizeBytes the playlist's size plus
// its segments'. It also returns the segment names. The playlist is
// checked with parsePlaylist before ffprobe opens it, so ffprobe reads
// only regular files of that directory.
func probeHLS(ctx context.Context, ffprobePath, path, prefix string) (*fsm.OutputResult, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("probe %s: %w", path, err)
	}
	segs, err := parsePlaylist(data, prefix)
	if err != nil {
		return nil, nil, fmt.Errorf("probe %s: %w", path, err)
	}
	size := int64(len(data))
	for _, name := range segs {
		fi, err := os.Lstat(filepath.Join(filepath.Dir(path), name))
		if err != nil {
			return nil, nil, fmt.Errorf("probe %s: %w", path, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, nil, fmt.Errorf("probe %s: segment %s is not a regular file", path, name)
		}
		size += fi.Size()
	}
	po, err := ffprobe(ctx, ffprobePath, path, hlsFormats, probeEntries)
	if err != nil {
		return nil, nil, fmt.Errorf("probe %s: %w", path, err)
	}
	res, err := describe(po, path)
	if err != nil {
		return nil, nil, err
	}
	res.SizeBytes = size
	return res, segs, nil
}

// ProbeDuration returns the duration in seconds of the media file at path,
// or 0 if ffprobe cannot tell (a stream without a known length). It fails
// if ffprobe cannot read the file as media.
func ProbeDuration(ctx context.Context, ffprobePath, path string) (float64, error) {
	po, err := ffprobe(ctx, ffprobePath, path, inputFormats, "format=duration")
	if err != nil {
		return 0, fmt.Errorf("probe duration of %s: %w", path, err)
	}
	return parseSeconds(po.Format.Duration), nil
}

// parseSeconds parses ffprobe's decimal seconds; N/A and junk give 0.
func parseSeconds(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0
	}
	return f
}

// parseRate parses a rational frame rate such as "30000/1001"; 0/0 gives 0.
func parseRate(s string) float64 {
	num, den, ok := strings.Cut(s, "/")
	n, err1 := strconv.ParseFloat(num, 64)
	if !ok {
		if err1 != nil {
			return 0
		}
		return n
	}
	d, err2 := strconv.ParseFloat(den, 64)
	if err1 != nil || err2 != nil || d == 0 {
		return 0
	}
	return n / d
}
