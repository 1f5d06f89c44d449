package importer

import (
	"cmp"
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
	// Tenant receives a master.db's jobs (DefaultTenant if empty); it is
	// created if missing.
	Tenant string
	// DryRun reads both sides and writes nothing; it fails as the real
	// run would.
	DryRun bool
	// Now stamps what the import creates: the tenant, and the queue time
	// of jobs put back in the queue.
	Now func() time.Time
}

// Report is what Run did, or would do in a dry run.
type Report struct {
	// Source describes what was read.
	Source string `json:"source"`
	// Notes say how the source's objects were converted.
	Notes []string `json:"notes,omitempty"`
	// Target is the database, its password redacted.
	Target string `json:"target"`
	// DryRun is set when nothing was written.
	DryRun bool `json:"dry_run"`
	// Migrations are the schema migrations applied now (or, in a dry
	// run, that would be).
	Migrations []string `json:"migrations,omitempty"`
	// Counts are the source's objects and how many the target already
	// had before the import.
	Counts postgres.Counts `json:"-"`
	// Tables is Counts per table, in the order they are written.
	Tables []TableCount `json:"tables"`
	// Requeued counts active jobs put back in the queue, by old state.
	Requeued map[string]int `json:"requeued,omitempty"`
	// Failed counts legacy jobs that could not be converted into a
	// runnable job and were imported as failed.
	Failed int `json:"unconvertible"`
	// Truncated counts legacy logs cut to their last LogTailBytes.
	Truncated Truncation `json:"truncated_logs"`
	// Sanitized counts legacy text fields from which NUL bytes, which
	// PostgreSQL cannot store, were removed.
	Sanitized int `json:"sanitized_fields"`
	// Checked is set once every source object was found in the target.
	Checked bool `json:"count_check_ok"`
}

// TableCount is one table's line of the summary.
type TableCount struct {
	Table string `json:"table"`
	// Source is how many objects the source has for the table.
	Source int `json:"source"`
	// Inserted is how many were (or would be) inserted.
	Inserted int `json:"inserted"`
	// Existing is how many the target had already.
	Existing int `json:"already_in_target"`
}

// Truncation counts logs that were cut, and the bytes cut from them.
type Truncation struct {
	Logs  int   `json:"logs"`
	Bytes int64 `json:"bytes"`
}

// Run moves the objects of a bolt store or a legacy ffmpeg-rtmp
// master.db into a PostgreSQL database, before a cluster starts on it.
// It reads and converts the whole source, opened read-only, before it
// touches the target, so that a source it cannot import changes nothing;
// then it writes every object in one transaction (postgres.Store.Import),
// all or nothing. Objects keep their IDs and are written with Raft index
// 0 and without raising the applied index, so that the new cluster's log,
// which starts at 1, applies in full. Objects the target has already are
// left alone, so a second run changes nothing. At the end every source
// object is looked up in the target, and a missing one is an error. A dry
// run does the same import in a transaction that it rolls back, so it
// fails whenever the real run would, with the same error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	src, err := readSource(ctx, cfg)
	if err != nil {
		return nil, err
	}
	rep := &Report{
		Source: src.desc, Notes: src.notes, Target: store.Redact(cfg.To), DryRun: cfg.DryRun,
		Requeued: src.requeued, Failed: src.failed, Truncated: src.truncated, Sanitized: src.sanitized,
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

	if cfg.DryRun {
		rep.Migrations = pending
		counts, err := dryRun(ctx, st, src.batches, len(pending), len(status))
		if err != nil {
			return nil, err
		}
		rep.setCounts(counts)
		return rep, nil
	}

	applied, err := st.Migrate(ctx)
	for _, m := range applied {
		rep.Migrations = append(rep.Migrations, fmt.Sprintf("%03d_%s", m.Version, m.Name))
	}
	if err != nil {
		return nil, err
	}
	counts, err := st.Import(ctx, src.batches, postgres.ImportOptions{})
	if err != nil {
		return nil, err
	}
	rep.setCounts(counts)

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
	rep.Checked = true
	return rep, nil
}

// dryRun returns what an import of batches would insert, or the error it
// would fail with. With the schema up to date it runs the import and
// rolls it back; with migrations pending it cannot, and predicts from
// the objects present and the applied index.
func dryRun(ctx context.Context, st *postgres.Store, batches []*fsm.Batch, pending, migrations int) (*postgres.Counts, error) {
	switch {
	case pending == 0:
		return st.Import(ctx, batches, postgres.ImportOptions{DryRun: true})
	case pending == migrations: // no tables yet: everything is new
		return sum(batches), nil
	}
	counts, err := presentAll(ctx, st, batches)
	if err != nil {
		return nil, err
	}
	idx, err := st.AppliedIndex(ctx)
	if err != nil {
		return nil, err
	}
	if idx > 0 && existing(counts) < total(counts) {
		return nil, fmt.Errorf("import: %w", postgres.LiveClusterError(idx))
	}
	return counts, nil
}

