package importer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store"
	"github.com/ffrtmp/ffrtmp/store/postgres"
)

// Config configures Run.
type Config struct {
	// From is bolt:///path/state.db or sqlite:///path/master.db.
	From string
	// To is the target postgres:// URL.
	To string
	// Tenant receives a master.db's jobs; it is created if missing.
	Tenant string
	// DryRun reads both sides and writes nothing.
	DryRun bool
	Out    io.Writer
	// Now stamps what the import creates: the tenant, and the queue time
	// of jobs put back in the queue.
	Now func() time.Time
}

// Report is what Run did, per table.
type Report struct {
	// Counts are the source's objects and how many the target already
	// had before the import.
	Counts postgres.Counts
	// Requeued counts active jobs put back in the queue, by old state.
	Requeued map[string]int
	// Failed counts legacy jobs that could not be converted into a
	// runnable job and were imported as failed.
	Failed int
}

// importChunk is how many jobs go into one import transaction.
const importChunk = 1000

// Run moves the objects of a bolt store or a legacy ffmpeg-rtmp
// master.db into a PostgreSQL database, before a cluster starts on it.
// Objects keep their IDs and are written with Raft index 0 and without
// raising the applied index (see postgres.Store.Import), so that the new
// cluster's log, which starts at 1, applies in full. Objects the target
// has already are left alone, so a second run changes nothing. At the end
// every source object is looked up in the target, and a missing one is an
// error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	src, err := readSource(ctx, cfg)
	if err != nil {
		return nil, err
	}
	out := cfg.Out
	fmt.Fprintf(out, "source: %s\n", src.desc)
	for _, note := range src.notes {
		fmt.Fprintf(out, "  %s\n", note)
	}

	st, err := store.OpenPostgres(ctx, cfg.To)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	status, err := st.MigrationStatus(ctx)
	if err != nil {
		return nil, err
	}
	var pending []string
	for _, s := range status {
		if s.Unknown {
			return nil, fmt.Errorf("target: %w", postgres.ErrSchemaTooNew)
		}
		if s.AppliedAt.IsZero() {
			pending = append(pending, fmt.Sprintf("%03d_%s", s.Version, s.Name))
		}
	}
	target := store.Redact(cfg.To)
	rep := &Report{Requeued: src.requeued, Failed: src.failed}

	if cfg.DryRun {
		fmt.Fprintf(out, "target: %s\n", target)
		if len(pending) > 0 {
			fmt.Fprintf(out, "  would apply migrations %s\n", strings.Join(pending, ", "))
		}
		counts := &postgres.Counts{}
		if len(pending) < len(status) { // the tables exist
			if counts, err = presentAll(ctx, st, src.batches); err != nil {
				return nil, err
			}
			if idx, err := st.AppliedIndex(ctx); err != nil {
				return nil, err
			} else if idx > 0 && counts.Tenants.Existing+counts.Keys.Existing+counts.Workers.Existing+counts.Jobs.Existing < total(counts) {
				fmt.Fprintf(out, "  a cluster already runs on this database (applied index %d): the import would be refused\n", idx)
			}
		} else {
			counts = sum(src.batches, nil)
		}
		rep.Counts = *counts
		printCounts(out, counts, "would insert")
		fmt.Fprintln(out, "dry run: nothing was written")
		return rep, nil
	}

	applied, err := st.Migrate(ctx)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "target: %s (%d migrations applied now)\n", target, len(applied))
	var counts *postgres.Counts
	for _, b := range src.batches {
		c, err := st.Import(ctx, b)
		if err != nil {
			return nil, err
		}
		counts = sum(nil, counts, c)
	}
	if counts == nil {
		counts = &postgres.Counts{}
	}
	rep.Counts = *counts
	printCounts(out, counts, "inserted")

	// The count check: every source object is in the target now.
	present, err := presentAll(ctx, st, src.batches)
	if err != nil {
		return nil, err
	}
	var bad []string
	for _, t := range postgres.Tables {
		c := present.Table(t)
		if c.Existing != c.Total {
			bad = append(bad, fmt.Sprintf("%s: %d of %d in the target", t, c.Existing, c.Total))
		}
	}
	if len(bad) > 0 {
		return rep, fmt.Errorf("count check failed: %s", strings.Join(bad, "; "))
	}
	fmt.Fprintf(out, "count check: ok (tenants %d, api_keys %d, workers %d, jobs %d: every source object is in the target)\n",
		present.Tenants.Total, present.Keys.Total, present.Workers.Total, present.Jobs.Total)
	return rep, nil
}

