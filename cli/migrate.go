package cli

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/urfave/cli/v2"
	_ "modernc.org/sqlite" // database/sql driver "sqlite", pure Go

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store"
	"github.com/ffrtmp/ffrtmp/store/bolt"
	"github.com/ffrtmp/ffrtmp/store/postgres"
	"github.com/ffrtmp/ffrtmp/worker"
)

func migrateCommand() *cli.Command {
	storeFlags := []cli.Flag{
		&cli.StringFlag{Name: "store", Usage: "PostgreSQL URL, postgres://user@host/db (default $FFRTMP_STORE)"},
		&cli.StringFlag{Name: "store-file", Usage: "file holding the URL, to keep a password out of ps (default $FFRTMP_STORE_FILE)"},
	}
	storeURL := func(c *cli.Context) (string, error) {
		u, err := store.URLFrom(c.String("store"), c.String("store-file"), envOf(c).Getenv)
		if err == nil && u == "" {
			err = errors.New("give --store postgres://… (or --store-file, $FFRTMP_STORE, $FFRTMP_STORE_FILE)")
		}
		return u, err
	}
	return &cli.Command{
		Name:  "migrate",
		Usage: "apply PostgreSQL schema migrations, or import a bolt store or a legacy ffmpeg-rtmp master.db into PostgreSQL",
		UsageText: "ffrtmp migrate up|status --store postgres://…\n" +
			"ffrtmp migrate --from bolt:///path/state.db --to postgres://… [--dry-run]\n" +
			"ffrtmp migrate --from sqlite:///path/master.db --to postgres://… --tenant T [--dry-run]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Usage: "source: bolt:///path/state.db (a stopped node's state file) or sqlite:///path/master.db (ffmpeg-rtmp)"},
			&cli.StringFlag{Name: "to", Usage: "target PostgreSQL URL (default $FFRTMP_STORE, else the file named by $FFRTMP_STORE_FILE)"},
			&cli.StringFlag{Name: "tenant", Usage: "tenant that receives a master.db's jobs (created if missing)"},
			&cli.BoolFlag{Name: "dry-run", Usage: "read both sides and print what would be done; write nothing"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("unknown migrate command %q (up, status, or --from/--to)", c.Args().First())
			}
			if c.String("from") == "" {
				return cli.ShowSubcommandHelp(c)
			}
			to := c.String("to")
			if to == "" {
				var err error
				if to, err = store.URLFrom("", "", envOf(c).Getenv); err != nil {
					return err
				}
			}
			_, err := RunImport(c.Context, ImportConfig{
				From: c.String("from"), To: to, Tenant: c.String("tenant"), DryRun: c.Bool("dry-run"),
				Out: envOf(c).Stdout, Now: time.Now,
			})
			return err
		},
		Subcommands: []*cli.Command{
			{
				Name:  "up",
				Usage: "apply pending schema migrations (nodes also apply them at start)",
				Flags: storeFlags,
				Action: func(c *cli.Context) error {
					u, err := storeURL(c)
					if err != nil {
						return err
					}
					return MigrateUp(c.Context, envOf(c).Stdout, u)
				},
			},
			{
				Name:  "status",
				Usage: "list schema migrations and whether each is applied",
				Flags: storeFlags,
				Action: func(c *cli.Context) error {
					u, err := storeURL(c)
					if err != nil {
						return err
					}
					return MigrateStatus(c.Context, envOf(c).Stdout, u)
				},
			},
		},
	}
}

// openPostgres opens a PostgreSQL store without migrating it.
func openPostgres(ctx context.Context, rawURL string) (*postgres.Store, error) {
	if !strings.HasPrefix(rawURL, "postgres://") && !strings.HasPrefix(rawURL, "postgresql://") {
		return nil, fmt.Errorf("%q is not a postgres:// URL", store.Redact(rawURL))
	}
	return postgres.Open(ctx, rawURL, postgres.Options{SkipMigrations: true})
}

