package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestClusterSnapshotRestoreRefusesBadFiles restores garbage, random,
// truncated and bit-flipped files into a three-node cluster of real
// processes with `ffrtmp cluster snapshot restore`, through a follower:
// each is refused with invalid_snapshot, every node stays up and ready,
// the leader restarts normally after kill -9, and the state is as it was.
// Then a good backup, saved with `cluster snapshot save`, restores on
// every node.
func TestClusterSnapshotRestoreRefusesBadFiles(t *testing.T) {
	c := newTestCluster(t, 3)
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", "http://"+c.nodes[0].httpAddr, "--cluster-key-file", c.keyFile)
	client, err := cli.NewClient(c.addrs(c.nodes...), c.key())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	spec := &fsm.JobSpec{Scenario: "240p30-h264", Queue: fsm.QueueBatch,
		Input: fsm.Input{URL: "testsrc://?duration=1"}, Outputs: []fsm.Output{{URL: "file:///snap.mp4"}}}
	before, err := client.SubmitJob(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	l := c.leader()
	follower := c.followers(l)[0]
	dir := t.TempDir()
	good := filepath.Join(dir, "good.snap")
	c.mustCLI("--addr", "http://"+follower.httpAddr, "cluster", "snapshot", "save", good)
	after, err := client.SubmitJob(ctx, spec) // not in the backup
	if err != nil {
		t.Fatal(err)
	}

	goodBytes, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 256<<10)
	rand.NewChaCha8([32]byte{9}).Read(random)
	flipped := slices.Clone(goodBytes)
	flipped[len(flipped)/3] ^= 0x04
	bad := []struct {
		name string
		data []byte
		want string
	}{
		{"garbage", []byte("this is not a snapshot\n"), "ERROR: invalid_snapshot: "},
		{"random", random, "ERROR: invalid_snapshot: "},
		{"truncated", goodBytes[:len(goodBytes)/2], "ERROR: invalid_snapshot: "},
		// As docs/operations.md ("A snapshot is damaged") shows it.
		{"bitflip", flipped, "ERROR: invalid_snapshot: restore: check snapshot: invalid snapshot: checksum mismatch: the file is damaged\n"},
	}
	for _, b := range bad {
		path := filepath.Join(dir, b.name+".snap")
		if err := os.WriteFile(path, b.data, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := c.cli("--addr", "http://"+follower.httpAddr, "cluster", "snapshot", "restore", path)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("restore %s: %q, %v; want a refusal saying %q", b.name, out, err, b.want)
		}
	}
	c.waitReady(c.nodes...)
	for _, s := range c.nodes {
		if !s.running() {
			t.Fatalf("%s exited after the bad restores:\n%s", s.id, s.log.String())
		}
	}
	// The leader restarts normally: no bad snapshot was stored.
	l = c.leader()
	l.kill9()
	l.start(c.env)
	c.waitReady(c.nodes...)
	for _, s := range c.nodes {
		waitJobOnNode(t, s, c.key(), after.ID, true)
	}
	if _, err := client.SubmitJob(ctx, spec); err != nil {
		t.Fatalf("submit after the refused restores: %v", err)
	}

	c.mustCLI("--addr", "http://"+follower.httpAddr, "cluster", "snapshot", "restore", good)
	for _, s := range c.nodes {
		waitJobOnNode(t, s, c.key(), before.ID, true)
		waitJobOnNode(t, s, c.key(), after.ID, false)
	}
	if _, err := client.SubmitJob(ctx, spec); err != nil {
		t.Fatalf("submit after the restore: %v", err)
	}
}

// waitJobOnNode waits until node s has (or, if !exists, no longer has) job id.
func waitJobOnNode(t *testing.T, s *serverProc, key, id string, exists bool) {
	t.Helper()
	client, err := cli.NewClient("http://"+s.httpAddr, key)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := client.GetJob(ctx, id)
		cancel()
		var ae *cli.APIError
		switch {
		case exists && err == nil:
			return
		case !exists && errors.As(err, &ae) && ae.Code == fsm.CodeNotFound:
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: job %s exists=%v not reached: last %v", s.id, id, exists, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
