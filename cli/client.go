package cli

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	json "github.com/go-json-experiment/json/v1"
	"github.com/google/uuid"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// APIError is an error response from the API.
type APIError struct {
	Status  int
	Code    fsm.Code
	Message string
	// Hint, if set, tells the user what to do (e.g. where a key comes
	// from); it is printed on a line of its own.
	Hint string
}

func (e *APIError) Error() string {
	s := string(e.Code) + ": " + e.Message
	if e.Hint != "" {
		s += "\nhint: " + e.Hint
	}
	return s
}

// dialTimeout bounds the TCP connect to one node, separately from the
// request: a node that is down or black-holed is given up on quickly and
// the next address tried.
const dialTimeout = 3 * time.Second

// startHint is what the CLI suggests when no node answers.
const startHint = "is ffrtmp running there? start a local one with `ffrtmp dev`, or point the CLI at a node with --addr or FFRTMP_ADDR"

// UnreachableError is returned when no node of the client's list could be
// connected to: every address refused, timed out or did not resolve.
type UnreachableError struct {
	// Addrs are the addresses tried, in order.
	Addrs []string
	// Err is the last connect error.
	Err error
}

func (e *UnreachableError) Error() string {
	where := e.Addrs[0]
	if len(e.Addrs) > 1 {
		where = "any of " + strings.Join(e.Addrs, ", ")
	}
	return fmt.Sprintf("cannot connect to the ffrtmp API at %s: %v\nhint: %s", where, e.Err, startHint)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Client calls the ffrtmp HTTP API. It may know several nodes: any node
// answers any request, so when one cannot be reached the client moves on
// to the next. Requests that are safe to repeat (reads, and submits, which
// carry an Idempotency-Key) are also retried while the cluster answers 503
// (no leader yet), for up to retryFor.
type Client struct {
	bases    []*url.URL
	next     atomic.Uint32
	key      string
	http     *http.Client
	retryFor time.Duration
	// tenant, if set, is sent as ?tenant= on job and worker requests.
	tenant string
	// authHint, if set, is the Hint of an unauthenticated answer: the
	// client has no key, and this says where one comes from.
	authHint string
}

// NewClient returns a client for the nodes at addrs: comma-separated
// host:port or URLs.
func NewClient(addrs, key string) (*Client, error) {
	c := &Client{key: key, http: &http.Client{Transport: newTransport()}, retryFor: 30 * time.Second}
	for _, a := range strings.Split(addrs, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if !strings.Contains(a, "://") {
			a = "http://" + a
		}
		u, err := url.Parse(a)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("invalid API address %q", a)
		}
		c.bases = append(c.bases, u)
	}
	if len(c.bases) == 0 {
		return nil, errors.New("no API address")
	}
	return c, nil
}

// newTransport is http.DefaultTransport's configuration with a connect
// timeout of dialTimeout.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = dialTimeout
	return t
}

// Rotated returns a copy of the client that starts with its i-th node,
// so that load spreads over the nodes it knows.
func (c *Client) Rotated(i int) *Client {
	d := &Client{bases: c.bases, key: c.key, http: c.http, retryFor: c.retryFor, tenant: c.tenant, authHint: c.authHint}
	d.next.Store(uint32(i % len(c.bases)))
	return d
}

// ForTenant returns a copy of the client that acts on tenant ("" for the
// key's own), a super-admin's right: it sends ?tenant= on every job and
// worker request (tenantScoped), unless the request names one itself.
func (c *Client) ForTenant(tenant string) *Client {
	d := c.Rotated(int(c.next.Load()))
	d.tenant = tenant
	return d
}

