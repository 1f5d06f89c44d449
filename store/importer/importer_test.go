package importer

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

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
	cfg.Now = func() time.Time { return importNow }
	rep, err := Run(mctx, cfg)
	if err != nil {
		t.Fatalf("import %s: %v", cfg.From, err)
	}
	var out bytes.Buffer
	rep.WriteText(&out)
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
			if rep.Counts.Table("jobs").Total != len(legacy) || rep.Counts.Table("workers").Total != 2 || !strings.Contains(out, "would apply migrations 001_initial") {
				t.Errorf("dry run: %+v\n%s", rep.Counts, out)
			}
			var tables int
			if err := pgtest.Connect(t, url).QueryRow(mctx, `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()`).Scan(&tables); err != nil || tables != 0 {
				t.Errorf("the dry run created %d tables (%v)", tables, err)
			}

			rep, out = runImport(t, Config{From: from, To: url, Tenant: "acme"})
			want := map[string]int{"tenants": 1, "workers": 2, "jobs": len(legacy)}
			for _, table := range postgres.Tables {
				if got := *rep.Counts.Table(table); got != (postgres.Count{Total: want[table]}) {
					t.Errorf("import counts of %s = %+v, want %d new", table, got, want[table])
				}
			}
			if !strings.Contains(out, "count check: ok") {
				t.Errorf("import:\n%s", out)
			}
			before := importertest.TableRows(t, url)

			// A second run finds everything there and changes nothing.
			rep, out = runImport(t, Config{From: from, To: url, Tenant: "acme"})
			if rep.Counts.Table("jobs").Existing != len(legacy) || rep.Counts.Table("workers").Existing != 2 || rep.Counts.Table("tenants").Existing != 1 {
				t.Errorf("second import counts = %+v, want everything already there\n%s", rep.Counts, out)
			}
			if after := importertest.TableRows(t, url); after != before {
				t.Errorf("second import changed the tables")
			}

			st := pgtest.OpenURL(t, url, postgres.Options{})
			checkLegacyJobs(t, st, version, legacy)
			checkDocQuery(t, url, legacy)
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
		id := l.ID // kept, whatever its form
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
		j, err := st.GetJob(mctx, legacy[9].ID) // timed_out
		if err == nil && fsm.ErrorCode(j.Error) != fsm.CodeTimeout {
			t.Errorf("timed_out legacy job: error code %q, want timeout", fsm.ErrorCode(j.Error))
		}
	}
	if len(state.Workers) != 2 || state.Workers[0].State != fsm.WorkerDown || state.Workers[0].CPUs != 16 || state.Workers[0].MemoryMB != 32<<10 {
		t.Errorf("imported nodes = %+v, want 2 workers down with 16 CPUs and 32 GiB", state.Workers)
	}
	if version == "v2" {
		var gpu *fsm.Worker
		for _, w := range state.Workers {
			if w.Name == "encoder-2" {
				gpu = w
			}
		}
		// ["nvenc_h264","h264_nvenc","nvenc_hevc","cuda"]
		if want := []string{"h264_nvenc", "hevc_nvenc"}; gpu == nil || !slices.Equal(gpu.Encoders, want) {
			t.Errorf("GPU node's encoders = %+v, want %v", gpu, want)
		}
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

func TestLogTailMatchesWorker(t *testing.T) {
	if LogTailBytes != worker.DefaultTailBytes {
		t.Errorf("LogTailBytes = %d, want the worker's tail, %d", LogTailBytes, worker.DefaultTailBytes)
	}
}

// checkDocQuery runs the query of docs/migration.md on the imported jobs:
// it lists the failed ones, with their scenario and error code.
func checkDocQuery(t *testing.T, url string, legacy []importertest.LegacyJob) {
	t.Helper()
	rows, err := pgtest.Connect(t, url).Query(mctx, `SELECT id, state, doc->'spec'->>'scenario' AS scenario, doc->'error'->>'code' AS error
FROM jobs WHERE tenant_id = 'acme' AND state = 'failed' ORDER BY id DESC LIMIT 20;`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var id, state, scenario, code string
		if err := rows.Scan(&id, &state, &scenario, &code); err != nil {
			t.Fatal(err)
		}
		if state != "failed" || scenario == "" || code == "" {
			t.Errorf("doc query row %s: state %q scenario %q error %q", id, state, scenario, code)
		}
		n++
	}
	want := 0
	for _, l := range legacy {
		switch {
		case l.Status == "failed" || l.Status == "timed_out" || l.Status == "rejected":
			want++
		case l.Scenario == "weird-scenario" && l.Completed.IsZero() && l.Status != "canceled":
			want++ // unfinished, with no equivalent scenario
		}
	}
	if n != min(want, 20) {
		t.Errorf("doc query returned %d failed jobs, want %d", n, min(want, 20))
	}
}
