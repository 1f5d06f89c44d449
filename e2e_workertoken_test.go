package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cli"
	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// createTenant creates a tenant with the CLI and reports whether this
// build has the tenants command group.
func (c *testCluster) createTenant(id string) bool {
	c.t.Helper()
	if _, err := c.cli("help", "tenants"); err != nil && strings.Contains(err.Error(), "No help topic") {
		return false
	}
	if _, err := c.cli("--addr", c.addrs(c.nodes...), "tenants", "create", "--name", id); err != nil {
		c.t.Fatalf("tenants create %s: %v", id, err)
	}
	return true
}

// nodePortAsWorker returns an HTTP client that reaches node ports with a
// worker's credentials: TLS pinned to the cluster CA, no certificate, and
// the worker token as bearer.
func nodePortAsWorker(t *testing.T, tok server.CreatedWorkerToken) *http.Client {
	t.Helper()
	conf, err := cluster.WorkerTLS(tok.CAHash)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 20 * time.Second, Transport: &bearer{token: tok.Token, next: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&tls.Dialer{Config: conf}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if _, err := c.Write([]byte{'H'}); err != nil { // node RPC
				c.Close()
				return nil, err
			}
			return c, nil
		},
	}}}
}

type bearer struct {
	token string
	next  http.RoundTripper
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// TestWorkerTokenTrustBoundary runs three servers and a worker process
// started with a dedicated token of tenant "default": it runs that
// tenant's jobs only (real ffmpeg), cannot register as another tenant,
// cannot report on a job it does not hold, and its credentials (the
// token, the CA hash; it has no certificate and no cluster key) reach
// none of the servers' calls. Revoking the token takes the worker out.
func TestWorkerTokenTrustBoundary(t *testing.T) {
	c, client := startInitialized(t, 3)
	ctx := context.Background()
	const tenantA, tenantB = server.DefaultTenant, "globex"
	haveB := c.createTenant(tenantB)
	if !haveB {
		t.Logf("this build has no `tenants` command: tenant %s is not created, and the job of another tenant is not tried", tenantB)
	}

	tokA := c.workerToken(tenantA)
	if tokA.WorkerToken.TenantID != tenantA || !strings.HasPrefix(tokA.Token, "ffw_") || !strings.HasPrefix(tokA.CAHash, "sha256:") || len(tokA.Join) != 3 {
		t.Fatalf("worker token: %+v", tokA)
	}
	w := c.addWorkerWith(1, tokA)
	ws := waitWorkers(t, client, 1)
	wid := workerID(t, w.dir)
	if len(ws) != 1 || ws[0].ID != wid || ws[0].TenantID != tenantA {
		t.Fatalf("workers: %+v, want %s, dedicated to %s", ws, wid, tenantA)
	}

	spec := func(name string) *fsm.JobSpec {
		return &fsm.JobSpec{Scenario: "240p30-h264", Input: fsm.Input{URL: "testsrc://?duration=1"},
			Outputs: []fsm.Output{{URL: "file:///wt/" + name + ".mp4"}}}
	}
	var jobB *server.Job
	if haveB {
		var err error
		if jobB, err = client.ForTenant(tenantB).SubmitJob(ctx, spec("b")); err != nil {
			t.Fatal(err)
		}
	}
	jobA, err := client.SubmitJob(ctx, spec("a"))
	if err != nil {
		t.Fatal(err)
	}
	doneA := waitJobDone(t, client, jobA.ID)
	if doneA.State != fsm.JobSucceeded || doneA.WorkerID != wid {
		t.Fatalf("tenant %s's job: %s on %q (%+v), want succeeded on %s", tenantA, doneA.State, doneA.WorkerID, doneA.Error, wid)
	}
	// The worker reported its ffmpeg's exit (which freed the slot) before
	// the probe and the finish.
	if e := doneA.ExitedAt; e.IsZero() || e.Before(doneA.StartedAt) || e.After(doneA.FinishedAt) {
		t.Errorf("job: started %v, exited %v, finished %v; want an exit between the two", doneA.StartedAt, e, doneA.FinishedAt)
	}
	if haveB {
		// Submitted first, yet never given to A's worker.
		if got, err := client.GetJob(ctx, jobB.ID); err != nil || got.State != fsm.JobQueued || got.WorkerID != "" {
			t.Fatalf("tenant %s's job: %+v %v, want queued for no worker", tenantB, got, err)
		}
	}

	// The worker's own protocol, with its own token.
	conf, err := cluster.WorkerTLS(tokA.CAHash)
	if err != nil {
		t.Fatal(err)
	}
	wc := cluster.NewWorkerClient(conf, tokA.Token, func() []string { return tokA.Join })
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	refusal := func(what string, err error, code fsm.Code) {
		t.Helper()
		var fe *fsm.Error
		if !errors.As(err, &fe) || fe.Code != code {
			t.Errorf("%s: %v, want %s", what, err, code)
		}
	}
	_, err = wc.Register(cctx, &fsm.Worker{ID: wid, TenantID: tenantB, Name: "evil", Incarnation: "x", Slots: 1, Encoders: []string{"libx264"}})
	refusal("register as tenant "+tenantB, err, server.CodePermissionDenied)
	refusal("report on a job the worker does not hold",
		wc.Finish(cctx, &fsm.FinishJob{Report: fsm.Report{JobID: jobA.ID, WorkerID: wid, Attempt: 2}, Error: &fsm.Error{Code: fsm.CodeFFmpeg, Message: "x"}}),
		fsm.CodeStaleAttempt)
	refusal("report as another worker",
		wc.Start(cctx, fsm.Report{JobID: jobA.ID, WorkerID: "w-other", Attempt: 1}), server.CodePermissionDenied)
	refusal("exit report as another worker",
		wc.Exit(cctx, fsm.Report{JobID: jobA.ID, WorkerID: "w-other", Attempt: 1}), server.CodePermissionDenied)
	refusal("exit report on a finished job", wc.Exit(cctx, fsm.Report{JobID: jobA.ID, WorkerID: wid, Attempt: 1}), fsm.CodeStaleAttempt)
	if got, _ := client.GetJob(ctx, jobA.ID); got.State != fsm.JobSucceeded {
		t.Errorf("job after the refused reports: %s, want succeeded", got.State)
	}
	if ws, _ := client.ListWorkers(ctx); len(ws) != 1 || ws[0].TenantID != tenantA {
		t.Errorf("workers after the refused registration: %+v", ws)
	}
	// `ffrtmp worker --tenant` that disagrees with its token stops.
	tokA2 := c.workerToken(tenantA)
	file := filepath.Join(c.dir, "a2.token")
	os.WriteFile(file, []byte(tokA2.Token), 0o600)
	cmd := exec.Command(binary(t), "worker", "--join", strings.Join(tokA2.Join, ","), "--token-file", file, "--ca-hash", tokA2.CAHash,
		"--tenant", tenantB, "--gossip-addr", "127.0.1.9:"+c.gossipPort, "--data-dir", filepath.Join(c.dir, "w9"))
	cmd.Env = c.env
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "the token decides the tenant") {
		t.Errorf("worker --tenant %s with a token of %s: %v %s, want refused", tenantB, tenantA, err, out)
	}

	// The worker's credentials on the servers' calls: refused, and
	// nothing changes.
	hc := nodePortAsWorker(t, tokA)
	text, key := server.NewAPIKey(tenantA, "evil", fsm.RoleSuperAdmin, time.Now().UTC(), 0)
	apply, err := fsm.Encode(&fsm.CreateAPIKey{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	peer, _ := json.Marshal(cluster.Peer{ID: "evil", Addr: "127.0.0.9:1"})
	for _, n := range c.nodes {
		for _, call := range []struct {
			method, path string
			body         []byte
		}{
			{"POST", "/rpc/apply", apply},
			{"POST", "/rpc/join", peer},
			{"POST", "/rpc/remove", []byte(`{"id":"n1"}`)},
			{"POST", "/rpc/restore", []byte("not a snapshot")},
			{"POST", "/rpc/transfer", []byte(`{"id":""}`)},
			{"GET", "/rpc/readindex", nil},
			{"GET", "/rpc/status", nil},
		} {
			req, _ := http.NewRequest(call.method, "http://"+n.raftAddr+call.path, bytes.NewReader(call.body))
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("%s %s on %s as a worker: %v", call.method, call.path, n.id, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s %s on %s as a worker: %d, want 404 (no such call for workers)", call.method, call.path, n.id, resp.StatusCode)
			}
		}
	}
	st := c.status(c.nodes[0])
	if len(st.Members) != 3 {
		t.Errorf("members after the worker's calls: %+v, want n1, n2, n3", st.Members)
	}
	evil, err := cli.NewClient(c.addrs(c.nodes...), text)
	if err != nil {
		t.Fatal(err)
	}
	var ae *cli.APIError
	if _, err := evil.ListWorkers(ctx); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Errorf("the key the worker tried to create: %v, want 401", err)
	}

	// Revoked: the worker is down at once and refused from then on.
	c.mustCLI("--addr", c.addrs(c.nodes...), "workers", "token", "revoke", tokA.WorkerToken.ID)
	waitWorkerState(t, client, wid, fsm.WorkerDown)
	_, err = wc.Heartbeat(cctx, wid)
	refusal("heartbeat with a revoked token", err, server.CodeUnauthenticated)
}