// tenantScoped reports whether path is of a tenant's jobs, workers,
// users, keys or invitations, the
// requests ForTenant's tenant goes on. Cluster routes concern the whole
// installation, and whoami the key itself, so they never carry it.
func tenantScoped(path string) bool {
	for _, p := range []string{"/v1/jobs", "/v1/workers", "/v1/users", "/v1/keys", "/v1/invitations"} {
		if path == p || strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	return false
}

// addrs returns the client's node addresses, comma-separated.
func (c *Client) addrs() string { return strings.Join(c.addrList(), ",") }

// addrList returns the client's node addresses.
func (c *Client) addrList() []string {
	out := make([]string, len(c.bases))
	for i, b := range c.bases {
		out[i] = b.String()
	}
	return out
}

// base returns the node the client currently talks to.
func (c *Client) base() *url.URL { return c.bases[int(c.next.Load())%len(c.bases)] }

func (c *Client) request(ctx context.Context, method, path string, query url.Values, body any) (*http.Response, error) {
	return c.requestWith(ctx, method, path, query, body, nil)
}

// requestWith sends a request with a JSON body (nil for none) and extra
// headers; an error status becomes an *APIError. Unreachable nodes are
// skipped; GETs and submits are retried on 503.
func (c *Client) requestWith(ctx context.Context, method, path string, query url.Values, body any, header map[string]string) (*http.Response, error) {
	return c.requestRetry(ctx, method, path, query, body, header, method == "GET" || header["Idempotency-Key"] != "")
}

// requestRetry is requestWith for a request that is, or is not,
// repeatable: safe to send again when its outcome is unknown.
func (c *Client) requestRetry(ctx context.Context, method, path string, query url.Values, body any, header map[string]string, repeatable bool) (*http.Response, error) {
	var data []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		data = b
	}
	deadline := time.Now().Add(c.retryFor)
	delay := 100 * time.Millisecond
	// unreachable counts the nodes in a row that could not be connected
	// to: when it reaches every node, the request fails at once, naming
	// them, rather than retrying in silence.
	unreachable := 0
	for attempt := 0; ; attempt++ {
		var rd io.Reader
		if data != nil {
			rd = bytes.NewReader(data)
		}
		req, err := c.newRequest(ctx, method, path, query, rd)
		if err != nil {
			return nil, err
		}
		if data != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := c.send(req)
		var ae *APIError
		if dialFailed(err) {
			if unreachable++; unreachable >= len(c.bases) {
				return nil, &UnreachableError{Addrs: c.addrList(), Err: err}
			}
		} else {
			unreachable = 0
		}
		switch {
		case err == nil:
			return resp, nil
		case errors.As(err, &ae):
			if ae.Status != http.StatusServiceUnavailable || !repeatable {
				return nil, err
			}
		case !repeatable && !dialFailed(err):
			return nil, err // it may have been processed
		default:
			c.next.Add(1) // try the next node
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, err
		}
		if attempt%len(c.bases) == len(c.bases)-1 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(delay):
			}
			delay = min(delay*2, 2*time.Second)
		}
	}
}

