package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/uuid"

	"github.com/ffrtmp/ffrtmp/cluster/clustertest"
	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// exampleRun says how TestOpenAPIExamplesRun sends one operation's
// request example to a real node: which objects its path names and what
// it keeps from the answer for the runs after it. The runs go in the
// order of exampleRuns, so that an operation runs after the ones that
// create what it needs.
type exampleRun struct {
	op string // operationId
	// id names the fixture that fills the path's {id}.
	id string
	// prepare, if set, runs first (waits for a state, creates what the
	// example cannot, such as a second node).
	prepare func(f *fixtures)
	// edit, if set, adjusts the decoded request example to this run:
	// values that must be fresh or come from an earlier answer (an
	// idempotency key, an invitation token, a node address).
	edit func(f *fixtures, body map[string]any)
	// body, if set, is the raw request body (for a body that is not JSON).
	body func(f *fixtures) []byte
	// header, if set, adds request headers (a cluster-key proof).
	header func(f *fixtures) http.Header
	// node, if set, is the base URL to send to (default the node's).
	node func(f *fixtures) string
	// keep, if set, records what later runs need from the answer.
	keep func(f *fixtures, resp any, raw []byte)
}

// fixtures are the objects the runs create, by name.
type fixtures struct {
	t   *testing.T
	e   *env
	ids map[string]string
	raw map[string][]byte
	// joining is the API URL of the node that joinCluster joins.
	joining string
}

func (f *fixtures) get(name string) string {
	f.t.Helper()
	v, ok := f.ids[name]
	if !ok {
		f.t.Fatalf("fixture %q: no earlier run keeps it (exampleRuns is out of order, or a keep is missing)", name)
	}
	return v
}

// field returns resp[path[0]][path[1]]... as a string.
func field(resp any, path ...string) string {
	for _, p := range path {
		m, _ := resp.(map[string]any)
		resp = m[p]
	}
	switch v := resp.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return ""
}

func keepField(name string, path ...string) func(*fixtures, any, []byte) {
	return func(f *fixtures, resp any, _ []byte) {
		v := field(resp, path...)
		if v == "" {
			f.t.Fatalf("keep %s: the answer has no %v", name, path)
		}
		f.ids[name] = v
	}
}

// joinBare starts a node without a cluster (ID "bare") and makes it join
// the env's node with the env's super-admin key.
func (f *fixtures) joinBare() {
	f.t.Helper()
	_, url := bareNode(f.t)
	body := `{"addrs":["` + f.e.node.Addr() + `"]}`
	req, _ := http.NewRequest("POST", url+"/v1/cluster/join", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+f.e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("join a second node: status %d", resp.StatusCode)
	}
}

// freshIdempotencyKeys replaces every idempotency_key of a batch with a
// new UUIDv7: the server takes only keys made within a day.
func freshIdempotencyKeys(_ *fixtures, body map[string]any) {
	items, _ := body["items"].([]any)
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			if _, ok := m["idempotency_key"]; ok {
				m["idempotency_key"] = uuid.Must(uuid.NewV7()).String()
			}
		}
	}
}

// cancelAll cancels every job the answer holds, so that the worker is
// free for the next runs.
func cancelAll(f *fixtures, resp any, _ []byte) {
	items, _ := resp.(map[string]any)["items"].([]any)
	for _, it := range items {
		if id := field(it, "job", "id"); id != "" {
			f.e.do("POST", "/v1/jobs/"+id+"/cancel", nil, nil)
		}
	}
}

// queueOneJob leaves a job queued, with the worker drained so that it
// stays there: the summary's example shows an oldest queued job.
func queueOneJob(f *fixtures) {
	f.e.do("POST", "/v1/workers/"+f.get("worker")+"/drain", nil, nil)
	var j map[string]any
	spec := map[string]any{"scenario": "720p30-h264", "input": map[string]any{"url": "testsrc://?duration=1"},
		"outputs": []any{map[string]any{"url": "file:///out/queued.mp4"}}}
	if resp := f.e.do("POST", "/v1/jobs", spec, &j); resp.StatusCode != http.StatusCreated {
		f.t.Fatalf("submit a job to keep queued: status %d", resp.StatusCode)
	}
	f.ids["queued_job"] = field(j, "id")
}

