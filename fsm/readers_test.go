package fsm_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// outageStore is a store that goes down on request: while down, Commit
// blocks until up is closed or its context ends (a database that does not
// answer) and JobsExist fails as an unreachable database does. Each call
// made while down is reported on calls.
type outageStore struct {
	fsm.Store
	down   atomic.Bool
	up     chan struct{}
	upOnce sync.Once
	calls  chan string
}

func newOutageStore(t testing.TB) *outageStore {
	return &outageStore{Store: openStore(t), up: make(chan struct{}), calls: make(chan string, 1024)}
}

func (s *outageStore) note(call string) {
	select {
	case s.calls <- call:
	default:
	}
}

func (s *outageStore) Commit(ctx context.Context, b *fsm.Batch) error {
	if s.down.Load() {
		s.note("Commit")
		select {
		case <-s.up:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.Store.Commit(ctx, b)
}

func (s *outageStore) JobsExist(ctx context.Context, ids []string) (map[string]uint64, error) {
	if s.down.Load() {
		s.note("JobsExist")
		return nil, errors.New("dial tcp 127.0.0.1:5432: connection refused")
	}
	return s.Store.JobsExist(ctx, ids)
}

// restore brings the store back; it may be called more than once.
func (s *outageStore) restore() {
	s.down.Store(false)
	s.upOnce.Do(func() { close(s.up) })
}

// waitCall waits until the store has been called n times while down.
func (s *outageStore) waitCall(t *testing.T, call string, n int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for n > 0 {
		select {
		case c := <-s.calls:
			if c == call {
				n--
			}
		case <-deadline:
			t.Fatalf("the FSM did not call %s on the down store", call)
		}
	}
}

// answers runs read and fails the test if it does not return: a reader
// blocked behind the store outage.
func answers(t *testing.T, what string, read func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		read()
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s blocked while the store is down", what)
	}
}

// applyAsync applies cmds as one batch after n's last index on another
// goroutine (Raft's apply goroutine), and returns the channel of its
// responses.
func (n *node) applyAsync(cmds ...fsm.Command) <-chan []any {
	n.t.Helper()
	logs := make([]*raft.Log, len(cmds))
	for i, c := range cmds {
		n.last++
		logs[i] = entry(n.t, n.last, c)
	}
	out := make(chan []any, 1)
	go func() { out <- n.f.ApplyBatch(logs) }()
	return out
}

func newOutageNode(t *testing.T) (*node, *outageStore) {
	st := newOutageStore(t)
	n := &node{t: t, f: newFSM(t, st)}
	t.Cleanup(st.restore) // before the FSM's cleanup flushes
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 4, Encoders: x264})
	return n, st
}

