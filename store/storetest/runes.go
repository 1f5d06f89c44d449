package storetest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	json "github.com/go-json-experiment/json/v1"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// awkwardRunes are texts that have broken stores before or that a store
// might alter: control characters (PostgreSQL's jsonb refuses NUL),
// separators JSON escapes, noncharacters, the last code point, emoji and
// combining marks, and bytes that are not UTF-8. accept says whether the
// FSM's validation must let them through: the users' own scripts must be
// storable, control characters and broken encodings must not be.
var awkwardRunes = []struct {
	name   string
	text   string
	accept bool
}{
	{"U+0000", "\x00", false},
	{"U+0001", "\x01", false},
	{"U+001B escape", "\x1b[31m", false},
	{"U+007F", "\x7f", false},
	{"U+0085", "\u0085", false},
	{"U+009B CSI", "\u009b", false},
	{"U+2028", "\u2028", true},
	{"U+FFFD", "\uFFFD", true},
	{"U+FFFF", "\uFFFF", true},
	{"U+10FFFF", "\U0010FFFF", true},
	{"emoji", "🎬 👩\u200d💻", true},
	{"combining marks", "e\u0301\u0327", true},
	{"right-to-left override", "\u202e", true},
	{"JSON and SQL quoting", `"\'%_`, true},
	{"invalid byte", "\xff", false},
	{"truncated sequence", "\xc3(", false},
	{"encoded surrogate", "\xed\xa0\x80", false},
}

// exerciseRunes checks the store's half of "whatever the FSM accepted,
// the store can write": a tenant, worker or job document holding any of
// awkwardRunes either round-trips exactly through Commit and Load or
// GetJob, or is refused by fsm.DecodeCommand before it could be
// proposed. Each document is offered twice: as fsm.Encode writes it
// (escaped JSON) and with the text planted raw in the entry's bytes.
func exerciseRunes(t *testing.T, st fsm.Store) {
	ctx := context.Background()
	index := uint64(1)
	commit(t, st, &fsm.Batch{Index: index, Tenants: []*fsm.Tenant{newTenant("acme", index)}})
	for i, r := range awkwardRunes {
		text := "a" + r.text + "z"
		tenant := newTenant(fmt.Sprintf("rune-%d", i), 0)
		tenant.Name, tenant.Plan = tenant.ID, text // a tenant's name is its ID; its plan is free text
		worker := newWorker(fmt.Sprintf("rune-%d", i), 0)
		worker.Name, worker.Labels = text, map[string]string{"k" + r.text: text}
		job := newJob(1000+i, "acme", fsm.JobQueued, fsm.QueueDefault, 0)
		job.Spec.Name, job.Log = text, "line 1\n"+text
		job.Error = &fsm.Error{Code: fsm.CodeFFmpeg, Message: text}
		for _, c := range []fsm.Command{
			&fsm.CreateTenant{Tenant: *tenant},
			&fsm.RegisterWorker{Worker: *worker, At: t0},
			&fsm.SubmitJob{Job: *job},
		} {
			for _, entry := range entries(t, c, r.text) {
				decoded, err := fsm.DecodeCommand(entry.data)
				if err != nil {
					if fsm.ErrorCode(err) != fsm.CodeInvalidArgument {
						t.Errorf("%s, %T %s: refused with %v, want invalid_argument", r.name, c, entry.how, err)
					}
					if r.accept && entry.how == "encoded" {
						t.Errorf("%s, %T: refused (%v), but users may write it", r.name, c, err)
					}
					continue
				}
				if !r.accept && entry.how == "raw" {
					t.Errorf("%s, %T raw: validation accepted it", r.name, c)
				}
				index++
				roundTrip(ctx, t, st, index, r.name+" "+entry.how, decoded)
			}
		}
	}
}

type entry struct {
	how  string
	data []byte
}

// entries returns c as fsm.Encode writes it and, where the text can be
// planted, with the text's raw bytes in place of its JSON escape.
func entries(t *testing.T, c fsm.Command, text string) []entry {
	t.Helper()
	data, err := fsm.Encode(c)
	if err != nil {
		t.Fatalf("encode %T: %v", c, err)
	}
	out := []entry{{"encoded", data}}
	esc, _ := json.Marshal(text)
	esc = esc[1 : len(esc)-1]
	if !bytes.Equal(esc, []byte(text)) && bytes.Contains(data, esc) {
		raw := bytes.ReplaceAll(data, esc, []byte(strings.ReplaceAll(strings.ReplaceAll(text, `\`, `\\`), `"`, `\"`)))
		out = append(out, entry{"raw", raw})
	}
	return out
}

// roundTrip commits what validation accepted, as the FSM would (with its
// indexes), and checks that the store gives it back unchanged.
func roundTrip(ctx context.Context, t *testing.T, st fsm.Store, index uint64, what string, c fsm.Command) {
	t.Helper()
	meta := fsm.Meta{CreateIndex: index, ModifyIndex: index}
	b := &fsm.Batch{Index: index}
	switch c := c.(type) {
	case *fsm.CreateTenant:
		c.Tenant.Meta = meta
		b.Tenants = append(b.Tenants, &c.Tenant)
	case *fsm.RegisterWorker:
		c.Worker.Meta, c.Worker.State = meta, fsm.WorkerUp
		b.Workers = append(b.Workers, &c.Worker)
	case *fsm.SubmitJob:
		c.Job.Meta, c.Job.State = meta, fsm.JobQueued
		b.Jobs = append(b.Jobs, &c.Job)
	}
	if err := st.Commit(ctx, b); err != nil {
		t.Errorf("%s: the store refused what validation accepted: %v", what, err)
		return
	}
	s := normalState(load(t, st))
	switch c := c.(type) {
	case *fsm.CreateTenant:
		assertSame(t, what+" tenant", findByID(s.Tenants, c.Tenant.ID, func(x *fsm.Tenant) string { return x.ID }), normTenant(&c.Tenant))
	case *fsm.RegisterWorker:
		assertSame(t, what+" worker", findByID(s.Workers, c.Worker.ID, func(x *fsm.Worker) string { return x.ID }), normWorker(&c.Worker))
	case *fsm.SubmitJob:
		assertSame(t, what+" job (Load)", findByID(s.Jobs, c.Job.ID, func(x *fsm.Job) string { return x.ID }), normJob(&c.Job))
		assertSame(t, what+" job (GetJob)", normJob(getJob(t, st, c.Job.ID)), normJob(&c.Job))
	}
}

// findByID returns the normalized object with the ID, or nil.
func findByID[T any](xs []*T, id string, idOf func(*T) string) *T {
	for _, x := range xs {
		if idOf(x) == id {
			return x
		}
	}
	return nil
}
