// Package cluster runs the Raft node that replicates the fsm, proposes
// commands through one Apply helper, and runs leader-only work (the
// scheduler) only while this node leads.
//
// Trust. The node port (mux.go) serves two kinds of caller. Servers
// present a certificate of the cluster CA (derived from the cluster key,
// or the operator's) and reach Raft and node RPC. Workers present none;
// they reach only the handlers added with HandleWorkerRPC (the worker
// protocol), each request carrying a worker token that the server package
// checks, and they trust the servers by the CA's hash (WorkerTLS). The
// cluster key stays on servers. Gossip (gossip.go) is one pool of servers
// and workers keyed by the worker gossip key (WorkerGossipKey), which every
// worker holds: nothing said there is trusted. Servers take no decision
// from it (dead voters are removed from Raft's heartbeats, leases are
// renewed by token-authenticated heartbeats), and workers dial the servers
// it names only over the pinned TLS.
package cluster