// TestReadersDuringBlockedCommit: ApplyBatch answers without waiting for
// its batch's Commit. While that Commit waits for the store, readers
// answer for the applied state from memory (a job that finished in the
// batch reads as finished, one it purged is gone, although the store does
// not have the batch yet), Index stays at the committed batch, and the
// next ApplyBatch waits for the Commit before it applies anything.
func TestReadersDuringBlockedCommit(t *testing.T) {
	t.Parallel()
	n, st := newOutageNode(t)
	n.finishedJob("j0", "t1", fsm.JobSucceeded, at(0))
	n.submit("j1", "t1", spec("720p30-h264"), at(0))
	n.submit("j2", "t1", spec("720p30-h264"), at(0))
	n.run("j1", "w1", at(time.Second))
	before := n.f.Index()

	st.down.Store(true)
	resps := n.applyAsync(
		&fsm.FinishJob{Report: fsm.Report{JobID: "j1", WorkerID: "w1", Attempt: 1}, At: at(2 * time.Second)},
		&fsm.PurgeJobs{TenantID: "t1", IDs: []string{"j0"}, Retention: fsm.Duration(time.Hour), At: at(2 * time.Hour)},
	)
	var r []any
	answers(t, "ApplyBatch", func() { r = <-resps })
	if _, ok := r[0].(*fsm.Job); !ok {
		t.Fatalf("FinishJob = %v, want the finished job", r[0])
	}
	st.waitCall(t, "Commit", 1)

	answers(t, "readers", func() {
		if j, err := n.f.GetJob(context.Background(), "j1"); err != nil || j.State != fsm.JobSucceeded {
			t.Errorf("GetJob(j1) during the commit = %+v, %v; want succeeded", j, err)
		}
		if _, err := n.f.GetJob(context.Background(), "j0"); !errors.Is(err, fsm.ErrNotFound) {
			t.Errorf("GetJob(j0) purged in the batch being committed = %v, want not found", err)
		}
		if _, err := n.f.Store().GetJob(context.Background(), "j0"); err != nil {
			t.Errorf("the store lost j0 before the commit: %v", err)
		}
		if j, ok := n.f.ActiveJob("j2"); !ok || j.State != fsm.JobQueued {
			t.Errorf("ActiveJob(j2) during the commit = %+v, %v; want queued", j, ok)
		}
		if _, ok := n.f.Tenant("t1"); !ok {
			t.Error("Tenant(t1) during the commit: not found")
		}
		if got := n.f.Index(); got != before {
			t.Errorf("Index() during the commit = %d, want %d (the batch is not committed)", got, before)
		}
		n.f.Schedule(at(3*time.Second), fsm.NewFairness(), 10)
	})

	next := n.applyAsync(&fsm.CancelJob{JobID: "j2", At: at(3 * time.Second)})
	select {
	case <-next:
		t.Fatal("the next ApplyBatch returned while the previous Commit waits for the store")
	default:
	}
	if j, ok := n.f.ActiveJob("j2"); !ok || j.State != fsm.JobQueued {
		t.Errorf("ActiveJob(j2) = %+v, %v; the next batch was applied before the previous Commit returned", j, ok)
	}

	st.restore()
	if r := <-next; asError(r[0]) != nil {
		t.Fatalf("CancelJob refused: %v", r[0])
	}
	if got := n.f.Flush(); got != n.last {
		t.Errorf("Flush() after the commit = %d, want %d", got, n.last)
	}
	if j, err := n.f.Store().GetJob(context.Background(), "j1"); err != nil || j.State != fsm.JobSucceeded {
		t.Errorf("stored j1 = %+v, %v; want succeeded", j, err)
	}
	if _, err := n.f.Store().GetJob(context.Background(), "j0"); !errors.Is(err, fsm.ErrNotFound) {
		t.Errorf("stored j0 after the purge = %v, want not found", err)
	}
}

// TestSubmitWaitsForStoreOutsideLock: a submit's check against finished
// jobs needs the store; while the store is down the batch waits for it
// without holding the FSM's lock, and once it is back the check is as
// exact as before (a finished job's ID is refused, a new one queued).
func TestSubmitWaitsForStoreOutsideLock(t *testing.T) {
	t.Parallel()
	n, st := newOutageNode(t)
	n.submit("j1", "t1", spec("720p30-h264"), at(0))
	n.job(&fsm.CancelJob{JobID: "j1", At: at(time.Second)})
	n.submit("j0", "t1", spec("720p30-h264"), at(0))

	st.down.Store(true)
	resps := n.applyAsync(
		&fsm.SubmitJob{Job: newJob(t, "j2", "t1", spec("720p30-h264"), at(2*time.Second))},
		&fsm.SubmitJob{Job: newJob(t, "j1", "t1", spec("720p30-h264"), at(2*time.Second))},
	)
	st.waitCall(t, "JobsExist", 2) // failed, and retried
	if !n.f.StoreDown() {
		t.Error("StoreDown() = false while Apply retries the store")
	}

	answers(t, "readers", func() {
		if j, ok := n.f.ActiveJob("j0"); !ok || j.State != fsm.JobQueued {
			t.Errorf("ActiveJob(j0) during the outage = %+v, %v; want queued", j, ok)
		}
		n.f.Watch()
		n.f.Workers("")
	})

	st.restore()
	r := <-resps
	if j, ok := r[0].(*fsm.Job); !ok || j.State != fsm.JobQueued {
		t.Errorf("submit j2 = %v, want a queued job", r[0])
	}
	if err, _ := r[1].(error); fsm.ErrorCode(err) != fsm.CodeAlreadyExists {
		t.Errorf("submit of finished j1's ID = %v, want already_exists", r[1])
	}
	if n.f.StoreDown() {
		t.Error("StoreDown() = true after the store came back")
	}
}

