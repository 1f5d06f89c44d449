package server_test

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
)

// saveSnapshot downloads a backup through the API.
func (e *env) saveSnapshot() []byte {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.url+"/v1/cluster/snapshot", nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET /v1/cluster/snapshot: %d %v", resp.StatusCode, err)
	}
	return b
}

// TestSnapshotRestoreRefusesBadFiles uploads damaged and foreign files to
// POST /v1/cluster/snapshot on a real node: each is refused with 400
// invalid_snapshot naming what is wrong, and the node keeps its state and
// keeps taking writes; then a good snapshot restores.
func TestSnapshotRestoreRefusesBadFiles(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	before := e.submit(queuedSpec)
	good := e.saveSnapshot()
	after := e.submit(queuedSpec) // not in the snapshot

	random := make([]byte, 64<<10)
	rand.NewChaCha8([32]byte{3}).Read(random)
	flipped := slices.Clone(good)
	flipped[len(flipped)/2] ^= 0x01
	h, payload, err := fsm.ReadSnapshot(bytes.NewReader(good), bolt.Kind)
	if err != nil {
		t.Fatalf("the saved snapshot does not read: %v", err)
	}
	var wrongKind bytes.Buffer
	if _, err := fsm.WriteSnapshot(&wrongKind, fsm.SnapshotHeader{Kind: "postgres", Index: h.Index, Length: h.Length}, payload); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		body []byte
		want string
	}{
		{"Garbage", []byte("not a snapshot\n"), "too short"},
		{"Random", random, "bad magic"},
		{"Truncated", good[:len(good)/2], "truncated"},
		{"BitFlipped", flipped, "checksum mismatch"},
		{"WrongKind", wrongKind.Bytes(), `"postgres" store`},
	}
	for _, c := range cases {
		var ae apiError
		resp := e.do("POST", "/v1/cluster/snapshot", c.body, &ae)
		if resp.StatusCode != http.StatusBadRequest || ae.Error.Code != "invalid_snapshot" || !strings.Contains(ae.Error.Message, c.want) {
			t.Errorf("%s: got %d %s %q, want 400 invalid_snapshot saying %q", c.name, resp.StatusCode, ae.Error.Code, ae.Error.Message, c.want)
		}
		if strings.Contains(ae.Error.Message, e.dataDir) {
			t.Errorf("%s: the error shows a host path: %q", c.name, ae.Error.Message)
		}
		if !e.node.IsLeader() {
			t.Fatalf("%s: the node is no longer the leader", c.name)
		}
		var got fsm.Job
		if resp := e.do("GET", "/v1/jobs/"+after.ID, nil, &got); resp.StatusCode != http.StatusOK || got.ID != after.ID {
			t.Fatalf("%s: the job submitted after the snapshot: %d %+v; want it unchanged", c.name, resp.StatusCode, got)
		}
		e.submit(queuedSpec) // still takes writes
	}

	var ok map[string]any
	if resp := e.do("POST", "/v1/cluster/snapshot", good, &ok); resp.StatusCode != http.StatusOK || ok["restored"] != true {
		t.Fatalf("restore of the good snapshot: %d %v", resp.StatusCode, ok)
	}
	var ae apiError
	if resp := e.do("GET", "/v1/jobs/"+after.ID, nil, &ae); resp.StatusCode != http.StatusNotFound {
		t.Errorf("job submitted after the snapshot: %d after the restore, want 404", resp.StatusCode)
	}
	var got fsm.Job
	if resp := e.do("GET", "/v1/jobs/"+before.ID, nil, &got); resp.StatusCode != http.StatusOK || got.ID != before.ID {
		t.Errorf("job in the snapshot: %d %+v after the restore, want it", resp.StatusCode, got)
	}
	e.submit(queuedSpec)

	// A backup saved before the snapshot envelope (a bare bolt file)
	// still restores.
	_, payload, _ = fsm.ReadSnapshot(bytes.NewReader(good), bolt.Kind)
	legacy, err := io.ReadAll(payload)
	if err != nil {
		t.Fatal(err)
	}
	if resp := e.do("POST", "/v1/cluster/snapshot", legacy, &ok); resp.StatusCode != http.StatusOK {
		t.Fatalf("restore of a bare bolt file (the format before the envelope): %d %v", resp.StatusCode, ok)
	}
	if resp := e.do("GET", "/v1/jobs/"+before.ID, nil, &got); resp.StatusCode != http.StatusOK {
		t.Errorf("job in the legacy backup: %d after its restore, want 200", resp.StatusCode)
	}
}
