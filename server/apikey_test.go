package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// countingRaft counts the read barriers the server asks of the node.
type countingRaft struct {
	server.Raft
	readIndex atomic.Int64
}

func (r *countingRaft) ReadIndex(ctx context.Context) error {
	r.readIndex.Add(1)
	return r.Raft.ReadIndex(ctx)
}

// TestAPIKeyChecksum: a key carries a checksum, a mistyped key is refused
// as malformed before any lookup or read barrier, and a key made before
// the checksum existed keeps working.
func TestAPIKeyChecksum(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	raft := &countingRaft{Raft: e.node}
	_, hs := serveWith(t, e, raft)
	get := func(key string) (int, apiError) {
		t.Helper()
		var ae apiError
		status, _, body := probe(t, hs.URL, key, "GET", "/v1/jobs", "")
		if status != http.StatusOK {
			if err := json.Unmarshal([]byte(body), &ae); err != nil {
				t.Fatalf("decode %q: %v", body, err)
			}
		}
		return status, ae
	}

	tok, key := server.NewAPIKey("default", "dora", fsm.RoleViewer, time.Now().UTC(), 0)
	if _, err := e.node.Apply(context.Background(), &fsm.CreateAPIKey{Key: key}); err != nil {
		t.Fatal(err)
	}
	if want := len("ffk_") + 16 + 1 + 43 + 6; len(tok) != want {
		t.Fatalf("key %q has %d characters, want %d", tok, len(tok), want)
	}
	if status, ae := get(tok); status != http.StatusOK {
		t.Fatalf("new key: %d %+v", status, ae)
	}
	legacy := tok[:len(tok)-6] // the format before the checksum
	if status, ae := get(legacy); status != http.StatusOK {
		t.Fatalf("key without checksum: %d %+v", status, ae)
	}

	// flip replaces the character at i with another of the same alphabet.
	flip := func(s string, i int) string {
		c := byte('a')
		if s[i] == 'a' {
			c = 'b'
		}
		return s[:i] + string(c) + s[i+1:]
	}
	idAt, secretAt := len("ffk_")+3, len("ffk_")+16+1+10
	for name, bad := range map[string]string{
		"mistyped secret":   flip(tok, secretAt),
		"mistyped id":       flip(tok, idAt),
		"mistyped checksum": flip(tok, len(tok)-1),
		"truncated":         tok[:len(tok)-1],
		"one too many":      tok + "x",
	} {
		before := raft.readIndex.Load()
		status, ae := get(bad)
		if status != http.StatusUnauthorized || ae.Error.Code != "unauthenticated" || !strings.Contains(ae.Error.Message, "malformed API key") {
			t.Errorf("%s: %d %+v, want 401 unauthenticated malformed API key", name, status, ae)
		}
		if n := raft.readIndex.Load() - before; n != 0 {
			t.Errorf("%s: %d read barriers, want none", name, n)
		}
	}
	// A well-formed key this node does not know is looked up, and the node
	// catches up with the leader once before refusing it.
	unknown, _ := server.NewAPIKey("default", "eve", fsm.RoleViewer, time.Now().UTC(), 0)
	before := raft.readIndex.Load()
	if status, ae := get(unknown); status != http.StatusUnauthorized || ae.Error.Code != "unauthenticated" || strings.Contains(ae.Error.Message, "malformed") {
		t.Errorf("unknown key: %d %+v, want 401 invalid API key", status, ae)
	}
	if n := raft.readIndex.Load() - before; n != 1 {
		t.Errorf("unknown key: %d read barriers, want 1", n)
	}
}