// TestSubmitAlreadyCommittedBySharedStore: with a store shared by the
// nodes (PostgreSQL), another node may have committed this very entry: a
// stored job created at the entry's own index is this entry, not a
// duplicate.
func TestSubmitAlreadyCommittedBySharedStore(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("t1")
	index := n.last + 1
	j := newJob(t, "j1", "t1", spec("720p30-h264"), at(0))
	j.State, j.QueuedAt = fsm.JobQueued, at(0)
	j.Meta = fsm.Meta{CreateIndex: index, ModifyIndex: index}
	if err := n.st.Commit(context.Background(), &fsm.Batch{Index: index, Jobs: []*fsm.Job{&j}}); err != nil {
		t.Fatal(err)
	}
	got := n.submit("j1", "t1", spec("720p30-h264"), at(0))
	if got.CreateIndex != index {
		t.Errorf("submitted job's create index = %d, want %d", got.CreateIndex, index)
	}
}

// TestAbandonGivesUpACommit: a node that stops while its store does not
// answer abandons its FSM. The Commit it waits for gives up, the store
// keeps the index and state of its last commit (the Raft log holds the
// rest), and the batches after it are answered with ErrAbandoned without
// being applied or reaching the store.
func TestAbandonGivesUpACommit(t *testing.T) {
	t.Parallel()
	n, st := newOutageNode(t)
	n.submit("j1", "t1", spec("720p30-h264"), at(0))
	before := n.f.Flush()

	st.down.Store(true)
	if r := <-n.applyAsync(&fsm.CancelJob{JobID: "j1", At: at(time.Second)}); asError(r[0]) != nil {
		t.Fatalf("CancelJob refused: %v", r[0])
	}
	st.waitCall(t, "Commit", 1)
	next := n.applyAsync(&fsm.SubmitJob{Job: newJob(t, "j2", "t1", spec("720p30-h264"), at(2*time.Second))})
	flushed := make(chan uint64, 1)
	go func() { flushed <- n.f.Flush() }()

	n.f.Abandon()
	answers(t, "Flush after Abandon", func() {
		if got := <-flushed; got != before {
			t.Errorf("Flush() = %d after the commit was abandoned, want the last committed index %d", got, before)
		}
	})
	answers(t, "the next ApplyBatch after Abandon", func() {
		if r := <-next; !errors.Is(asError(r[0]), fsm.ErrAbandoned) {
			t.Errorf("submit after Abandon = %v, want ErrAbandoned", r[0])
		}
	})
	if r := <-n.applyAsync(&fsm.CancelJob{JobID: "j1", At: at(3 * time.Second)}); !errors.Is(asError(r[0]), fsm.ErrAbandoned) {
		t.Errorf("a later batch = %v, want ErrAbandoned", r[0])
	}
	if _, ok := n.f.ActiveJob("j2"); ok {
		t.Error("the submit answered ErrAbandoned was applied")
	}
	st.restore()
	if got := n.f.Flush(); got != before {
		t.Errorf("Flush() = %d once the store is back, want %d: nothing is committed after Abandon", got, before)
	}
	j, err := n.f.Store().GetJob(context.Background(), "j1")
	if err != nil || j.State != fsm.JobQueued {
		t.Errorf("stored j1 = %+v, %v; want queued (its cancel was not committed)", j, err)
	}
}

// TestAbandonGivesUpARead: a store read Apply retries while the store is
// unreachable gives up on Abandon, and its batch is answered with
// ErrAbandoned, not applied.
func TestAbandonGivesUpARead(t *testing.T) {
	t.Parallel()
	n, st := newOutageNode(t)
	st.down.Store(true)
	resps := n.applyAsync(&fsm.SubmitJob{Job: newJob(t, "j1", "t1", spec("720p30-h264"), at(0))})
	st.waitCall(t, "JobsExist", 2) // failed, and retried
	n.f.Abandon()
	answers(t, "ApplyBatch after Abandon", func() {
		if r := <-resps; !errors.Is(asError(r[0]), fsm.ErrAbandoned) {
			t.Errorf("submit = %v, want ErrAbandoned", r[0])
		}
	})
	if _, ok := n.f.ActiveJob("j1"); ok {
		t.Error("the submit answered ErrAbandoned was applied")
	}
}
