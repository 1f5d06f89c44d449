package cli

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	json "github.com/go-json-experiment/json/v1"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/urfave/cli/v2"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
	"github.com/ffrtmp/ffrtmp/worker"
)

// bench raft measures what hashicorp/raft alone reaches on this machine,
// one entry per request, the baseline the cluster's write path is
// compared with (docs/BENCHMARKS.md). Each node is a process of its own,
// this binary re-executed as the hidden `bench raft-node`, so that every
// node has its own Go runtime, as ffrtmp servers do.

// raftNodeCommand is the hidden subcommand of bench that runs one node.
const raftNodeCommand = "raft-node"

func benchRaftCommand() *cli.Command {
	return &cli.Command{
		Name: "raft",
		Usage: "baseline: raw hashicorp/raft (raft-boltdb log, TCP) with the same settings as ffrtmp nodes, " +
			"one entry per request to the leader, each node a process of its own; see docs/BENCHMARKS.md",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "nodes", Value: 3, Usage: "raft nodes to start"},
			&cli.IntSliceFlag{Name: "size", Value: cli.NewIntSlice(1024), Usage: "entry sizes in bytes, comma-separated: one measurement each"},
			&cli.IntSliceFlag{Name: "concurrency", Value: cli.NewIntSlice(64), Usage: "concurrent clients, comma-separated: one measurement each"},
			&cli.IntFlag{Name: "requests", Usage: "requests per measurement (0: run each for --duration)"},
			&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "length of each measurement, unless --requests"},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "per request"},
			&cli.StringFlag{Name: "dir", Usage: "directory on the disk to measure; the nodes' data goes in a new directory inside it, removed at the end (default: the system's temporary directory)"},
			&cli.StringFlag{Name: "raft-addr", Usage: "the nodes' Raft addresses, comma-separated host[:port] (default 127.0.0.N, free ports)"},
			&cli.StringFlag{Name: "http-addr", Usage: "the nodes' HTTP addresses, comma-separated host[:port] (default 127.0.0.N, free ports)"},
		},
		Action: func(c *cli.Context) error {
			out, err := outputOf(c)
			if err != nil {
				return err
			}
			cfg := RaftBench{
				Nodes: c.Int("nodes"), Sizes: c.IntSlice("size"), Concurrencies: c.IntSlice("concurrency"),
				Requests: c.Int("requests"), Duration: c.Duration("duration"), Timeout: c.Duration("timeout"),
				Dir: c.String("dir"), RaftAddrs: splitList([]string{c.String("raft-addr")}), HTTPAddrs: splitList([]string{c.String("http-addr")}),
			}
			// Interrupted, it still stops the nodes and removes their data.
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			report, err := BenchRaft(ctx, cfg, envOf(c).Stderr)
			if err != nil {
				return err
			}
			if out.JSON {
				return printJSON(out.W, report)
			}
			return PrintRaftBench(out.W, report)
		},
	}
}

func benchRaftNodeCommand() *cli.Command {
	return &cli.Command{
		Name:   raftNodeCommand,
		Usage:  "one node of bench raft (started by it)",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "id", Required: true, Usage: "this node's Raft server ID"},
			&cli.StringFlag{Name: "dir", Required: true, Usage: "this node's data directory (raft.db, snapshots)"},
			&cli.StringFlag{Name: "raft-addr", Required: true, Usage: "this node's Raft address, host:port"},
			&cli.StringFlag{Name: "http-addr", Required: true, Usage: "address of this node's HTTP endpoint (POST /apply, GET /status), host:port"},
			&cli.StringFlag{Name: "peers", Required: true, Usage: "every node as id=raft-addr, comma-separated"},
		},
		Action: func(c *cli.Context) error {
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			var peers []raft.Server
			for _, p := range splitList([]string{c.String("peers")}) {
				id, addr, ok := strings.Cut(p, "=")
				if !ok {
					return fmt.Errorf("%w: --peers: %q is not id=addr", ErrConfig, p)
				}
				peers = append(peers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(addr), Suffrage: raft.Voter})
			}
			log := slog.New(slog.NewTextHandler(envOf(c).Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			return runRaftNode(ctx, log, c.String("id"), c.String("dir"), c.String("raft-addr"), c.String("http-addr"), peers)
		},
	}
}

