package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

// TestPoisonSubmitsOnPostgres replays, against three `ffrtmp server`
// processes sharing a real PostgreSQL, the submits that once stopped the
// cluster for good (a NUL in a name or a percent-decoded URL, which jsonb
// refuses) or failed late. Each, sent to every node, gets a typed 4xx;
// afterwards every node still takes a valid submit, and every node sees
// every accepted job.
func TestPoisonSubmitsOnPostgres(t *testing.T) {
	c := newTestCluster(t, 3)
	for _, s := range c.nodes {
		s.args = append(s.args, "--store", pgtest.URL(t))
	}
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", c.addrs(c.nodes...), "--cluster-key-file", c.keyFile)
	key := c.key()

	job := func(in, out, extra string) string {
		return `{"scenario":"240p30-h264","input":{"url":"` + in + `"},"outputs":[{"url":"` + out + `"}]` + extra + `}`
	}
	poison := []struct{ name, body, code string }{
		{"NUL in name", job("testsrc://?duration=1", "file:///a.mp4", `,"name":"x\u0000y"`), "invalid_argument"},
		{"ANSI escape in name", job("testsrc://?duration=1", "file:///a.mp4", `,"name":"\u001b[31mred"`), "invalid_argument"},
		{"percent-encoded NUL in a file URL", job("file:///in%00x.mp4", "file:///a.mp4", ""), "invalid_url"},
		{"percent-encoded NUL in an rtmp URL", job("rtmp://127.0.0.1/live/a%00b", "file:///a.mp4", ""), "invalid_argument"},
		{"300-character file name", job("testsrc://?duration=1", "file:///"+strings.Repeat("n", 300)+".mp4", ""), "invalid_url"},
		{"fps 0", job("testsrc://?duration=1", "file:///a.mp4", `,"video":{"fps":0}`), "invalid_argument"},
		{"timeout 100000h", job("testsrc://?duration=1", "file:///a.mp4", `,"timeout":"100000h"`), "invalid_argument"},
	}
	post := func(s *serverProc, body string) (int, string) {
		req, _ := http.NewRequest("POST", "http://"+s.httpAddr+"/v1/jobs", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("POST to %s: %v", s.id, err)
		}
		defer resp.Body.Close()
		var v struct {
			ID    string     `json:"id"`
			Error *fsm.Error `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&v)
		if v.Error != nil {
			return resp.StatusCode, string(v.Error.Code)
		}
		return resp.StatusCode, v.ID
	}
	var accepted []string
	for _, s := range c.nodes {
		for _, p := range poison {
			if status, code := post(s, p.body); status != http.StatusBadRequest || code != p.code {
				t.Errorf("%s via %s: got %d %s, want 400 %s", p.name, s.id, status, code, p.code)
			}
		}
		status, id := post(s, job("testsrc://?duration=1", "file:///ok-"+s.id+".mp4", `,"name":"ok 🎬 e\u0301"`))
		if status != http.StatusCreated {
			t.Fatalf("valid submit via %s after the poison: status %d (%s)", s.id, status, id)
		}
		accepted = append(accepted, id)
	}
	for _, s := range c.nodes {
		client, err := cli.NewClient("http://"+s.httpAddr, key)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range accepted {
			j, err := client.GetJob(context.Background(), id)
			if err != nil || j.Spec.Name != "ok 🎬 e\u0301" {
				t.Errorf("job %s on %s: %v, %v", id, s.id, j, err)
			}
		}
		if !s.ready() {
			t.Errorf("%s is not ready after the poison submits", s.id)
		}
	}
}
