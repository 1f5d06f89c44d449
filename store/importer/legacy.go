package importer

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	json "github.com/go-json-experiment/json/v1"
	"github.com/google/uuid"
	_ "modernc.org/sqlite" // database/sql driver "sqlite", pure Go

	"github.com/ffrtmp/ffrtmp/fsm"
)

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

// LogTailBytes is how much of a legacy job's log is kept: the last 32 KiB,
// as much as a worker keeps of ffmpeg's output (worker.DefaultTailBytes;
// a test keeps the two equal, as store packages do not import worker).
const LogTailBytes = 32 << 10

// legacyRow is one row by column name; absent columns are nil. "table"
// and "rowid" say where it comes from.
type legacyRow map[string]any

// errorf is an error about one field of the row, naming the table, the
// row's id (or its rowid, if the id is unusable) and the field.
func (r legacyRow) errorf(field, format string, args ...any) error {
	row := fmt.Sprintf("rowid %d", r.num("rowid"))
	if id := r.str("id"); id != "" && fsm.ValidJobID(id) {
		row = "id " + id
	}
	return fmt.Errorf("%s row %s, field %s: %s", r.str("table"), row, field, fmt.Sprintf(format, args...))
}

// text returns a column that is only text to keep (a log, a message, a
// label) without its NUL bytes, which PostgreSQL cannot store and which
// mean nothing in text; it counts the fields it cleaned in src.
func (r legacyRow) text(col string, src *source) string {
	return clean(r.str(col), src)
}

// clean is text for a string that is not a column, such as a label
// decoded from a JSON column.
func clean(s string, src *source) string {
	if strings.IndexByte(s, 0) >= 0 {
		src.sanitized++
		s = strings.ReplaceAll(s, "\x00", "")
	}
	return s
}

// essential returns a column that identifies or decides something (an ID,
// a status), refusing it, with the row named, if it holds control
// characters (NUL among them) or is not UTF-8: such a value cannot be
// cleaned without changing what it names.
func (r legacyRow) essential(col string) (string, error) {
	s := r.str(col)
	if !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl) {
		return "", r.errorf(col, "%q holds control characters or is not UTF-8", s)
	}
	return s, nil
}

// sqliteMagic begins every SQLite 3 database file.
const sqliteMagic = "SQLite format 3\x00"

// readLegacy reads a master.db. SQLite would take an empty file for an
// empty database and a missing one for a new one, so the file must exist
// and start with SQLite's header. It is opened so that nothing is written:
// immutable=1 when no write-ahead log is beside it (the legacy master ran
// in WAL mode, and a read-only open of a WAL database would still create
// its -wal and -shm files), mode=ro when one is, left by a master that
// crashed or still runs: then the log's committed rows are read too,
// which immutable=1 would skip, and SQLite may add a -shm file beside it.
func readLegacy(ctx context.Context, path, tenant string, now time.Time) (*source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--from: %w", err)
	}
	head := make([]byte, len(sqliteMagic))
	_, err = io.ReadFull(f, head)
	f.Close()
	if err != nil || string(head) != sqliteMagic {
		return nil, fmt.Errorf("--from %s: %w", path, ErrNotMasterDB)
	}
	mode := "immutable=1"
	if info, err := os.Stat(path + "-wal"); err == nil && info.Size() > 0 {
		mode = "mode=ro"
	}
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+mode)
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
	src := &source{requeued: map[string]int{}}
	first := &fsm.Batch{Tenants: []*fsm.Tenant{{ID: tenant, Name: tenant, CreatedAt: now.UTC()}}}
	unknown := map[string]bool{}
	for _, n := range nodes {
		w, err := legacyWorker(n, src, unknown)
		if err != nil {
			return nil, err
		}
		first.Workers = append(first.Workers, w)
	}
	var jobs []*fsm.Job
	for _, r := range jobRows {
		j, err := legacyJob(r, tenant, now.UTC(), src)
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	// Oldest first, as they were created.
	slices.SortStableFunc(jobs, func(a, b *fsm.Job) int { return a.SubmittedAt.Compare(b.SubmittedAt) })
	src.batches = chunk(first, jobs)
	src.desc = fmt.Sprintf("ffmpeg-rtmp master database %s: %d nodes, %d jobs, into tenant %q", path, len(nodes), len(jobs), tenant)
	if len(src.requeued) > 0 {
		src.notes = append(src.notes, fmt.Sprintf("jobs not finished in ffmpeg-rtmp are imported queued, to run again on this cluster's workers: %v", src.requeued))
	}
	if src.failed > 0 {
		src.notes = append(src.notes, fmt.Sprintf("%d unfinished jobs could not be converted into a runnable job and are imported as failed", src.failed))
	}
	if len(unknown) > 0 {
		src.notes = append(src.notes, fmt.Sprintf("GPU capabilities with no ffmpeg encoder here, left out: %s", strings.Join(slices.Sorted(maps.Keys(unknown)), ", ")))
	}
	src.notes = append(src.notes, "nodes are imported as workers that are down; jobs keep their ffmpeg-rtmp IDs")
	return src, nil
}

