package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// apiCall makes one API request to node and decodes a JSON answer into
// out (if not nil), returning the response (body closed).
func apiCall(t *testing.T, node *serverProc, key, method, path string, out any) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+node.httpAddr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s via %s: %v", method, path, node.id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error fsm.Error `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&e)
		t.Fatalf("%s %s via %s: %d %+v", method, path, node.id, resp.StatusCode, e.Error)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s via %s: decode: %v", method, path, node.id, err)
		}
	}
	return resp
}

func headerIndex(t *testing.T, resp *http.Response) uint64 {
	t.Helper()
	i, err := strconv.ParseUint(resp.Header.Get("X-Ffrtmp-Index"), 10, 64)
	if err != nil {
		t.Fatalf("X-Ffrtmp-Index %q: %v", resp.Header.Get("X-Ffrtmp-Index"), err)
	}
	return i
}

// TestReadsSeeAcknowledgedWrites runs, on three real servers, 300 rounds
// of "cancel a job through one node, then at once read it through
// another": the default (linearizable) read shows canceled every time,
// whichever nodes lead and follow. A stale read of the same job is
// labelled stale and may show either state, or not have the job yet. A
// job's event stream resumed on a third node with the last event id
// sends no older state.
func TestReadsSeeAcknowledgedWrites(t *testing.T) {
	c := newTestCluster(t, 3)
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", "http://"+c.nodes[0].httpAddr, "--cluster-key-file", c.keyFile)
	key := c.key()
	client, err := cli.NewClient(c.addrs(c.nodes...), key)
	if err != nil {
		t.Fatal(err)
	}
	spec := &fsm.JobSpec{Scenario: "240p30-h264", Queue: fsm.QueueBatch,
		Input: fsm.Input{URL: "testsrc://?duration=1"}, Outputs: []fsm.Output{{URL: "file:///reads.mp4"}}}
	ctx := context.Background()

	const rounds = 300
	staleOld := 0
	for i := range rounds {
		j, err := client.Rotated(i).SubmitJob(ctx, spec)
		if err != nil {
			t.Fatalf("round %d: submit: %v", i, err)
		}
		a, b := c.nodes[i%3], c.nodes[(i+1)%3]
		var canceled server.Job
		cresp := apiCall(t, a, key, "POST", "/v1/jobs/"+j.ID+"/cancel", &canceled)
		if canceled.State != fsm.JobCanceled {
			t.Fatalf("round %d: cancel via %s answered %s", i, a.id, canceled.State)
		}
		var got server.Job
		resp := apiCall(t, b, key, "GET", "/v1/jobs/"+j.ID, &got)
		if got.State != fsm.JobCanceled {
			t.Fatalf("round %d: job canceled via %s (acknowledged at index %s) reads %s via %s (index %s)",
				i, a.id, cresp.Header.Get("X-Ffrtmp-Index"), got.State, b.id, resp.Header.Get("X-Ffrtmp-Index"))
		}
		if m := resp.Header.Get("X-Ffrtmp-Consistency"); m != "linearizable" {
			t.Fatalf("round %d: default read labelled %q, want linearizable", i, m)
		}
		if hi, ci := headerIndex(t, resp), headerIndex(t, cresp); hi < ci {
			t.Fatalf("round %d: read reflects index %d, before the cancel's %d", i, hi, ci)
		}
		// A stale read may miss the cancel, or the submit itself (not
		// found: a submit answers once the leader applied it, and this
		// node may trail); it says that it is stale.
		stale, m := staleJob(t, c.nodes[(i+2)%3], key, j.ID)
		if m != "stale" {
			t.Fatalf("round %d: stale read labelled %q", i, m)
		}
		if stale == nil || stale.State != fsm.JobCanceled {
			staleOld++
		}
	}
	t.Logf("%d rounds: every default read showed canceled; %d stale reads showed an older state", rounds, staleOld)

	// An event stream resumed on another node from the last event id of
	// a finished job: no job event older than (or equal to) it, only end.
	j, err := client.SubmitJob(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	var canceled server.Job
	apiCall(t, c.nodes[0], key, "POST", "/v1/jobs/"+j.ID+"/cancel", &canceled)
	for _, q := range []string{"", "?stale=true"} {
		events := readEvents(t, c.nodes[1], key, "/v1/jobs/"+j.ID+"/events"+q, canceled.ModifyIndex)
		if len(events) != 1 || events[0] != "end" {
			t.Errorf("events%s resumed at %d via %s: %v, want only end", q, canceled.ModifyIndex, c.nodes[1].id, events)
		}
	}
}

// staleJob reads a job with ?stale=true through node and returns it (nil
// if the node does not have it yet: 404 not_found) and the response's
// consistency label.
func staleJob(t *testing.T, node *serverProc, key, id string) (*server.Job, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+node.httpAddr+"/v1/jobs/"+id+"?stale=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("stale read via %s: %v", node.id, err)
	}
	defer resp.Body.Close()
	label := resp.Header.Get("X-Ffrtmp-Consistency")
	switch resp.StatusCode {
	case http.StatusNotFound:
		return nil, label
	case http.StatusOK:
		var j server.Job
		if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
			t.Fatalf("stale read via %s: decode: %v", node.id, err)
		}
		return &j, label
	}
	t.Fatalf("stale read via %s: status %d", node.id, resp.StatusCode)
	return nil, ""
}

// readEvents reads an SSE stream resumed at lastID until it ends, and
// returns the event names.
func readEvents(t *testing.T, node *serverProc, key, path string, lastID uint64) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+node.httpAddr+path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Last-Event-ID", fmt.Sprint(lastID))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("events: status %d", resp.StatusCode)
	}
	var names []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			names = append(names, name)
			if name == "end" {
				break
			}
		}
	}
	return names
}
