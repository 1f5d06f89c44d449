// Package fsm is the domain of ffrtmp: its types, the commands that change
// them, the deterministic Raft state machine that applies those commands,
// the in-memory scheduling indexes, and the Store interface it persists to.
package fsm
