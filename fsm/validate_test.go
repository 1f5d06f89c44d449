package fsm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hashicorp/raft"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// validJob returns a compiled job of tenant t1 ready for SubmitJob.
func validJob(t testing.TB, id string) fsm.Job {
	t.Helper()
	return newJob(t, id, "t1", spec("720p30-h264"), t0)
}

// mustEncode encodes c or fails the test.
func mustEncode(t testing.TB, c fsm.Command) []byte {
	t.Helper()
	data, err := fsm.Encode(c)
	if err != nil {
		t.Fatalf("encode %T: %v", c, err)
	}
	return data
}

// rawEntry is a type byte followed by a body as given.
func rawEntry(t fsm.MessageType, body string) []byte {
	return append([]byte{byte(t)}, body...)
}

// submitWith returns the SubmitJob entry of validJob after edit changed
// its JSON body, so that a test can plant what Encode would never write.
func submitWith(t testing.TB, edit func(body string) string) []byte {
	t.Helper()
	data := mustEncode(t, &fsm.SubmitJob{Job: validJob(t, "j-edit")})
	return rawEntry(fsm.SubmitJobType, edit(string(data[1:])))
}

// poison lists the entries that reached the log before the leader
// validated, each with the code DecodeCommand must refuse it with.
func poison(t testing.TB) []struct {
	name string
	data []byte
	code fsm.Code
} {
	t.Helper()
	nilRetries := validJob(t, "j-nil-retries")
	nilRetries.Spec.MaxRetries = nil
	nulName := validJob(t, "j-nul")
	nulName.Spec.Name = "x\x00y"
	ansiName := validJob(t, "j-ansi")
	ansiName.Spec.Name = "\x1b[31mred\x1b[0m"
	return []struct {
		name string
		data []byte
		code fsm.Code
	}{
		{"empty entry", nil, fsm.CodeInvalidArgument},
		{"submit body x", rawEntry(fsm.SubmitJobType, "x"), fsm.CodeInvalidArgument},
		{"submit body null", rawEntry(fsm.SubmitJobType, "null"), fsm.CodeInvalidArgument},
		{"unknown type 99", rawEntry(99, `{}`), fsm.CodeUnknownCommand},
		{"nil max_retries", mustEncode(t, &fsm.SubmitJob{Job: nilRetries}), fsm.CodeInvalidArgument},
		{"NUL in name", mustEncode(t, &fsm.SubmitJob{Job: nulName}), fsm.CodeInvalidArgument},
		{"ANSI escape in name", mustEncode(t, &fsm.SubmitJob{Job: ansiName}), fsm.CodeInvalidArgument},
		{"percent-encoded NUL in a file URL", submitWith(t, func(b string) string {
			return strings.ReplaceAll(b, "file:///out.mp4", "file:///in%00x.mp4")
		}), fsm.CodeInvalidArgument},
		{"escape hidden behind a malformed one", submitWith(t, func(b string) string {
			return strings.ReplaceAll(b, "file:///out.mp4", "file:///o%zz%1b.mp4")
		}), fsm.CodeInvalidArgument},
		{"invalid UTF-8", submitWith(t, func(b string) string {
			return strings.Replace(b, `"tenant_id":"t1"`, "\"tenant_id\":\"t\xff1\"", 1)
		}), fsm.CodeInvalidArgument},
		{"huge attempt", rawEntry(fsm.AssignJobType, `{"job_id":"j1","worker_id":"w1","attempt":1e30}`), fsm.CodeInvalidArgument},
		{"attempt past int32", rawEntry(fsm.AssignJobType, `{"job_id":"j1","worker_id":"w1","attempt":9223372036854775807}`), fsm.CodeInvalidArgument},
		{"negative attempt", rawEntry(fsm.StartJobType, `{"job_id":"j1","worker_id":"w1","attempt":-1}`), fsm.CodeInvalidArgument},
		{"zero attempt", rawEntry(fsm.FinishJobType, `{"job_id":"j1","worker_id":"w1","attempt":0}`), fsm.CodeInvalidArgument},
		{"missing job id", rawEntry(fsm.CancelJobType, `{}`), fsm.CodeInvalidArgument},
		{"NUL in log", rawEntry(fsm.FinishJobType, `{"job_id":"j1","worker_id":"w1","attempt":1,"log":"a\u0000b"}`), fsm.CodeInvalidArgument},
		{"escape in log", rawEntry(fsm.FinishJobType, `{"job_id":"j1","worker_id":"w1","attempt":1,"log":"\u001b[2K"}`), fsm.CodeInvalidArgument},
		{"C1 control in a label", rawEntry(fsm.RegisterWorkerType, `{"worker":{"id":"w9","labels":{"a":"\u009b31m"}}}`), fsm.CodeInvalidArgument},
		{"unknown role", rawEntry(fsm.CreateAPIKeyType, `{"key":{"id":"k","tenant_id":"t1","role":"god"}}`), fsm.CodeInvalidArgument},
		{"negative slots", rawEntry(fsm.RegisterWorkerType, `{"worker":{"id":"w9","slots":-1}}`), fsm.CodeInvalidArgument},
		{"unknown expire code", rawEntry(fsm.ExpireJobType, `{"job_id":"j1","code":"boom"}`), fsm.CodeInvalidArgument},
		{"requeue without reason", rawEntry(fsm.RequeueJobType, `{"job_id":"j1","worker_id":"w1","attempt":1}`), fsm.CodeInvalidArgument},
		{"unknown plan kind", submitWith(t, func(b string) string {
			return strings.Replace(b, `"kind":"file"`, `"kind":"ftp"`, 1)
		}), fsm.CodeInvalidArgument},
		{"no plan outputs", submitWith(t, func(b string) string {
			i := strings.Index(b, `"plan"`)
			return b[:i] + strings.Replace(b[i:], `"outputs":[`, `"outputs":[],"x":[`, 1)
		}), fsm.CodeInvalidArgument},
	}
}