// exampleRuns runs every operation of openapi.json, in this order. A new
// operation needs a line here.
var exampleRuns = []exampleRun{
	{op: "health"},
	{op: "ready"},
	{op: "metrics"},
	{op: "getOpenAPI"},
	{op: "docsPage"},
	{op: "docsFile"},
	{op: "whoami"},

	{op: "createTenant", keep: keepField("tenant", "id")},
	{op: "listTenants"},
	{op: "getTenant", id: "tenant"},
	{op: "updateTenant", id: "tenant"},
	{op: "getTenantUsage", id: "tenant"},

	{op: "createUser", keep: keepField("user", "id")},
	{op: "listUsers"},
	{op: "getUser", id: "user"},
	{op: "createUserKey", id: "user", keep: keepField("key", "key", "id")},
	{op: "listUserKeys", id: "user"},
	{op: "listKeys"},
	{op: "rotateKey", id: "key", keep: keepField("rotated", "key", "id")},
	{op: "revokeKey", id: "rotated"},
	{op: "updateUser", id: "user"},

	{op: "createInvitation", keep: keepField("invitation_token", "token")},
	{op: "listInvitations"},
	{op: "acceptInvitation", edit: func(f *fixtures, body map[string]any) {
		body["token"] = f.get("invitation_token")
	}},
	{op: "revokeInvitation", id: "invitation", prepare: func(f *fixtures) {
		var got map[string]any
		if resp := f.e.do("POST", "/v1/invitations", map[string]any{"email": "revoked@acme.example", "role": "viewer"}, &got); resp.StatusCode != http.StatusCreated {
			f.t.Fatalf("create an invitation to revoke: status %d", resp.StatusCode)
		}
		keepField("invitation", "invitation", "id")(f, got, nil)
	}},

	{op: "createWorkerToken", keep: keepField("worker_token", "worker_token", "id")},
	{op: "listWorkerTokens"},
	{op: "revokeWorkerToken", id: "worker_token"},
	{op: "deleteTenant", id: "tenant"},

	{op: "listWorkers"},
	{op: "getWorker", id: "worker"},
	{op: "drainWorker", id: "worker"},
	{op: "undrainWorker", id: "worker"},

	{op: "submitJob", keep: keepField("job", "id")},
	{op: "listJobs"},
	{op: "jobSummary", prepare: queueOneJob, keep: func(f *fixtures, _ any, _ []byte) {
		f.e.do("POST", "/v1/jobs/"+f.get("queued_job")+"/cancel", nil, nil)
		f.e.do("POST", "/v1/workers/"+f.get("worker")+"/undrain", nil, nil)
	}},
	{op: "getJob", id: "job", prepare: func(f *fixtures) { f.e.waitState(f.get("job"), fsm.JobRunning) }},
	{op: "getJobLegacy", id: "job"},
	{op: "pauseJob", id: "job"},
	{op: "resumeJob", id: "job"},
	{op: "cancelJob", id: "job"},
	{op: "retryJob", id: "job", keep: func(f *fixtures, resp any, _ []byte) {
		f.e.do("POST", "/v1/jobs/"+field(resp, "id")+"/cancel", nil, nil)
	}},
	{op: "getJobLogs", id: "job"},
	{op: "streamJobEvents", id: "job"},
	{op: "submitJobs", edit: freshIdempotencyKeys, keep: cancelAll},

	{op: "listAudit"},
	{op: "verifyAudit"},

	{op: "listClusterMembers"},
	{op: "getClusterStatus"},
	{op: "saveSnapshot", keep: func(f *fixtures, _ any, raw []byte) { f.raw["snapshot"] = raw }},
	{op: "restoreSnapshot", body: func(f *fixtures) []byte { return f.raw["snapshot"] }},
	{
		op:     "initCluster",
		node:   func(f *fixtures) string { return uninitializedNode(f.t) },
		header: func(*fixtures) http.Header { return proofHeader(server.InitProof(clustertest.Key, time.Now())) },
	},
	{
		op: "joinCluster",
		prepare: func(f *fixtures) {
			f.e.srv.MountClusterRPC(f.e.node.HandleRPC)
			_, f.joining = bareNode(f.t)
		},
		node: func(f *fixtures) string { return f.joining },
		edit: func(f *fixtures, body map[string]any) { body["addrs"] = []any{f.e.node.Addr()} },
	},
	// The node that joined leaves; it is a follower, so it asks the leader.
	{op: "leaveCluster", node: func(f *fixtures) string { return f.joining }},
	{
		op:      "removeClusterMember",
		prepare: func(f *fixtures) { f.joinBare() },
		edit:    func(f *fixtures, body map[string]any) { body["node"] = "bare" },
	},
	{
		op:      "transferLeadership",
		prepare: func(f *fixtures) { f.joinBare() },
		edit:    func(f *fixtures, body map[string]any) { body["node"] = "bare" },
	},
}

