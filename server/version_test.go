package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// TestAPIVersionOnEveryResponse: every kind of answer, success or error,
// of a route or of no route, carries API-Version.
func TestAPIVersionOnEveryResponse(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	j := e.submit(queuedSpec)
	vtext, vkey := server.NewAPIKey("default", "viewer@example.com", fsm.RoleViewer, time.Now().UTC(), 0)
	if _, err := e.node.Apply(t.Context(), &fsm.CreateAPIKey{Key: vkey}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, key, method, path, body string
		status                        int
	}{
		{"health", "", "GET", "/health", "", 200},
		{"a read", e.token, "GET", "/v1/jobs/" + j.ID, "", 200},
		{"a write", e.token, "POST", "/v1/jobs", queuedSpec, 201},
		{"a HEAD", "", "HEAD", "/v1/openapi.json", "", 200},
		{"metrics", e.token, "GET", "/metrics", "", 200},
		{"the docs page", "", "GET", "/v1/docs", "", 200},
		{"a deprecated route", e.token, "GET", "/jobs/" + j.ID, "", 200},
		{"bad JSON", e.token, "POST", "/v1/jobs", "{", 400},
		{"no key", "", "GET", "/v1/jobs", "", 401},
		{"a refusal", vtext, "POST", "/v1/jobs", queuedSpec, 403},
		{"no such object", e.token, "GET", "/v1/jobs/0190a0a0-0000-7000-8000-000000000000", "", 404},
		{"no such route", "", "GET", "/no/such/route", "", 404},
		{"no such docs file", "", "GET", "/v1/docs/nothing.js", "", 404},
		{"a wrong method", e.token, "DELETE", "/v1/jobs", "", 405},
	} {
		resp := e.doKey(c.key, c.method, c.path, c.body, nil)
		if resp.StatusCode != c.status {
			t.Errorf("%s: %s %s: status %d, want %d", c.name, c.method, c.path, resp.StatusCode, c.status)
		}
		if got := resp.Header.Get("API-Version"); got != server.APIVersion {
			t.Errorf("%s: %s %s (%d): API-Version %q, want %q", c.name, c.method, c.path, resp.StatusCode, got, server.APIVersion)
		}
	}
}

// TestDeprecatedRoute: the legacy GET /jobs/{id} answers as its successor
// GET /v1/jobs/{id} does, with the same key check, and every answer of it
// carries Deprecation (RFC 9745), Sunset (RFC 8594) at least six months
// later, and a Link to the successor; its calls, and only its, are counted.
func TestDeprecatedRoute(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	j := e.submit(queuedSpec)
	const metric = `ffrtmp_http_deprecated_requests_total{route="GET /jobs/{id}"} `
	if got := metricValue(t, e, metric); got != 0 {
		t.Fatalf("deprecated calls before any: %d, want 0", got)
	}

	var got, want json.RawMessage
	resp := e.do("GET", "/jobs/"+j.ID, nil, &got)
	e.do("GET", "/v1/jobs/"+j.ID, nil, &want)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, want) {
		t.Fatalf("GET /jobs/%s: %d %s, want 200 %s", j.ID, resp.StatusCode, got, want)
	}
	checkDeprecationHeaders(t, resp.Header, "</v1/jobs/"+j.ID+`>; rel="successor-version"`)
	// The example of docs/api-versioning.md shows these headers.
	docs, err := os.ReadFile("../docs/api-versioning.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"API-Version", "Deprecation", "Sunset", "Link"} {
		line := http.CanonicalHeaderKey(h) + ": " + strings.ReplaceAll(resp.Header.Get(h), j.ID, "ID") + "\n"
		if !strings.Contains(string(docs), line) {
			t.Errorf("docs/api-versioning.md does not show %q", line)
		}
	}
	if got := metricValue(t, e, metric); got != 1 {
		t.Errorf("deprecated calls after one (and one of the successor): %d, want 1", got)
	}

	// The same key check as the successor; a refusal is deprecated too.
	var ae apiError
	resp = e.doKey("", "GET", "/jobs/"+j.ID, nil, &ae)
	if resp.StatusCode != http.StatusUnauthorized || ae.Error.Code != "unauthenticated" {
		t.Errorf("without a key: %d %+v, want 401 unauthenticated", resp.StatusCode, ae)
	}
	checkDeprecationHeaders(t, resp.Header, "</v1/jobs/"+j.ID+`>; rel="successor-version"`)
	resp = e.do("GET", "/jobs/0190a0a0-0000-7000-8000-000000000000", nil, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("an unknown job: %d, want 404", resp.StatusCode)
	}
	if got := metricValue(t, e, metric); got != 3 {
		t.Errorf("deprecated calls after three: %d, want 3", got)
	}

	// A route that is not deprecated says nothing of the kind.
	resp = e.do("GET", "/v1/jobs/"+j.ID, nil, nil)
	for _, h := range []string{"Deprecation", "Sunset", "Link"} {
		if v := resp.Header.Get(h); v != "" {
			t.Errorf("GET /v1/jobs/{id}: %s: %q, want none", h, v)
		}
	}
}

// checkDeprecationHeaders checks the three headers of a deprecated
// route's answer.
func checkDeprecationHeaders(t *testing.T, h http.Header, link string) {
	t.Helper()
	dep := h.Get("Deprecation")
	secs, err := strconv.ParseInt(strings.TrimPrefix(dep, "@"), 10, 64)
	if !strings.HasPrefix(dep, "@") || err != nil {
		t.Fatalf("Deprecation %q, want @<unix seconds>", dep)
	}
	sunset, err := http.ParseTime(h.Get("Sunset"))
	if err != nil {
		t.Fatalf("Sunset %q: %v", h.Get("Sunset"), err)
	}
	if since := time.Unix(secs, 0).UTC(); sunset.Before(since.AddDate(0, 6, 0)) {
		t.Errorf("Sunset %s is less than six months after Deprecation %s", sunset, since)
	}
	if got := h.Get("Link"); got != link {
		t.Errorf("Link %q, want %q", got, link)
	}
}

// metricValue returns the value of the metric line that starts with
// prefix ("name{labels} "), failing if the node does not export it.
func metricValue(t *testing.T, e *env, prefix string) int {
	t.Helper()
	body := e.metricsText()
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s%s: %v", prefix, v, err)
			}
			return int(n)
		}
	}
	t.Fatalf("/metrics has no %q", prefix)
	return 0
}
