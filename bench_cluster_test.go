package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// These benchmarks run real server processes on 127.0.0.N and report
// their own metrics; run them once each:
//
//	go test -run '^$' -bench Cluster -benchtime 1x .
//
// docs/BENCHMARKS.md has the method and results.

// BenchmarkClusterSubmit measures submit throughput and latency of a
// one-node and a three-node cluster in the same run, with the load
// generator of `ffrtmp bench submit` (round robin over the nodes).
func BenchmarkClusterSubmit(b *testing.B) {
	for _, size := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			c := newBenchCluster(b, size)
			client, err := cli.NewClient(c.addrs(c.nodes...), c.key())
			if err != nil {
				b.Fatal(err)
			}
			for _, conc := range []int{1, 16, 64} {
				b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
					var out bytes.Buffer
					if err := cli.BenchSubmit(context.Background(), client, &out, 2000, conc, true); err != nil {
						b.Fatal(err)
					}
					b.Log("\n" + out.String())
				})
			}
		})
	}
}

// BenchmarkClusterSubmitBatch measures POST /v1/jobs/batch on a
// three-node cluster (100 specs per request, round robin over the nodes),
// with single submits of as many jobs in the same run as the baseline.
func BenchmarkClusterSubmitBatch(b *testing.B) {
	c := newBenchCluster(b, 3)
	client, err := cli.NewClient(c.addrs(c.nodes...), c.key())
	if err != nil {
		b.Fatal(err)
	}
	var out bytes.Buffer
	if err := cli.BenchSubmitBatch(context.Background(), client, &out, 20000, 16, 100); err != nil {
		b.Fatal(err)
	}
	b.Log("\n" + out.String())
}

// BenchmarkClusterFailover kills the leader of a three-node cluster with
// SIGKILL ten times and measures the time from the kill until a write
// (retried by the client across the surviving nodes) succeeds again; the
// killed node is restarted and caught up between rounds.
func BenchmarkClusterFailover(b *testing.B) {
	c := newBenchCluster(b, 3)
	client, err := cli.NewClient(c.addrs(c.nodes...), c.key())
	if err != nil {
		b.Fatal(err)
	}
	spec := &fsm.JobSpec{Scenario: "240p30-h264", Queue: fsm.QueueBatch,
		Input: fsm.Input{URL: "testsrc://?duration=1"}, Outputs: []fsm.Output{{URL: "file:///failover.mp4"}}}
	var times []time.Duration
	for round := range 10 {
		l := c.leader()
		t0 := time.Now()
		l.kill9()
		if _, err := client.Rotated(round).SubmitJob(context.Background(), spec); err != nil {
			b.Fatalf("round %d: write after the kill: %v", round, err)
		}
		times = append(times, time.Since(t0))
		l.start(c.env)
		c.waitReady(l)
	}
	slices.Sort(times)
	b.ReportMetric(times[0].Seconds(), "min-s")
	b.ReportMetric(times[len(times)/2].Seconds(), "median-s")
	b.ReportMetric(times[len(times)-1].Seconds(), "max-s")
	b.Logf("failover times: %v", times)
}

// newBenchCluster starts size servers and initializes the cluster.
func newBenchCluster(b *testing.B, size int) *testCluster {
	b.Helper()
	raceBinary = false // measure the binary users run
	c := newTestCluster(b, size)
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", "http://"+c.nodes[0].httpAddr, "--cluster-key-file", c.keyFile)
	return c
}
