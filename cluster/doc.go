// Package cluster runs the Raft node that replicates the fsm, proposes
// commands through one Apply helper, and runs leader-only work (the
// scheduler) only while this node leads.
package cluster
