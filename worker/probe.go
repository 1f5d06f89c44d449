package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

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

// ffprobe runs ffprobe on a local file, read only as one of inputFormats,
// and decodes the entries asked for.
func ffprobe(ctx context.Context, ffprobe, path, entries string) (*probeOutput, error) {
	args := []string{"-v", "error", "-protocol_whitelist", "file", "-format_whitelist", inputFormats,
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
	po, err := ffprobe(ctx, ffprobePath, path,
		"format=duration,size:stream=codec_type,codec_name,width,height,avg_frame_rate,duration")
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", path, err)
	}
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
	if n, err := strconv.ParseInt(po.Format.Size, 10, 64); err == nil {
		res.SizeBytes = n
	} else if fi, err := os.Stat(path); err == nil {
		res.SizeBytes = fi.Size()
	}
	return res, nil
}

// ProbeDuration returns the duration in seconds of the media file at path,
// or 0 if ffprobe cannot tell (a stream without a known length). It fails
// if ffprobe cannot read the file as media.
func ProbeDuration(ctx context.Context, ffprobePath, path string) (float64, error) {
	po, err := ffprobe(ctx, ffprobePath, path, "format=duration")
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
