package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	json "github.com/go-json-experiment/json/v1"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Auditing in the API. The route wrapper gives every request an ID and,
// once the caller is authenticated, an fsm.Actor in its context: every
// command a handler proposes with that context carries the actor in its
// envelope (cluster.Node.Apply encodes it), and the FSM writes the audit
// record from the same log entry. Handlers never deal with auditing.
// What does not reach the FSM as a command is recorded by the wrapper
// with fsm.RecordAudit: a state-changing call refused with
// permission_denied (by the wrapper's route check or a handler's object
// check), and a successful one that changed no FSM state (cluster
// membership, snapshots). Authentication failures never reach Raft: they
// are a metric and a rate-limited log line (authFailed).

// requestIDHeader carries a request's ID, from the client if it sent a
// sane one, and always back in the response.
const requestIDHeader = "X-Request-Id"

// saneRequestID is what a client's request ID may look like.
var saneRequestID = regexp.MustCompile(`^[A-Za-z0-9._:@/+=-]{1,128}$`)

// requestID returns the request's ID: the client's, or a new random one.
func requestID(r *http.Request) string {
	if id := r.Header.Get(requestIDHeader); saneRequestID.MatchString(id) {
		return id
	}
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type requestIDKey struct{}

// requestIDOf returns the ID the route wrapper gave the request.
func requestIDOf(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey{}).(string)
	return id
}

// operationIDs maps "METHOD pattern" to the route's operationId in the
// OpenAPI document: an audit record's action.
var operationIDs = sync.OnceValue(func() map[string]string {
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	out := map[string]string{}
	if json.Unmarshal(openAPI, &doc) != nil {
		return out // the OpenAPI test fails on a broken document
	}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			if op.OperationID != "" {
				out[httpMethod(method)+" "+path] = op.OperationID
			}
		}
	}
	return out
})

func httpMethod(m string) string {
	b := []byte(m)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// actionOf returns the audit action of a route: its operationId, or
// "METHOD pattern" if it has none.
func actionOf(rt route) string {
	if id, ok := operationIDs()[rt.method+" "+rt.pattern]; ok {
		return id
	}
	return rt.method + " " + rt.pattern
}

// auditCall is the wrapper's record of one authenticated request: its
// actor, and whether a handler proposed a command with it.
type auditCall struct {
	actor   *fsm.Actor
	applied atomic.Bool
}

type auditCallKey struct{}

// newAuditCall makes the actor of an authenticated request on route rt.
// Its tenant is the one the request acts on: the named or the
// principal's own, or "" (the installation) for an installation-wide
// permission; the FSM replaces it with the changed object's tenant.
func newAuditCall(r *http.Request, rt route, p *Principal) *auditCall {
	tenant := namedTenant(r, p)
	if isInstallationWide(rt.perm) {
		tenant = ""
	}
	return &auditCall{actor: &fsm.Actor{
		User: p.User, KeyID: p.KeyID, Role: p.Role, TenantID: p.TenantID,
		RequestID: requestIDOf(r), Source: r.RemoteAddr, Action: actionOf(rt),
		Target: r.PathValue("id"), Tenant: tenant,
	}}
}

// auditTenant files the request's audit record under tenant, the tenant
// of the object the request was authorized on. A super-admin may act on
// another tenant's job by its ID alone; a refusal the FSM then gives
// (say, invalid_transition) would otherwise be filed under the
// super-admin's own tenant, whose admin would learn from it that the job
// exists and its state. It is set at the edge, in the command's actor,
// so that Apply stays the same for every version of the code.
func auditTenant(r *http.Request, tenant string) {
	if call, ok := r.Context().Value(auditCallKey{}).(*auditCall); ok {
		call.actor.Tenant = tenant
	}
}

// auditedRaft marks the request's auditCall when a handler proposes a
// command, so that the wrapper records only what the FSM did not.
type auditedRaft struct{ Raft }

// Apply implements Raft.
func (a auditedRaft) Apply(ctx context.Context, c fsm.Command) (any, error) {
	if call, ok := ctx.Value(auditCallKey{}).(*auditCall); ok {
		call.applied.Store(true)
	}
	return a.Raft.Apply(ctx, c)
}

// SubmitAll implements Raft.
func (a auditedRaft) SubmitAll(ctx context.Context, cmds []*fsm.SubmitJob) ([]any, []error) {
	if call, ok := ctx.Value(auditCallKey{}).(*auditCall); ok && len(cmds) > 0 {
		call.applied.Store(true)
	}
	return a.Raft.SubmitAll(ctx, cmds)
}

// recordTimeout bounds the wrapper's own audit proposals.
const recordTimeout = 5 * time.Second

// auditUnapplied records, with fsm.RecordAudit, a state-changing call
// (not GET or HEAD) whose handler proposed no command: refused with
// permission_denied, or successful without a change to the FSM. A
// refusal's record belongs to the principal's own tenant, never the
// tenant it tried to act on: another tenant's admin must not learn this
// tenant's users from their audit page. The response waits for the
// record; a record that cannot be written is logged.
func (s *Server) auditUnapplied(r *http.Request, sw *statusWriter, call *auditCall) {
	if r.Method == http.MethodGet || r.Method == http.MethodHead || call.applied.Load() {
		return
	}
	a := *call.actor
	var result fsm.Code
	switch {
	case sw.code == CodePermissionDenied:
		result, a.Tenant = CodePermissionDenied, a.TenantID
	case sw.status >= 200 && sw.status < 300:
		result = fsm.ResultOK
	default:
		return
	}
	ctx, cancel := context.WithTimeout(fsm.WithActor(context.WithoutCancel(r.Context()), &a), recordTimeout)
	defer cancel()
	if _, err := s.raft.Apply(ctx, &fsm.RecordAudit{Result: result}); err != nil {
		s.log.Error("audit record not written", "request_id", a.RequestID, "action", a.Action, "result", result, "error", err)
	}
}

// AuditRecord is one record of the audit log as the API shows it. Index
// is the Raft index of the entry that wrote it; Hash (hex) is its link in
// the chain, which an operator may keep to check later that no newer
// record was removed (GET /v1/audit/verify?head=SEQ:HASH).
type AuditRecord struct {
	Seq         uint64    `json:"seq"`
	Index       uint64    `json:"index"`
	Time        time.Time `json:"time"`
	User        string    `json:"user"`
	KeyID       string    `json:"key_id"`
	Role        fsm.Role  `json:"role"`
	ActorTenant string    `json:"actor_tenant"`
	RequestID   string    `json:"request_id"`
	Source      string    `json:"source"`
	Action      string    `json:"action"`
	Target      string    `json:"target"`
	Tenant      string    `json:"tenant"`
	Result      fsm.Code  `json:"result"`
	Hash        string    `json:"hash"`
}

// AuditPage is a page of GET /v1/audit, newest first; Next is the cursor
// of the following page (?cursor=), "" on the last.
type AuditPage struct {
	Records []AuditRecord `json:"records"`
	Next    string        `json:"next,omitempty"`
}

// AuditHead is the newest record of a sound chain, as "SEQ:HASH" too.
type AuditHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
	Text string `json:"text"`
}

