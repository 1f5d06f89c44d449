package server_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// docBlock is a ```json block of a doc page and the section it is in.
type docBlock struct {
	section string
	line    int
	text    string
}

// jsonBlocks returns the ```json blocks of a Markdown file.
func jsonBlocks(t *testing.T, path string) []docBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []docBlock
	var section string
	var cur *docBlock
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur != nil && strings.HasPrefix(line, "```"):
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		case strings.HasPrefix(line, "```json"):
			cur = &docBlock{section: section, line: n}
		case strings.HasPrefix(line, "## "):
			section = strings.TrimPrefix(line, "## ")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func decodeBlock(t *testing.T, b docBlock) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(b.text), &v); err != nil {
		t.Fatalf("docs/api.md:%d (%s): the example is not JSON: %v", b.line, b.section, err)
	}
	return v
}

// TestAPIDocExamples runs the JSON examples of docs/api.md against a real
// node, section by section: each request is sent, and each answer shown
// must match the real one's status, codes and fields. A new example needs
// a section here.
func TestAPIDocExamples(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	doc, _ := loadServedDocument(t, e)
	errorSchema := doc.Components.Schemas["ErrorBody"].Value
	jobSchema := doc.Components.Schemas["Job"].Value
	validate := func(b docBlock, s *openapi3.Schema, v any) {
		t.Helper()
		if err := s.VisitJSON(v); err != nil {
			t.Errorf("docs/api.md:%d (%s): the answer does not match its schema: %v", b.line, b.section, err)
		}
	}
	post := func(path string, body any) (int, map[string]any) {
		t.Helper()
		var got map[string]any
		resp := e.do("POST", path, body, &got)
		return resp.StatusCode, got
	}

	sections := map[string]func(blocks []docBlock){
		// The quota refusal, made real with a tenant at max_jobs 1.
		"Tenants and quotas": func(blocks []docBlock) {
			want := decodeBlock(t, blocks[0])
			if status, got := post("/v1/tenants", map[string]any{"name": "acme", "limits": map[string]any{"max_jobs": 1}}); status != http.StatusCreated {
				t.Fatalf("create tenant acme: %d %v", status, got)
			}
			post("/v1/jobs?tenant=acme", queuedSpec)
			status, got := post("/v1/jobs?tenant=acme", queuedSpec)
			if status != http.StatusTooManyRequests {
				t.Errorf("docs/api.md:%d: a submit past max_jobs answered %d %v; want 429", blocks[0].line, status, got)
			}
			validate(blocks[0], errorSchema, got)
			if w, g := field(want, "error", "code"), field(got, "error", "code"); w != g {
				t.Errorf("docs/api.md:%d: code %q, the real answer %q", blocks[0].line, w, g)
			}
			wd, _ := want["error"].(map[string]any)["details"]
			gd, _ := got["error"].(map[string]any)["details"]
			if m := missingFields(wd, gd); len(m) > 0 {
				t.Errorf("docs/api.md:%d: the real details lack %v", blocks[0].line, m)
			}
		},
		// The batch request, and the answer shown after it.
		"Batch submit": func(blocks []docBlock) {
			if len(blocks) != 2 {
				t.Fatalf("docs/api.md, Batch submit: %d JSON examples; want the request and its answer", len(blocks))
			}
			req, want := decodeBlock(t, blocks[0]), decodeBlock(t, blocks[1])
			freshIdempotencyKeys(nil, req)
			status, got := post("/v1/jobs/batch", req)
			if status != http.StatusOK {
				t.Fatalf("docs/api.md:%d: the batch answered %d %v; want 200", blocks[0].line, status, got)
			}
			wi, _ := want["items"].([]any)
			gi, _ := got["items"].([]any)
			if len(wi) != len(gi) {
				t.Fatalf("docs/api.md:%d: %d items shown, %d answered", blocks[1].line, len(wi), len(gi))
			}
			for i := range wi {
				for _, p := range [][]string{{"status"}, {"job", "state"}, {"error", "code"}} {
					if w, g := field(wi[i], p...), field(gi[i], p...); w != g {
						t.Errorf("docs/api.md:%d: item %d %v is %q, the real answer %q", blocks[1].line, i, p, w, g)
					}
				}
				if m := missingFields(wi[i], gi[i]); len(m) > 0 {
					t.Errorf("docs/api.md:%d: item %d of the real answer lacks %v", blocks[1].line, i, m)
				}
			}
		},
		// The job spec is submitted as it stands.
		"Job spec": func(blocks []docBlock) {
			for _, b := range blocks {
				spec := decodeBlock(t, b)
				status, got := post("/v1/jobs", spec)
				if status != http.StatusCreated {
					t.Errorf("docs/api.md:%d: the job spec answered %d %v; want 201", b.line, status, got)
					continue
				}
				validate(b, jobSchema, got)
				if m := missingFields(spec, got["spec"]); len(m) > 0 {
					t.Errorf("docs/api.md:%d: the accepted spec lacks %v", b.line, m)
				}
			}
		},
		// The error shown, made real with the file it names.
		"Errors": func(blocks []docBlock) {
			want := decodeBlock(t, blocks[0])
			spec := `{"scenario":"720p30-h264","input":{"url":"file:///etc/passwd"},"outputs":[{"url":"file:///out/a.mp4"}]}`
			status, got := post("/v1/jobs", spec)
			validate(blocks[0], errorSchema, got)
			if w, g := field(want, "error", "code"), field(got, "error", "code"); status != http.StatusForbidden || w != g {
				t.Errorf("docs/api.md:%d: input file:///etc/passwd answered %d %v; want 403 %s", blocks[0].line, status, got, w)
			}
			if w, g := field(want, "error", "message"), field(got, "error", "message"); !strings.HasPrefix(g, strings.TrimSuffix(w, " ...")) {
				t.Errorf("docs/api.md:%d: message %q; the real one %q", blocks[0].line, w, g)
			}
		},
	}

	bySection := map[string][]docBlock{}
	var order []string
	for _, b := range jsonBlocks(t, "../docs/api.md") {
		if _, ok := bySection[b.section]; !ok {
			order = append(order, b.section)
		}
		bySection[b.section] = append(bySection[b.section], b)
	}
	for _, s := range order {
		run, ok := sections[s]
		if !ok {
			t.Errorf("docs/api.md:%d: a JSON example in section %q that no test runs: add the section to TestAPIDocExamples", bySection[s][0].line, s)
			continue
		}
		run(bySection[s])
	}
	for s := range sections {
		if !slices.Contains(order, s) {
			t.Errorf("TestAPIDocExamples runs section %q, which docs/api.md has no JSON example in", s)
		}
	}
}
