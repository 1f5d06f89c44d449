package postgres_test

import (
	"errors"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/postgres"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

// importJob is job n of tenant acme in state s, as an import writes it.
func importJob(n int, s fsm.JobState) *fsm.Job {
	j := submitJob(n, "acme", t0).Job
	j.State = s
	return &j
}

// importBatches are a tenant, then jobs in two batches; the last job has
// the given state.
func importBatches(last fsm.JobState) []*fsm.Batch {
	job := importJob
	return []*fsm.Batch{
		{Tenants: []*fsm.Tenant{tenant("acme", 0)}},
		{Jobs: []*fsm.Job{job(1, fsm.JobQueued), job(2, fsm.JobQueued)}},
		{Jobs: []*fsm.Job{job(3, fsm.JobQueued), job(4, last)}},
	}
}

// TestImportAllOrNothing checks that Import writes all its batches in one
// transaction: a row the database refuses in the last batch leaves no
// object of the earlier ones, and a dry run counts without writing.
func TestImportAllOrNothing(t *testing.T) {
	t.Parallel()
	st := pgtest.Open(t, postgres.Options{})

	if _, err := st.Import(ctx, importBatches("bogus"), postgres.ImportOptions{}); err == nil {
		t.Fatal("Import of a job in an unknown state succeeded")
	}
	if s, err := st.Load(ctx); err != nil || len(s.Tenants) != 0 || len(s.Jobs) != 0 {
		t.Fatalf("after a refused import: %d tenants, %d jobs (%v); want none", len(s.Tenants), len(s.Jobs), err)
	}

	c, err := st.Import(ctx, importBatches(fsm.JobQueued), postgres.ImportOptions{DryRun: true})
	if err != nil || c.Table("tenants").Total != 1 || c.Table("jobs").Total != 4 || c.Table("jobs").Existing != 0 {
		t.Fatalf("dry run = %+v, %v; want 1 tenant and 4 jobs to insert", c, err)
	}
	if s, err := st.Load(ctx); err != nil || len(s.Tenants) != 0 || len(s.Jobs) != 0 {
		t.Fatalf("after a dry run: %d tenants, %d jobs (%v); want none", len(s.Tenants), len(s.Jobs), err)
	}

	if c, err = st.Import(ctx, importBatches(fsm.JobQueued), postgres.ImportOptions{}); err != nil || c.Table("jobs").Total != 4 || c.Table("jobs").Existing != 0 {
		t.Fatalf("Import = %+v, %v", c, err)
	}
	if s, err := st.Load(ctx); err != nil || len(s.Tenants) != 1 || len(s.Jobs) != 4 {
		t.Fatalf("after the import: %d tenants, %d jobs (%v); want 1 and 4", len(s.Tenants), len(s.Jobs), err)
	}

	// Once a cluster has committed, only an import that adds nothing
	// passes, dry or not, with the same refusal.
	commit(t, st, &fsm.Batch{Index: 3, Tenants: []*fsm.Tenant{tenant("initech", 3)}})
	more := append(importBatches(fsm.JobQueued), &fsm.Batch{Jobs: []*fsm.Job{importJob(5, fsm.JobQueued)}})
	for _, dry := range []bool{true, false} {
		if _, err := st.Import(ctx, importBatches(fsm.JobQueued), postgres.ImportOptions{DryRun: dry}); err != nil {
			t.Errorf("re-import of what is there (dry run %v): %v", dry, err)
		}
		if _, err := st.Import(ctx, more, postgres.ImportOptions{DryRun: dry}); !errors.Is(err, postgres.ErrLiveCluster) {
			t.Errorf("import of a new job into a live database (dry run %v) = %v, want ErrLiveCluster", dry, err)
		}
	}
}
