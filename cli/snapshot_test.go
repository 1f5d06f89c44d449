package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestSnapshotSaveRefusesCutDownload saves snapshots from a server that
// sends a whole one, then one cut short mid-stream: the first is kept, the
// second is refused and leaves no file behind.
func TestSnapshotSaveRefusesCutDownload(t *testing.T) {
	t.Parallel()
	payload := bytes.Repeat([]byte("state "), 10000)
	var whole bytes.Buffer
	if _, err := fsm.WriteSnapshot(&whole, fsm.SnapshotHeader{Kind: "bolt", Index: 7, Length: int64(len(payload))}, bytes.NewReader(payload)); err != nil {
		t.Fatal(err)
	}
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	c, err := NewClient(srv.URL, "key")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := Output{W: io.Discard}

	body = whole.Bytes()
	if err := SnapshotSave(context.Background(), c, out, filepath.Join(dir, "whole.snap")); err != nil {
		t.Fatalf("save of a whole snapshot: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "whole.snap")); !bytes.Equal(got, whole.Bytes()) {
		t.Errorf("saved %d bytes, want the %d sent", len(got), whole.Len())
	}

	body = whole.Bytes()[:whole.Len()-100]
	err = SnapshotSave(context.Background(), c, out, filepath.Join(dir, "cut.snap"))
	if !errors.Is(err, fsm.ErrBadSnapshot) {
		t.Fatalf("save of a cut snapshot = %v, want fsm.ErrBadSnapshot", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("after the refused save the directory holds %d files, want only whole.snap", len(entries))
	}
}
