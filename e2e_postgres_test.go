package main

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// cutProxy is a TCP proxy that can cut every connection and refuse new
// ones for a while, standing in for a PostgreSQL outage without stopping
// the real server.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *cutProxy) serve(c net.Conn) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		c.Close()
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	go func() { io.Copy(up, c); up.Close() }()
	io.Copy(c, up)
	c.Close()
}

// setDown cuts (true) or restores (false) the database.
func (p *cutProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// TestClusterPostgresFailoverAndOutage runs three servers on one shared
// PostgreSQL schema, submits jobs from 8 clients round robin, kills the
// leader with SIGKILL, then cuts the database for 20 s: writes stall (no
// acknowledged job is lost), /ready turns false, and everything resumes.
// Afterwards every acknowledged job is in the database exactly once, with
// its tenant, and every node lists it.
func TestClusterPostgresFailoverAndOutage(t *testing.T) {
	c, proxy, dbURL := startPostgresCluster(t)
	c.mustCLI("cluster", "init", "--addr", c.addrs(c.nodes...), "--cluster-key-file", c.keyFile)
	client, err := cli.NewClient(c.addrs(c.nodes...), c.key())
	if err != nil {
		t.Fatal(err)
	}
	spec := &fsm.JobSpec{Scenario: "240p30-h264", Queue: fsm.QueueBatch,
		Input: fsm.Input{URL: "testsrc://?duration=1"}, Outputs: []fsm.Output{{URL: "file:///pg.mp4"}}}

	const total, conc = 600, 8
	const outage = 20 * time.Second
	var (
		acked    sync.Map
		done     atomic.Int64
		failures atomic.Int64
		wg       sync.WaitGroup
	)
	events := make(chan string, 4)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += conc {
				j, err := client.Rotated(i).SubmitJob(context.Background(), spec)
				if err != nil {
					failures.Add(1)
					t.Logf("submit %d: %v", i, err)
					continue
				}
				acked.Store(j.ID, true)
				switch done.Add(1) {
				case total / 4:
					l := c.leader()
					l.kill9()
					events <- "killed " + l.id
				case total / 2:
					proxy.setDown(true)
					events <- "database down"
					go func() {
						up := time.Now().Add(outage)
						// /ready turns false while the store is unreachable.
					poll:
						for time.Now().Before(up) {
							for _, s := range c.nodes {
								if s.running() && !s.ready() {
									events <- "not ready: " + s.id
									break poll
								}
							}
							time.Sleep(100 * time.Millisecond)
						}
						time.Sleep(time.Until(up))
						proxy.setDown(false)
						events <- "database up"
					}()
				}
			}
		}()
	}
	wg.Wait()
	close(events)
	var seen []string
	for e := range events {
		seen = append(seen, e)
	}
	t.Logf("events: %v", seen)
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d submits failed", n)
	}
	notReady := false
	for _, e := range seen {
		if len(e) > 10 && e[:10] == "not ready:" {
			notReady = true
		}
	}
	if !notReady {
		t.Error("no node reported not ready while the database was down")
	}

	var ackedIDs []string
	acked.Range(func(k, _ any) bool { ackedIDs = append(ackedIDs, k.(string)); return true })
	if len(ackedIDs) != total {
		t.Fatalf("%d acknowledged, want %d", len(ackedIDs), total)
	}
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var rows, distinct, defaultTenant int
	if err := conn.QueryRow(context.Background(),
		`SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE tenant_id = 'default') FROM jobs WHERE id = ANY($1)`,
		ackedIDs).Scan(&rows, &distinct, &defaultTenant); err != nil {
		t.Fatal(err)
	}
	if rows != total || distinct != total || defaultTenant != total {
		t.Fatalf("database: %d rows, %d distinct, %d in tenant default; want %d", rows, distinct, defaultTenant, total)
	}
	for _, s := range c.nodes {
		if !s.running() {
			s.start(c.env)
			c.waitReady(s)
		}
		if got := listAll(t, "http://"+s.httpAddr, c.key()); len(got) != total {
			t.Errorf("%s lists %d jobs, want %d", s.id, len(got), total)
		}
	}
}
