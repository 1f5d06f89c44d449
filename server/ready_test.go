package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// readyAnswer is /ready's answer.
type readyAnswer struct {
	status int
	header http.Header
	Ready  bool              `json:"ready"`
	Checks map[string]string `json:"checks"`
}

func getReady(t *testing.T, h http.Handler, query string) readyAnswer {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/ready"+query, nil))
	a := readyAnswer{status: rec.Code, header: rec.Header()}
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatalf("/ready%s: %v: %s", query, err, rec.Body)
	}
	return a
}

// waitReady polls /ready until it answers want, or fails after 20 s.
func waitReady(t *testing.T, h http.Handler, query string, want int) readyAnswer {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		a := getReady(t, h, query)
		if a.status == want {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready%s = %d %v, want %d", query, a.status, a.Checks, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReadyRidesOutLeaderLoss: a follower that loses its leader stays
// ready for its grace (it holds writes for the election), is not ready
// past it, and ?strict=true asks for a leader now. Two servers with
// different graces answer for the same follower: when the short grace has
// run out, the long one still holds.
func TestReadyRidesOutLeaderLoss(t *testing.T) {
	t.Parallel()
	n1 := clustertest.Start(t, clustertest.Options{ID: "n1", Bootstrap: true})
	n2 := clustertest.Start(t, clustertest.Options{ID: "n2"})
	if err := n2.Node.Start(context.Background(), cluster.StartOptions{Join: []string{n1.Addr}}); err != nil {
		t.Fatal(err)
	}
	mk := func(grace time.Duration) *server.Server {
		srv, err := server.New(server.Config{FSM: n2.FSM, Raft: n2.Node, Logger: testLogger(t), ReadyGrace: grace})
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	short, long := mk(time.Second), mk(time.Hour)
	for _, srv := range []*server.Server{short, long} {
		waitReady(t, srv, "", 200)
	}
	if a := waitReady(t, long, "?strict=true", 200); a.Checks["leader"] != "ok" {
		t.Errorf("strict /ready with a leader: checks %v, want leader ok", a.Checks)
	}

	n1.Stop() // n2 alone is no quorum: no leader from now on
	a := waitReady(t, short, "", 503)
	if !strings.HasPrefix(a.Checks["leader"], "no leader for") {
		t.Errorf("/ready past the grace: checks %v, want leader \"no leader for …\"", a.Checks)
	}
	a = getReady(t, long, "")
	if a.status != 200 || !a.Ready || !strings.Contains(a.Checks["leader"], "writes are held") {
		t.Errorf("/ready within the grace = %d %v, want 200 with writes held", a.status, a.Checks)
	}
	if a := getReady(t, long, "?strict=true"); a.status != 503 || a.Ready {
		t.Errorf("strict /ready without a leader = %d %v, want 503", a.status, a.Checks)
	}
	rec := httptest.NewRecorder()
	long.ServeHTTP(rec, httptest.NewRequest("GET", "/ready?strict=maybe", nil))
	if rec.Code != 400 {
		t.Errorf("/ready?strict=maybe = %d, want 400", rec.Code)
	}
}

// TestDrainTurnsReadyOff: Drain makes /ready answer 503 at once and for
// good, hands leadership over where there is someone to take it, and
// every response from then on closes its connection.
func TestDrainTurnsReadyOff(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	var ready struct {
		Ready bool `json:"ready"`
	}
	if resp := e.doKey("", "GET", "/ready", nil, &ready); resp.StatusCode != 200 || resp.Header.Get("Connection") == "close" {
		t.Fatalf("/ready before the drain = %d (Connection %q), want 200 keeping the connection", resp.StatusCode, resp.Header.Get("Connection"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.srv.Drain(ctx) // Config.Drain 0: returns once draining
	a := getReady(t, e.srv, "")
	if a.status != 503 || a.Checks["draining"] == "" {
		t.Errorf("/ready while draining = %d %v, want 503 with a draining check", a.status, a.Checks)
	}
	if got := a.header.Get("Connection"); got != "close" {
		t.Errorf("Connection header while draining = %q, want close", got)
	}
	if resp := e.doKey("", "GET", "/health", nil, nil); resp.StatusCode != 200 {
		t.Errorf("/health while draining = %d, want 200 (the node still serves)", resp.StatusCode)
	}
}

// TestFailedLeaveEndsTheDrain: `cluster leave` drains the node first; when
// the removal then fails (a single node cannot hand over its leadership),
// the node stays a member and is ready again.
func TestFailedLeaveEndsTheDrain(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	if resp := e.do("POST", "/v1/cluster/leave", nil, nil); resp.StatusCode == 200 {
		t.Fatalf("leave of the only node = %d, want a refusal", resp.StatusCode)
	}
	if a := getReady(t, e.srv, ""); a.status != 200 || a.Checks["draining"] != "" {
		t.Errorf("/ready after a failed leave = %d %v, want 200", a.status, a.Checks)
	}
}

// TestReadyReportsWorkers: /ready reports how many workers are up; with no
// requirement, none up is a warning and the node stays ready; with
// ReadyRequireWorkers it is ready only once that many are up (draining
// and down workers do not count).
func TestReadyReportsWorkers(t *testing.T) {
	t.Parallel()
	n := clustertest.Start(t, clustertest.Options{ID: "n1", Bootstrap: true})
	mk := func(require int) *server.Server {
		srv, err := server.New(server.Config{FSM: n.FSM, Raft: n.Node, Logger: testLogger(t), ReadyRequireWorkers: require})
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	lenient, strict := mk(0), mk(2)
	type answer struct {
		Workers  server.ReadyWorkers `json:"workers"`
		Warnings map[string]string   `json:"warnings"`
		Checks   map[string]string   `json:"checks"`
	}
	get := func(h http.Handler, wantStatus int) answer {
		t.Helper()
		waitReady(t, h, "", wantStatus)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/ready", nil))
		var a answer
		if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil || rec.Code != wantStatus {
			t.Fatalf("/ready = %d %s (%v), want %d", rec.Code, rec.Body, err, wantStatus)
		}
		return a
	}
	if a := get(lenient, 200); a.Workers.Up != 0 || a.Warnings["workers"] == "" || !strings.HasPrefix(a.Checks["workers"], "warning") {
		t.Errorf("no worker, none required: %+v, want 0 up and a warning", a)
	}
	if a := get(strict, 503); a.Workers.Required != 2 || a.Checks["workers"] != "0 of the 2 required workers up" {
		t.Errorf("no worker, 2 required: %+v", a)
	}
	ctx := context.Background()
	now := time.Now().UTC()
	for _, w := range []fsm.Worker{
		{ID: "w1", Name: "w1", State: fsm.WorkerUp, Incarnation: "1"},
		{ID: "w2", Name: "w2", State: fsm.WorkerUp, Incarnation: "1"},
		{ID: "w3", Name: "w3", State: fsm.WorkerUp, Incarnation: "1"},
	} {
		if _, err := n.Node.Apply(ctx, &fsm.RegisterWorker{Worker: w, At: now}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.Node.Apply(ctx, &fsm.DrainWorker{WorkerID: "w2", Drain: true, At: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Node.Apply(ctx, &fsm.MarkWorkerDown{WorkerID: "w3", Reason: "lease", At: now}); err != nil {
		t.Fatal(err)
	}
	want := server.ReadyWorkers{Up: 1, Draining: 1, Down: 1, Required: 2}
	if a := get(strict, 503); a.Workers != want {
		t.Errorf("workers = %+v, want %+v", a.Workers, want)
	}
	if a := get(lenient, 200); a.Warnings != nil || a.Checks["workers"] != "ok" {
		t.Errorf("one worker up, none required: %+v, want no warning", a)
	}
	w4 := fsm.Worker{ID: "w4", Name: "w4", State: fsm.WorkerUp, Incarnation: "1"}
	if _, err := n.Node.Apply(ctx, &fsm.RegisterWorker{Worker: w4, At: now}); err != nil {
		t.Fatal(err)
	}
	if a := get(strict, 200); a.Workers.Up != 2 || a.Checks["workers"] != "ok" {
		t.Errorf("two workers up, two required: %+v", a)
	}
}
