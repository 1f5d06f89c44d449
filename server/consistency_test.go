package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/server"
)

// leaderlessRaft is a node during an election: no read index to be had.
type leaderlessRaft struct{ server.Raft }

func (leaderlessRaft) ReadIndex(ctx context.Context) error {
	return fmt.Errorf("read index: %w", cluster.ErrNoLeader)
}

// serveWith serves e's state through a second API server over raft.
func serveWith(t *testing.T, e *env, raft server.Raft) (*server.Server, *httptest.Server) {
	t.Helper()
	srv, err := server.New(server.Config{FSM: e.fsm, Raft: raft, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return srv, hs
}

// sendRead sends GET path with key and returns the response (body read).
func sendRead(t *testing.T, base, key, path string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp, b.String()
}

// readPath turns a GET route's pattern into a path to request.
func readPath(pattern string) string {
	p := strings.NewReplacer("{id}", "0190a0a0-0000-7000-8000-000000000000").Replace(pattern)
	if strings.HasPrefix(p, "/v1/tenants/") {
		p = strings.Replace(p, "0190a0a0-0000-7000-8000-000000000000", "default", 1)
	}
	return p
}

// TestEveryReadIsLinearizableByDefault: every GET route of the route
// table but health, readiness, metrics, the OpenAPI document (and the
// docs) and the cluster's status passes
// one read barrier before it answers, and says so; ?stale=true passes
// none and says that.
func TestEveryReadIsLinearizableByDefault(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	raft := &countingRaft{Raft: e.node}
	srv, hs := serveWith(t, e, raft)
	local := map[string]bool{"/health": true, "/ready": true, "/metrics": true, "/v1/openapi.json": true, "/v1/docs": true, "/v1/docs/{file}": true, "/v1/cluster/status": true}
	reads := 0
	for _, k := range srv.RouteKeys() {
		method, pattern, _ := strings.Cut(k, " ")
		if method != "GET" {
			continue
		}
		path := readPath(pattern)
		before := raft.readIndex.Load()
		resp, _ := sendRead(t, hs.URL, e.token, path)
		n := raft.readIndex.Load() - before
		mode := resp.Header.Get("X-Ffrtmp-Consistency")
		if local[pattern] {
			if n != 0 || mode != "" {
				t.Errorf("GET %s: %d read barriers, consistency %q; want a local answer", pattern, n, mode)
			}
			continue
		}
		reads++
		if n != 1 || mode != "linearizable" || resp.Header.Get("X-Ffrtmp-Index") == "" {
			t.Errorf("GET %s (%d): %d read barriers, consistency %q, index %q; want 1, linearizable and an index",
				path, resp.StatusCode, n, mode, resp.Header.Get("X-Ffrtmp-Index"))
		}
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		before = raft.readIndex.Load()
		resp, _ = sendRead(t, hs.URL, e.token, path+sep+"stale=true")
		if n := raft.readIndex.Load() - before; n > 1 || resp.Header.Get("X-Ffrtmp-Consistency") != "stale" {
			t.Errorf("GET %s?stale=true: %d read barriers, consistency %q; want stale", pattern, n, resp.Header.Get("X-Ffrtmp-Consistency"))
		}
	}
	if reads < 20 {
		t.Errorf("only %d read routes checked", reads)
	}
	if resp, body := sendRead(t, hs.URL, e.token, "/v1/jobs?stale=maybe"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("stale=maybe: %d %s, want 400", resp.StatusCode, body)
	}
}

// TestReadsWithoutLeader: while no leader can confirm a read index, a
// default read fails with 503 unavailable and Retry-After, and a stale
// read still answers.
func TestReadsWithoutLeader(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	_, hs := serveWith(t, e, leaderlessRaft{e.node})
	resp, body := sendRead(t, hs.URL, e.token, "/v1/jobs")
	var ae apiError
	json.Unmarshal([]byte(body), &ae)
	if resp.StatusCode != http.StatusServiceUnavailable || ae.Error.Code != "unavailable" || resp.Header.Get("Retry-After") == "" {
		t.Errorf("default read without a leader: %d %s (Retry-After %q), want 503 unavailable with Retry-After",
			resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	resp, body = sendRead(t, hs.URL, e.token, "/v1/jobs?stale=true")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Ffrtmp-Consistency") != "stale" {
		t.Errorf("stale read without a leader: %d %s, want 200 stale", resp.StatusCode, body)
	}
}
