package main

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// peerTLSEnv returns env with the FFRTMP_PEER_TLS_* variables set to a
// certificate of ca named name, as docs/deployment.md configures them.
func peerTLSEnv(t *testing.T, env []string, ca *clustertest.CA, dir, name string) []string {
	t.Helper()
	cert, key := ca.Leaf(t, dir, name)
	return append(slices.Clone(env), "FFRTMP_PEER_TLS_CERT="+cert, "FFRTMP_PEER_TLS_KEY="+key, "FFRTMP_PEER_TLS_CA="+ca.File)
}

// TestWorkerOperatorCertificates runs a server and a worker process that
// use certificates from the operator's CA for the node port: the worker
// registers (with its worker token, pinning the operator's CA) and runs a
// job, and refuses one that would read the server's API. A caller whose
// certificate comes from another CA, or who derives TLS from the cluster
// key, is refused by the node.
func TestWorkerOperatorCertificates(t *testing.T) {
	c := newTestCluster(t, 1)
	certs := filepath.Join(c.dir, "certs")
	if err := os.Mkdir(certs, 0o700); err != nil {
		t.Fatal(err)
	}
	ca := clustertest.WriteCA(t, certs, "ops")
	base := c.env
	c.env = peerTLSEnv(t, base, ca, certs, "n1")
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", c.addrs(c.nodes...), "--cluster-key-file", c.keyFile)
	client, err := cli.NewClient(c.addrs(c.nodes...), c.key())
	if err != nil {
		t.Fatal(err)
	}

	c.env = peerTLSEnv(t, base, ca, certs, "w1")
	c.addWorker(1)
	waitWorkers(t, client, 1)
	j, err := client.SubmitJob(context.Background(), &fsm.JobSpec{
		Scenario: "240p30-h264", Input: fsm.Input{URL: "testsrc://?duration=1"},
		Outputs: []fsm.Output{{URL: "file:///tls/out.mp4"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := waitJobDone(t, client, j.ID)
	if got.State != fsm.JobSucceeded || got.Result == nil || len(got.Result.Outputs) != 1 {
		t.Fatalf("job through a worker with an operator certificate: %s %+v %+v", got.State, got.Error, got.Result)
	}
	if err := waitFile(outputFile(filepath.Join(c.dir, "media"), got.TenantID, got.Result.Outputs[0].URL)); err != nil {
		t.Fatalf("output: %v", err)
	}

	// The worker learned the server's API address from gossip: a job
	// cannot read it, although the policy allows 127.0.0.1.
	api, err := client.SubmitJob(context.Background(), &fsm.JobSpec{
		Scenario: "240p30-h264", Input: fsm.Input{URL: "http://" + c.nodes[0].httpAddr + "/v1/jobs"},
		Outputs: []fsm.Output{{URL: "file:///tls/api.mp4"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := waitJobDone(t, client, api.ID); got.State != fsm.JobFailed || got.Error == nil || got.Error.Code != fsm.CodeURLNotAllowed {
		t.Fatalf("job reading the server's API: %s %+v", got.State, got.Error)
	}

	other := clustertest.WriteCA(t, certs, "other")
	cert, key := other.Leaf(t, certs, "intruder")
	foreign, err := cluster.PeerTLSFromFiles(cert, key, other.File)
	if err != nil {
		t.Fatal(err)
	}
	clusterKey, err := cluster.ReadKeyFile(c.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	derived, err := cluster.PeerTLSFromKey(clusterKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, conf := range map[string]*tls.Config{"another CA": foreign, "the cluster key": derived} {
		wc := cluster.NewWorkerClient(conf, "", func() []string { return []string{c.nodes[0].raftAddr} })
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := wc.Register(ctx, &fsm.Worker{ID: "intruder", Name: "intruder", Incarnation: "1", Slots: 1, Encoders: []string{"libx264"}})
		cancel()
		var fe *fsm.Error
		if err == nil || errors.As(err, &fe) {
			t.Errorf("worker with TLS from %s: register = %v, want a refused connection", name, err)
		}
	}
	if ws, err := client.ListWorkers(context.Background()); err != nil || len(ws) != 1 {
		t.Fatalf("workers after the refused ones: %d, %v", len(ws), err)
	}
}
