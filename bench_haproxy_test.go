package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkHAProxyFailover measures what clients behind HAProxy see of a
// rolling restart and of a leader kill -9, against a baseline of the
// same load without faults in the same run: three nodes (default
// settings, --drain 5s) behind HAProxy with packaging/haproxy/ffrtmp.cfg,
// 16 keep-alive clients submitting jobs over TLS, as TestHAProxyFailover
// does. Run it once, without the race detector:
//
//	go test -run '^$' -bench HAProxyFailover -benchtime 1x .
//
// docs/BENCHMARKS.md ("Failover behind a load balancer") has the results.
func BenchmarkHAProxyFailover(b *testing.B) {
	raceBinary = false // measure the binary users run
	c, h, key := haproxyCluster(b)
	var rows []string
	phase := func(name string, run func(l *load)) {
		l := startLoad(b, h.target, key, false, h.roots)
		start := time.Now()
		run(l)
		l.stop()
		rows = append(rows, l.row(name, time.Since(start)))
	}
	phase("baseline (no fault)", func(l *load) { time.Sleep(20 * time.Second) })
	phase("rolling restart (SIGTERM)", func(l *load) {
		l.waitSent(500)
		rollingRestart(b, c, h, l, 500)
	})
	phase("leader kill -9, restart", func(l *load) {
		l.waitSent(500)
		killLeader(b, c, h, l, 2000)
	})
	b.Logf("\n%-28s %8s %8s %6s %8s %8s %8s %8s %9s\n%s", "scenario", "seconds", "requests", "failed",
		"p50", "p99", "p99.9", "longest", "max gap", strings.Join(rows, "\n"))
}

// row is one line of BenchmarkHAProxyFailover's table for l, which ran
// for d: requests, failures, latency quantiles of the answered requests,
// the longest request and the longest time without an acknowledgement.
func (l *load) row(name string, d time.Duration) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	took := slices.Clone(l.took)
	slices.Sort(took)
	q := func(p float64) time.Duration {
		if len(took) == 0 {
			return 0
		}
		return took[min(len(took)-1, int(float64(len(took))*p))]
	}
	var gap time.Duration
	for i := 1; i < len(l.ackedAt); i++ {
		gap = max(gap, l.ackedAt[i].Sub(l.ackedAt[i-1]))
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%dms", d.Milliseconds()) }
	return fmt.Sprintf("%-28s %8.1f %8d %6d %8s %8s %8s %8s %9s", name, d.Seconds(), l.sent.Load(), len(l.failures),
		ms(q(0.5)), ms(q(0.99)), ms(q(0.999)), ms(q(1)), ms(gap))
}
