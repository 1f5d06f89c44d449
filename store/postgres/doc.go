// Package postgres is the PostgreSQL implementation of fsm.Store: one
// database shared by every node of a cluster, through a pgx/v5 pool.
//
// # Many writers, one history
//
// Every node's FSM applies every committed Raft entry and commits the
// objects it changed, so each batch reaches the database once per node.
// The nodes' batch boundaries differ (Raft hands each FSM whatever it has
// ready), and they run at different speeds. Two rules make that safe:
//
//   - A single-row table holds the applied index: the Raft index of the
//     last batch any node committed. Commit first advances it with
//     UPDATE … WHERE applied_index < $batch; if no row changed, another
//     node has already committed a batch at or past this one and Commit
//     writes nothing (every later statement of its transaction is
//     conditional on a transaction-local setting that the UPDATE sets,
//     so the whole transaction goes to the server in one round trip). The
//     row lock that UPDATE takes serializes the nodes' transactions, so
//     at every commit the database holds exactly the state after the log
//     prefix up to its applied index.
//   - Every row is written with INSERT … ON CONFLICT DO UPDATE … WHERE
//     excluded.modify_index > t.modify_index, so an object never goes back
//     to an older version, whatever order the batches arrive in.
//
// A node whose batch covers (a, b] with a below the applied index and b
// above it writes the final version of everything changed in (a, b]; the
// guards drop the versions the database already has. So every entry's
// effect is written at least once and never undone.
//
// The leader's FSM is usually the first to apply an entry, so the other
// nodes usually find their batches committed. A node whose last Commit
// found that reads the applied index before it encodes its next batch,
// so following costs a node one small read per batch, not a transaction.
//
// # Snapshots
//
// The database is the state, and it is shared: a Raft snapshot carries
// only the applied index of the node that took it (a few bytes of JSON),
// and Restore checks that the database has reached that index and changes
// nothing. The FSM then rebuilds its memory with Load, which may return a
// later index than the snapshot's: entries up to it are skipped as already
// applied, which is right, because some node committed them and only
// committed entries are ever applied. A database behind the snapshot (a
// stale backup, or the wrong database) is refused with ErrBehind rather
// than silently losing the entries in between. Restoring the snapshot's
// contents instead would be wrong: a follower installing a leader's
// snapshot would roll the shared database back under the other nodes.
//
// # Deletes
//
// Nothing is deleted yet: finished jobs stay as history and API keys are
// revoked by a flag. When deletes come, they will be tombstones: the row
// stays with deleted_at and modify_index set by the deleting entry, so
// that a lagging node's older upsert is still stopped by the guard and
// Load skips it; a retention job removes tombstones once every node's
// applied index (reported through Raft) is past them.
//
// # Schema
//
// The schema is created and changed by the numbered SQL files in
// migrations/, applied at Open under an advisory lock (see Migrate).
// Tables and indexes are described in docs/migration.md.
package postgres
