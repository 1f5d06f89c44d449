package worker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// probeMP4 describes an MP4 or QuickTime file that this worker's ffmpeg
// wrote, as Probe does, by reading its boxes in process instead of
// starting ffprobe. On a busy worker that saves ffprobe's start (about
// 70 ms of CPU, most of it loading its libraries) for every output, on
// the same CPUs as the next job's encode. It checks the file's structure
// while it reads it: the top-level boxes cover the file exactly (a
// truncated file fails), it begins with ftyp and has a movie header and
// media data, and every chunk of the video track lies within the media
// data. It reports the first video track: codec (from its sample entry,
// in the job vocabulary), width and height (of the sample entry), frame
// rate (samples per second of the track), the duration of the longest
// track, and the file's size. An error means this reader cannot vouch
// for the file (also for a layout or codec it does not know); the caller
// then asks ffprobe, which has the last word.
func probeMP4(path string) (*fsm.OutputResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	var moov []byte
	var mdat [][2]int64 // payload ranges [start, end)
	hdr := make([]byte, 16)
	for off, first := int64(0), true; off < size; first = false {
		if _, err := f.ReadAt(hdr[:8], off); err != nil {
			return nil, fmt.Errorf("box header at %d: %w", off, err)
		}
		n, typ, hl := int64(binary.BigEndian.Uint32(hdr)), string(hdr[4:8]), int64(8)
		switch n {
		case 1:
			if _, err := f.ReadAt(hdr[8:16], off+8); err != nil {
				return nil, fmt.Errorf("box %q at %d: %w", typ, off, err)
			}
			n, hl = int64(binary.BigEndian.Uint64(hdr[8:16])), 16
		case 0:
			n = size - off
		}
		if n < hl || n > size-off {
			return nil, fmt.Errorf("box %q at %d: size %d does not fit the file's %d bytes", typ, off, n, size)
		}
		if first && typ != "ftyp" {
			return nil, fmt.Errorf("file begins with box %q, not ftyp", typ)
		}
		switch typ {
		case "moov":
			if moov != nil || n-hl > 64<<20 {
				return nil, errors.New("a second or oversized moov box")
			}
			moov = make([]byte, n-hl)
			if _, err := f.ReadAt(moov, off+hl); err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
		case "mdat":
			mdat = append(mdat, [2]int64{off + hl, off + n})
		}
		off += n
	}
	if moov == nil || len(mdat) == 0 {
		return nil, errors.New("no moov or no mdat box")
	}
	traks, err := boxes(moov)
	if err != nil {
		return nil, fmt.Errorf("moov: %w", err)
	}
	res := &fsm.OutputResult{Path: path, SizeBytes: size}
	found := false
	for _, t := range traks {
		if t.typ != "trak" {
			continue
		}
		tr, err := readTrack(t.data)
		if err != nil {
			return nil, fmt.Errorf("trak: %w", err)
		}
		res.DurationSec = max(res.DurationSec, tr.seconds())
		if tr.handler != "vide" || found {
			continue
		}
		found = true
		codec, ok := mp4Codecs[tr.format]
		if !ok {
			return nil, fmt.Errorf("video sample entry %q is not one this reader knows", tr.format)
		}
		if tr.samples == 0 || tr.duration == 0 || tr.timescale == 0 {
			return nil, errors.New("video track without samples")
		}
		if tr.sampleBytes > span(mdat) {
			return nil, fmt.Errorf("video samples of %d bytes exceed the media data's %d", tr.sampleBytes, span(mdat))
		}
		for _, c := range tr.chunks {
			if !inside(mdat, c) {
				return nil, fmt.Errorf("video chunk at %d is outside the media data", c)
			}
		}
		res.Codec, res.Width, res.Height = codec, tr.width, tr.height
		res.FPS = float64(tr.samples) * float64(tr.timescale) / float64(tr.duration)
	}
	if !found {
		return nil, fmt.Errorf("probe %s: no video stream", path)
	}
	return res, nil
}

// mp4Codecs maps the video sample entries ffmpeg writes to the job
// vocabulary.
var mp4Codecs = map[string]string{"avc1": "h264", "avc3": "h264", "hvc1": "h265", "hev1": "h265", "av01": "av1", "vp09": "vp9"}

type box struct {
	typ  string
	data []byte
}

// boxes splits b into the boxes it holds, which must fill it exactly.
func boxes(b []byte) ([]box, error) {
	var out []box
	for len(b) > 0 {
		if len(b) < 8 {
			return nil, fmt.Errorf("%d stray bytes", len(b))
		}
		n, hl := uint64(binary.BigEndian.Uint32(b)), uint64(8)
		typ := string(b[4:8])
		if n == 1 {
			if len(b) < 16 {
				return nil, fmt.Errorf("box %q: short header", typ)
			}
			n, hl = binary.BigEndian.Uint64(b[8:16]), 16
		} else if n == 0 {
			n = uint64(len(b))
		}
		if n < hl || n > uint64(len(b)) {
			return nil, fmt.Errorf("box %q: size %d does not fit its parent's %d bytes", typ, n, len(b))
		}
		out = append(out, box{typ, b[hl:n]})
		b = b[n:]
	}
	return out, nil
}

