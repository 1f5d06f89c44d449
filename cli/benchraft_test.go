package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets bench raft re-execute this test binary as its nodes, as
// it re-executes ffrtmp: `cli.test bench raft-node …` runs the node.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "bench" && os.Args[2] == raftNodeCommand {
		err := Run(context.Background(), Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}, os.Args[1:])
		if err != nil {
			fmt.Fprintf(os.Stderr, "ERROR: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestBenchRaft runs bench raft with three node processes and a few
// requests: every request succeeds on the leader, every node's FSM
// applied every entry, the numbers are sane, and the nodes and their data
// are gone afterwards.
func TestBenchRaft(t *testing.T) {
	dir := t.TempDir()
	const requests = 40
	var out, progress bytes.Buffer
	err := Run(context.Background(), Env{Stdout: &out, Stderr: &progress, Getenv: func(string) string { return "" }},
		[]string{"bench", "raft", "--nodes", "3", "--size", "64,1024", "--concurrency", "1,8",
			"--requests", fmt.Sprint(requests), "--dir", dir, "-o", "json"})
	if err != nil {
		t.Fatalf("bench raft: %v\n%s", err, progress.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("bench raft's progress:\n%s\nits report:\n%s", progress.String(), out.String())
		}
	})
	var report RaftBenchReport
	if err := json.Unmarshal(out.Bytes(), &report); err != nil {
		t.Fatalf("decode report: %v\n%s", err, out.String())
	}
	if len(report.Results) != 4 {
		t.Fatalf("%d results, want 4 (2 sizes × 2 concurrencies):\n%s", len(report.Results), out.String())
	}
	i := 0
	for _, size := range []int{64, 1024} {
		for _, conc := range []int{1, 8} {
			r := report.Results[i]
			i++
			if r.Size != size || r.Concurrency != conc {
				t.Errorf("result %d is size %d, %d clients; want %d, %d", i, r.Size, r.Concurrency, size, conc)
			}
			if r.Requests != requests || r.OK != requests || len(r.Errors) != 0 {
				t.Errorf("size %d, %d clients: %d requests, %d ok, errors %v; want %d ok", size, conc, r.Requests, r.OK, r.Errors, requests)
			}
			if !(r.Throughput > 0 && r.P50 > 0 && r.P50 <= r.P99 && r.P99 <= r.P999 && r.P999 <= r.Max) {
				t.Errorf("size %d, %d clients: insane numbers %+v", size, conc, r.BenchResult)
			}
		}
	}
	if len(report.Nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(report.Nodes))
	}
	leaders := 0
	for _, n := range report.Nodes {
		if n.ID == report.Leader {
			leaders++
		}
		// Every node applied every entry (the followers are waited for).
		if n.Entries != 4*requests {
			t.Errorf("node %s applied %d entries, want %d", n.ID, n.Entries, 4*requests)
		}
		if err := syscall.Kill(n.PID, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("node %s (pid %d) still exists after the bench: kill 0: %v", n.ID, n.PID, err)
		}
		for _, addr := range []string{n.RaftAddr, n.HTTPAddr} {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Errorf("node %s: %s still accepts connections after the bench", n.ID, addr)
			}
		}
	}
	if leaders != 1 {
		t.Errorf("leader %q is %d of the nodes, want 1", report.Leader, leaders)
	}
	if left, err := os.ReadDir(dir); err != nil || len(left) != 0 {
		t.Errorf("--dir holds %v after the bench (%v), want nothing", left, err)
	}
}

// TestPrintRaftBench: the table has bench submit's columns, a row per
// measurement, and names the leader and the entries each node applied.
func TestPrintRaftBench(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	err := PrintRaftBench(&out, &RaftBenchReport{Leader: "r2",
		Nodes: []RaftBenchNode{{ID: "r1", Entries: 20}, {ID: "r2", Entries: 20}},
		Results: []RaftBenchResult{{Size: 100, BenchResult: BenchResult{Operation: "raft.Apply 100 B", Mode: "closed",
			Concurrency: 2, Requests: 20, OK: 20, Throughput: 400, P50: 1.5}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"operation", "p99.9", "raft.Apply 100 B", "2 clients", "400", "1.5ms",
		"requests to the leader r2", "r1 20, r2 20"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