func TestDecodeCommandRefusesPoison(t *testing.T) {
	for _, tc := range poison(t) {
		t.Run(tc.name, func(t *testing.T) {
			c, err := fsm.DecodeCommand(tc.data)
			if err == nil {
				t.Fatalf("DecodeCommand accepted %T %+v, want refusal %s", c, c, tc.code)
			}
			wantCode(t, err, tc.code)
		})
	}
}

func TestDecodeCommandAccepts(t *testing.T) {
	withLog := &fsm.FinishJob{Report: fsm.Report{JobID: "j1", WorkerID: "w1", Attempt: 1}, At: t0,
		Log: "frame=1\n\tline two\nemoji 🎬 e\u0301 \u2028", Error: fsm.Errorf(fsm.CodeFFmpeg, "exit 1")}
	for _, c := range []fsm.Command{
		&fsm.SubmitJob{Job: validJob(t, "j1")},
		&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "t1", Name: "t1", Plan: "Ünïcode 名前 🎬"}},
		&fsm.RegisterWorker{Worker: fsm.Worker{ID: "w1", Slots: 2, Labels: map[string]string{"gpu": "yes"}}},
		&fsm.AssignJob{JobID: "j1", WorkerID: "w1", Attempt: 1, At: t0},
		withLog,
	} {
		got, err := fsm.DecodeCommand(mustEncode(t, c))
		if err != nil {
			t.Fatalf("DecodeCommand(%T): %v", c, err)
		}
		if g, w := mustJSON(t, got), mustJSON(t, c); g != w {
			t.Errorf("DecodeCommand(%T) = %s, want %s", c, g, w)
		}
	}
	// An unknown type with the skip bit is accepted: older nodes skip it.
	if c, err := fsm.DecodeCommand(rawEntry(99|fsm.IgnoreUnknownTypeFlag, `x`)); c != nil || err != nil {
		t.Fatalf("DecodeCommand(skippable unknown type) = %v, %v; want nil, nil", c, err)
	}
}

func TestCompileRefusesLateFailures(t *testing.T) {
	long := strings.Repeat("a", 300) + ".mp4"
	for _, tc := range []struct {
		name string
		edit func(*fsm.JobSpec)
		code fsm.Code
	}{
		{"300-byte file name", func(s *fsm.JobSpec) { s.Outputs[0].URL = "file:///" + long }, fsm.CodeInvalidURL},
		{"NUL after percent-decoding", func(s *fsm.JobSpec) { s.Input.URL = "file:///in%00x.mp4" }, fsm.CodeInvalidURL},
		{"escape after percent-decoding", func(s *fsm.JobSpec) { s.Outputs[0].URL = "file:///a%1b.mp4" }, fsm.CodeInvalidURL},
		{"path too long", func(s *fsm.JobSpec) {
			s.Outputs[0].URL = "file:///" + strings.Repeat("d/", fsm.MaxPathLen/2) + "o.mp4"
		}, fsm.CodeInvalidURL},
		{"timeout 100000h", func(s *fsm.JobSpec) { s.Timeout = fsm.Duration(100000 * 3600e9) }, fsm.CodeInvalidArgument},
		{"acquire_timeout 100000h", func(s *fsm.JobSpec) { s.AcquireTimeout = fsm.Duration(100000 * 3600e9) }, fsm.CodeInvalidArgument},
		{"control character in name", func(s *fsm.JobSpec) { s.Name = "a\x07b" }, fsm.CodeInvalidArgument},
		{"fps 121", func(s *fsm.JobSpec) { s.Video = &fsm.VideoParams{FPS: 121} }, fsm.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := spec("720p30-h264")
			tc.edit(&s)
			_, err := s.Compile(fsm.Policy{})
			wantCode(t, err, tc.code)
		})
	}
	// At the bounds, still accepted.
	s := spec("720p30-h264")
	s.Outputs[0].URL = "file:///" + strings.Repeat("a", fsm.MaxPathComponentLen-4) + ".mp4"
	s.Timeout, s.AcquireTimeout = fsm.MaxTimeout, fsm.MaxAcquireTimeout
	if _, err := s.Compile(fsm.Policy{}); err != nil {
		t.Fatalf("compile at the bounds: %v", err)
	}
}

