package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/google/uuid"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// The linearizability check: clients record a concurrent history of job
// API calls through every node of a real cluster while a fault is
// injected, and porcupine checks it against jobModel
// (linearizability_model_test.go).
//
//	go test -run TestLinearizable -v .
//
// runs about 30 s of history in all (what `make test` runs);
// FFRTMP_LINEARIZABILITY_DURATION=5m sets the total, shared by the
// faults, each injected again and again within its share.
// FFRTMP_LINEARIZABILITY_HTML=path writes porcupine's visualization of a
// history that fails the check (path with the fault's name inserted
// before .html); without it, into a kept temporary directory. The log
// names the file.

// linClients is the number of concurrent clients per history; each sends
// every request to a node picked at random, as a load balancer would.
const linClients = 5

// linSpec is the job every submit sends: no worker ever runs it, and its
// acquire timeout outlasts any run.
var linSpec = []byte(`{"scenario":"240p30-h264","queue":"batch","input":{"url":"testsrc://?duration=1"},` +
	`"outputs":[{"url":"file:///lin.mp4"}],"acquire_timeout":"24h"}`)

// linStart is when TestLinearizable started (for its log).
var linStart time.Time

// linDuration is the total history length the run records.
func linDuration(t *testing.T) time.Duration {
	v := os.Getenv("FFRTMP_LINEARIZABILITY_DURATION")
	if v == "" {
		return 32 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("FFRTMP_LINEARIZABILITY_DURATION=%q: want a duration such as 5m", v)
	}
	return d
}

// history records operations with times from one monotonic clock.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(op porcupine.Operation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
}

// idPool is the job IDs the clients know, per tenant: every submitted
// key (answered or not) and every job a retry answered with.
type idPool struct {
	mu  sync.Mutex
	ids map[string][]string
}

func (p *idPool) add(tenant, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ids[tenant] = append(p.ids[tenant], id)
}

func (p *idPool) pick(r *rand.Rand, tenant string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := p.ids[tenant]
	if len(ids) == 0 {
		return ""
	}
	return ids[r.IntN(len(ids))]
}

// linClient is one client: a plain HTTP client with a deadline per
// request, and no retries (a retry is the client's next operation).
type linClient struct {
	id    int
	key   string
	http  *http.Client
	h     *history
	stale bool // reads with ?stale=true (only to show that the check fails)
}

// linHTTP is a client's HTTP client: a new connection per request, so
// that the transport never resends a request on its own (it does, on a
// reused connection, for one with an Idempotency-Key) and a failed dial
// means the request was never sent.
func linHTTP(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
}

