package fsm_test

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/ffrtmp/ffrtmp/fsm"
)

func envelope(t testing.TB, kind string, index uint64, payload []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	n, err := fsm.WriteSnapshot(&b, fsm.SnapshotHeader{Kind: kind, Index: index, Length: int64(len(payload))}, bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(b.Len()) {
		t.Fatalf("WriteSnapshot reported %d bytes, wrote %d", n, b.Len())
	}
	return b.Bytes()
}

func TestReadSnapshot(t *testing.T) {
	t.Parallel()
	payload := bytes.Repeat([]byte("payload "), 1000)
	good := envelope(t, "bolt", 42, payload)
	h, r, err := fsm.ReadSnapshot(bytes.NewReader(good), "bolt")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(iotest.OneByteReader(r))
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("payload: %d bytes, %v; want the %d written", len(got), err, len(payload))
	}
	if *h != (fsm.SnapshotHeader{Version: fsm.SnapshotVersion, Kind: "bolt", Index: 42, Length: int64(len(payload))}) {
		t.Errorf("header = %+v", h)
	}
	if _, _, err := fsm.ReadSnapshot(bytes.NewReader(good), ""); err != nil {
		t.Errorf("ReadSnapshot of any kind: %v", err)
	}

	// A failing reader is an I/O error, not a damaged snapshot.
	_, _, err = fsm.ReadSnapshot(iotest.ErrReader(errors.New("connection reset")), "bolt")
	if err == nil || errors.Is(err, fsm.ErrBadSnapshot) {
		t.Errorf("ReadSnapshot of a failing reader = %v, want an I/O error", err)
	}
	_, r, _ = fsm.ReadSnapshot(io.MultiReader(bytes.NewReader(good[:100]), iotest.ErrReader(errors.New("connection reset"))), "bolt")
	if _, err := io.ReadAll(r); err == nil || errors.Is(err, fsm.ErrBadSnapshot) {
		t.Errorf("payload of a failing reader = %v, want an I/O error", err)
	}
}

// FuzzReadSnapshot feeds arbitrary streams to ReadSnapshot: it never
// panics, and a stream it reads to the end is exactly an envelope of the
// payload it returned.
func FuzzReadSnapshot(f *testing.F) {
	f.Add(envelope(f, "bolt", 7, []byte("state")))
	f.Add(envelope(f, "postgres", 1, nil))
	f.Add([]byte("FFRTSNAP"))
	f.Add([]byte("not a snapshot"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, r, err := fsm.ReadSnapshot(bytes.NewReader(b), "")
		if err != nil {
			if !errors.Is(err, fsm.ErrBadSnapshot) {
				t.Fatalf("error %v does not wrap fsm.ErrBadSnapshot", err)
			}
			return
		}
		payload, err := io.ReadAll(r)
		if err != nil {
			if !errors.Is(err, fsm.ErrBadSnapshot) {
				t.Fatalf("payload error %v does not wrap fsm.ErrBadSnapshot", err)
			}
			return
		}
		if again := envelope(t, h.Kind, h.Index, payload); !bytes.Equal(again, b) {
			t.Fatalf("accepted a stream that is not the envelope of its payload")
		}
	})
}