// fuzzSeeds are the poison entries and a valid entry of every command
// type, so that the fuzzer starts from both sides of validation.
func fuzzSeeds(t testing.TB) [][]byte {
	var out [][]byte
	for _, p := range poison(t) {
		out = append(out, p.data)
	}
	r := fsm.Report{JobID: "j2", WorkerID: "w1", Attempt: 1}
	for _, c := range []fsm.Command{
		&fsm.CreateTenant{Tenant: fsm.Tenant{ID: "t2", Name: "t2"}},
		&fsm.CreateAPIKey{Key: fsm.APIKey{ID: "k1", TenantID: "t1", User: "u", Role: fsm.RoleViewer}},
		&fsm.RevokeAPIKey{ID: "k1"},
		&fsm.RegisterWorker{Worker: fsm.Worker{ID: "w2", Slots: 1, Incarnation: "a", Encoders: []string{"libx264"}}},
		&fsm.SubmitJob{Job: validJob(t, "j3")},
		&fsm.AssignJob{JobID: "j1", WorkerID: "w1", Attempt: 1, At: t0},
		&fsm.StartJob{Report: r, At: t0},
		&fsm.ProgressJob{Report: r, Progress: fsm.Progress{Percent: 50, Frame: 10}},
		&fsm.FinishJob{Report: r, At: t0, Log: "a\nb", Error: fsm.Errorf(fsm.CodeFFmpeg, "exit 1")},
		&fsm.FinishJob{Report: r, At: t0, Result: &fsm.Result{Outputs: []fsm.OutputResult{{URL: "file:///o.mp4"}}}},
		&fsm.CancelJob{JobID: "j1", At: t0},
		&fsm.PauseJob{JobID: "j2", At: t0},
		&fsm.ResumeJob{JobID: "j2", At: t0},
		&fsm.RequeueJob{Report: r, Reason: fsm.Error{Code: fsm.CodeWorkerLost, Message: "gone"}, At: t0},
		&fsm.ExpireJob{JobID: "j1", Code: fsm.CodeAcquireTimeout, At: at(1e15)},
		&fsm.MarkWorkerDown{WorkerID: "w1", Reason: "lease", At: t0},
		&fsm.DrainWorker{WorkerID: "w1", Drain: true, At: t0},
		&fsm.UpdateTenant{ID: "t1", Plan: new("gold"), MaxJobs: intp(1), MaxConcurrentJobs: intp(1), MaxWorkers: intp(1), MaxCPU: new(0.5), Disabled: new(true), At: t0},
		&fsm.DeleteTenant{ID: "t1", At: t0},
		&fsm.AdoptOrphans{TenantID: "t1", At: t0},
	} {
		out = append(out, mustEncode(t, c))
	}
	a := &fsm.Actor{User: "u", KeyID: "k", Role: fsm.RoleOperator, TenantID: "t1", RequestID: "r", Source: "s", Action: "cancelJob", Target: "j1", Tenant: "t1"}
	for _, c := range []fsm.Command{&fsm.CancelJob{JobID: "j1", At: t0}, &fsm.RecordAudit{Result: "permission_denied"}} {
		data, err := fsm.EncodeAs(c, a)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	return append(out, rawEntry(99|fsm.IgnoreUnknownTypeFlag, `{}`))
}

// FuzzDecodeValidateApply drives the leader's check before the log: any
// entry DecodeCommand accepts must apply without panicking, on a node
// with a tenant, a worker, a queued and a running job, and every object
// it changes must be a document every store can write (valid UTF-8, no
// NUL, which PostgreSQL's jsonb refuses) that the bolt store gives back
// unchanged.
func FuzzDecodeValidateApply(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s, "")
	}
	for _, text := range []string{"x\x00y", "in%00x.mp4", "%1b[31m", "\u2028", "\xff", "e\u0301 🎬", "a/../b.mp4", "%"} {
		f.Add([]byte(nil), text)
	}
	tmpl := validJob(f, "j-text")
	n := newNode(f)
	n.tenant("t1")
	n.worker(fsm.Worker{ID: "w1", Slots: 4, Encoders: []string{"libx264"}})
	n.submit("j1", "t1", spec("720p30-h264"), t0)
	n.submit("j2", "t1", spec("720p30-h264"), t0)
	n.run("j2", "w1", t0)
	f.Fuzz(func(t *testing.T, data []byte, text string) {
		checkTextFields(t, tmpl, text)
		c, err := fsm.DecodeCommand(data)
		if err != nil {
			var e *fsm.Error
			if !errors.As(err, &e) || (e.Code != fsm.CodeInvalidArgument && e.Code != fsm.CodeUnknownCommand) {
				t.Fatalf("DecodeCommand refused with %T %v, want *fsm.Error invalid_argument or unknown_command", err, err)
			}
			return
		}
		if c == nil && (len(data) == 0 || data[0]&byte(fsm.IgnoreUnknownTypeFlag) == 0) {
			t.Fatalf("DecodeCommand(%q) = nil, nil for a type without the skip bit", data)
		}
		n.last++
		resp := n.f.ApplyBatch([]*raft.Log{{Index: n.last, Term: 1, Type: raft.LogCommand, Data: data}})[0]
		n.f.Flush()
		checkStorable(t, n, resp)
	})
}

