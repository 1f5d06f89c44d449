package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
	"github.com/ffrtmp/ffrtmp/store/bolt"
)

// bareNode is a node that belongs to no cluster yet, with its API.
func bareNode(t *testing.T) (*cluster.Node, string) {
	t.Helper()
	return newTestNode(t, "bare", false)
}

// newTestNode is a node with the cluster key and its API, bootstrapped as
// a cluster of one or belonging to none; no API key exists yet.
func newTestNode(t *testing.T, id string, bootstrap bool) (*cluster.Node, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsm.New(context.Background(), fsm.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	node, err := cluster.New(cluster.Config{TLS: clustertest.PeerTLS(t), NodeID: id,
		DataDir: filepath.Join(dir, "raft"), RaftAddr: "127.0.0.1:0", Bootstrap: bootstrap, FSM: f, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		node.Shutdown()
		st.Close()
	})
	srv, err := server.New(server.Config{FSM: f, Raft: node, Logger: testLogger(t), ClusterKey: clustertest.Key})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return node, hs.URL
}

// TestClusterJoinAuthorization checks who may make a node join: on a
// node without a cluster, proof of the cluster key (for this purpose) or
// a super-admin key that the cluster verifies; on a member, its own
// super-admin key. A refused request changes nothing.
func TestClusterJoinAuthorization(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	e.srv.MountClusterRPC(e.node.HandleRPC)
	viewer, vkey := server.NewAPIKey(server.DefaultTenant, "viewer", fsm.RoleViewer, time.Now(), 0)
	if _, err := e.node.Apply(context.Background(), &fsm.CreateAPIKey{Key: vkey}); err != nil {
		t.Fatal(err)
	}
	bare, url := bareNode(t)
	body := `{"addrs":["` + e.node.Addr() + `"]}`
	post := func(url string, header map[string]string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", url+"/v1/cluster/join", strings.NewReader(body))
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	otherKey := bytes.Repeat([]byte{3}, cluster.KeySize)
	for _, tc := range []struct {
		name   string
		header map[string]string
		status int
		code   string
	}{
		{"no credentials", nil, 401, "unauthenticated"},
		{"proof of another key", map[string]string{"X-Ffrtmp-Cluster-Proof": server.JoinProof(otherKey, time.Now())}, 401, "unauthenticated"},
		{"init proof", map[string]string{"X-Ffrtmp-Cluster-Proof": server.InitProof(clustertest.Key, time.Now())}, 401, "unauthenticated"},
		{"stale proof", map[string]string{"X-Ffrtmp-Cluster-Proof": server.JoinProof(clustertest.Key, time.Now().Add(-time.Hour))}, 401, "unauthenticated"},
		{"unknown API key", map[string]string{"Authorization": "Bearer ffk_0011223344556677_bogus"}, 401, "unauthenticated"},
		{"viewer API key", map[string]string{"Authorization": "Bearer " + viewer}, 403, "permission_denied"},
	} {
		status, got := post(url, tc.header)
		if status != tc.status || !strings.Contains(got, `"code": "`+tc.code+`"`) {
			t.Errorf("%s: %d %s; want %d %s", tc.name, status, got, tc.status, tc.code)
		}
		if _, waiting := bare.Waiting(); !waiting {
			t.Fatalf("%s: the node joined", tc.name)
		}
	}
	if ms, _ := e.node.Members(context.Background(), false); len(ms) != 1 {
		t.Fatalf("the cluster has %d members after refused joins, want 1", len(ms))
	}

	// A super-admin key, verified by the cluster; the answer lists both.
	status, got := post(url, map[string]string{"Authorization": "Bearer " + e.token})
	var st struct {
		ClusterID string           `json:"cluster_id"`
		Members   []cluster.Member `json:"members"`
	}
	if err := json.Unmarshal([]byte(got), &st); status != 200 || err != nil || len(st.Members) != 2 || st.ClusterID != e.node.ClusterID() {
		t.Fatalf("join with a super-admin key: %d %s; want 200 with two members of cluster %s", status, got, e.node.ClusterID())
	}
	// Now a member: the cluster key alone no longer suffices, its own
	// super-admin key does, and joining again changes nothing.
	if status, got := post(url, map[string]string{"X-Ffrtmp-Cluster-Proof": server.JoinProof(clustertest.Key, time.Now())}); status != 401 {
		t.Errorf("join of a member with only a cluster key proof: %d %s; want 401", status, got)
	}
	if status, got := post(url, map[string]string{"Authorization": "Bearer " + e.token}); status != 200 || strings.Count(got, `"voter": true`) != 2 {
		t.Errorf("joining again: %d %s; want 200 and the same two voters", status, got)
	}
}

// TestClusterJoinByProof joins a node without a cluster by proof of the
// cluster key alone.
func TestClusterJoinByProof(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	bare, url := bareNode(t)
	req, _ := http.NewRequest("POST", url+"/v1/cluster/join", strings.NewReader(`{"addrs":["`+e.node.Addr()+`"]}`))
	req.Header.Set("X-Ffrtmp-Cluster-Proof", server.JoinProof(clustertest.Key, time.Now()))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("join by proof: %d", resp.StatusCode)
	}
	if _, waiting := bare.Waiting(); waiting || bare.ClusterID() != e.node.ClusterID() {
		t.Errorf("after join: waiting, or cluster %q; want cluster %q", bare.ClusterID(), e.node.ClusterID())
	}
}

// TestClusterJoinOtherCluster asks a member to join another cluster: 409
// other_cluster, and neither cluster changes.
func TestClusterJoinOtherCluster(t *testing.T) {
	t.Parallel()
	a, b := setup(t, envOpts{}), setup(t, envOpts{})
	var got struct {
		Error *fsm.Error `json:"error"`
	}
	resp := a.do("POST", "/v1/cluster/join", map[string]any{"addrs": []string{b.node.Addr()}}, &got)
	if resp.StatusCode != http.StatusConflict || got.Error == nil || got.Error.Code != server.CodeOtherCluster ||
		!strings.Contains(got.Error.Message, b.node.ClusterID()) {
		t.Fatalf("join of another cluster: %d %+v; want 409 other_cluster naming cluster %s", resp.StatusCode, got.Error, b.node.ClusterID())
	}
	for _, e := range []*env{a, b} {
		if ms, _ := e.node.Members(context.Background(), false); len(ms) != 1 {
			t.Errorf("a cluster has %d members after a refused join, want 1", len(ms))
		}
	}
}