// call sends one request and returns its answer in the model's terms.
func (c *linClient) call(node *serverProc, in jobInput) jobOutput {
	method, path := "POST", "/v1/jobs/"+in.ID+"/"+in.Kind.String()
	var body []byte
	switch in.Kind {
	case opSubmit:
		path, body = "/v1/jobs?tenant="+in.Tenant, linSpec
	case opGet:
		method, path = "GET", "/v1/jobs/"+in.ID
	case opList:
		method, path = "GET", "/v1/jobs?limit=1000&tenant="+in.Tenant
	}
	if c.stale && method == "GET" {
		path += map[bool]string{true: "&", false: "?"}[strings.Contains(path, "?")] + "stale=true"
	}
	req, err := http.NewRequest(method, "http://"+node.httpAddr+path, bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if in.Kind == opSubmit {
		req.Header.Set("Idempotency-Key", in.ID)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if op := (*net.OpError)(nil); errors.As(err, &op) && op.Op == "dial" {
			// No connection (refused: the node is down): the request
			// was never sent, so nothing happened.
			return jobOutput{NotSent: true}
		}
		return jobOutput{Unknown: true}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 500 {
		// 503 unavailable and the like: a write may still commit.
		return jobOutput{Unknown: true}
	}
	if resp.StatusCode >= 400 {
		var e struct {
			Error fsm.Error `json:"error"`
		}
		if json.NewDecoder(resp.Body).Decode(&e) != nil || e.Error.Code == "" {
			return jobOutput{Unknown: true}
		}
		return jobOutput{Code: e.Error.Code}
	}
	if in.Kind == opList {
		var page server.JobPage
		if json.NewDecoder(resp.Body).Decode(&page) != nil {
			return jobOutput{Unknown: true}
		}
		if page.Next != "" {
			panic("a list of more than 1000 jobs: the run submits fewer")
		}
		out := jobOutput{Jobs: []listedJob{}}
		for _, j := range page.Jobs {
			out.Jobs = append(out.Jobs, listedJob{ID: j.ID, State: j.State, RetryOf: j.RetryOf})
		}
		sortListed(out.Jobs)
		return out
	}
	var j server.Job
	if json.NewDecoder(resp.Body).Decode(&j) != nil {
		return jobOutput{Unknown: true}
	}
	out := jobOutput{State: j.State}
	if in.Kind == opRetry {
		out.NewID = j.ID
	}
	return out
}

// do records one operation through node.
func (c *linClient) do(node *serverProc, in jobInput) jobOutput {
	call := c.h.now()
	out := c.call(node, in)
	ret := c.h.now()
	if out.NotSent {
		return out
	}
	if out.Unknown {
		if in.Kind == opGet || in.Kind == opList {
			// A read without an answer observed nothing and changed
			// nothing: it constrains no linearization.
			return out
		}
		ret = math.MaxInt64
	}
	c.h.add(porcupine.Operation{ClientId: c.id, Input: in, Call: call, Output: out, Return: ret,
		Metadata: node.id})
	return out
}

// run makes random operations on the tenants' jobs until ctx ends.
func (c *linClient) run(ctx context.Context, nodes []*serverProc, tenants []string, pool *idPool, seed uint64) {
	r := rand.New(rand.NewPCG(seed, uint64(c.id)))
	for ctx.Err() == nil {
		tenant := tenants[r.IntN(len(tenants))]
		node := nodes[r.IntN(len(nodes))]
		id := pool.pick(r, tenant)
		p := r.Float64()
		var kind jobOpKind
		switch {
		case id == "" || p < 0.22:
			u, _ := uuid.NewV7()
			id, kind = u.String(), opSubmit
			pool.add(tenant, id)
		case p < 0.27:
			kind = opSubmit // again, with a known key: a replay
		case p < 0.52:
			kind = opGet
		case p < 0.70:
			kind = opCancel
		case p < 0.74:
			kind = opPause
		case p < 0.78:
			kind = opResume
		case p < 0.90:
			kind = opRetry
		default:
			kind = opList
		}
		out := c.do(node, jobInput{Kind: kind, Tenant: tenant, ID: id})
		if kind == opRetry && out.NewID != "" {
			pool.add(tenant, out.NewID)
		}
		if out.Unknown || out.NotSent {
			// Back off as a client told Retry-After would (every
			// unanswered write stays open to the end of the history,
			// and the checker's work grows with their number).
			time.Sleep(250 * time.Millisecond)
		}
	}
}

// linFault is a fault injected into a running cluster: inject starts it
// and returns what ends it.
type linFault struct {
	name   string
	inject func(t *testing.T) (heal func())
}

// recordHistory runs linClients clients through all of c's nodes for d,
// injecting fault (after a calm start) again and again: each time it
// holds for hold, and the cluster then gets settle to recover. It
// returns the history, with list answers anonymized (see anonymize).
func recordHistory(t *testing.T, c *testCluster, d time.Duration, f linFault) []porcupine.Operation {
	t.Helper()
	t.Logf("%s: %s since the test started", f.name, time.Since(linStart).Round(time.Millisecond))
	// Four tenants: four partitions of the history, each with a quarter
	// of the unanswered operations (the checker's work grows
	// exponentially with those open at once).
	tenants := []string{f.name + "-a", f.name + "-b", f.name + "-c", f.name + "-d"}
	for _, name := range tenants {
		createTenantHTTP(t, c, c.nodes[0], name)
	}
	h := &history{start: time.Now()}
	pool := &idPool{ids: map[string][]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	seed := uint64(time.Now().UnixNano())
	t.Logf("%s: seed %d", f.name, seed)
	for i := range linClients {
		cl := &linClient{id: i, key: c.key(), h: h, http: linHTTP(8 * time.Second)}
		wg.Go(func() { cl.run(ctx, c.nodes, tenants, pool, seed) })
	}
	// A fault holds a little longer than a node holds a write or a read
	// for a leader (5 s), so that some calls fail without an answer.
	const calm, hold, settle = time.Second, 5500 * time.Millisecond, 2 * time.Second
	end := time.Now().Add(max(d, calm+hold+settle))
	for first := true; first || time.Until(end) >= calm+hold+settle; first = false {
		time.Sleep(calm)
		heal := f.inject(t)
		time.Sleep(hold)
		heal()
		c.waitReady(c.nodes...)
		time.Sleep(settle)
	}
	time.Sleep(time.Until(end))
	cancel()
	wg.Wait()
	t.Logf("%s: recorded %s of history", f.name, time.Since(h.start).Round(time.Millisecond))
	anonymize(h.ops)
	return h.ops
}

// createTenantHTTP creates a tenant through node.
func createTenantHTTP(t *testing.T, c *testCluster, node *serverProc, name string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+node.httpAddr+"/v1/tenants", strings.NewReader(fmt.Sprintf(`{"name":%q}`, name)))
	req.Header.Set("Authorization", "Bearer "+c.key())
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create tenant %s: status %d", name, resp.StatusCode)
	}
}

// checkHistory checks ops with porcupine and returns the result; on
// anything but Ok it writes the visualization and logs its path.
func checkHistory(t *testing.T, name string, ops []porcupine.Operation) porcupine.CheckResult {
	t.Helper()
	unknown := 0
	for _, op := range ops {
		if op.Output.(jobOutput).Unknown {
			unknown++
		}
	}
	// First without the unanswered operations nobody saw the effect of
	// (sound for Ok, see withoutUnobserved), then, if that is not Ok,
	// the whole history.
	reduced := withoutUnobserved(ops)
	res, info := porcupine.CheckOperationsVerbose(jobModel, reduced, time.Minute)
	if res != porcupine.Ok && len(reduced) < len(ops) {
		res, info = porcupine.CheckOperationsVerbose(jobModel, ops, time.Minute)
	}
	t.Logf("%s: %d operations (%d without an answer, %d of them seen taking effect): %s",
		name, len(ops), unknown, unknown-(len(ops)-len(reduced)), res)
	if res != porcupine.Ok {
		path := os.Getenv("FFRTMP_LINEARIZABILITY_HTML")
		if path == "" {
			dir, err := os.MkdirTemp("", "ffrtmp-linearizability")
			if err != nil {
				t.Fatal(err)
			}
			path = filepath.Join(dir, "history.html")
		}
		path = strings.TrimSuffix(path, ".html") + "-" + name + ".html"
		if err := porcupine.VisualizePath(jobModel, info, path); err != nil {
			t.Errorf("visualization: %v", err)
		} else {
			t.Logf("%s: history visualized in %s", name, path)
		}
		// Also as text: each tenant's history that fails on its own.
		for _, part := range jobModel.Partition(ops) {
			if res != porcupine.Illegal {
				break // the checker ran out of time: it would again
			}
			if porcupine.CheckOperationsTimeout(jobModel, part, time.Minute) == porcupine.Ok {
				continue
			}
			txt := strings.TrimSuffix(path, ".html") + "-" + part[0].Input.(jobInput).Tenant + ".txt"
			if err := os.WriteFile(txt, []byte(describeHistory(part)), 0o644); err == nil {
				t.Logf("%s: tenant %s's history in %s", name, part[0].Input.(jobInput).Tenant, txt)
			}
		}
	}
	return res
}

// describeHistory lists ops by call time, one a line: call and return
// times (ms), client, node and the operation.
func describeHistory(ops []porcupine.Operation) string {
	ops = slices.Clone(ops)
	slices.SortFunc(ops, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	var b strings.Builder
	for _, op := range ops {
		ret := "inf"
		if op.Return != math.MaxInt64 {
			ret = fmt.Sprintf("%.1f", float64(op.Return)/1e6)
		}
		in, out := op.Input.(jobInput), op.Output.(jobOutput)
		fmt.Fprintf(&b, "%10.1f %10s  c%d %s  %s  [%s]\n", float64(op.Call)/1e6, ret, op.ClientId, op.Metadata, describeJobOp(in, out), in.ID)
	}
	return b.String()
}

// startNetnsCluster starts three initialized servers; the third runs in
// its own network namespace, linked to the other two by peers (cut it to
// partition the node) and to clients by a link that is never cut.
func startNetnsCluster(t *testing.T) (*testCluster, *link) {
	t.Helper()
	c := newTestCluster(t, 3)
	peers, clients := newLink(t), newLink(t)
	c.nodes[2].netns = func(s *serverProc) {
		ns := enterNetns(t, s.cmd, binary(t), "server")
		for _, o := range c.nodes[:2] {
			ns.out(peers, o.raftAddr)
			ns.out(peers, o.gossipAddr)
		}
		ns.in(peers, s.raftAddr)
		ns.in(peers, s.gossipAddr)
		ns.in(clients, s.httpAddr)
	}
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", c.addrs(c.nodes...), "--cluster-key-file", c.keyFile)
	return c, peers
}

// TestLinearizable records histories of the job API through all three
// nodes of real clusters while faults are injected, and checks each with
// porcupine: a node partitioned from its peers (network namespace),
// the leader frozen with SIGSTOP past the election timeout, the leader
// killed with SIGKILL and restarted, and the shared PostgreSQL cut (a
// proxy that resets its connections; the server itself keeps running).
// Reads are the default, linearizable ones. Then it shows that the check
// can fail: with ?stale=true reads and a partitioned node, porcupine
// finds the history illegal.
func TestLinearizable(t *testing.T) {
	linStart = time.Now()
	total := linDuration(t)
	share := total / 4
	t.Run("bolt", func(t *testing.T) {
		t.Parallel()
		c, peers := startNetnsCluster(t)
		faults := []linFault{
			{"partition", func(t *testing.T) func() {
				peers.setCut(true)
				return func() { peers.setCut(false) }
			}},
			{"sigstop", func(t *testing.T) func() {
				l := c.leader()
				l.cmd.Process.Signal(syscall.SIGSTOP)
				return func() { l.cmd.Process.Signal(syscall.SIGCONT) }
			}},
		}
		for _, f := range faults {
			if res := checkHistory(t, f.name, recordHistory(t, c, share, f)); res != porcupine.Ok {
				t.Errorf("%s: the history is %s, want Ok", f.name, res)
			}
		}
		t.Run("stale reads fail the check", func(t *testing.T) { staleReadsFail(t, c, peers) })
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		c, proxy, _ := startPostgresCluster(t)
		c.mustCLI("cluster", "init", "--addr", c.addrs(c.nodes...), "--cluster-key-file", c.keyFile)
		faults := []linFault{
			{"kill", func(t *testing.T) func() {
				l := c.leader()
				l.kill9()
				return func() { l.start(c.env) }
			}},
			{"pgcut", func(t *testing.T) func() {
				proxy.setDown(true)
				return func() { proxy.setDown(false) }
			}},
		}
		for _, f := range faults {
			if res := checkHistory(t, f.name, recordHistory(t, c, share, f)); res != porcupine.Ok {
				t.Errorf("%s: the history is %s, want Ok", f.name, res)
			}
		}
	})
}

// staleReadsFail records a short history whose reads are ?stale=true
// while the namespaced node is partitioned, with one client that cancels
// a job through a connected node and then reads it through the cut-off
// one: porcupine must find it Illegal.
func staleReadsFail(t *testing.T, c *testCluster, peers *link) {
	cut := c.nodes[2]
	key := c.key()
	createTenantHTTP(t, c, c.nodes[0], "stale")
	h := &history{start: time.Now()}
	cl := &linClient{id: 0, key: key, h: h, stale: true, http: linHTTP(8 * time.Second)}
	u, _ := uuid.NewV7()
	job := jobInput{Tenant: "stale", ID: u.String()}
	job.Kind = opSubmit
	untilAnswered(t, cl, c.nodes[:2], job, fsm.JobQueued)
	job.Kind = opGet
	for deadline := time.Now().Add(30 * time.Second); cl.do(cut, job).State != fsm.JobQueued; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never saw the job", cut.id)
		}
	}
	peers.setCut(true)
	defer peers.setCut(false)
	// The majority elects a leader (if the cut-off node led).
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if l := c.status(c.nodes[0]).Leader; l == c.nodes[0].id || l == c.nodes[1].id {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the majority elected no leader")
		}
	}
	// Through the majority's nodes, until one answers (an unanswered try
	// stays in the history, as possibly applied).
	job.Kind = opCancel
	untilAnswered(t, cl, c.nodes[:2], job, fsm.JobCanceled)
	job.Kind = opGet
	if out := cl.do(cut, job); out.State != fsm.JobQueued {
		t.Fatalf("a stale read on the partitioned node answered %+v, want the old state, queued", out)
	}
	if res := checkHistory(t, "stale", h.ops); res != porcupine.Illegal {
		t.Fatalf("a history with a stale read after an acknowledged cancel is %s, want Illegal", res)
	}
}

