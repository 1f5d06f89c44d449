package importer

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/importer/importertest"
	"github.com/ffrtmp/ffrtmp/store/postgres"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
	"github.com/ffrtmp/ffrtmp/worker"
)

var mctx = context.Background()

var importNow = time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC)

func runImport(t *testing.T, cfg Config) (*Report, string) {
	t.Helper()
	var out bytes.Buffer
	cfg.Out, cfg.Now = &out, func() time.Time { return importNow }
	rep, err := Run(mctx, cfg)
	if err != nil {
		t.Fatalf("import %s: %v\n%s", cfg.From, err, out.String())
	}
	return rep, out.String()
}

func TestImportLegacy(t *testing.T) {
	t.Parallel()
	for _, version := range []string{"v1", "v2"} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			url := pgtest.URL(t)
			path, legacy := importertest.LegacyDB(t, version, 60)
			from := "sqlite://" + path

			// A dry run reads both sides and writes nothing, not even the
			// schema.
			rep, out := runImport(t, Config{From: from, To: url, Tenant: "acme", DryRun: true})
			if rep.Counts.Jobs.Total != len(legacy) || rep.Counts.Workers.Total != 2 || !strings.Contains(out, "would apply migrations 001_initial") {
				t.Errorf("dry run: %+v\n%s", rep.Counts, out)
			}
			var tables int
			if err := pgtest.Connect(t, url).QueryRow(mctx, `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()`).Scan(&tables); err != nil || tables != 0 {
				t.Errorf("the dry run created %d tables (%v)", tables, err)
			}

			rep, out = runImport(t, Config{From: from, To: url, Tenant: "acme"})
			want := postgres.Counts{Tenants: postgres.Count{Total: 1}, Workers: postgres.Count{Total: 2}, Jobs: postgres.Count{Total: len(legacy)}}
			if rep.Counts != want || !strings.Contains(out, "count check: ok") {
				t.Errorf("import counts = %+v, want %+v\n%s", rep.Counts, want, out)
			}
			before := importertest.TableRows(t, url)

			// A second run finds everything there and changes nothing.
			rep, out = runImport(t, Config{From: from, To: url, Tenant: "acme"})
			if rep.Counts.Jobs.Existing != len(legacy) || rep.Counts.Workers.Existing != 2 || rep.Counts.Tenants.Existing != 1 {
				t.Errorf("second import counts = %+v, want everything already there\n%s", rep.Counts, out)
			}
			if after := importertest.TableRows(t, url); after != before {
				t.Errorf("second import changed the tables")
			}

			st := pgtest.OpenURL(t, url, postgres.Options{})
			checkLegacyJobs(t, st, version, legacy)
		})
	}
}