// child returns the first box of type typ in b.
func child(b []byte, typ string) ([]byte, error) {
	bs, err := boxes(b)
	if err != nil {
		return nil, err
	}
	for _, x := range bs {
		if x.typ == typ {
			return x.data, nil
		}
	}
	return nil, fmt.Errorf("no %s box", typ)
}

// track is what probeMP4 reads of a trak box.
type track struct {
	handler, format     string
	timescale, duration uint64 // of the media (mdhd)
	width, height       int    // of the sample entry
	samples             uint64
	sampleBytes         int64
	chunks              []int64 // chunk offsets in the file
}

func (t *track) seconds() float64 {
	if t.timescale == 0 {
		return 0
	}
	return float64(t.duration) / float64(t.timescale)
}

// reader reads big-endian fields from a box's payload, remembering the
// first overrun.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n > len(r.b) {
		r.err = errors.New("box too short")
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u16() uint64 { return uint64(binary.BigEndian.Uint16(r.take(2))) }
func (r *reader) u32() uint64 { return uint64(binary.BigEndian.Uint32(r.take(4))) }
func (r *reader) u64() uint64 { return binary.BigEndian.Uint64(r.take(8)) }

// maxEntries bounds a sample table's entry count by what its payload
// can hold, so that a corrupt count cannot make the reader loop long.
func maxEntries(r *reader, n uint64, each int) error {
	if r.err == nil && n > uint64(len(r.b)/each) {
		r.err = fmt.Errorf("%d entries of %d bytes do not fit %d", n, each, len(r.b))
	}
	return r.err
}

func readTrack(trak []byte) (*track, error) {
	t := &track{}
	mdia, err := child(trak, "mdia")
	if err != nil {
		return nil, err
	}
	hdlr, err := child(mdia, "hdlr")
	if err != nil {
		return nil, err
	}
	r := &reader{b: hdlr}
	r.take(8) // version, flags, pre_defined
	t.handler = string(r.take(4))
	mdhd, err := child(mdia, "mdhd")
	if err != nil {
		return nil, err
	}
	r = &reader{b: mdhd}
	if v := r.take(4)[0]; v == 1 {
		r.take(16) // creation and modification times
		t.timescale, t.duration = r.u32(), r.u64()
	} else {
		r.take(8)
		t.timescale, t.duration = r.u32(), r.u32()
	}
	if r.err != nil {
		return nil, fmt.Errorf("mdhd: %w", r.err)
	}
	if t.handler != "vide" {
		return t, nil
	}
	minf, err := child(mdia, "minf")
	if err != nil {
		return nil, err
	}
	stbl, err := child(minf, "stbl")
	if err != nil {
		return nil, err
	}
	tables, err := boxes(stbl)
	if err != nil {
		return nil, fmt.Errorf("stbl: %w", err)
	}
	for _, x := range tables {
		r := &reader{b: x.data}
		r.take(4) // version, flags
		switch x.typ {
		case "stsd":
			if r.u32() == 0 {
				return nil, errors.New("stsd without entries")
			}
			entry, err := boxes(r.b)
			if r.err != nil || err != nil || len(entry) == 0 {
				return nil, fmt.Errorf("stsd: %v %v", r.err, err)
			}
			t.format = entry[0].typ
			e := &reader{b: entry[0].data}
			e.take(24) // reserved, data reference index, pre_defined, reserved
			t.width, t.height = int(e.u16()), int(e.u16())
			if e.err != nil {
				return nil, fmt.Errorf("stsd %s: %w", t.format, e.err)
			}
		case "stts":
			n := r.u32()
			if maxEntries(r, n, 8) != nil {
				return nil, fmt.Errorf("stts: %w", r.err)
			}
			for range n {
				t.samples += r.u32()
				r.u32() // delta
			}
		case "stsz":
			each, n := r.u32(), r.u32()
			if each != 0 {
				t.sampleBytes = int64(each * n)
				break
			}
			if maxEntries(r, n, 4) != nil {
				return nil, fmt.Errorf("stsz: %w", r.err)
			}
			for range n {
				t.sampleBytes += int64(r.u32())
			}
		case "stco", "co64":
			each := 4
			if x.typ == "co64" {
				each = 8
			}
			n := r.u32()
			if maxEntries(r, n, each) != nil {
				return nil, fmt.Errorf("%s: %w", x.typ, r.err)
			}
			for range n {
				if each == 4 {
					t.chunks = append(t.chunks, int64(r.u32()))
				} else {
					t.chunks = append(t.chunks, int64(r.u64()))
				}
			}
		}
	}
	if t.format == "" || len(t.chunks) == 0 {
		return nil, errors.New("video track without a sample description or chunks")
	}
	return t, nil
}

// span returns the bytes in ranges.
func span(ranges [][2]int64) int64 {
	var n int64
	for _, r := range ranges {
		n += r[1] - r[0]
	}
	return n
}

// inside reports whether off lies within one of ranges.
func inside(ranges [][2]int64, off int64) bool {
	for _, r := range ranges {
		if off >= r[0] && off < r[1] {
			return true
		}
	}
	return false
}