// checkTextFields plants text in every kind of text field of a submit
// (name, URL and path, log, message): if validation accepts the entry,
// what it decodes to must be storable.
func checkTextFields(t *testing.T, tmpl fsm.Job, text string) {
	t.Helper()
	j := tmpl
	j.Spec.Name = text
	j.Spec.Outputs = []fsm.Output{{URL: "file:///" + text}}
	j.Plan.Outputs = slices.Clone(j.Plan.Outputs)
	j.Plan.Outputs[0].URL, j.Plan.Outputs[0].Path = "file:///"+text, text
	j.Log = text + "\n" + text
	j.Error = &fsm.Error{Code: fsm.CodeFFmpeg, Message: text}
	c, err := fsm.DecodeCommand(mustEncode(t, &fsm.SubmitJob{Job: j}))
	if err == nil {
		doc := mustEncode(t, c)
		if !utf8.Valid(doc) || bytes.Contains(doc, []byte(`\u0000`)) {
			t.Fatalf("validation accepted a submit with %q that is not storable in jsonb: %s", text, doc)
		}
	}
	a := &fsm.Actor{User: text, KeyID: text, TenantID: text, RequestID: text, Source: text, Action: "x" + text, Target: text, Tenant: text}
	data, err := fsm.EncodeAs(&fsm.CancelJob{JobID: "j1", At: t0}, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, actor, err := fsm.DecodeEntry(data); err == nil {
		if doc, _ := json.Marshal(actor); !utf8.Valid(doc) || bytes.Contains(doc, []byte(`\u0000`)) {
			t.Fatalf("validation accepted an actor with %q that is not storable in jsonb: %s", text, doc)
		}
	}
}

// checkStorable checks that an applied object is a document every store
// can write and that the bolt store returns it unchanged.
func checkStorable(t *testing.T, n *node, resp any) {
	t.Helper()
	if resp == nil {
		return
	}
	if _, ok := resp.(error); ok {
		return
	}
	doc, err := json.Marshal(resp)
	if err != nil {
		t.Fatalf("marshal %T: %v", resp, err)
	}
	if !utf8.Valid(doc) || bytes.Contains(doc, []byte(`\u0000`)) {
		t.Fatalf("applied %T is not storable in jsonb: %s", resp, doc)
	}
	j, ok := resp.(*fsm.Job)
	if !ok {
		return
	}
	got, err := n.st.GetJob(context.Background(), j.ID)
	if err != nil {
		t.Fatalf("get job %q after apply: %v", j.ID, err)
	}
	if g, w := mustJSON(t, got), mustJSON(t, j); g != w {
		t.Fatalf("store returned job %s as\n%s\nwant\n%s", j.ID, g, w)
	}
}

// BenchmarkDecodeCommand measures the leader's check of a submit before
// it proposes it (decode and validate).
func BenchmarkDecodeCommand(b *testing.B) {
	data := mustEncode(b, &fsm.SubmitJob{Job: validJob(b, "j1")})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fsm.DecodeCommand(data); err != nil {
			b.Fatal(err)
		}
	}
}
