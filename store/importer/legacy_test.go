package importer

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/bolt"
	"github.com/ffrtmp/ffrtmp/store/importer/importertest"
	"github.com/ffrtmp/ffrtmp/store/postgres"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

// TestLegacyScenario maps every scenario form of ffmpeg-rtmp: those of the
// fixture, of its API examples (4K60-h264, 720p-h264) and of its test
// scripts (test-4K60-h264, test-720p), K heights, codec aliases, and the
// parts a name leaves to the job's parameters.
func TestLegacyScenario(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, params, want string }{
		{"4K60-h264", "", "2160p60-h264"},
		{"test-4K60-h264", "", "2160p60-h264"},
		{"TEST_4k60_H264", "", "2160p60-h264"},
		{"2K30-hevc", "", "1440p30-h265"},
		{"2K60-h265", "", "1440p60-h265"},
		{"1080p30-h264", "", "1080p30-h264"},
		{"1080p60-hevc", "", "1080p60-h265"},
		{"1080p60-HEVC", "", "1080p60-h265"},
		{"720p30-h265", "", "720p30-h265"},
		{"720p-h264", "", "720p30-h264"},
		{"720p-hevc", "", "720p30-h265"},
		{"480p30-h264", "", "480p30-h264"},
		{"1080p30-h.264", "", "1080p30-h264"},
		{"1080p30-avc", "", "1080p30-h264"},
		{"720p30-vp9", "", "720p30-vp9"},
		{"1080p30-av1", "", "1080p30-av1"},
		{"1080p60fps-h264", "", "1080p60-h264"},
		{"720p30-h264-nvenc", "", "720p30-h264"},
		{"test-720p", "", "720p30-h264"},
		{"test-720p", `{"fps":60,"codec":"libx265"}`, "720p60-h265"},
		{"test-1080p", `{"codec":"h264_nvenc"}`, "1080p30-h264"},
		{"test-1080p", `{"codec":"hevc"}`, "1080p30-h265"},
		{"4K", "", "2160p30-h264"},
		{"  4K60-h264  ", "", "2160p60-h264"},
		{"8K30-h264", "", ""},     // no 4320p here
		{"1080p120-h264", "", ""}, // no 120 fps
		{"1080p30-mpeg2", "", ""},
		{"weird-scenario", "", ""},
		{"file-transcode", "", ""},
		{"", "", ""},
	}
	for _, c := range cases {
		if got := legacyScenario(c.in, c.params); got != c.want {
			t.Errorf("legacyScenario(%q, %q) = %q, want %q", c.in, c.params, got, c.want)
		}
	}
}

// TestLegacyEncoder maps every GPU capability spelling to an encoder of
// fsm's table, or to none.
func TestLegacyEncoder(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"h264_nvenc": "h264_nvenc", "hevc_nvenc": "hevc_nvenc", "av1_nvenc": "av1_nvenc",
		"nvenc_h264": "h264_nvenc", "nvenc_h265": "hevc_nvenc", "nvenc_hevc": "hevc_nvenc", "nvenc_av1": "av1_nvenc",
		"NVENC_H264": "h264_nvenc", "nvenc": "h264_nvenc",
		"h264_qsv": "h264_qsv", "qsv_h264": "h264_qsv", "qsv_hevc": "hevc_qsv", "vp9_qsv": "vp9_qsv", "qsv_vp9": "vp9_qsv", "qsv_av1": "av1_qsv",
		"h264_vaapi": "h264_vaapi", "vaapi_h264": "h264_vaapi", "vaapi_h265": "hevc_vaapi", "vaapi_vp9": "vp9_vaapi",
		"libx264": "libx264", "libx265": "libx265",
		"nvenc_vp9": "", "vp9_nvenc": "", "cuda": "", "nvdec": "", "h264": "", "": "", "amf_h264": "",
	}
	for in, want := range cases {
		got, ok := legacyEncoder(in)
		if got != want || ok != (want != "") {
			t.Errorf("legacyEncoder(%q) = %q, %v; want %q", in, got, ok, want)
		}
		if ok && !slices.ContainsFunc([]string{"h264", "h265", "vp9", "av1"}, func(c string) bool { return slices.Contains(fsm.EncodersFor(c), got) }) {
			t.Errorf("legacyEncoder(%q) = %q, which is not in fsm's encoder table", in, got)
		}
	}
}