// RaftBench configures BenchRaft.
type RaftBench struct {
	// Nodes is the number of raft nodes.
	Nodes int
	// Sizes and Concurrencies: one measurement per pair, each of Requests
	// requests or, for Requests 0, of Duration.
	Sizes, Concurrencies []int
	Requests             int
	Duration             time.Duration
	// Timeout bounds each request.
	Timeout time.Duration
	// Dir is where the nodes' data directory is made ("" for the system's
	// temporary directory); it is removed at the end.
	Dir string
	// RaftAddrs and HTTPAddrs, if given, are the nodes' addresses,
	// host[:port] each (a missing or zero port is picked free); by default
	// node N listens on 127.0.0.N.
	RaftAddrs, HTTPAddrs []string
	// Exe is the ffrtmp binary the nodes run ("" for this process's own).
	Exe string
}

// RaftBenchReport is what bench raft prints with -o json.
type RaftBenchReport struct {
	Nodes []RaftBenchNode `json:"nodes"`
	// Leader is the ID of the node every request went to.
	Leader  string            `json:"leader"`
	Results []RaftBenchResult `json:"results"`
}

// RaftBenchNode is one node of a bench raft cluster; Entries is the
// number of entries its FSM applied by the end of the run.
type RaftBenchNode struct {
	ID       string `json:"id"`
	PID      int    `json:"pid"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
	Entries  uint64 `json:"entries"`
}

// RaftBenchResult is one measurement: a BenchResult with its entry size.
type RaftBenchResult struct {
	Size int `json:"size"`
	BenchResult
}

// raftNodeStatus is what a bench raft node answers on GET /status.
type raftNodeStatus struct {
	State   string `json:"state"`
	Leader  string `json:"leader"`
	Entries uint64 `json:"entries"`
}

// BenchRaft starts cfg.Nodes raft nodes, waits for a leader, measures one
// entry per request (POST /apply on the leader: raft.Apply, wait for the
// commit and the leader's apply) for every size and concurrency, with the
// load loop of bench submit, then stops the nodes and removes their data.
// It writes a progress line per second to progress.
func BenchRaft(ctx context.Context, cfg RaftBench, progress io.Writer) (*RaftBenchReport, error) {
	switch {
	case cfg.Nodes < 1:
		return nil, fmt.Errorf("%w: --nodes must be positive", ErrConfig)
	case len(cfg.Sizes) == 0 || len(cfg.Concurrencies) == 0:
		return nil, fmt.Errorf("%w: give at least one --size and --concurrency", ErrConfig)
	case cfg.Requests < 0 || (cfg.Requests == 0 && cfg.Duration <= 0):
		return nil, fmt.Errorf("%w: give a positive --requests or --duration", ErrConfig)
	case len(cfg.RaftAddrs) > 0 && len(cfg.RaftAddrs) != cfg.Nodes, len(cfg.HTTPAddrs) > 0 && len(cfg.HTTPAddrs) != cfg.Nodes:
		return nil, fmt.Errorf("%w: give one --raft-addr and --http-addr per node", ErrConfig)
	}
	for _, v := range append(append([]int(nil), cfg.Sizes...), cfg.Concurrencies...) {
		if v < 1 {
			return nil, fmt.Errorf("%w: --size and --concurrency must be positive", ErrConfig)
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if progress == nil {
		progress = io.Discard
	}
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find this binary: %w", err)
		}
		cfg.Exe = exe
	}
	dir, err := os.MkdirTemp(cfg.Dir, "ffrtmp-bench-raft-")
	if err != nil {
		return nil, fmt.Errorf("%w: data directory: %w", ErrConfig, err)
	}
	defer os.RemoveAll(dir)
	nodes, err := raftBenchNodes(cfg)
	if err != nil {
		return nil, err
	}
	var peers []string
	for _, n := range nodes {
		peers = append(peers, n.ID+"="+n.RaftAddr)
	}
	var procs []*raftNodeProc
	defer func() {
		var wg sync.WaitGroup
		for _, p := range procs {
			wg.Go(p.stop)
		}
		wg.Wait()
	}()
	for i := range nodes {
		p, err := startRaftNode(cfg.Exe, &nodes[i], filepath.Join(dir, nodes[i].ID), strings.Join(peers, ","))
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	leader, err := waitRaftLeader(ctx, procs, 30*time.Second)
	if err != nil {
		return nil, err
	}
	report := &RaftBenchReport{Leader: leader.node.ID}
	client, err := NewClient(leader.node.HTTPAddr, "")
	if err != nil {
		return nil, err
	}
	client.http = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: slices.Max(cfg.Concurrencies)}}
	n, d := cfg.Requests, time.Duration(0)
	if n == 0 {
		n, d = math.MaxInt, cfg.Duration
	}
	for _, size := range cfg.Sizes {
		entry := bytes.Repeat([]byte{'x'}, size)
		for _, conc := range cfg.Concurrencies {
			name := fmt.Sprintf("raft.Apply %d B", size)
			rec := newRecorder()
			pctx, stopProgress := context.WithCancel(ctx)
			go showProgress(pctx, progress, name, rec)
			elapsed := closedLoopFor(ctx, rec, n, conc, d, func(ctx context.Context, _ int) error {
				ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
				defer cancel()
				return applyRaw(ctx, client, entry)
			})
			stopProgress()
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			res := rec.result(name, elapsed)
			res.Mode, res.Concurrency = "closed", conc
			report.Results = append(report.Results, RaftBenchResult{Size: size, BenchResult: res})
		}
	}
	if err := countEntries(ctx, leader, procs, 5*time.Second); err != nil {
		return nil, err
	}
	for _, p := range procs {
		report.Nodes = append(report.Nodes, *p.node)
	}
	return report, nil
}

// PrintRaftBench prints a bench raft report as a table.
func PrintRaftBench(w io.Writer, r *RaftBenchReport) error {
	var results []BenchResult
	for _, res := range r.Results {
		results = append(results, res.BenchResult)
	}
	if err := PrintBenchResults(w, results); err != nil {
		return err
	}
	var entries []string
	for _, n := range r.Nodes {
		entries = append(entries, fmt.Sprintf("%s %d", n.ID, n.Entries))
	}
	_, err := fmt.Fprintf(w, "requests to the leader %s (raw raft cannot forward); entries applied: %s\n", r.Leader, strings.Join(entries, ", "))
	return err
}

// applyRaw proposes entry through the node c talks to.
func applyRaw(ctx context.Context, c *Client, entry []byte) error {
	req, err := c.newRequest(ctx, "POST", "/apply", nil, bytes.NewReader(entry))
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// countEntries records in each node the entries its FSM applied, once
// every follower's FSM has applied as many as the leader's, or after
// wait. (Raft's applied index runs ahead of the FSM: it counts entries
// handed to the FSM, not applied.)
func countEntries(ctx context.Context, leader *raftNodeProc, procs []*raftNodeProc, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		st, err := leader.status(ctx)
		if err != nil {
			return err
		}
		leader.node.Entries = st.Entries
		caughtUp := true
		for _, p := range procs {
			if p == leader {
				continue
			}
			fst, err := p.status(ctx)
			if err != nil {
				return err
			}
			p.node.Entries = fst.Entries
			caughtUp = caughtUp && fst.Entries >= st.Entries
		}
		if caughtUp || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// raftBenchNodes returns the nodes' IDs and addresses: the given ones,
// or 127.0.0.N, with free ports where none is given.
func raftBenchNodes(cfg RaftBench) ([]RaftBenchNode, error) {
	addr := func(given []string, i int) (string, error) {
		hostport := fmt.Sprintf("127.0.0.%d", i+1)
		if len(given) > 0 {
			hostport = given[i]
		}
		host, port, err := net.SplitHostPort(hostport)
		if err != nil {
			host, port = hostport, "0"
		}
		if port != "0" && port != "" {
			return net.JoinHostPort(host, port), nil
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return "", fmt.Errorf("%w: pick a port on %s: %w", ErrConfig, host, err)
		}
		defer l.Close()
		return l.Addr().String(), nil
	}
	var nodes []RaftBenchNode
	for i := range cfg.Nodes {
		ra, err := addr(cfg.RaftAddrs, i)
		if err != nil {
			return nil, err
		}
		ha, err := addr(cfg.HTTPAddrs, i)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, RaftBenchNode{ID: fmt.Sprintf("r%d", i+1), RaftAddr: ra, HTTPAddr: ha})
	}
	return nodes, nil
}

// raftNodeProc is a running bench raft node.
type raftNodeProc struct {
	node   *RaftBenchNode
	cmd    *exec.Cmd
	out    *worker.Tail
	client *http.Client
	exited chan struct{} // closed when the process has exited
}

// startRaftNode starts the node in dir with exe.
func startRaftNode(exe string, n *RaftBenchNode, dir, peers string) (*raftNodeProc, error) {
	p := &raftNodeProc{node: n, out: worker.NewTail(8 << 10), client: &http.Client{Timeout: 5 * time.Second}, exited: make(chan struct{})}
	p.cmd = exec.Command(exe, "bench", raftNodeCommand, "--id", n.ID, "--dir", dir,
		"--raft-addr", n.RaftAddr, "--http-addr", n.HTTPAddr, "--peers", peers)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// A node dies with the bench even if the bench is killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start raft node %s: %w", n.ID, err)
	}
	n.PID = p.cmd.Process.Pid
	go func() {
		p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// stop ends the node: SIGTERM, then SIGKILL if it has not exited within
// ten seconds.
func (p *raftNodeProc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return
	case <-time.After(10 * time.Second):
	}
	p.cmd.Process.Kill()
	<-p.exited
}

// status asks the node for its state.
func (p *raftNodeProc) status(ctx context.Context) (*raftNodeStatus, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+p.node.HTTPAddr+"/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("raft node %s: %w", p.node.ID, err)
	}
	defer resp.Body.Close()
	st := &raftNodeStatus{}
	if err := decodeJSON(resp.Body, st); err != nil {
		return nil, fmt.Errorf("raft node %s: %w", p.node.ID, err)
	}
	return st, nil
}

// waitRaftLeader waits until one node is the leader and every node knows
// it; it fails early if a node exits.
func waitRaftLeader(ctx context.Context, procs []*raftNodeProc, wait time.Duration) (*raftNodeProc, error) {
	deadline := time.Now().Add(wait)
	for {
		var leader *raftNodeProc
		var seen []string // the leader each node names
		var lastErr error
		for _, p := range procs {
			select {
			case <-p.exited:
				return nil, fmt.Errorf("raft node %s exited: %v\n%s", p.node.ID, p.cmd.ProcessState, p.out.String())
			default:
			}
			st, err := p.status(ctx)
			if err != nil {
				lastErr = err
				continue
			}
			if st.State == raft.Leader.String() {
				leader = p
			}
			seen = append(seen, st.Leader)
		}
		if leader != nil && len(seen) == len(procs) && !slices.ContainsFunc(seen, func(id string) bool { return id != leader.node.ID }) {
			return leader, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no raft leader within %s (last error: %v)", wait, lastErr)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// runRaftNode runs one bench raft node until ctx ends: hashicorp/raft on
// a raft-boltdb log over plain TCP, with the settings of ffrtmp's nodes
// where they bear on write throughput (cluster/node.go), an FSM that
// counts entries, and an HTTP endpoint that proposes one.
func runRaftNode(ctx context.Context, log *slog.Logger, id, dir, raftAddr, httpAddr string, peers []raft.Server) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	hlog := cluster.NewHCLogger(log, "raft")
	// The same log store as ffrtmp's: raft-boltdb, fsync on every append.
	ls, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		return fmt.Errorf("open raft log: %w", err)
	}
	defer ls.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hlog)
	if err != nil {
		return fmt.Errorf("open snapshot store: %w", err)
	}
	// ffrtmp's transport settings (cluster/node.go), over plain TCP where
	// ffrtmp's is TLS on a multiplexed port.
	trans, err := raft.NewTCPTransportWithConfig(raftAddr, nil, &raft.NetworkTransportConfig{
		MaxPool: 4, Timeout: 10 * time.Second, Logger: hlog, MaxRPCsInFlight: 1,
	})
	if err != nil {
		return fmt.Errorf("raft transport: %w", err)
	}
	defer trans.Close()
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(id)
	rc.Logger = hlog
	rc.SnapshotThreshold = cluster.SnapshotThreshold
	rc.SnapshotInterval = cluster.SnapshotInterval
	rc.TrailingLogs = cluster.TrailingLogs
	rc.MaxAppendEntries = cluster.MaxAppendEntries
	rc.CommitTimeout = cluster.CommitTimeout
	rc.BatchApplyCh = true
	has, err := raft.HasExistingState(ls, ls, snaps)
	if err != nil {
		return fmt.Errorf("check raft state: %w", err)
	}
	if !has {
		if err := raft.BootstrapCluster(rc, ls, ls, snaps, trans, raft.Configuration{Servers: peers}); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	counter := &countFSM{}
	r, err := raft.NewRaft(rc, counter, ls, ls, snaps, trans)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	defer r.Shutdown()
	l, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: raftNodeHandler(r, counter), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: cluster.NewStdLogger(log, "http", slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		srv.Close()
		return r.Shutdown().Error()
	case err := <-errc:
		return err
	}
}

// raftNodeHandler serves a bench raft node: POST /apply proposes the
// body as one entry and answers when the leader applied it; GET /status
// answers a raftNodeStatus.
func raftNodeHandler(r *raft.Raft, counter *countFSM) http.Handler {
	mux := http.NewServeMux()
	fail := func(w http.ResponseWriter, status int, code fsm.Code, err error) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]*fsm.Error{"error": {Code: code, Message: err.Error()}})
	}
	mux.HandleFunc("POST /apply", func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(io.LimitReader(req.Body, 64<<20))
		if err != nil {
			fail(w, http.StatusBadRequest, fsm.CodeInvalidArgument, err)
			return
		}
		// ffrtmp's apply timeout (cluster/node.go).
		f := r.Apply(body, 10*time.Second)
		if err := f.Error(); err != nil {
			status, code := http.StatusInternalServerError, fsm.CodeInternal
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrEnqueueTimeout) || errors.Is(err, raft.ErrLeadershipLost) {
				status, code = http.StatusServiceUnavailable, server.CodeUnavailable
			}
			fail(w, status, code, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"index\":%d}\n", f.Index())
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		_, leader := r.LeaderWithID()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(raftNodeStatus{State: r.State().String(), Leader: string(leader), Entries: counter.entries.Load()})
	})
	return mux
}

// countFSM is the bench's state machine: it counts the entries and bytes
// applied.
type countFSM struct {
	entries, bytes atomic.Uint64
}

var _ raft.FSM = (*countFSM)(nil)

func (f *countFSM) Apply(l *raft.Log) any {
	f.entries.Add(1)
	f.bytes.Add(uint64(len(l.Data)))
	return nil
}

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) {
	return countSnapshot{f.entries.Load(), f.bytes.Load()}, nil
}

func (f *countFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var b [16]byte
	if _, err := io.ReadFull(rc, b[:]); err != nil {
		return fmt.Errorf("restore count: %w", err)
	}
	f.entries.Store(binary.BigEndian.Uint64(b[:8]))
	f.bytes.Store(binary.BigEndian.Uint64(b[8:]))
	return nil
}

// countSnapshot is a countFSM's state: entries and bytes.
type countSnapshot [2]uint64

func (s countSnapshot) Persist(sink raft.SnapshotSink) error {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], s[0])
	binary.BigEndian.PutUint64(b[8:], s[1])
	if _, err := sink.Write(b[:]); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (countSnapshot) Release() {}