// dialFailed reports whether err means the request never reached a node.
func dialFailed(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// newRequest builds an authenticated request to the API.
func (c *Client) newRequest(ctx context.Context, method, path string, query url.Values, body io.Reader) (*http.Request, error) {
	u := *c.base()
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	if c.tenant != "" && tenantScoped(path) && !query.Has("tenant") {
		q := url.Values{"tenant": {c.tenant}}
		for k, v := range query {
			q[k] = v
		}
		query = q
	}
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	return req, nil
}

// send sends a request; an error status becomes an *APIError.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		var eb struct {
			Error *fsm.Error `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, &eb) == nil && eb.Error != nil {
			ae := &APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
			if resp.StatusCode == http.StatusUnauthorized {
				ae.Hint = c.authHint
			}
			return nil, ae
		}
		// Not the API's error shape: perhaps not an ffrtmp node at all.
		return nil, &APIError{Status: resp.StatusCode, Code: fsm.CodeInternal, Message: cmp.Or(strings.TrimSpace(string(b)), "HTTP "+resp.Status),
			Hint: fmt.Sprintf("%s answered without an ffrtmp error: is it an ffrtmp node's API address (--addr, FFRTMP_ADDR), or a proxy with no node behind it?", req.URL.Host)}
	}
	return resp, nil
}

func decodeJSON(r io.Reader, out any) error {
	if err := json.NewDecoder(r).Decode(out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	resp, err := c.request(ctx, method, path, query, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	return decodeJSON(resp.Body, out)
}

// SubmitJob submits a job spec. It sends a fresh Idempotency-Key, so that
// the retries of one call never create two jobs.
func (c *Client) SubmitJob(ctx context.Context, spec *fsm.JobSpec) (*server.Job, error) {
	key, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	resp, err := c.requestWith(ctx, "POST", "/v1/jobs", nil, spec, map[string]string{"Idempotency-Key": key.String()})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var j server.Job
	return &j, decodeJSON(resp.Body, &j)
}

// SubmitJobs submits specs with POST /v1/jobs/batch, at most
// fsm.MaxSubmitBatch per request, and returns each one's result in order.
// Every item carries a fresh idempotency key, so the request is retried
// like a single submit, and items answered 503 are sent again with their
// keys until the client's retry time runs out.
func (c *Client) SubmitJobs(ctx context.Context, specs []*fsm.JobSpec) ([]server.BatchSubmitResult, error) {
	out := make([]server.BatchSubmitResult, 0, len(specs))
	for start := 0; start < len(specs); start += fsm.MaxSubmitBatch {
		chunk := specs[start:min(len(specs), start+fsm.MaxSubmitBatch)]
		res, err := c.submitChunk(ctx, chunk)
		if err != nil {
			return out, err
		}
		out = append(out, res...)
	}
	return out, nil
}

func (c *Client) submitChunk(ctx context.Context, specs []*fsm.JobSpec) ([]server.BatchSubmitResult, error) {
	type item struct {
		IdempotencyKey string       `json:"idempotency_key"`
		Spec           *fsm.JobSpec `json:"spec"`
	}
	items := make([]item, len(specs))
	for i, s := range specs {
		key, err := uuid.NewV7()
		if err != nil {
			return nil, err
		}
		items[i] = item{key.String(), s}
	}
	results := make([]server.BatchSubmitResult, len(specs))
	todo := make([]int, len(specs))
	for i := range todo {
		todo[i] = i
	}
	deadline := time.Now().Add(c.retryFor)
	for {
		body := struct {
			Items []item `json:"items"`
		}{}
		for _, i := range todo {
			body.Items = append(body.Items, items[i])
		}
		resp, err := c.requestRetry(ctx, "POST", "/v1/jobs/batch", nil, body, nil, true)
		if err != nil {
			return nil, err
		}
		var got server.BatchSubmitResponse
		err = decodeJSON(resp.Body, &got)
		resp.Body.Close()
		if err == nil && len(got.Items) != len(todo) {
			err = fmt.Errorf("batch submit: %d results for %d specs", len(got.Items), len(todo))
		}
		if err != nil {
			return nil, err
		}
		var again []int
		for k, i := range todo {
			results[i] = got.Items[k]
			if got.Items[k].Status == http.StatusServiceUnavailable {
				again = append(again, i)
			}
		}
		if len(again) == 0 || time.Now().After(deadline) {
			return results, nil
		}
		select {
		case <-ctx.Done():
			return results, nil
		case <-time.After(200 * time.Millisecond):
		}
		todo = again
	}
}

// GetJob returns a job.
func (c *Client) GetJob(ctx context.Context, id string) (*server.Job, error) {
	var j server.Job
	return &j, c.do(ctx, "GET", "/v1/jobs/"+url.PathEscape(id), nil, nil, &j)
}

// ListJobs returns a page of jobs.
func (c *Client) ListJobs(ctx context.Context, q url.Values) (*server.JobPage, error) {
	var p server.JobPage
	return &p, c.do(ctx, "GET", "/v1/jobs", q, nil, &p)
}

// JobSummary returns the counts of GET /v1/jobs/summary and the time the
// answer was made (its Date header; the local time if it has none).
func (c *Client) JobSummary(ctx context.Context) (*server.JobSummary, time.Time, error) {
	resp, err := c.request(ctx, "GET", "/v1/jobs/summary", nil, nil)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer resp.Body.Close()
	at, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		at = time.Now()
	}
	var s server.JobSummary
	return &s, at, decodeJSON(resp.Body, &s)
}

// JobAction posts an action (cancel, pause, resume, retry) on a job.
func (c *Client) JobAction(ctx context.Context, id, action string) (*server.Job, error) {
	var j server.Job
	return &j, c.do(ctx, "POST", "/v1/jobs/"+url.PathEscape(id)+"/"+action, nil, nil, &j)
}

// JobLogs returns a job's log text.
func (c *Client) JobLogs(ctx context.Context, id string) (string, error) {
	resp, err := c.request(ctx, "GET", "/v1/jobs/"+url.PathEscape(id)+"/logs", nil, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// WatchJob follows a job's event stream, calling fn for every version of
// the job, until the job finishes or ctx ends. A dropped stream is
// reopened.
func (c *Client) WatchJob(ctx context.Context, id string, fn func(*server.Job)) (*server.Job, error) {
	var last *server.Job
	for {
		resp, err := c.request(ctx, "GET", "/v1/jobs/"+url.PathEscape(id)+"/events", nil, nil)
		if err != nil {
			return last, err
		}
		done, err := readEvents(resp.Body, func(j *server.Job) { last = j; fn(j) })
		resp.Body.Close()
		if done {
			return last, nil
		}
		if ctx.Err() != nil {
			return last, ctx.Err()
		}
		_ = err // the stream broke; reopen it after a short pause
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// readEvents parses a text/event-stream body; done is true at the "end"
// event.
func readEvents(r io.Reader, fn func(*server.Job)) (done bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var event, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if event == "end" {
				return true, nil
			}
			if event == "job" && data != "" {
				var j server.Job
				if err := json.Unmarshal([]byte(data), &j); err != nil {
					return false, fmt.Errorf("decode event: %w", err)
				}
				fn(&j)
			}
			event, data = "", ""
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			data += line[len("data: "):]
		}
	}
	return false, sc.Err()
}

// ListWorkers lists workers.
func (c *Client) ListWorkers(ctx context.Context) ([]server.Worker, error) {
	var r server.WorkerList
	return r.Workers, c.do(ctx, "GET", "/v1/workers", nil, nil, &r)
}

// Whoami returns the principal the client's key authenticates as.
func (c *Client) Whoami(ctx context.Context) (*server.Whoami, error) {
	var w server.Whoami
	return &w, c.do(ctx, "GET", "/v1/whoami", nil, nil, &w)
}