// ErrNotMasterDB is returned for a --from file that is not an ffmpeg-rtmp
// master.db: not SQLite, or without its tables.
var ErrNotMasterDB = errors.New("not an ffmpeg-rtmp master database (SQLite)")

// legacyRows reads every row of table, with the columns of want that it
// has, and its rowid.
func legacyRows(ctx context.Context, db *sql.DB, table string, want []string) ([]legacyRow, error) {
	have := map[string]bool{}
	rows, err := db.QueryContext(ctx, `SELECT name FROM pragma_table_info(?)`, table)
	if err != nil {
		return nil, fmt.Errorf("read %s columns: %w (%w)", table, err, ErrNotMasterDB)
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
		return nil, fmt.Errorf("%w: no table %q with an id column", ErrNotMasterDB, table)
	}
	cols := []string{"rowid"}
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
		r := legacyRow{"table": table}
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
	return time.Time{}, r.errorf(col, "time %q is in no known format", s)
}

// legacyJobID is the ID an imported job gets: its ffmpeg-rtmp ID, kept
// (see fsm.ValidJobID for why), so that `ffrtmp jobs get OLD-ID` finds it.
// A UUID in another spelling ({…}, urn:uuid:…) is kept in its canonical
// form. An ID that is neither is refused, naming the row.
func legacyJobID(r legacyRow) (string, error) {
	old, err := r.essential("id")
	if err != nil {
		return "", err
	}
	if fsm.ValidJobID(old) {
		return old, nil
	}
	if u, err := uuid.Parse(old); err == nil {
		return u.String(), nil
	}
	return "", r.errorf("id", "%q is not a UUID nor 1 to 64 letters, digits, '.', '_' and '-'", old)
}

// legacyScenarioRE matches the scenario names of ffmpeg-rtmp: a height in
// lines (1080p) or in K (4K, 2K), an optional frame rate and an optional
// codec, with an optional "test-" prefix: 4K60-h264, 1080p30-hevc,
// 720p-h264, test-4K60-h264, test-720p, 2K60_h265.
var legacyScenarioRE = regexp.MustCompile(`^(?:test[-_])?(?:(\d{3,4})p|(\d)k)(\d{2,3})?(?:fps)?(?:[-_](h\.?264|avc|x264|h\.?265|hevc|x265|vp9|av1)(?:[-_].*)?)?$`)

// legacyHeights are the K names ffmpeg-rtmp used, in lines.
var legacyHeights = map[string]int{"2": 1440, "4": 2160}