// AuditBad names the first record that fails verification.
type AuditBad struct {
	Seq    uint64 `json:"seq"`
	Reason string `json:"reason"`
}

// AuditVerification is the answer of GET /v1/audit/verify.
type AuditVerification struct {
	OK       bool      `json:"ok"`
	Checked  uint64    `json:"checked"`
	Head     AuditHead `json:"head"`
	FirstBad *AuditBad `json:"first_bad,omitempty"`
}

func auditRecordOf(r *fsm.AuditRecord) AuditRecord {
	return AuditRecord{
		Seq: r.Seq, Index: r.CreateIndex, Time: r.Time.UTC(), User: r.User, KeyID: r.KeyID, Role: r.Role,
		ActorTenant: r.TenantID, RequestID: r.RequestID, Source: r.Source, Action: r.Action, Target: r.Target,
		Tenant: r.Tenant, Result: r.Result, Hash: hex.EncodeToString(r.Hash),
	}
}

// AuditVerificationOf converts the FSM's verification to its API type.
func AuditVerificationOf(v *fsm.AuditVerification) AuditVerification {
	out := AuditVerification{OK: v.OK, Checked: v.Checked,
		Head: AuditHead{Seq: v.Head.Seq, Hash: hex.EncodeToString(v.Head.Hash), Text: v.Head.String()}}
	if v.FirstBad != nil {
		out.FirstBad = &AuditBad{Seq: v.FirstBad.Seq, Reason: v.FirstBad.Reason}
	}
	return out
}

// listAudit returns a page of audit records, newest first: a tenant
// admin's own tenant's, a super-admin's of every tenant or the one named
// by ?tenant=. Filters: actor (user or key ID), action, since and until
// (RFC 3339); paged by limit and cursor.
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := &fsm.ListAuditParams{TenantID: requestTenant(r, true), Actor: q.Get("actor"), Action: q.Get("action"), Limit: DefaultPageSize}
	bad := func(format string, args ...any) {
		s.writeError(w, r, fsm.Errorf(fsm.CodeInvalidArgument, format, args...))
	}
	for _, f := range []struct {
		name string
		t    *time.Time
	}{{"since", &p.Since}, {"until", &p.Until}} {
		if v := q.Get(f.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				bad("%s must be an RFC 3339 time", f.name)
				return
			}
			*f.t = t
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPageSize {
			bad("limit must be between 1 and %d", MaxPageSize)
			return
		}
		p.Limit = n
	}
	if v := q.Get("cursor"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			bad("cursor must be the next value of a previous page")
			return
		}
		p.Before = n
	}
	var page *fsm.AuditPage
	index, ok := s.storeRead(w, r, func(ctx context.Context) (err error) {
		page, err = s.fsm.Store().ListAudit(ctx, p)
		return err
	})
	if !ok {
		return
	}
	out := AuditPage{Records: make([]AuditRecord, 0, len(page.Records))}
	for _, rec := range page.Records {
		out.Records = append(out.Records, auditRecordOf(rec))
	}
	if page.Next != 0 {
		out.Next = strconv.FormatUint(page.Next, 10)
	}
	setIndex(w, index)
	writeJSON(w, http.StatusOK, out)
}

// verifyAuditTimeout bounds a verification, which reads every record.
const verifyAuditTimeout = 10 * time.Minute

// verifyAudit recomputes the audit chain from the store with the
// installation's key, against this node's committed head and any
// ?head=SEQ:HASH the operator kept.
func (s *Server) verifyAudit(w http.ResponseWriter, r *http.Request) {
	var expect []fsm.AuditHead
	for _, v := range r.URL.Query()["head"] {
		h, err := fsm.ParseAuditHead(v)
		if err != nil {
			s.writeError(w, r, fsm.Errorf(fsm.CodeInvalidArgument, "head must be SEQ:HASH, as verify reports it"))
			return
		}
		expect = append(expect, *h)
	}
	ctx, cancel := context.WithTimeout(r.Context(), verifyAuditTimeout)
	defer cancel()
	v, err := s.fsm.VerifyAudit(ctx, expect...)
	if err != nil {
		s.writeError(w, r, storeError(err))
		return
	}
	writeJSON(w, http.StatusOK, AuditVerificationOf(v))
}