func (r *Report) setCounts(c *postgres.Counts) {
	r.Counts = *c
	r.Tables = nil
	for _, t := range postgres.Tables {
		x := c.Table(t)
		r.Tables = append(r.Tables, TableCount{Table: t, Source: x.Total, Inserted: x.Total - x.Existing, Existing: x.Existing})
	}
}

// WriteText prints the report as the migrate command's summary.
func (r *Report) WriteText(out io.Writer) {
	fmt.Fprintf(out, "source: %s\n", r.Source)
	for _, note := range r.Notes {
		fmt.Fprintf(out, "  %s\n", note)
	}
	if r.Truncated.Logs > 0 {
		fmt.Fprintf(out, "  logs truncated to their last %d KiB: %d (%d bytes cut in total)\n", LogTailBytes>>10, r.Truncated.Logs, r.Truncated.Bytes)
	}
	if r.Sanitized > 0 {
		fmt.Fprintf(out, "  text fields with NUL bytes removed: %d\n", r.Sanitized)
	}
	verb := "inserted"
	if r.DryRun {
		verb = "would insert"
		fmt.Fprintf(out, "target: %s\n", r.Target)
		if len(r.Migrations) > 0 {
			fmt.Fprintf(out, "  would apply migrations %s\n", strings.Join(r.Migrations, ", "))
		}
	} else {
		fmt.Fprintf(out, "target: %s (%d migrations applied now)\n", r.Target, len(r.Migrations))
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "table\tsource\t%s\talready in target\t\n", verb)
	for _, t := range r.Tables {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t\n", t.Table, t.Source, t.Inserted, t.Existing)
	}
	tw.Flush()
	switch {
	case r.DryRun:
		fmt.Fprintln(out, "dry run: nothing was written")
	case r.Checked:
		var counts []string
		for _, t := range r.Tables {
			counts = append(counts, fmt.Sprintf("%s %d", t.Table, t.Source))
		}
		fmt.Fprintf(out, "count check: ok (%s: every source object is in the target)\n", strings.Join(counts, ", "))
	}
}

func total(c *postgres.Counts) (n int) {
	for _, t := range postgres.Tables {
		n += c.Table(t).Total
	}
	return n
}

func existing(c *postgres.Counts) (n int) {
	for _, t := range postgres.Tables {
		n += c.Table(t).Existing
	}
	return n
}

// sum adds up the objects of batches and the counts of cs.
func sum(batches []*fsm.Batch, cs ...*postgres.Counts) *postgres.Counts {
	out := &postgres.Counts{}
	for _, b := range batches {
		c := &postgres.Counts{}
		for _, k := range fsm.Kinds {
			c.Table(k.Table).Total = len(k.Objects(b))
		}
		cs = append(cs, c)
	}
	for _, c := range cs {
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

// source is what was read from --from, converted and split into import
// batches (the first holds tenants, keys and workers; jobs follow in
// chunks).
type source struct {
	desc     string
	notes    []string
	batches  []*fsm.Batch
	requeued map[string]int
	failed   int
	// truncated and sanitized count legacy logs cut and text fields
	// cleaned.
	truncated Truncation
	sanitized int
}

func readSource(ctx context.Context, cfg Config) (*source, error) {
	// A typo names the missing file, before any format check.
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
		tenant := cmp.Or(cfg.Tenant, DefaultTenant)
		if err := validTenant(tenant); err != nil {
			return nil, err
		}
		path := strings.TrimPrefix(cfg.From, "sqlite://")
		if path == "" {
			return nil, errors.New("want --from sqlite:///path/to/master.db")
		}
		return readLegacy(ctx, path, tenant, cfg.Now())
	}
	return nil, fmt.Errorf("--from %q: want bolt:///path/state.db or sqlite:///path/master.db", cfg.From)
}

var tenantRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// DefaultTenant receives a master.db's jobs when no --tenant is named:
// the tenant every installation starts with (cluster init and dev mode
// make it), so that the upgrade path's first step finds them there.
const DefaultTenant = "default"

func validTenant(t string) error {
	if !tenantRE.MatchString(t) {
		return fmt.Errorf("--tenant %q: use lower-case letters, digits, '-' and '_' (at most 63)", t)
	}
	return nil
}

// importChunk is how many jobs go into one statement of the import
// transaction.
const importChunk = 1000

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
