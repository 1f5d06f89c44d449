package server_test

import (
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestJobIDSyntax checks that job paths and the listing cursor take the
// job ID forms that exist (UUIDs, kept ffmpeg-rtmp IDs) and refuse
// anything else before looking it up.
func TestJobIDSyntax(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	for _, c := range []struct {
		path string
		code int
		err  string
	}{
		{"/v1/jobs/job-3", 404, "not_found"},
		{"/v1/jobs/6f1c1a52-3b5e-4c3e-9a43-1d2f3e4a5b6c", 404, "not_found"},
		{"/v1/jobs/job%203", 400, "invalid_argument"},
		{"/v1/jobs/" + strings.Repeat("a", 65), 400, "invalid_argument"},
		{"/v1/jobs/%7B6f1c1a52-3b5e-4c3e-9a43-1d2f3e4a5b6c%7D", 400, "invalid_argument"},
		{"/v1/jobs/job-3/cancel", 404, "not_found"},
		{"/v1/jobs?after=job-3", 200, ""},
		{"/v1/jobs?after=job%203", 400, "invalid_argument"},
	} {
		method := "GET"
		if strings.HasSuffix(c.path, "/cancel") {
			method = "POST"
		}
		var ae apiError
		resp := e.do(method, c.path, nil, &ae)
		if resp.StatusCode != c.code || ae.Error.Code != c.err {
			t.Errorf("%s %s = %d %q, want %d %q", method, c.path, resp.StatusCode, ae.Error.Code, c.code, c.err)
		}
	}
}

// TestJobIDPatternDocumented keeps the OpenAPI document's job ID pattern
// the one the server checks.
func TestJobIDPatternDocumented(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	var doc struct {
		Components struct {
			Parameters map[string]struct {
				Schema struct {
					Pattern string `json:"pattern"`
				} `json:"schema"`
			} `json:"parameters"`
		} `json:"components"`
	}
	e.do("GET", "/v1/openapi.json", nil, &doc)
	if got := doc.Components.Parameters["id"].Schema.Pattern; got != fsm.JobIDPattern {
		t.Errorf("openapi.json job id pattern = %q, want %q", got, fsm.JobIDPattern)
	}
}