// checkLegacyJobs checks each imported job against its legacy row.
func checkLegacyJobs(t *testing.T, st *postgres.Store, version string, legacy []importertest.LegacyJob) {
	t.Helper()
	state, err := st.Load(mctx)
	if err != nil {
		t.Fatal(err)
	}
	if state.Index != 0 {
		t.Errorf("applied index after the import = %d, want 0: the new cluster's log starts at 1", state.Index)
	}
	wantState := map[string]fsm.JobState{
		"pending": fsm.JobQueued, "queued": fsm.JobQueued, "assigned": fsm.JobQueued, "processing": fsm.JobQueued,
		"running": fsm.JobQueued, "paused": fsm.JobQueued, "retrying": fsm.JobQueued, "completed": fsm.JobSucceeded,
		"failed": fsm.JobFailed, "timed_out": fsm.JobFailed, "canceled": fsm.JobCanceled, "rejected": fsm.JobFailed,
	}
	for _, l := range legacy {
		id := l.ID
		if u, err := uuid.Parse(id); err != nil || u.Version() != 7 {
			id = legacyJobID(l.ID, l.Created.UTC())
		}
		j, err := st.GetJob(mctx, id)
		if err != nil {
			t.Errorf("legacy job %s (%s): GetJob(%s): %v", l.ID, l.Status, id, err)
			continue
		}
		what := fmt.Sprintf("legacy job %s (%s, %s)", l.ID, l.Status, l.Scenario)
		ws := wantState[l.Status]
		unconvertible := l.Scenario == "weird-scenario" && ws == fsm.JobQueued
		if unconvertible {
			ws = fsm.JobFailed
		}
		if j.State != ws {
			t.Errorf("%s: state %s, want %s", what, j.State, ws)
		}
		if j.CreateIndex != 0 || j.ModifyIndex != 0 || j.TenantID != "acme" {
			t.Errorf("%s: indexes %d/%d tenant %q, want 0/0 acme", what, j.CreateIndex, j.ModifyIndex, j.TenantID)
		}
		if !strings.Contains(j.Spec.Name, l.ID) {
			t.Errorf("%s: name %q does not keep the legacy ID", what, j.Spec.Name)
		}
		if !j.SubmittedAt.Equal(l.Created) || j.Retries != l.Retries {
			t.Errorf("%s: submitted %s retries %d, want %s and %d", what, j.SubmittedAt, j.Retries, l.Created, l.Retries)
		}
		if ws == fsm.JobQueued {
			if j.WorkerID != "" || !j.QueuedAt.Equal(importNow) || j.Plan.Input.Kind != fsm.KindTestsrc {
				t.Errorf("%s: requeued on worker %q at %s with input %q; want no worker, the import time, a testsrc plan", what, j.WorkerID, j.QueuedAt, j.Plan.Input.Kind)
			}
			if _, active := slicesIndex(state.Jobs, j.ID); !active {
				t.Errorf("%s: queued but not loaded as active", what)
			}
			continue
		}
		if unconvertible {
			if fsm.ErrorCode(j.Error) != fsm.CodeInvalidArgument {
				t.Errorf("%s: error %v, want invalid_argument saying why it cannot run", what, j.Error)
			}
			continue
		}
		if !j.FinishedAt.Equal(l.Completed) && !l.Completed.IsZero() {
			t.Errorf("%s: finished %s, want %s", what, j.FinishedAt, l.Completed)
		}
		if l.ErrMsg != "" && (j.Error == nil || j.Error.Message != l.ErrMsg) {
			t.Errorf("%s: error %v, want %q", what, j.Error, l.ErrMsg)
		}
		if version == "v2" && j.Log != l.Logs {
			t.Errorf("%s: log %q, want %q", what, j.Log, l.Logs)
		}
		if j.WorkerID != l.Node {
			t.Errorf("%s: worker %q, want the legacy node %q", what, j.WorkerID, l.Node)
		}
	}
	if version == "v2" {
		j, err := st.GetJob(mctx, legacyJobID(legacy[9].ID, legacy[9].Created.UTC())) // timed_out
		if err == nil && fsm.ErrorCode(j.Error) != fsm.CodeTimeout {
			t.Errorf("timed_out legacy job: error code %q, want timeout", fsm.ErrorCode(j.Error))
		}
	}
	if len(state.Workers) != 2 || state.Workers[0].State != fsm.WorkerDown || state.Workers[0].CPUs != 16 || state.Workers[0].MemoryMB != 32<<10 {
		t.Errorf("imported nodes = %+v, want 2 workers down with 16 CPUs and 32 GiB", state.Workers)
	}
}

func slicesIndex(js []*fsm.Job, id string) (int, bool) {
	for i, j := range js {
		if j.ID == id {
			return i, true
		}
	}
	return -1, false
}

func TestLegacyJobID(t *testing.T) {
	created := time.Date(2024, 5, 2, 10, 0, 0, 0, time.UTC)
	a, b := legacyJobID("6f1c1a52-3b5e-4c3e-9a43-1d2f3e4a5b6c", created), legacyJobID("6f1c1a52-3b5e-4c3e-9a43-1d2f3e4a5b6c", created)
	if a != b {
		t.Errorf("legacyJobID is not deterministic: %s, %s", a, b)
	}
	u, err := uuid.Parse(a)
	if err != nil || u.Version() != 7 || u.Variant() != uuid.RFC4122 {
		t.Errorf("legacyJobID = %s (%v): want a UUIDv7", a, err)
	}
	if sec, _ := u.Time().UnixTime(); sec != created.Unix() {
		t.Errorf("legacyJobID time = %d, want the creation time %d", sec, created.Unix())
	}
	later := legacyJobID("job-2", created.Add(time.Millisecond))
	if later <= a {
		t.Errorf("a later job's ID %s does not sort after %s", later, a)
	}
	v7 := uuid.Must(uuid.NewV7()).String()
	if got := legacyJobID(v7, created); got != v7 {
		t.Errorf("a UUIDv7 legacy ID became %s, want it kept", got)
	}
	for in, want := range map[string]string{"4K60-h264": "2160p60-h264", "1080p30-h264": "1080p30-h264", "720p-hevc": "720p30-h265", "1080p60-HEVC": "1080p60-h265", "weird": "", "8K30-h264": ""} {
		if got := legacyScenario(in); got != want {
			t.Errorf("legacyScenario(%q) = %q, want %q", in, got, want)
		}
	}
}

// boltNode is a single FSM on a bolt store, fed commands one index each,
// as a dev node's Raft would.

func TestLogTailMatchesWorker(t *testing.T) {
	if LogTailBytes != worker.DefaultTailBytes {
		t.Errorf("LogTailBytes = %d, want the worker's tail, %d", LogTailBytes, worker.DefaultTailBytes)
	}
}
