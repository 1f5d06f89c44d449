package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// balancer is what a load balancer does with /ready: it checks every node
// every interval and marks it down after fall failed checks in a row, up
// after rise good ones (HAProxy's inter, fall and rise), and hands out the
// nodes that are up in turn.
type balancer struct {
	nodes []*serverProc
	mu    sync.Mutex
	up    []bool
	runs  []int // consecutive checks that disagree with up
	next  atomic.Uint64
}

const (
	checkInterval = 500 * time.Millisecond
	checkFall     = 2
	checkRise     = 2
)

func newBalancer(ctx context.Context, nodes []*serverProc) *balancer {
	b := &balancer{nodes: nodes, up: make([]bool, len(nodes)), runs: make([]int, len(nodes))}
	for i := range nodes {
		b.up[i] = true
		go b.check(ctx, i)
	}
	return b
}

func (b *balancer) check(ctx context.Context, i int) {
	t := time.NewTicker(checkInterval)
	defer t.Stop()
	for {
		ok := b.nodes[i].ready()
		b.mu.Lock()
		if ok == b.up[i] {
			b.runs[i] = 0
		} else if b.runs[i]++; (ok && b.runs[i] >= checkRise) || (!ok && b.runs[i] >= checkFall) {
			b.up[i], b.runs[i] = ok, 0
		}
		b.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pick returns the next node that is up, nil if none is.
func (b *balancer) pick() *serverProc {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := uint64(len(b.nodes))
	start := b.next.Add(1)
	for k := range n {
		if i := (start + k) % n; b.up[i] {
			return b.nodes[i]
		}
	}
	return nil
}

func (b *balancer) isUp(s *serverProc) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, n := range b.nodes {
		if n == s {
			return b.up[i]
		}
	}
	return false
}

// TestRollingRestartFailsNothing restarts all three servers one after the
// other with SIGTERM, as systemctl restart does, while 16 keep-alive HTTP
// clients submit jobs through a balancer that follows /ready and retries
// nothing. A stopping node answers /ready 503, hands over its leadership,
// waits --drain, finishes its requests and closes their connections; a
// follower resends a write that a leader change caught in flight. No
// request may fail, and every acknowledged job must exist exactly once.
func TestRollingRestartFailsNothing(t *testing.T) {
	c := newTestCluster(t, 3)
	for _, s := range c.nodes {
		s.args = append(s.args, "--drain", "2s")
	}
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", "http://"+c.nodes[0].httpAddr, "--cluster-key-file", c.keyFile)
	key := c.key()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lb := newBalancer(ctx, c.nodes)
	type failure struct {
		node string
		err  string
	}
	var (
		mu       sync.Mutex
		acked    = map[string]bool{}
		failures []failure
		sent     atomic.Int64
		wg       sync.WaitGroup
	)
	body := `{"scenario":"240p30-h264","queue":"batch","input":{"url":"testsrc://?duration=1"},"outputs":[{"url":"file:///rolling.mp4"}]}`
	submit := func(hc *http.Client) {
		s := lb.pick()
		if s == nil {
			mu.Lock()
			failures = append(failures, failure{"", "no node is up"})
			mu.Unlock()
			time.Sleep(checkInterval) // a balancer answers 503 itself here
			return
		}
		req, _ := http.NewRequest("POST", "http://"+s.httpAddr+"/v1/jobs", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		sent.Add(1)
		resp, err := hc.Do(req)
		if err != nil {
			mu.Lock()
			failures = append(failures, failure{s.id, err.Error()})
			mu.Unlock()
			return
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var j struct {
			ID string `json:"id"`
		}
		mu.Lock()
		defer mu.Unlock()
		if resp.StatusCode != http.StatusCreated || json.Unmarshal(data, &j) != nil || j.ID == "" {
			failures = append(failures, failure{s.id, fmt.Sprintf("%d %s", resp.StatusCode, data)})
			return
		}
		acked[j.ID] = true
	}
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One keep-alive client each; Go's transport replays no POST.
			hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			defer hc.CloseIdleConnections()
			for ctx.Err() == nil {
				submit(hc)
			}
		}()
	}
	// waitSent waits until n more requests were sent.
	waitSent := func(n int64) {
		t.Helper()
		want := sent.Load() + n
		for deadline := time.Now().Add(60 * time.Second); sent.Load() < want; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("load stalled at %d requests", sent.Load())
			}
		}
	}
	waitSent(200)
	for _, s := range c.nodes {
		t.Logf("restarting %s", s.id)
		s.stop() // SIGTERM, and wait for the process to end
		s.start(c.env)
		c.waitReady(s)
		for deadline := time.Now().Add(30 * time.Second); !lb.isUp(s); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the balancer never took %s back", s.id)
			}
		}
		waitSent(200)
	}
	cancel()
	wg.Wait()

	t.Logf("%d requests, %d acknowledged, %d failed", sent.Load(), len(acked), len(failures))
	for i, f := range failures {
		if i == 10 {
			t.Errorf("… and %d more", len(failures)-10)
			break
		}
		t.Errorf("request to %s failed: %s", f.node, f.err)
	}
	for _, s := range c.nodes {
		seen := listAll(t, "http://"+s.httpAddr, key)
		extra := 0
		for id, n := range seen {
			if n != 1 {
				t.Errorf("%s lists job %s %d times", s.id, id, n)
			}
			if !acked[id] {
				extra++
			}
		}
		for id := range acked {
			if seen[id] == 0 {
				t.Errorf("%s: acknowledged job %s is missing", s.id, id)
			}
		}
		if extra > 0 {
			t.Errorf("%s: %d jobs that no client was told of", s.id, extra)
		}
	}
}