func TestLegacyJobIDs(t *testing.T) {
	t.Parallel()
	for id, want := range map[string]string{
		"6f1c1a52-3b5e-4c3e-9a43-1d2f3e4a5b6c":          "6f1c1a52-3b5e-4c3e-9a43-1d2f3e4a5b6c",
		"019a1b2c-3d4e-7f00-8000-000000000001":          "019a1b2c-3d4e-7f00-8000-000000000001",
		"job-3":                                         "job-3",
		"{6f1c1a52-3b5e-4c3e-9a43-1d2f3e4a5b6c}":        "6f1c1a52-3b5e-4c3e-9a43-1d2f3e4a5b6c",
		"urn:uuid:6f1c1a52-3b5e-4c3e-9a43-1d2f3e4a5b6c": "6f1c1a52-3b5e-4c3e-9a43-1d2f3e4a5b6c",
		"job 3":                 "",
		"../etc":                "",
		"job\x003":              "",
		strings.Repeat("a", 65): "",
		"":                      "",
	} {
		got, err := legacyJobID(legacyRow{"table": "jobs", "rowid": int64(7), "id": id})
		if got != want || (err != nil) != (want == "") {
			t.Errorf("legacyJobID(%q) = %q, %v; want %q", id, got, err, want)
		}
		if err != nil && !strings.Contains(err.Error(), "jobs row rowid 7, field id") {
			t.Errorf("legacyJobID(%q) error %q does not name the table, row and field", id, err)
		}
	}
}

// fileState is what a test compares to show that a file was not touched.
type fileState struct {
	sum   [32]byte
	mtime time.Time
	size  int64
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileState{sum: sha256.Sum256(b), mtime: info.ModTime(), size: info.Size()}
}

// TestRefuseNotAStore gives files that are not stores as sources: each is
// refused with a clear error and left as it was, and the target stays
// empty.
func TestRefuseNotAStore(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	random := bytes.Repeat([]byte("not a database, honest. "), 1000)
	emptyBolt := filepath.Join(dir, "empty-bolt.db")
	db, err := bbolt.Open(emptyBolt, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	legacy, _ := importertest.LegacyDB(t, "v2", 2)
	cases := []struct {
		name, from, tenant string
		want               error
		text               string
	}{
		{"empty file as bolt", "bolt://" + write("empty.db", nil), "", bolt.ErrNotStateFile, "empty"},
		{"text file as bolt", "bolt://" + write("text.db", random), "", bolt.ErrNotStateFile, "not an ffrtmp bolt state file"},
		{"bbolt file of another program", "bolt://" + emptyBolt, "", bolt.ErrNotStateFile, "no bucket"},
		{"master.db as bolt", "bolt://" + legacy, "", bolt.ErrNotStateFile, "not an ffrtmp bolt state file"},
		{"empty file as master.db", "sqlite://" + write("empty-master.db", nil), "acme", ErrNotMasterDB, "not an ffmpeg-rtmp master database"},
		{"text file as master.db", "sqlite://" + write("text-master.db", random), "acme", ErrNotMasterDB, "not an ffmpeg-rtmp master database"},
		{"bolt file as master.db", "sqlite://" + emptyBolt, "acme", ErrNotMasterDB, "not an ffmpeg-rtmp master database"},
	}
	for _, c := range cases {
		for _, dry := range []bool{true, false} {
			path := c.from[strings.Index(c.from, "://")+3:]
			before := stateOf(t, path)
			_, err := Run(mctx, Config{From: c.from, To: url, Tenant: c.tenant, DryRun: dry})
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
				t.Errorf("%s (dry run %v): %v, want %v saying %q", c.name, dry, err, c.want, c.text)
			}
			if after := stateOf(t, path); after != before {
				t.Errorf("%s (dry run %v): the source file changed: %+v, was %+v", c.name, dry, after, before)
			}
		}
	}
	var tables int
	if err := pgtest.Connect(t, url).QueryRow(mctx, `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()`).Scan(&tables); err != nil || tables != 0 {
		t.Errorf("refused imports created %d tables (%v)", tables, err)
	}
}