// legacyScenario maps a legacy scenario to one of ours, "" if none fits.
// A part the name leaves out comes from the job's parameters ("fps",
// "codec"), else 30 fps and H.264, ffmpeg's default for MP4.
func legacyScenario(s, params string) string {
	m := legacyScenarioRE.FindStringSubmatch(strings.ToLower(strings.TrimSpace(s)))
	if m == nil {
		return ""
	}
	var p struct {
		FPS   any    `json:"fps"`
		Codec string `json:"codec"`
	}
	_ = json.Unmarshal([]byte(params), &p)
	height, _ := strconv.Atoi(m[1])
	if m[2] != "" {
		height = legacyHeights[m[2]]
	}
	fps := m[3]
	if fps == "" {
		fps = fmt.Sprint(p.FPS)
		if _, err := strconv.Atoi(fps); err != nil {
			fps = "30"
		}
	}
	codec := legacyCodecs[m[4]]
	if m[4] == "" {
		codec = cmp.Or(legacyCodecs[strings.ToLower(p.Codec)], encoderCodec(strings.ToLower(p.Codec)), "h264")
	}
	sc := fmt.Sprintf("%dp%s-%s", height, fps, codec)
	if _, err := fsm.ParseScenario(sc); err != nil {
		return ""
	}
	return sc
}

// legacyCodecs maps the codec names of ffmpeg-rtmp to ours.
var legacyCodecs = map[string]string{
	"h264": "h264", "h.264": "h264", "avc": "h264", "x264": "h264",
	"h265": "h265", "h.265": "h265", "hevc": "h265", "x265": "h265",
	"vp9": "vp9", "av1": "av1",
}

// encoderCodec returns the codec of an ffmpeg encoder in fsm's table
// (libx264 → h264), "" if it is not there.
func encoderCodec(encoder string) string {
	for _, c := range []string{"h264", "h265", "vp9", "av1"} {
		if slices.Contains(fsm.EncodersFor(c), encoder) {
			return c
		}
	}
	return ""
}