// TestWritesSeeAcknowledgedWrites: a write's preconditions hold against
// every write acknowledged before it, through any node. Round after
// round on three servers: create a tenant through one node and submit
// into it through the next; cancel the job through the first and retry
// it through the second; submit it again (same Idempotency-Key) through
// the third, which answers the job as it is, canceled. (The
// linearizability check found each: a follower judged the tenant, the
// retry and the replay from its own state, a few milliseconds behind.)
func TestWritesSeeAcknowledgedWrites(t *testing.T) {
	c, _ := startInitialized(t, 3)
	h := &history{start: time.Now()}
	cl := &linClient{key: c.key(), h: h, http: linHTTP(30 * time.Second)}
	const rounds = 30
	for i := range rounds {
		a, b, d := c.nodes[i%3], c.nodes[(i+1)%3], c.nodes[(i+2)%3]
		tenant := fmt.Sprintf("w%d", i)
		createTenantHTTP(t, c, a, tenant)
		u, _ := uuid.NewV7()
		job := jobInput{Kind: opSubmit, Tenant: tenant, ID: u.String()}
		if out := cl.do(b, job); out.Code != "" || out.State != fsm.JobQueued {
			t.Fatalf("round %d: submit via %s into tenant %s, created via %s: %+v, want queued", i, b.id, tenant, a.id, out)
		}
		job.Kind = opCancel
		if out := cl.do(a, job); out.State != fsm.JobCanceled {
			t.Fatalf("round %d: cancel via %s: %+v", i, a.id, out)
		}
		job.Kind = opRetry
		if out := cl.do(b, job); out.Code != "" || out.NewID == "" {
			t.Fatalf("round %d: retry via %s of the job canceled via %s: %+v, want a new job", i, b.id, a.id, out)
		}
		job.Kind = opSubmit
		if out := cl.do(d, job); out.Code != "" || out.State != fsm.JobCanceled {
			t.Fatalf("round %d: submit again via %s of the job canceled via %s: %+v, want it as it is, canceled", i, d.id, a.id, out)
		}
	}
	if res := checkHistory(t, "writes", h.ops); res != porcupine.Ok {
		t.Fatalf("the history is %s", res)
	}
}

// untilAnswered sends job through nodes in turn until one answers with
// state want; an unanswered try stays in cl's history, as possibly
// applied, and any other answer fails the test.
func untilAnswered(t *testing.T, cl *linClient, nodes []*serverProc, job jobInput, want fsm.JobState) {
	t.Helper()
	for i, deadline := 0, time.Now().Add(60*time.Second); ; i++ {
		out := cl.do(nodes[i%len(nodes)], job)
		if out.State == want {
			return
		}
		if !out.Unknown || time.Now().After(deadline) {
			t.Fatalf("%s: %+v, want %s", job.Kind, out, want)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