// TestSourcesReadOnly imports a bolt state file and a master.db (in WAL
// mode, as ffmpeg-rtmp wrote it), dry run and real run, and checks that
// neither file changed, nor a file appeared beside them.
func TestSourcesReadOnly(t *testing.T) {
	t.Parallel()
	legacy, _ := importertest.LegacyDB(t, "v2", 12)
	boltPath := importertest.DevState(t)
	for _, c := range []struct{ from, tenant, path string }{
		{"sqlite://" + legacy, "acme", legacy},
		{"bolt://" + boltPath, "", boltPath},
	} {
		url := pgtest.URL(t)
		before := stateOf(t, c.path)
		files, _ := os.ReadDir(filepath.Dir(c.path))
		for _, dry := range []bool{true, false} {
			if _, err := Run(mctx, Config{From: c.from, To: url, Tenant: c.tenant, DryRun: dry}); err != nil {
				t.Fatalf("import %s (dry run %v): %v", c.from, dry, err)
			}
			if after := stateOf(t, c.path); after != before {
				t.Errorf("import %s (dry run %v) changed the source: %+v, was %+v", c.from, dry, after, before)
			}
			if now, _ := os.ReadDir(filepath.Dir(c.path)); len(now) != len(files) {
				t.Errorf("import %s (dry run %v) left files beside the source: %v, was %v", c.from, dry, now, files)
			}
		}
	}
}

// TestImportAllOrNothing gives a master.db with one bad job among good
// ones, and a database error half-way through the jobs: either way the
// import is refused, the error names the bad row, and the target is as it
// was.
func TestImportAllOrNothing(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	path, _ := importertest.LegacyDB(t, "v2", 30)
	// A job whose creation time is no time, and one whose status holds a
	// NUL: essential fields, so the import is refused.
	importertest.Exec(t, path, `INSERT INTO jobs (id, sequence_number, scenario, status, created_at, retry_count) VALUES ('bad-time', 100, '720p30-h264', 'queued', 'yesterday', 0)`)
	_, err := Run(mctx, Config{From: "sqlite://" + path, To: url, Tenant: "acme"})
	if err == nil || !strings.Contains(err.Error(), "jobs row id bad-time, field created_at") {
		t.Fatalf("import with a bad created_at = %v, want a refusal naming jobs, bad-time and created_at", err)
	}
	importertest.Exec(t, path, `UPDATE jobs SET created_at = '2024-05-02 10:00:00+00:00', status = 'queued' || char(0) WHERE id = 'bad-time'`)
	_, err = Run(mctx, Config{From: "sqlite://" + path, To: url, Tenant: "acme", DryRun: true})
	if err == nil || !strings.Contains(err.Error(), "jobs row id bad-time, field status") {
		t.Fatalf("dry run with a NUL in a status = %v, want a refusal naming jobs, bad-time and status", err)
	}
	var tables int
	if err := pgtest.Connect(t, url).QueryRow(mctx, `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()`).Scan(&tables); err != nil || tables != 0 {
		t.Errorf("refused imports created %d tables (%v): the target must not change", tables, err)
	}

	// A database refusal on the last job: everything before it, the
	// tenant and the workers included, is rolled back.
	importertest.Exec(t, path, `DELETE FROM jobs WHERE id = 'bad-time'`)
	st := pgtest.OpenURL(t, url, postgres.Options{})
	pgtest.Exec(t, url, `ALTER TABLE jobs ADD CONSTRAINT no_job_3 CHECK (id <> 'job-3')`)
	before := importertest.TableRows(t, url)
	_, err = Run(mctx, Config{From: "sqlite://" + path, To: url, Tenant: "acme"})
	if err == nil || !strings.Contains(err.Error(), "jobs") {
		t.Fatalf("import that the database refuses = %v, want an error naming the jobs table", err)
	}
	if after := importertest.TableRows(t, url); after != before {
		t.Errorf("a refused import changed the target:\n%s\nwas:\n%s", after, before)
	}
	if state, err := st.Load(mctx); err != nil || len(state.Tenants) != 0 || len(state.Workers) != 0 {
		t.Errorf("after a refused import the target has %d tenants and %d workers (%v), want none", len(state.Tenants), len(state.Workers), err)
	}
}