func proofHeader(p string) http.Header { return http.Header{"X-Ffrtmp-Cluster-Proof": {p}} }

// successStatus is the status an operation's example answers: its 2xx
// response with an example, a create's 201 before a replay's 200; or a
// 2xx without a body (204).
func successStatus(op *openapi3.Operation) (int, *openapi3.Response) {
	for _, code := range []int{201, 200, 202, 204} {
		r := op.Responses.Status(code)
		if r == nil || r.Value == nil {
			continue
		}
		if len(r.Value.Content) == 0 {
			return code, r.Value
		}
		for _, mt := range r.Value.Content {
			if mt.Example != nil || len(mt.Examples) > 0 {
				return code, r.Value
			}
		}
	}
	return 0, nil
}

// mediaExample returns a media type's example: example, or the first of
// examples by name.
func mediaExample(mt *openapi3.MediaType) any {
	if mt.Example != nil {
		return mt.Example
	}
	names := make([]string, 0, len(mt.Examples))
	for n := range mt.Examples {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if ex := mt.Examples[n]; ex != nil && ex.Value != nil {
			return ex.Value.Value
		}
	}
	return nil
}

type docOperation struct {
	method, path string
	op           *openapi3.Operation
}

// loadServedDocument fetches /v1/openapi.json from the node and loads it,
// validating the document and its examples against their schemas.
func loadServedDocument(t *testing.T, e *env) (*openapi3.T, map[string]docOperation) {
	t.Helper()
	resp, err := http.Get(e.url + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	doc, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		t.Fatalf("load the served openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the served openapi.json is not valid: %v", err)
	}
	ops := map[string]docOperation{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			ops[op.OperationID] = docOperation{method, path, op}
		}
	}
	return doc, ops
}

// TestOpenAPIExamplesRun sends every operation's request example to a
// real node (Raft, store, scheduler and a real ffmpeg worker) and checks
// that the answer has the documented status, validates against the
// documented schema and has at least the example's top-level fields, so
// that no example rots.
func TestOpenAPIExamplesRun(t *testing.T) {
	e := setup(t, envOpts{worker: true})
	_, ops := loadServedDocument(t, e)
	f := &fixtures{t: t, e: e, ids: map[string]string{"worker": "w1"}, raw: map[string][]byte{}}

	seen := map[string]bool{}
	for _, run := range exampleRuns {
		if seen[run.op] {
			t.Fatalf("exampleRuns runs %s twice", run.op)
		}
		seen[run.op] = true
		if _, ok := ops[run.op]; !ok {
			t.Errorf("exampleRuns runs %s, which openapi.json does not have", run.op)
		}
	}
	var missing []string
	for id, o := range ops {
		if !seen[id] {
			missing = append(missing, fmt.Sprintf("%s (%s %s)", id, o.method, o.path))
		}
	}
	slices.Sort(missing)
	for _, m := range missing {
		t.Errorf("operation %s has no entry in exampleRuns (server/openapi_examples_test.go): add one where the objects its path names exist; see docs/api.md, Changing the API", m)
	}
	if t.Failed() {
		t.FailNow()
	}

	for _, run := range exampleRuns {
		o := ops[run.op]
		if run.prepare != nil {
			run.prepare(f)
		}
		if !runExample(t, f, run, o) {
			return
		}
	}
}

