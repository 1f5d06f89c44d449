package cluster_test

import (
	"net"
	"slices"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
)

// gossipAddr returns a 127.0.0.1 address free for TCP and UDP.
func gossipAddr(t *testing.T) string {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if u, err := net.ListenPacket("udp", addr); err == nil {
			u.Close()
			return addr
		}
	}
	t.Fatal("no free gossip port")
	return ""
}

// TestGossipServerEndpoints: a worker learns every address and port of a
// server from the pool, its API included, so it can keep jobs off them.
func TestGossipServerEndpoints(t *testing.T) {
	t.Parallel()
	key := make([]byte, cluster.KeySize)
	log := clustertest.Logger(t)
	srvAddr := gossipAddr(t)
	srv, err := cluster.NewGossip(cluster.GossipConfig{Name: "n1", BindAddr: srvAddr, Key: key, Logger: log,
		Meta: cluster.GossipMeta{Role: cluster.RoleServer, NodeAddr: "127.0.0.5:7071", APIAddr: "127.0.0.5:7070"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Leave)
	w, err := cluster.NewGossip(cluster.GossipConfig{Name: "w1", BindAddr: gossipAddr(t), Key: key, Logger: log,
		Meta: cluster.GossipMeta{Role: cluster.RoleWorker}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Leave)
	if _, err := w.Join([]string{srvAddr}); err != nil {
		t.Fatal(err)
	}
	_, gossipPort, _ := net.SplitHostPort(srvAddr)
	want := []string{"127.0.0.1:7070", "127.0.0.1:7071", srvAddr, "127.0.0.5:7070", "127.0.0.5:7071", "127.0.0.5:" + gossipPort}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := w.ServerEndpoints()
		if !slices.ContainsFunc(want, func(e string) bool { return !slices.Contains(got, e) }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ServerEndpoints = %v, want all of %v", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
