package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

// getWithin does one GET with key and a client deadline, and returns the
// status, the Retry-After header and the body; err is the transport's
// (a deadline passed: the node did not answer in time).
func getWithin(deadline time.Duration, addr, path, key string) (int, string, []byte, error) {
	req, err := http.NewRequest("GET", "http://"+addr+path, nil)
	if err != nil {
		return 0, "", nil, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := (&http.Client{Timeout: deadline}).Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), body, err
}

// startPostgresCluster starts three servers on one PostgreSQL schema,
// reached through a proxy that can cut it, and returns them, the proxy
// and the schema's direct URL.
func startPostgresCluster(t *testing.T) (*testCluster, *cutProxy, string) {
	t.Helper()
	dbURL := pgtest.URL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	c := newTestCluster(t, 3)
	// On failure, bring the database back before the servers stop: a
	// node waiting for the store to take a batch stops only after that.
	t.Cleanup(func() { proxy.setDown(false) })
	for _, s := range c.nodes {
		s.args = append(s.args, "--store", u.String())
	}
	c.startAll()
	return c, proxy, dbURL
}

// TestPostgresOutageReaders cuts the shared PostgreSQL (a TCP proxy that
// resets every connection and refuses new ones) while a submit is being
// applied. On every node, while the database is unreachable: /ready
// answers 503 within its documented 2 s, naming the store; a key check
// and a read of a job in memory answer; a list and a read of a finished
// job, which need the database, answer 503 unavailable with Retry-After.
// When the database is back, the submit made during the outage succeeds
// and every node has everything. Then a follower stopped during a second
// outage stops, and has everything after its restart.
func TestPostgresOutageReaders(t *testing.T) {
	c, proxy, _ := startPostgresCluster(t)
	c.mustCLI("cluster", "init", "--addr", c.addrs(c.nodes...), "--cluster-key-file", c.keyFile)
	key := c.key()
	client, err := cli.NewClient(c.addrs(c.nodes...), key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	spec := &fsm.JobSpec{Scenario: "240p30-h264", Input: fsm.Input{URL: "testsrc://?duration=1"}, Outputs: []fsm.Output{{URL: "file:///r.mp4"}}}
	active, err := client.SubmitJob(ctx, spec) // no worker: stays queued, in memory
	if err != nil {
		t.Fatal(err)
	}
	finished, err := client.SubmitJob(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.JobAction(ctx, finished.ID, "cancel"); err != nil {
		t.Fatal(err)
	}
	// Every node has applied both before the outage.
	for _, s := range c.nodes {
		if got := listAll(t, "http://"+s.httpAddr, key); len(got) != 2 {
			t.Fatalf("%s lists %d jobs before the outage, want 2", s.id, len(got))
		}
	}

	proxy.setDown(true)
	// A submit during the outage: Raft commits it, and every node's FSM
	// waits for the database to apply it.
	var created fsm.Job
	submitted := submitAsync(t, c.nodes[1], key, spec, &created)

	waitPending(t, c, key)
	for _, s := range c.nodes {
		// /ready: 503 with the store check failing, within 2 s.
		deadline := time.Now().Add(30 * time.Second)
		for {
			status, _, b, err := getWithin(2*time.Second, s.httpAddr, "/ready", "")
			if err != nil {
				t.Fatalf("%s: /ready during the outage did not answer within 2s: %v", s.id, err)
			}
			var r struct {
				Checks map[string]string `json:"checks"`
			}
			json.Unmarshal(b, &r)
			if status == http.StatusServiceUnavailable && r.Checks["store"] != "ok" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /ready = %d %s during the outage, want 503 with the store failing", s.id, status, b)
			}
		}
		// A key check and a job in memory: a stale read is answered from
		// memory. A linearizable one answers too where memory holds the
		// committed index (the store's commit is what waits), and where
		// applying waits for a store read first it says so at once: 503
		// unavailable, never a wait on the store.
		status, _, b, err := getWithin(5*time.Second, s.httpAddr, "/v1/jobs/"+active.ID+"?stale=true", key)
		if err != nil || status != http.StatusOK {
			t.Errorf("%s: stale GET active job during the outage = %d %s, %v; want 200", s.id, status, b, err)
		}
		status, retry, b, err := getWithin(2*time.Second, s.httpAddr, "/v1/jobs/"+active.ID, key)
		if err != nil || (status != http.StatusOK && (status != http.StatusServiceUnavailable || retry == "")) {
			t.Errorf("%s: GET active job during the outage = %d (Retry-After %q) %s, %v; want 200, or 503 with Retry-After, within 2s", s.id, status, retry, b, err)
		}
		// Reads that need the database: 503 unavailable, promptly.
		for _, path := range []string{"/v1/jobs", "/v1/jobs/" + finished.ID} {
			status, retry, b, err := getWithin(5*time.Second, s.httpAddr, path, key)
			var e apiErr
			json.Unmarshal(b, &e)
			if err != nil || status != http.StatusServiceUnavailable || e.Error.Code != "unavailable" || retry == "" {
				t.Errorf("%s: GET %s during the outage = %d (Retry-After %q) %s, %v; want 503 unavailable with Retry-After", s.id, path, status, retry, b, err)
			}
		}
	}
	select {
	case code := <-submitted:
		t.Fatalf("the submit during the outage answered %d before the database came back", code)
	default:
	}

	proxy.setDown(false)
	if code := <-submitted; code != http.StatusCreated {
		t.Fatalf("submit during the outage: status %d after the database came back, want 201", code)
	}
	c.waitReady(c.nodes...)
	for _, s := range c.nodes {
		got := listAll(t, "http://"+s.httpAddr, key)
		if len(got) != 3 || got[created.ID] != 1 || got[active.ID] != 1 || got[finished.ID] != 1 {
			t.Errorf("%s lists %v after the outage, want the 3 jobs once each", s.id, got)
		}
	}

	// A second outage, and a follower stopped (SIGTERM) while its FSM
	// waits for the database: it stops, past its store's stop wait
	// (cluster.Node.Shutdown), giving up the entry the database has not
	// taken, and its next start applies that entry from the Raft log.
	// The submit's own answer is not checked: this outage outlasts the
	// time a write waits.
	proxy.setDown(true)
	submitted = submitAsync(t, c.nodes[1], key, spec, new(fsm.Job))
	waitPending(t, c, key)
	var stopped *serverProc
	for _, f := range c.followers(c.leader()) {
		if f != c.nodes[1] {
			stopped = f
		}
	}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		stopped.stop()
	}()
	select {
	case <-exited:
	case <-time.After(time.Minute):
		t.Fatalf("%s did not stop within a minute of SIGTERM while the database was down", stopped.id)
	}
	if code := stopped.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("%s exited %d after SIGTERM during the outage, want 0", stopped.id, code)
	}
	proxy.setDown(false)
	<-submitted
	stopped.start(c.env)
	c.waitReady(c.nodes...)
	want := listAll(t, "http://"+c.nodes[1].httpAddr, key)
	if len(want) != 4 {
		t.Errorf("%s lists %v after the second outage, want 4 jobs", c.nodes[1].id, want)
	}
	for _, s := range c.nodes {
		if got := listAll(t, "http://"+s.httpAddr, key); !maps.Equal(got, want) {
			t.Errorf("%s lists %v after the second outage, want %v", s.id, got, want)
		}
	}
}