// MigrateUp applies the pending migrations of the database at rawURL and
// prints each.
func MigrateUp(ctx context.Context, out io.Writer, rawURL string) error {
	st, err := openPostgres(ctx, rawURL)
	if err != nil {
		return err
	}
	defer st.Close()
	done, err := st.Migrate(ctx)
	for _, m := range done {
		fmt.Fprintf(out, "applied %03d_%s\n", m.Version, m.Name)
	}
	if err != nil {
		return err
	}
	if len(done) == 0 {
		fmt.Fprintln(out, "schema is up to date")
	}
	return nil
}

// MigrateStatus prints every migration and when it was applied.
func MigrateStatus(ctx context.Context, out io.Writer, rawURL string) error {
	st, err := openPostgres(ctx, rawURL)
	if err != nil {
		return err
	}
	defer st.Close()
	status, err := st.MigrationStatus(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tNAME\tAPPLIED")
	pending := 0
	for _, s := range status {
		applied := s.AppliedAt.UTC().Format(time.RFC3339)
		switch {
		case s.Unknown:
			applied += " (unknown to this binary: the database is newer)"
		case s.AppliedAt.IsZero():
			applied = "pending"
			pending++
		}
		fmt.Fprintf(tw, "%03d\t%s\t%s\n", s.Version, s.Name, applied)
	}
	tw.Flush()
	if pending > 0 {
		fmt.Fprintf(out, "%d pending: run `ffrtmp migrate up` (nodes also apply them at start)\n", pending)
	}
	return nil
}

// ImportConfig configures RunImport.
type ImportConfig struct {
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

// ImportReport is what RunImport did, per table.
type ImportReport struct {
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

// RunImport moves the objects of a bolt store or a legacy ffmpeg-rtmp
// master.db into a PostgreSQL database, before a cluster starts on it.
// Objects keep their IDs and are written with Raft index 0 and without
// raising the applied index (see postgres.Store.Import), so that the new
// cluster's log, which starts at 1, applies in full. Objects the target
// has already are left alone, so a second run changes nothing. At the end
// every source object is looked up in the target, and a missing one is an
// error.
func RunImport(ctx context.Context, cfg ImportConfig) (*ImportReport, error) {
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

	st, err := openPostgres(ctx, cfg.To)
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
	rep := &ImportReport{Requeued: src.requeued, Failed: src.failed}

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

func readSource(ctx context.Context, cfg ImportConfig) (*source, error) {
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

// readBolt reads a stopped node's state file. Every object loses its Raft
// indexes (the new cluster's log starts again at 1). Workers are imported
// down: they join the new cluster by registering again. Jobs that were
// assigned, running or paused go back to the queue on no worker, as the
// FSM requeues the jobs of a lost worker, keeping their attempt count as
// the fencing token; their retry budget is not charged.
func readBolt(ctx context.Context, path string, now time.Time) (*source, error) {
	bs, err := bolt.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w (is a node still running on it? stop it first)", err)
	}
	defer bs.Close()
	st, err := bs.Load(ctx)
	if err != nil {
		return nil, err
	}
	first := &fsm.Batch{Tenants: st.Tenants, Keys: st.Keys, Workers: st.Workers}
	for _, t := range first.Tenants {
		t.Meta = fsm.Meta{}
	}
	for _, k := range first.Keys {
		k.Meta = fsm.Meta{}
	}
	for _, w := range first.Workers {
		w.Meta = fsm.Meta{}
		w.State = fsm.WorkerDown
	}
	src := &source{requeued: map[string]int{}}
	var jobs []*fsm.Job
	p := &fsm.ListJobsParams{Limit: 1000}
	for {
		page, err := bs.ListJobs(ctx, p)
		if err != nil {
			return nil, err
		}
		for _, j := range page.Jobs {
			j.Meta = fsm.Meta{}
			switch j.State {
			case fsm.JobAssigned, fsm.JobRunning, fsm.JobPaused:
				src.requeued[string(j.State)]++
				requeue(j, now, fmt.Sprintf("requeued by ffrtmp migrate: the job was %s on worker %s when the node stopped", j.State, j.WorkerID))
			}
			jobs = append(jobs, j)
		}
		if page.Next == "" {
			break
		}
		p.After = page.Next
	}
	slices.Reverse(jobs) // oldest first, as they were created
	src.batches = chunk(first, jobs)
	src.desc = fmt.Sprintf("bolt state file %s at Raft index %d: %d tenants, %d API keys, %d workers, %d jobs",
		path, st.Index, len(first.Tenants), len(first.Keys), len(first.Workers), len(jobs))
	if n := len(src.requeued); n > 0 {
		src.notes = append(src.notes, fmt.Sprintf("active jobs put back in the queue: %v", src.requeued))
	}
	src.notes = append(src.notes, "workers are imported down; each joins the new cluster when it registers again")
	return src, nil
}

// requeue puts an active job back in the queue on no worker, as the FSM
// does when a worker is lost.
func requeue(j *fsm.Job, now time.Time, why string) {
	j.State = fsm.JobQueued
	j.WorkerID = ""
	j.QueuedAt = now
	j.NotBefore = time.Time{}
	j.Progress = nil
	j.Error = &fsm.Error{Code: fsm.CodeWorkerLost, Message: why}
}

// Legacy ffmpeg-rtmp master.db (SQLite): the tables jobs and nodes, as its
// master wrote them. Columns were added over its releases, so the columns
// are probed and a missing one reads as NULL.

var legacyJobColumns = []string{
	"id", "sequence_number", "scenario", "engine", "parameters", "status", "queue", "priority",
	"progress", "node_id", "created_at", "started_at", "last_activity_at", "completed_at",
	"retry_count", "max_retries", "retry_reason", "error", "failure_reason", "logs",
}

var legacyNodeColumns = []string{
	"id", "name", "address", "type", "cpu_threads", "cpu_model", "has_gpu", "gpu_type",
	"gpu_capabilities", "ram_total_bytes", "ram_bytes", "labels", "status", "registered_at",
}

// legacyRow is one row by column name; absent columns are nil.
type legacyRow map[string]any

func readLegacy(ctx context.Context, path, tenant string, now time.Time) (*source, error) {
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?mode=ro")
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	nodes, err := legacyRows(ctx, db, "nodes", legacyNodeColumns)
	if err != nil {
		return nil, err
	}
	jobRows, err := legacyRows(ctx, db, "jobs", legacyJobColumns)
	if err != nil {
		return nil, err
	}
	first := &fsm.Batch{Tenants: []*fsm.Tenant{{ID: tenant, Name: tenant, CreatedAt: now.UTC()}}}
	for _, n := range nodes {
		first.Workers = append(first.Workers, legacyWorker(n))
	}
	src := &source{requeued: map[string]int{}}
	var jobs []*fsm.Job
	for _, r := range jobRows {
		j, err := legacyJob(r, tenant, now.UTC(), src)
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	// Oldest first, by the time-ordered IDs they now have.
	slices.SortFunc(jobs, func(a, b *fsm.Job) int { return strings.Compare(a.ID, b.ID) })
	for i := 1; i < len(jobs); i++ {
		if jobs[i].ID == jobs[i-1].ID {
			return nil, fmt.Errorf("legacy jobs %q and %q map to the same ID %s", jobs[i-1].Spec.Name, jobs[i].Spec.Name, jobs[i].ID)
		}
	}
	src.batches = chunk(first, jobs)
	src.desc = fmt.Sprintf("ffmpeg-rtmp master database %s: %d nodes, %d jobs, into tenant %q", path, len(nodes), len(jobs), tenant)
	if len(src.requeued) > 0 {
		src.notes = append(src.notes, fmt.Sprintf("jobs not finished in ffmpeg-rtmp are imported queued, to run again on this cluster's workers: %v", src.requeued))
	}
	if src.failed > 0 {
		src.notes = append(src.notes, fmt.Sprintf("%d unfinished jobs could not be converted into a runnable job and are imported as failed", src.failed))
	}
	src.notes = append(src.notes, "nodes are imported as workers that are down; legacy job IDs that are not UUIDv7 get a time-ordered UUIDv7 (the old ID is in the job's name)")
	return src, nil
}

func legacyRows(ctx context.Context, db *sql.DB, table string, want []string) ([]legacyRow, error) {
	have := map[string]bool{}
	rows, err := db.QueryContext(ctx, `SELECT name FROM pragma_table_info(?)`, table)
	if err != nil {
		return nil, fmt.Errorf("read %s columns: %w", table, err)
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		have[strings.ToLower(n)] = true
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if !have["id"] {
		return nil, fmt.Errorf("not an ffmpeg-rtmp master database: no table %q with an id column", table)
	}
	var cols []string
	for _, c := range want {
		if have[c] {
			cols = append(cols, c)
		}
	}
	rows, err = db.QueryContext(ctx, `SELECT `+strings.Join(cols, ", ")+` FROM `+table+` ORDER BY rowid`)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	defer rows.Close()
	var out []legacyRow
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("read %s: %w", table, err)
		}
		r := legacyRow{}
		for i, c := range cols {
			r[c] = vals[i]
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (r legacyRow) str(col string) string {
	switch v := r[col].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case time.Time:
		return v.Format(time.RFC3339Nano)
	}
	return ""
}

func (r legacyRow) num(col string) int64 {
	switch v := r[col].(type) {
	case int64:
		return v
	case float64:
		return int64(v)
	case bool:
		if v {
			return 1
		}
	case string, []byte:
		n, _ := strconv.ParseFloat(strings.TrimSpace(r.str(col)), 64)
		return int64(n)
	}
	return 0
}

// legacyTimeLayouts are the formats SQLite drivers write times in: those
// of mattn/go-sqlite3, which the ffmpeg-rtmp master used, and Go's
// time.Time.String.
var legacyTimeLayouts = []string{
	"2006-01-02 15:04:05.999999999-07:00",
	"2006-01-02T15:04:05.999999999-07:00",
	"2006-01-02 15:04:05.999999999 -0700 MST",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04",
	"2006-01-02T15:04",
	"2006-01-02",
	time.RFC3339Nano,
}

func (r legacyRow) time(col string) (time.Time, error) {
	switch v := r[col].(type) {
	case nil:
		return time.Time{}, nil
	case time.Time:
		return v.UTC(), nil
	case int64: // unix seconds
		return time.Unix(v, 0).UTC(), nil
	case float64:
		return time.Unix(int64(v), 0).UTC(), nil
	}
	s := strings.TrimSpace(r.str(col))
	if i := strings.Index(s, " m="); i >= 0 { // a monotonic clock reading
		s = s[:i]
	}
	if s == "" {
		return time.Time{}, nil
	}
	for _, l := range legacyTimeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			if t.IsZero() || t.Year() <= 1 {
				return time.Time{}, nil
			}
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("column %s: time %q is in no known format", col, s)
}

// legacyJobID keeps a legacy job ID that is a UUIDv7 (so already time
// ordered) and gives any other one (UUIDv4, as ffmpeg-rtmp made them, or
// free text) a UUIDv7 made of its creation time and a hash of the old ID:
// listings are newest first by ID, and the same old ID always maps to the
// same new one, so a second import finds the jobs it imported.
func legacyJobID(old string, created time.Time) string {
	if u, err := uuid.Parse(old); err == nil && u.Version() == 7 {
		return u.String()
	}
	var u uuid.UUID
	binary.BigEndian.PutUint64(u[:8], uint64(max(created.UnixMilli(), 0))<<16)
	h := sha256.Sum256([]byte("ffmpeg-rtmp job " + old))
	copy(u[6:], h[:10])
	u[6] = 0x70 | u[6]&0x0f // version 7
	u[8] = 0x80 | u[8]&0x3f // RFC 4122 variant
	return u.String()
}

// legacyScenarioRE matches ffmpeg-rtmp scenario names such as 4K60-h264,
// 1080p30-h265 or 720p-hevc.
var legacyScenarioRE = regexp.MustCompile(`(?i)^(\d{3,4}p|[248]k)(\d{2})?[-_](h\.?264|avc|h\.?265|hevc|vp9|av1)`)

// legacyScenario maps a legacy scenario to one of ours, "" if none fits.
func legacyScenario(s string) string {
	m := legacyScenarioRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return ""
	}
	height := map[string]string{"2k": "1440", "4k": "2160", "8k": ""}[strings.ToLower(m[1])]
	if strings.HasSuffix(strings.ToLower(m[1]), "p") {
		height = strings.TrimSuffix(strings.ToLower(m[1]), "p")
	}
	fps := m[2]
	if fps == "" {
		fps = "30"
	}
	codec := map[string]string{"h264": "h264", "h.264": "h264", "avc": "h264", "h265": "h265", "h.265": "h265", "hevc": "h265", "vp9": "vp9", "av1": "av1"}[strings.ToLower(m[3])]
	sc := height + "p" + fps + "-" + codec
	if _, err := fsm.ParseScenario(sc); err != nil {
		return ""
	}
	return sc
}

// legacyErrorCode maps ffmpeg-rtmp's failure reasons and end states.
func legacyErrorCode(status, reason string) fsm.Code {
	switch {
	case status == "timed_out" || reason == "timeout":
		return fsm.CodeTimeout
	case status == "rejected" || reason == "capability_mismatch":
		return fsm.CodeNoCapableWorker
	case reason == "user_error":
		return fsm.CodeInvalidArgument
	}
	return fsm.CodeFFmpeg
}

func legacyJob(r legacyRow, tenant string, now time.Time, src *source) (*fsm.Job, error) {
	old := r.str("id")
	created, err := r.time("created_at")
	if err != nil {
		return nil, fmt.Errorf("legacy job %s: %w", old, err)
	}
	started, err := r.time("started_at")
	if err != nil {
		return nil, fmt.Errorf("legacy job %s: %w", old, err)
	}
	completed, err := r.time("completed_at")
	if err != nil {
		return nil, fmt.Errorf("legacy job %s: %w", old, err)
	}
	activity, err := r.time("last_activity_at")
	if err != nil {
		return nil, fmt.Errorf("legacy job %s: %w", old, err)
	}
	status := strings.ToLower(r.str("status"))
	name := "ffmpeg-rtmp " + old
	if seq := r.num("sequence_number"); seq > 0 {
		name = fmt.Sprintf("ffmpeg-rtmp #%d %s", seq, old)
	}
	id := legacyJobID(old, created)
	retries := int(max(r.num("retry_count"), 0))
	maxRetries := fsm.DefaultMaxRetries
	if _, ok := r["max_retries"]; ok && r["max_retries"] != nil {
		maxRetries = int(min(max(r.num("max_retries"), 0), fsm.MaxMaxRetries))
	}
	spec := fsm.JobSpec{
		Name:       name,
		Scenario:   legacyScenario(r.str("scenario")),
		Queue:      fsm.Queue(strings.ToLower(r.str("queue"))),
		Priority:   fsm.Priority(strings.ToLower(r.str("priority"))),
		MaxRetries: &maxRetries,
		Input:      fsm.Input{URL: "testsrc://?duration=" + strconv.FormatFloat(legacyDuration(r.str("parameters")), 'f', -1, 64)},
		Outputs:    []fsm.Output{{URL: "file:///ffmpeg-rtmp/" + id + ".mp4"}},
	}
	if !slices.Contains(fsm.Queues, spec.Queue) {
		spec.Queue = fsm.QueueDefault
	}
	if !slices.Contains(fsm.Priorities, spec.Priority) {
		spec.Priority = fsm.PriorityMedium
	}
	j := &fsm.Job{
		ID: id, TenantID: tenant, Spec: spec, Retries: retries,
		SubmittedAt: created, QueuedAt: created, AssignedAt: started, StartedAt: started,
		Log: tail(r.str("logs"), worker.DefaultTailBytes),
	}
	if started.IsZero() {
		j.Attempt = retries
	} else {
		j.Attempt = retries + 1
	}
	if msg := r.str("error"); msg != "" {
		j.Error = &fsm.Error{Code: legacyErrorCode(status, r.str("failure_reason")), Message: msg}
	}
	plan, compileErr := j.Spec.Compile(fsm.Policy{})
	if compileErr == nil {
		j.Plan = *plan
	} else {
		// Keep what the legacy job asked for, as history.
		j.Spec.Scenario = r.str("scenario")
	}
	finish := func(s fsm.JobState) {
		j.State = s
		j.WorkerID = r.str("node_id")
		j.FinishedAt = firstSet(completed, activity, started, created)
		if p := r.num("progress"); p > 0 {
			j.Progress = &fsm.Progress{Percent: float64(min(p, 100)), UpdatedAt: firstSet(activity, j.FinishedAt)}
		}
	}
	switch status {
	case "completed", "succeeded":
		finish(fsm.JobSucceeded)
	case "failed", "timed_out", "rejected":
		finish(fsm.JobFailed)
		if j.Error == nil {
			j.Error = &fsm.Error{Code: legacyErrorCode(status, r.str("failure_reason")), Message: "ffmpeg-rtmp: job " + status}
		}
	case "canceled", "cancelled":
		finish(fsm.JobCanceled)
	case "pending", "queued", "retrying", "assigned", "processing", "running", "paused":
		if compileErr != nil {
			src.failed++
			finish(fsm.JobFailed)
			j.WorkerID = ""
			j.FinishedAt = now
			j.Error = &fsm.Error{Code: fsm.CodeInvalidArgument, Message: fmt.Sprintf("imported from ffmpeg-rtmp while %s, but its scenario %q has no equivalent here: %v", status, r.str("scenario"), compileErr)}
			break
		}
		src.requeued[status]++
		switch status {
		case "pending", "queued", "retrying":
			j.State, j.WorkerID = fsm.JobQueued, ""
		default: // it was running on a legacy node: it runs again here
			requeue(j, now, fmt.Sprintf("imported from ffmpeg-rtmp while %s on node %s; it runs again on this cluster", status, r.str("node_id")))
		}
		// Its acquire timeout counts from the import, not from the
		// legacy queue time.
		j.QueuedAt = now
	default:
		return nil, fmt.Errorf("legacy job %s: unknown status %q", old, status)
	}
	return j, nil
}

// legacyDuration reads the test pattern's duration in seconds from the
// legacy job parameters, 10 if absent.
func legacyDuration(params string) float64 {
	var p map[string]any
	if json.Unmarshal([]byte(params), &p) != nil {
		return 10
	}
	var d float64
	switch v := p["duration"].(type) {
	case float64:
		d = v
	case string:
		d, _ = strconv.ParseFloat(strings.TrimSuffix(v, "s"), 64)
	}
	if !(d > 0) {
		return 10
	}
	return min(d, fsm.MaxTestsrcDuration)
}

func firstSet(ts ...time.Time) time.Time {
	for _, t := range ts {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}

// tail returns the last n bytes of s, cut at a line start when it can.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
		s = s[i+1:]
	}
	return s
}

// legacyWorker maps a legacy node to a worker of the shared pool that is
// down until a worker with its ID registers.
func legacyWorker(r legacyRow) *fsm.Worker {
	addr := r.str("address")
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		addr = u.Host
	}
	name := r.str("name")
	if name == "" {
		name = addr
	}
	mem := r.num("ram_total_bytes")
	if mem == 0 {
		mem = r.num("ram_bytes")
	}
	labels := map[string]string{}
	_ = json.Unmarshal([]byte(r.str("labels")), &labels)
	for k, col := range map[string]string{"ffmpeg-rtmp/type": "type", "ffmpeg-rtmp/cpu-model": "cpu_model", "ffmpeg-rtmp/gpu": "gpu_type", "ffmpeg-rtmp/status": "status"} {
		if v := r.str(col); v != "" {
			labels[k] = v
		}
	}
	var encoders []string
	var caps []string
	_ = json.Unmarshal([]byte(r.str("gpu_capabilities")), &caps)
	for _, c := range caps { // nvenc_h264 → h264_nvenc
		if kind, codec, ok := strings.Cut(strings.ToLower(c), "_"); ok {
			if codec == "h265" {
				codec = "hevc"
			}
			encoders = append(encoders, codec+"_"+kind)
		}
	}
	registered, _ := r.time("registered_at")
	return &fsm.Worker{
		ID: r.str("id"), Name: name, Addr: addr, State: fsm.WorkerDown, Incarnation: "ffmpeg-rtmp",
		Slots: 1, CPUs: int(r.num("cpu_threads")), MemoryMB: int(mem >> 20),
		Encoders: encoders, Labels: labels, RegisteredAt: registered,
	}
}
