package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// redoclyDir holds the pinned linter's package.json, package-lock.json
// and redocly.yaml.
const redoclyDir = "../testdata/redocly"

// TestOpenAPILint runs the pinned `redocly lint` (recommended ruleset) on
// the document the server serves and fails on any error or warning. It
// needs npm: without it the test fails in CI (CI=true) and is skipped
// elsewhere.
func TestOpenAPILint(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("npm"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("npm is not installed; CI must lint the OpenAPI document (install nodejs and npm): %v", err)
		}
		t.Skip("npm is not installed; install nodejs and npm to lint the OpenAPI document")
	}
	bin := installRedocly(t)
	config, err := filepath.Abs(filepath.Join(redoclyDir, "redocly.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Lint exactly what GET /v1/openapi.json serves.
	doc := filepath.Join(t.TempDir(), "openapi.json")
	if err := os.WriteFile(doc, servedOpenAPI(t), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "lint", "--config", config, "--format", "json", "--max-problems", "1000", doc)
	cmd.Env = append(os.Environ(), "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var out struct {
		Totals struct {
			Errors   int `json:"errors"`
			Warnings int `json:"warnings"`
		} `json:"totals"`
		Problems []struct {
			RuleID   string `json:"ruleId"`
			Severity string `json:"severity"`
			Message  string `json:"message"`
			Location []struct {
				Pointer string `json:"pointer"`
			} `json:"location"`
		} `json:"problems"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("redocly lint: %v (run: %v)\nstdout: %s\nstderr: %s", err, runErr, stdout.Bytes(), stderr.Bytes())
	}
	for _, p := range out.Problems {
		where := ""
		if len(p.Location) > 0 {
			where = p.Location[0].Pointer
		}
		t.Errorf("openapi.json %s: %s (%s %s)", where, p.Message, p.Severity, p.RuleID)
	}
	if out.Totals.Errors+out.Totals.Warnings != len(out.Problems) {
		t.Errorf("redocly lint counts %d errors and %d warnings, and lists %d", out.Totals.Errors, out.Totals.Warnings, len(out.Problems))
	}
	if runErr != nil && !t.Failed() {
		t.Errorf("redocly lint: %v\nstderr: %s", runErr, stderr.Bytes())
	}
}

// installRedocly installs the pinned linter with `npm ci` into the user
// cache directory, once per lock file, and returns its executable.
func installRedocly(t *testing.T) string {
	t.Helper()
	lock, err := os.ReadFile(filepath.Join(redoclyDir, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := os.ReadFile(filepath.Join(redoclyDir, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	sum := sha256.Sum256(append(append([]byte{}, pkg...), lock...))
	dir := filepath.Join(cache, "ffrtmp", "redocly-"+hex.EncodeToString(sum[:8]))
	bin := filepath.Join(dir, "node_modules", ".bin", "redocly")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	// Install beside the final directory and rename it into place, so
	// that a concurrent run never sees a half-installed one.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "install-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	for name, data := range map[string][]byte{"package.json": pkg, "package-lock.json": lock} {
		if err := os.WriteFile(filepath.Join(tmp, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", redoclyDir, err, out)
	}
	renameErr := os.Rename(tmp, dir)
	// A failed rename is fine if another run put its install in place.
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("install redocly into %s: %v (%v)", dir, err, renameErr)
	}
	return bin
}

// servedOpenAPI returns what the route GET /v1/openapi.json answers.
func servedOpenAPI(t *testing.T) []byte {
	t.Helper()
	s := &Server{metrics: NewMetrics()}
	for _, rt := range s.routes() {
		if rt.method == http.MethodGet && rt.pattern == "/v1/openapi.json" {
			w := httptest.NewRecorder()
			rt.handle(w, httptest.NewRequest(http.MethodGet, "/v1/openapi.json", nil))
			if w.Code != http.StatusOK {
				t.Fatalf("GET /v1/openapi.json: %d", w.Code)
			}
			return w.Body.Bytes()
		}
	}
	t.Fatal("no route serves GET /v1/openapi.json")
	return nil
}
