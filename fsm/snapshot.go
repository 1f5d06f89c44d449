package fsm

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Snapshot stream format. Every store writes its snapshot (a Raft
// snapshot and a `cluster snapshot save` backup alike) in one envelope,
// and every read of a snapshot goes through ReadSnapshot:
//
//	magic    8 bytes   "FFRTSNAP"
//	version  2 bytes   big-endian, SnapshotVersion
//	kind     1 byte n, then n bytes: the store kind ("bolt", "postgres")
//	index    8 bytes   big-endian: the applied Raft index the payload holds
//	length   8 bytes   big-endian: the payload's size
//	payload  length bytes, the store's own encoding
//	checksum 32 bytes  SHA-256 of everything before it
//
// The checksum is a trailer so that a store can stream a snapshot whose
// payload it never holds in memory; a reader learns that the stream is
// damaged when it reaches the end, so a store writes the payload aside
// and replaces nothing until ReadSnapshot's payload reader returned EOF.
const (
	// SnapshotVersion is the envelope version this binary writes and reads.
	SnapshotVersion = 1
	snapshotMagic   = "FFRTSNAP"
	maxKindLen      = 32
)

// SnapshotHeader describes a snapshot stream.
type SnapshotHeader struct {
	// Version is the envelope version; 0 for a store's legacy stream that
	// predates the envelope (no checksum).
	Version uint16
	// Kind names the store that wrote the snapshot.
	Kind string
	// Index is the applied Raft index of the state the payload holds.
	Index uint64
	// Length is the payload's size in bytes.
	Length int64
}

// BadSnapshotf returns an error wrapping ErrBadSnapshot.
func BadSnapshotf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadSnapshot, fmt.Sprintf(format, args...))
}

// SnapshotLen returns the number of bytes WriteSnapshot writes for a
// payload of length bytes from a store of kind: what a reader must be
// told before the stream starts (a Raft InstallSnapshot carries it).
func SnapshotLen(kind string, length int64) int64 {
	return int64(len(snapshotMagic)+2+1+len(kind)+8+8) + length + sha256.Size
}

// WriteSnapshot writes h and exactly h.Length bytes of payload in the
// snapshot envelope, and returns the bytes written.
func WriteSnapshot(w io.Writer, h SnapshotHeader, payload io.Reader) (int64, error) {
	if len(h.Kind) == 0 || len(h.Kind) > maxKindLen {
		return 0, fmt.Errorf("write snapshot: bad store kind %q", h.Kind)
	}
	sum := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, sum)}
	var head bytes.Buffer
	head.WriteString(snapshotMagic)
	_ = binary.Write(&head, binary.BigEndian, uint16(SnapshotVersion))
	head.WriteByte(byte(len(h.Kind)))
	head.WriteString(h.Kind)
	_ = binary.Write(&head, binary.BigEndian, h.Index)
	_ = binary.Write(&head, binary.BigEndian, uint64(h.Length))
	if _, err := cw.Write(head.Bytes()); err != nil {
		return cw.n, fmt.Errorf("write snapshot header: %w", err)
	}
	n, err := io.CopyN(cw, payload, h.Length)
	if err != nil {
		return cw.n, fmt.Errorf("write snapshot payload (%d of %d bytes): %w", n, h.Length, err)
	}
	m, err := w.Write(sum.Sum(nil))
	if err != nil {
		return cw.n + int64(m), fmt.Errorf("write snapshot checksum: %w", err)
	}
	return cw.n + int64(m), nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// IsSnapshotEnvelope reports whether r starts with the snapshot envelope's
// magic, without consuming anything. A store reads a stream that does not
// as its legacy format, if it has one.
func IsSnapshotEnvelope(r *bufio.Reader) bool {
	b, _ := r.Peek(len(snapshotMagic))
	return string(b) == snapshotMagic
}

// ReadSnapshot reads the envelope's header from r and checks that the
// snapshot was written by a store of the kind want ("" for any kind). The returned reader
// yields the payload and returns io.EOF only after it has read the whole
// payload, matched the checksum and found nothing after it; any damage is
// an error wrapping ErrBadSnapshot. This is the one parser of snapshots:
// every store's Restore and CheckSnapshot call it.
func ReadSnapshot(r io.Reader, want string) (*SnapshotHeader, io.Reader, error) {
	sum := sha256.New()
	tr := io.TeeReader(r, sum)
	fixed := make([]byte, len(snapshotMagic)+2+1)
	if n, err := io.ReadFull(tr, fixed); err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, fmt.Errorf("read snapshot header: %w", err)
		}
		return nil, nil, BadSnapshotf("the file is %d bytes, too short for a snapshot header", n)
	}
	if string(fixed[:len(snapshotMagic)]) != snapshotMagic {
		return nil, nil, BadSnapshotf("not an ffrtmp snapshot (bad magic)")
	}
	h := &SnapshotHeader{Version: binary.BigEndian.Uint16(fixed[len(snapshotMagic):])}
	if h.Version != SnapshotVersion {
		return nil, nil, BadSnapshotf("snapshot format version %d is not supported (this binary reads version %d)", h.Version, SnapshotVersion)
	}
	kindLen := int(fixed[len(fixed)-1])
	if kindLen == 0 || kindLen > maxKindLen {
		return nil, nil, BadSnapshotf("damaged header (store kind of %d bytes)", kindLen)
	}
	rest := make([]byte, kindLen+16)
	if _, err := io.ReadFull(tr, rest); err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, fmt.Errorf("read snapshot header: %w", err)
		}
		return nil, nil, BadSnapshotf("truncated header")
	}
	h.Kind = string(rest[:kindLen])
	h.Index = binary.BigEndian.Uint64(rest[kindLen:])
	length := binary.BigEndian.Uint64(rest[kindLen+8:])
	if length > 1<<62 {
		return nil, nil, BadSnapshotf("damaged header (payload of %d bytes)", length)
	}
	h.Length = int64(length)
	if want != "" && h.Kind != want {
		return nil, nil, BadSnapshotf("the snapshot is of a %q store and this node uses %q (every node of a cluster, and every snapshot restored into it, must use the same store)", h.Kind, want)
	}
	return h, &payloadReader{r: r, sum: sum, left: h.Length, total: h.Length}, nil
}

// payloadReader reads a snapshot's payload, then checks the trailer.
type payloadReader struct {
	r     io.Reader
	sum   hash.Hash
	left  int64
	total int64
	err   error
}

func (p *payloadReader) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if p.left == 0 {
		p.err = p.finish()
		return 0, p.err
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n, err := p.r.Read(b)
	p.sum.Write(b[:n])
	p.left -= int64(n)
	if err == io.EOF {
		if p.left > 0 {
			p.err = BadSnapshotf("truncated: %d of %d payload bytes", p.total-p.left, p.total)
			return n, p.err
		}
		err = nil
	}
	if err != nil {
		p.err = fmt.Errorf("read snapshot: %w", err)
		return n, p.err
	}
	return n, nil
}

func (p *payloadReader) finish() error {
	trailer := make([]byte, sha256.Size)
	if _, err := io.ReadFull(p.r, trailer); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return BadSnapshotf("truncated: the checksum is missing")
		}
		return fmt.Errorf("read snapshot checksum: %w", err)
	}
	if !bytes.Equal(trailer, p.sum.Sum(nil)) {
		return BadSnapshotf("checksum mismatch: the file is damaged")
	}
	var one [1]byte
	if n, _ := io.ReadFull(p.r, one[:]); n > 0 {
		return BadSnapshotf("unexpected data after the checksum")
	}
	return io.EOF
}