func total(c *postgres.Counts) int {
	return c.Tenants.Total + c.Keys.Total + c.Workers.Total + c.Jobs.Total
}

// sum adds up counts; batches without counts add their totals.
func sum(batches []*fsm.Batch, cs ...*postgres.Counts) *postgres.Counts {
	out := &postgres.Counts{}
	for _, b := range batches {
		cs = append(cs, &postgres.Counts{
			Tenants: postgres.Count{Total: len(b.Tenants)}, Keys: postgres.Count{Total: len(b.Keys)},
			Workers: postgres.Count{Total: len(b.Workers)}, Jobs: postgres.Count{Total: len(b.Jobs)},
		})
	}
	for _, c := range cs {
		if c == nil {
			continue
		}
		for _, t := range postgres.Tables {
			o, x := out.Table(t), c.Table(t)
			o.Total += x.Total
			o.Existing += x.Existing
		}
	}
	return out
}

func presentAll(ctx context.Context, st *postgres.Store, batches []*fsm.Batch) (*postgres.Counts, error) {
	var cs []*postgres.Counts
	for _, b := range batches {
		c, err := st.Present(ctx, b)
		if err != nil {
			return nil, err
		}
		cs = append(cs, c)
	}
	return sum(nil, cs...), nil
}

func printCounts(out io.Writer, c *postgres.Counts, verb string) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "table\tsource\t%s\talready in target\t\n", verb)
	for _, t := range postgres.Tables {
		x := c.Table(t)
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t\n", t, x.Total, x.Total-x.Existing, x.Existing)
	}
	tw.Flush()
}

// source is what was read from --from, converted and split into import
// batches (the first holds tenants, keys and workers; jobs follow in
// chunks).
type source struct {
	desc     string
	notes    []string
	batches  []*fsm.Batch
	requeued map[string]int
	failed   int
}

func readSource(ctx context.Context, cfg Config) (*source, error) {
	// Both drivers would create a missing file; a typo must not import
	// nothing successfully.
	if _, path, ok := strings.Cut(cfg.From, "://"); ok && path != "" {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("--from: %w", err)
		}
	}
	switch {
	case strings.HasPrefix(cfg.From, "bolt://"):
		if cfg.Tenant != "" {
			return nil, errors.New("--tenant is for sqlite:// sources; a bolt store carries its tenants")
		}
		path, err := store.BoltPath(cfg.From)
		if err != nil {
			return nil, err
		}
		return readBolt(ctx, path, cfg.Now())
	case strings.HasPrefix(cfg.From, "sqlite://"):
		if err := validTenant(cfg.Tenant); err != nil {
			return nil, err
		}
		path := strings.TrimPrefix(cfg.From, "sqlite://")
		if path == "" {
			return nil, errors.New("want --from sqlite:///path/to/master.db")
		}
		return readLegacy(ctx, path, cfg.Tenant, cfg.Now())
	}
	return nil, fmt.Errorf("--from %q: want bolt:///path/state.db or sqlite:///path/master.db", cfg.From)
}

var tenantRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

func validTenant(t string) error {
	if t == "" {
		return errors.New("--tenant is required for a sqlite:// source: the tenant that receives its jobs")
	}
	if !tenantRE.MatchString(t) {
		return fmt.Errorf("--tenant %q: use lower-case letters, digits, '-' and '_' (at most 63)", t)
	}
	return nil
}

// chunk splits jobs into import batches after a first batch with the
// other objects.
func chunk(first *fsm.Batch, jobs []*fsm.Job) []*fsm.Batch {
	out := []*fsm.Batch{first}
	for len(jobs) > 0 {
		n := min(importChunk, len(jobs))
		out = append(out, &fsm.Batch{Jobs: jobs[:n]})
		jobs = jobs[n:]
	}
	return out
}