// legacyEncoder maps a GPU capability of an ffmpeg-rtmp node to an ffmpeg
// encoder of fsm's table: an encoder name is kept (h264_nvenc stays
// h264_nvenc), a kind and codec in either order is looked up (nvenc_h264
// → h264_nvenc, nvenc_hevc → hevc_nvenc, qsv_av1 → av1_qsv), and ffmpeg's
// old alias "nvenc" is h264_nvenc. ok is false for anything else.
func legacyEncoder(capability string) (encoder string, ok bool) {
	c := strings.ToLower(strings.TrimSpace(capability))
	if c == "nvenc" {
		c = "h264_nvenc"
	}
	if encoderCodec(c) != "" {
		return c, true
	}
	a, b, _ := strings.Cut(c, "_")
	kind, codec := a, legacyCodecs[b]
	if !slices.Contains(fsm.HardwareKinds, kind) {
		kind, codec = b, legacyCodecs[a]
	}
	for _, e := range fsm.EncodersFor(codec) {
		if kind != "" && fsm.EncoderHardware(e) == kind {
			return e, true
		}
	}
	return "", false
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
	id, err := legacyJobID(r)
	if err != nil {
		return nil, err
	}
	var times [4]time.Time
	for i, col := range []string{"created_at", "started_at", "completed_at", "last_activity_at"} {
		if times[i], err = r.time(col); err != nil {
			return nil, err
		}
	}
	created, started, completed, activity := times[0], times[1], times[2], times[3]
	if created.IsZero() {
		return nil, r.errorf("created_at", "no creation time")
	}
	status, err := r.essential("status")
	if err != nil {
		return nil, err
	}
	status = strings.ToLower(status)
	nodeID, err := r.essential("node_id")
	if err != nil {
		return nil, err
	}
	name := "ffmpeg-rtmp " + id
	if seq := r.num("sequence_number"); seq > 0 {
		name = fmt.Sprintf("ffmpeg-rtmp #%d %s", seq, id)
	}
	retries := int(max(r.num("retry_count"), 0))
	maxRetries := fsm.DefaultMaxRetries
	if _, ok := r["max_retries"]; ok && r["max_retries"] != nil {
		maxRetries = int(min(max(r.num("max_retries"), 0), fsm.MaxMaxRetries))
	}
	spec := fsm.JobSpec{
		Name:       name,
		Scenario:   legacyScenario(r.str("scenario"), r.str("parameters")),
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
	log := r.text("logs", src)
	if len(log) > LogTailBytes {
		kept := tail(log, LogTailBytes)
		src.truncated.Logs++
		src.truncated.Bytes += int64(len(log) - len(kept))
		log = kept
	}
	j := &fsm.Job{
		ID: id, TenantID: tenant, Spec: spec, Retries: retries,
		SubmittedAt: created, QueuedAt: created, AssignedAt: started, StartedAt: started,
		Log: log,
	}
	if started.IsZero() {
		j.Attempt = retries
	} else {
		j.Attempt = retries + 1
	}
	if msg := r.text("error", src); msg != "" {
		j.Error = &fsm.Error{Code: legacyErrorCode(status, r.str("failure_reason")), Message: msg}
	}
	scenario := r.text("scenario", src)
	plan, compileErr := j.Spec.Compile(fsm.Policy{})
	if compileErr == nil {
		j.Plan = *plan
	} else {
		// Keep what the legacy job asked for, as history.
		j.Spec.Scenario = scenario
	}
	finish := func(s fsm.JobState) {
		j.State = s
		j.WorkerID = nodeID
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
			j.Error = &fsm.Error{Code: fsm.CodeInvalidArgument, Message: fmt.Sprintf("imported from ffmpeg-rtmp while %s, but its scenario %q has no equivalent here: %v", status, scenario, compileErr)}
			break
		}
		src.requeued[status]++
		switch status {
		case "pending", "queued", "retrying":
			j.State, j.WorkerID = fsm.JobQueued, ""
		default: // it was running on a legacy node: it runs again here
			requeue(j, now, fmt.Sprintf("imported from ffmpeg-rtmp while %s on node %s; it runs again on this cluster", status, nodeID))
		}
		// Its acquire timeout counts from the import, not from the
		// legacy queue time.
		j.QueuedAt = now
	default:
		return nil, r.errorf("status", "unknown status %q", status)
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
// down until a worker with its ID registers. GPU capabilities that name
// no encoder of ours are left out and collected in unknown.
func legacyWorker(r legacyRow, src *source, unknown map[string]bool) (*fsm.Worker, error) {
	id, err := r.essential("id")
	if err != nil {
		return nil, err
	}
	if id == "" {
		return nil, r.errorf("id", "empty")
	}
	addr := r.text("address", src)
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		addr = u.Host
	}
	name := r.text("name", src)
	if name == "" {
		name = addr
	}
	mem := r.num("ram_total_bytes")
	if mem == 0 {
		mem = r.num("ram_bytes")
	}
	labels := map[string]string{}
	_ = json.Unmarshal([]byte(r.str("labels")), &labels)
	for k, v := range labels {
		delete(labels, k)
		labels[clean(k, src)] = clean(v, src)
	}
	for k, col := range map[string]string{"ffmpeg-rtmp/type": "type", "ffmpeg-rtmp/cpu-model": "cpu_model", "ffmpeg-rtmp/gpu": "gpu_type", "ffmpeg-rtmp/status": "status"} {
		if v := r.text(col, src); v != "" {
			labels[k] = v
		}
	}
	var encoders []string
	var caps []string
	_ = json.Unmarshal([]byte(r.str("gpu_capabilities")), &caps)
	for _, c := range caps {
		if e, ok := legacyEncoder(c); ok {
			if !slices.Contains(encoders, e) {
				encoders = append(encoders, e)
			}
		} else {
			unknown[clean(c, src)] = true
		}
	}
	registered, _ := r.time("registered_at")
	return &fsm.Worker{
		ID: id, Name: name, Addr: addr, State: fsm.WorkerDown, Incarnation: "ffmpeg-rtmp",
		Slots: 1, CPUs: int(r.num("cpu_threads")), MemoryMB: int(mem >> 20),
		Encoders: encoders, Labels: labels, RegisteredAt: registered,
	}, nil
}