// TestImportReportsCleaning imports logs with a NUL and logs longer than
// a worker keeps: the NUL is removed (a log is only text to keep), the
// long logs are cut to their tail, and the summary counts both, in text
// and in JSON.
func TestImportReportsCleaning(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	path, _ := importertest.LegacyDB(t, "v2", 5)
	long := strings.Repeat("frame=1 fps=30 q=28.0 size=1024kB time=00:00:10.00\n", 1000) // 51 000 bytes
	importertest.Exec(t, path, `UPDATE jobs SET logs = ? WHERE sequence_number IN (1, 2)`, long)
	importertest.Exec(t, path, `UPDATE jobs SET logs = 'before' || char(0) || 'after', error = 'bad' || char(0) WHERE sequence_number = 3`)
	rep, out := runImport(t, Config{From: "sqlite://" + path, To: url, Tenant: "acme"})
	kept := len(tail(long, LogTailBytes))
	want := Truncation{Logs: 2, Bytes: int64(2 * (len(long) - kept))}
	if rep.Truncated != want || rep.Sanitized != 2 {
		t.Errorf("report: truncated %+v, sanitized %d; want %+v and 2", rep.Truncated, rep.Sanitized, want)
	}
	if !strings.Contains(out, "logs truncated to their last 32 KiB: 2") || !strings.Contains(out, "text fields with NUL bytes removed: 2") {
		t.Errorf("summary does not report the truncations and NULs:\n%s", out)
	}
	var doc map[string]any
	b, _ := json.Marshal(rep)
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if tr, _ := doc["truncated_logs"].(map[string]any); tr["logs"] != 2.0 || tr["bytes"] != float64(want.Bytes) || doc["sanitized_fields"] != 2.0 {
		t.Errorf("JSON report = %s", b)
	}
	st := pgtest.OpenURL(t, url, postgres.Options{})
	page, err := st.ListJobs(mctx, &fsm.ListJobsParams{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range page.Jobs {
		switch {
		case strings.HasPrefix(j.Spec.Name, "ffmpeg-rtmp #3 "):
			if j.Log != "beforeafter" {
				t.Errorf("job 3's log = %q, want the text without its NUL", j.Log)
			}
		case strings.HasPrefix(j.Spec.Name, "ffmpeg-rtmp #1 "), strings.HasPrefix(j.Spec.Name, "ffmpeg-rtmp #2 "):
			if len(j.Log) != kept || !strings.HasSuffix(long, j.Log) {
				t.Errorf("%s: log of %d bytes, want the last %d of the legacy log", j.Spec.Name, len(j.Log), kept)
			}
		}
	}
}

// TestDryRunFailsAsTheImport imports into a database a cluster has
// committed to: the dry run fails with the same error as the real run.
func TestDryRunFailsAsTheImport(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	first, _ := importertest.LegacyDB(t, "v2", 3)
	runImport(t, Config{From: "sqlite://" + first, To: url, Tenant: "acme"})
	pgtest.Exec(t, url, `UPDATE ffrtmp_state SET applied_index = 5`) // a cluster has run on it
	second, _ := importertest.LegacyDB(t, "v1", 4)
	before := importertest.TableRows(t, url)
	_, dryErr := Run(mctx, Config{From: "sqlite://" + second, To: url, Tenant: "initech", DryRun: true})
	_, realErr := Run(mctx, Config{From: "sqlite://" + second, To: url, Tenant: "initech"})
	if !errors.Is(dryErr, postgres.ErrLiveCluster) || !errors.Is(realErr, postgres.ErrLiveCluster) || dryErr.Error() != realErr.Error() {
		t.Errorf("dry run: %v\nreal run: %v\nwant the same ErrLiveCluster", dryErr, realErr)
	}
	if after := importertest.TableRows(t, url); after != before {
		t.Error("the refused imports changed the target")
	}
	// Nothing new to add is fine, dry or not.
	for _, dry := range []bool{true, false} {
		if _, err := Run(mctx, Config{From: "sqlite://" + first, To: url, Tenant: "acme", DryRun: dry}); err != nil {
			t.Errorf("re-import of what is there (dry run %v): %v", dry, err)
		}
	}
}

// TestLegacyWALIsRead copies a master.db while its master has rows only
// in the write-ahead log, as after a crash: the import reads them, and
// the database file is not changed.
func TestLegacyWALIsRead(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	path, legacy := importertest.LegacyDB(t, "v2", 4)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{`PRAGMA wal_autocheckpoint=0`, `INSERT INTO jobs (id, sequence_number, scenario, status, created_at, retry_count) VALUES ('in-the-wal', 99, '720p30-h264', 'queued', '2024-05-02 10:00:00+00:00', 0)`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	crashed := filepath.Join(t.TempDir(), "master.db")
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(crashed+suffix, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	before := stateOf(t, crashed)
	rep, _ := runImport(t, Config{From: "sqlite://" + crashed, To: url, Tenant: "acme"})
	if rep.Counts.Table("jobs").Total != len(legacy)+1 {
		t.Errorf("imported %d jobs, want %d: the row in the WAL is missing", rep.Counts.Table("jobs").Total, len(legacy)+1)
	}
	if _, err := pgtest.OpenURL(t, url, postgres.Options{}).GetJob(mctx, "in-the-wal"); err != nil {
		t.Errorf("the job in the WAL: %v", err)
	}
	if after := stateOf(t, crashed); after != before {
		t.Errorf("the import changed the master.db: %+v, was %+v", after, before)
	}
}