// runExample sends one operation's request example and checks the
// answer; false stops the runs after it.
func runExample(t *testing.T, f *fixtures, run exampleRun, o docOperation) bool {
	t.Helper()
	where := fmt.Sprintf("%s (%s %s)", run.op, o.method, o.path)
	path := o.path
	if strings.Contains(path, "{id}") {
		if run.id == "" {
			t.Errorf("%s: its path has {id}, and its exampleRuns entry names no fixture for it", where)
			return false
		}
		path = strings.ReplaceAll(path, "{id}", f.get(run.id))
	}
	// Other path parameters take their documented example.
	for _, p := range o.op.Parameters {
		if p.Value != nil && p.Value.In == "path" && p.Value.Name != "id" && p.Value.Example != nil {
			path = strings.ReplaceAll(path, "{"+p.Value.Name+"}", fmt.Sprint(p.Value.Example))
		}
	}

	// Query parameters with an example are sent with it.
	q := url.Values{}
	for _, p := range o.op.Parameters {
		if p.Value != nil && p.Value.In == "query" && p.Value.Example != nil {
			q.Set(p.Value.Name, fmt.Sprint(p.Value.Example))
		}
	}
	if len(q) > 0 {
		path += "?" + q.Encode()
	}

	var body []byte
	var contentType string
	if rb := o.op.RequestBody; rb != nil && rb.Value != nil {
		for ct, mt := range rb.Value.Content {
			contentType = ct
			ex := mediaExample(mt)
			if ex == nil {
				t.Errorf("%s: its request body (%s) has no example", where, ct)
				return false
			}
			if ct == "application/json" {
				if m, ok := ex.(map[string]any); ok && run.edit != nil {
					m = deepCopy(t, m)
					run.edit(f, m)
					ex = m
				}
				body, _ = json.Marshal(ex)
			}
		}
	}
	if run.body != nil {
		body = run.body(f)
	}

	status, want := successStatus(o.op)
	if want == nil {
		t.Errorf("%s: no 2xx response with an example", where)
		return false
	}

	base := f.e.url
	if run.node != nil {
		base = run.node(f)
	}
	req, _ := http.NewRequest(o.method, base+path, bytes.NewReader(body))
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	if o.op.Security == nil || len(*o.op.Security) > 0 {
		req.Header.Set("Authorization", "Bearer "+f.e.token)
	}
	if run.header != nil {
		for k, v := range run.header(f) {
			req.Header[k] = v
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return false
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != status {
		t.Errorf("%s: the request example answered %d %s; the document says %d", where, resp.StatusCode, raw, status)
		return false
	}

	var decoded any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &decoded); err != nil {
			t.Errorf("%s: the answer is not JSON: %v: %s", where, err, raw)
			return false
		}
	}
	// The answer has one of the documented media types (a route that
	// serves several, such as the docs page's files, lists each).
	got := resp.Header.Get("Content-Type")
	var types []string
	for ct := range want.Content {
		types = append(types, ct)
	}
	if len(types) > 0 && !slices.ContainsFunc(types, func(ct string) bool { return strings.HasPrefix(got, ct) }) {
		t.Errorf("%s: Content-Type %q; the document says one of %v", where, got, types)
	}
	for ct, mt := range want.Content {
		if !strings.HasPrefix(got, ct) {
			continue
		}
		ex := mediaExample(mt)
		if ct != "application/json" {
			if s, ok := ex.(string); ok && ct == "text/event-stream" {
				for _, line := range strings.Split(s, "\n") {
					if strings.HasPrefix(line, "event: ") && !bytes.Contains(raw, []byte(line+"\n")) {
						t.Errorf("%s: the stream has no %q, which the example shows:\n%s", where, line, raw)
					}
				}
			}
			continue
		}
		if mt.Schema != nil && mt.Schema.Value != nil {
			if err := mt.Schema.Value.VisitJSON(decoded); err != nil {
				t.Errorf("%s: the answer does not match its schema: %v\n%s", where, err, raw)
			}
		}
		if missing := missingFields(ex, decoded); len(missing) > 0 {
			t.Errorf("%s: the answer lacks %v, which the example has:\n%s", where, missing, raw)
		}
	}
	if run.keep != nil {
		run.keep(f, decoded, raw)
	}
	return true
}

