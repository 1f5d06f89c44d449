package importer

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

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
		Log: tail(r.str("logs"), LogTailBytes),
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
