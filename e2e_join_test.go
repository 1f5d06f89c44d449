package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

// TestClusterJoinBolt and TestClusterJoinPostgres add a fourth node to a
// running three-node cluster the way docs/deployment.md does: the node
// starts bare (no join settings) and waits, and `ffrtmp cluster join` run
// against it makes it a voter that serves the old jobs and new writes,
// and keeps the cluster writable after the leader is killed.
//
// On bolt the join is authorized by the super-admin key that `cluster
// init` saved (the new node has the cluster verify it); on PostgreSQL by
// the cluster key file alone, with no API key at hand.
func TestClusterJoinBolt(t *testing.T) {
	testClusterJoin(t, nil, false)
}

func TestClusterJoinPostgres(t *testing.T) {
	testClusterJoin(t, []string{"--store", pgtest.URL(t)}, true)
}

func testClusterJoin(t *testing.T, storeArgs []string, byClusterKey bool) {
	c := newTestCluster(t, 3)
	for _, s := range c.nodes {
		s.args = append(s.args, storeArgs...)
	}
	c.startAll()
	t.Log("three nodes ready")
	c.mustCLI("cluster", "init", "--addr", c.addrs(c.nodes...), "--cluster-key-file", c.keyFile)
	client, err := cli.NewClient(c.addrs(c.nodes...), c.key())
	if err != nil {
		t.Fatal(err)
	}
	spec := &fsm.JobSpec{Scenario: "240p30-h264", Queue: fsm.QueueBatch,
		Input: fsm.Input{URL: "testsrc://?duration=1"}, Outputs: []fsm.Output{{URL: "file:///join.mp4"}}}
	const old = 30
	for i := range old {
		if _, err := client.Rotated(i).SubmitJob(context.Background(), spec); err != nil {
			t.Fatal(err)
		}
	}

	// The fourth node starts with no join settings: it serves /health,
	// is not ready, and says once what to run.
	hp := strings.Split(c.nodes[0].httpAddr, ":")[1]
	rp := strings.Split(c.nodes[0].raftAddr, ":")[1]
	n4 := c.add(4, hp, rp, nil, 0)
	n4.args = append(n4.args, storeArgs...)
	n4.start(c.env)
	n4URL := "http://" + n4.httpAddr
	waitForCond(t, 60*time.Second, "the bare node's /health", func() bool { return httpGetStatus(n4URL+"/health") == 200 })
	wantCmd := "ffrtmp cluster join --addr " + n4URL + " <member Raft address>"
	var ready struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}
	if code := getJSONStatus(t, n4URL+"/ready", &ready); code != 503 || ready.Ready || !strings.Contains(ready.Checks["cluster"], wantCmd) {
		t.Fatalf("bare node /ready: %d %+v; want 503 with a cluster check naming %q", code, ready, wantCmd)
	}
	waitForCond(t, 10*time.Second, "the join hint in the log", func() bool { return strings.Contains(n4.log.String(), wantCmd) })
	if n := strings.Count(n4.log.String(), "waits to be joined"); n != 1 {
		t.Errorf("the bare node logged its join hint %d times, want once:\n%s", n, n4.log.String())
	}

	t.Run("asked of a member", func(t *testing.T) {
		_, err := c.cli("--addr", "http://"+c.nodes[0].httpAddr, "cluster", "join", n4.raftAddr)
		if err == nil || !strings.Contains(err.Error(), "wrong_direction") ||
			!strings.Contains(err.Error(), "ffrtmp cluster join --addr "+n4URL+" "+c.nodes[0].raftAddr) {
			t.Fatalf("join asked of a member: %v; want wrong_direction naming the command to run on the new node", err)
		}
		if st := c.status(c.nodes[0]); len(st.Members) != 3 {
			t.Errorf("after a refused join the cluster has %d members, want 3", len(st.Members))
		}
	})
	t.Run("wrong cluster key", func(t *testing.T) {
		other := filepath.Join(c.dir, "other.key")
		out, err := exec.Command(binary(t), "keygen").Output()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(other, out, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = c.cli("--addr", n4URL, "cluster", "join", "--cluster-key-file", other, c.nodes[0].raftAddr)
		if err == nil || !strings.Contains(err.Error(), "unauthenticated") || !strings.Contains(err.Error(), "wrong cluster key") {
			t.Fatalf("join with another key: %v; want unauthenticated: wrong cluster key", err)
		}
		if httpGetStatus(n4URL+"/ready") != 503 {
			t.Error("the bare node became ready after a refused join")
		}
	})
	t.Run("wrong API key", func(t *testing.T) {
		_, err := c.cli("--addr", n4URL, "--api-key", "ffk_0011223344556677_bogus", "cluster", "join", c.nodes[0].raftAddr)
		if err == nil || !strings.Contains(err.Error(), "unauthenticated") || !strings.Contains(err.Error(), "refused the API key") {
			t.Fatalf("join with a bogus API key: %v; want unauthenticated by the cluster", err)
		}
	})
	t.Run("address that does not answer", func(t *testing.T) {
		_, err := c.cli("--addr", n4URL, "cluster", "join", "--cluster-key-file", c.keyFile, freeAddr(t))
		if err == nil || !strings.Contains(err.Error(), "unreachable") {
			t.Fatalf("join of an address that does not answer: %v; want unreachable", err)
		}
	})

	// The join, as an operator runs it: FFRTMP_ADDR at the new node, the
	// API key from `cluster init` in the CLI config.
	join := func(extraEnv []string, extraArgs ...string) string {
		t.Helper()
		args := append(append([]string{"cluster", "join"}, extraArgs...), c.nodes[0].raftAddr)
		out, err := c.cliEnv(append([]string{"FFRTMP_ADDR=" + n4URL}, extraEnv...), args...)
		if err != nil {
			t.Fatalf("cluster join: %v\n%s", err, n4.log.String())
		}
		return out
	}
	var first string
	if byClusterKey {
		// No CLI config, so no API key: only the key file's proof.
		first = join([]string{"XDG_CONFIG_HOME=" + t.TempDir()}, "--cluster-key-file", c.keyFile)
	} else {
		first = join(nil)
	}
	for i, out := range []string{first, join(nil)} {
		if !memberTableHas(out, "n1", "n2", "n3", "n4") {
			t.Errorf("cluster join (run %d) printed:\n%s\nwant a table of n1..n4 as voters", i+1, out)
		}
	}
	c.waitReady(n4)
	t.Log("n4 joined and ready")
	st := c.status(c.nodes[0])
	voters := 0
	for _, m := range st.Members {
		if m.Voter {
			voters++
		}
	}
	if voters != 4 || st.ClusterID == "" || c.status(n4).ClusterID != st.ClusterID {
		t.Fatalf("after join: %d voters, cluster %q (n4 says %q); want 4 voters in one cluster", voters, st.ClusterID, c.status(n4).ClusterID)
	}

	// Through the fourth node: the old jobs, and a submit.
	if got := listAll(t, n4URL, c.key()); len(got) != old {
		t.Errorf("the new node lists %d jobs, want %d", len(got), old)
	}
	c.mustCLI("--addr", n4URL, "jobs", "submit", "--scenario", "240p30-h264", "--input", "testsrc://?duration=1", "--output", "file:///via-n4.mp4")

	// The cluster survives a leader kill with the fourth node voting.
	l := c.leader()
	t.Logf("killing leader %s", l.id)
	l.kill9()
	var alive []*serverProc
	for _, s := range c.nodes {
		if s.running() {
			alive = append(alive, s)
		}
	}
	c.mustCLI("--addr", c.addrs(alive...), "jobs", "submit", "--scenario", "240p30-h264", "--input", "testsrc://?duration=1", "--output", "file:///after-kill.mp4")
	if got := listAll(t, n4URL, c.key()); len(got) != old+2 {
		t.Errorf("after the leader kill the new node lists %d jobs, want %d", len(got), old+2)
	}

	// Restarted with the same bare settings, the fourth node is a member
	// (it does not wait to be joined again).
	l.start(c.env)
	c.waitReady(l)
	t.Logf("%s restarted and ready", l.id)
	n4.stop()
	n4.start(c.env)
	c.waitReady(n4)
	if st := c.status(n4); len(st.Members) != 4 || st.ClusterID == "" {
		t.Errorf("after restarting n4: %d members, cluster %q; want 4 and an ID", len(st.Members), st.ClusterID)
	}
	if n := strings.Count(n4.log.String(), "waits to be joined"); n != 1 {
		t.Errorf("the restarted member logged the join hint again (%d times in all)", n)
	}
}

// memberTableHas reports whether a `cluster members` table lists each id
// as a voter.
func memberTableHas(table string, ids ...string) bool {
	for _, id := range ids {
		found := false
		for _, line := range strings.Split(table, "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == id && f[2] == "true" {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// cliEnv runs the binary's client with extra environment variables.
func (c *testCluster) cliEnv(env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(c.t), args...)
	cmd.Env = append(append([]string{}, c.env...), env...)
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), fmt.Errorf("%v: %s", err, ee.Stderr)
	}
	return string(out), err
}

// httpGetStatus returns the status of GET url, 0 if it fails.
func httpGetStatus(url string) int {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// getJSONStatus decodes the JSON body of GET url into v and returns the
// status.
func getJSONStatus(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, b)
	}
	return resp.StatusCode
}

// waitForCond polls cond until it holds or the timeout passes.
func waitForCond(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