// submitAsync submits spec to s without an Idempotency-Key (checking one
// needs the database), decoding the answer into created, and returns the
// channel of its status (0 if it got none).
func submitAsync(t *testing.T, s *serverProc, key string, spec *fsm.JobSpec, created *fsm.Job) <-chan int {
	body, _ := json.Marshal(spec)
	submitted := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", "http://"+s.httpAddr+"/v1/jobs", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
		if err != nil {
			t.Errorf("submit during the outage: %v", err)
			submitted <- 0
			return
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(created)
		submitted <- resp.StatusCode
	}()
	return submitted
}

// waitPending waits until every node's FSM is stuck on an entry:
// committed in Raft, not applied.
func waitPending(t *testing.T, c *testCluster, key string) {
	t.Helper()
	stuck := time.Now().Add(30 * time.Second)
	for n := 0; n < len(c.nodes); {
		status, _, b, err := getWithin(10*time.Second, c.nodes[0].httpAddr, "/v1/cluster/status", key)
		var st server.ClusterStatus
		json.Unmarshal(b, &st)
		n = 0
		for _, m := range st.Members {
			if m.Status != nil && m.Status.CommitIndex > m.Status.FSMIndex {
				n++
			}
		}
		if time.Now().After(stuck) {
			t.Fatalf("the submit is not pending on every node: status %d %s, %v", status, b, err)
		}
		if n < len(c.nodes) {
			time.Sleep(50 * time.Millisecond) // poll interval
		}
	}
}

type apiErr struct {
	Error struct {
		Code string `json:"code"`
	} `json:"error"`
}