// missingFields returns the top-level fields of example that got lacks;
// for arrays, those of the first element of each.
func missingFields(example, got any) []string {
	if ea, ok := example.([]any); ok {
		ga, _ := got.([]any)
		if len(ea) == 0 || len(ga) == 0 {
			return nil
		}
		return missingFields(ea[0], ga[0])
	}
	em, ok := example.(map[string]any)
	if !ok {
		return nil
	}
	gm, _ := got.(map[string]any)
	var out []string
	for k := range em {
		if _, ok := gm[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func deepCopy(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// uninitializedNode is a bootstrapped single node with a cluster key
// whose first key was never made: what `ffrtmp cluster init` talks to.
func uninitializedNode(t *testing.T) string {
	t.Helper()
	node, url := newTestNode(t, "fresh", true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := node.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return url
}

// TestOpenAPIErrorsDocumented sends every operation the requests any
// client can get wrong and checks that each answer's status is the one
// the operation documents, with a body that validates against the
// documented error schema: no API key (401), an {id} that names nothing
// (404), a body that is not JSON (400) and a malformed stale (400).
func TestOpenAPIErrorsDocumented(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	_, ops := loadServedDocument(t, e)
	names := make([]string, 0, len(ops))
	for id := range ops {
		names = append(names, id)
	}
	slices.Sort(names)
	type probe struct {
		what   string
		key    bool
		path   string
		body   []byte
		status int
	}
	for _, id := range names {
		o := ops[id]
		where := fmt.Sprintf("%s (%s %s)", id, o.method, o.path)
		path := strings.ReplaceAll(o.path, "{id}", "no-such-id")
		var example []byte
		jsonBody := false
		if rb := o.op.RequestBody; rb != nil && rb.Value != nil {
			if mt := rb.Value.Content.Get("application/json"); mt != nil {
				jsonBody = true
				example, _ = json.Marshal(mediaExample(mt))
			}
		}
		var probes []probe
		if o.op.Security == nil || len(*o.op.Security) > 0 {
			probes = append(probes, probe{"without an API key", false, path, example, http.StatusUnauthorized})
		}
		if strings.Contains(o.path, "{id}") {
			probes = append(probes, probe{"with an {id} that names nothing", true, path, example, http.StatusNotFound})
		} else if jsonBody {
			probes = append(probes, probe{"with a body that is not JSON", true, path, []byte(`{"`), http.StatusBadRequest})
		}
		if o.method == http.MethodGet {
			probes = append(probes, probe{"with stale=maybe", true, path + "?stale=maybe", nil, http.StatusBadRequest})
		}
		for _, p := range probes {
			req, _ := http.NewRequest(o.method, e.url+p.path, bytes.NewReader(p.body))
			if p.key {
				req.Header.Set("Authorization", "Bearer "+e.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != p.status {
				t.Errorf("%s %s: %d %s; want %d", where, p.what, resp.StatusCode, raw, p.status)
				continue
			}
			doc := o.op.Responses.Status(p.status)
			if doc == nil || doc.Value == nil {
				t.Errorf("%s answers %d %s, which openapi.json does not document: add the response {\"$ref\": \"#/components/responses/Error\"}", where, p.status, p.what)
				continue
			}
			mt := doc.Value.Content.Get("application/json")
			if mt == nil || mt.Schema == nil {
				t.Errorf("%s: its %d response has no application/json schema", where, p.status)
				continue
			}
			var body any
			if err := json.Unmarshal(raw, &body); err != nil {
				t.Errorf("%s %s: the answer is not JSON: %s", where, p.what, raw)
				continue
			}
			if err := mt.Schema.Value.VisitJSON(body); err != nil {
				t.Errorf("%s %s: the answer does not match the documented %d schema: %v\n%s", where, p.what, p.status, err, raw)
			}
		}
	}
}
