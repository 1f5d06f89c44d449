package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/store/bolt"
)

// TestVersion: `ffrtmp version` prints the build's version (dev without
// one), the API version and the store schemas: the bolt layout and the
// newest PostgreSQL migration file; --version prints the version too.
func TestVersion(t *testing.T) {
	run := func(version string, args ...string) string {
		t.Helper()
		var out bytes.Buffer
		env := Env{Version: version, Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }}
		if err := Run(context.Background(), env, args); err != nil {
			t.Fatalf("ffrtmp %s: %v", strings.Join(args, " "), err)
		}
		return out.String()
	}
	files, err := filepath.Glob("../store/postgres/migrations/*.up.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("migrations: %v %v", files, err)
	}
	slices.Sort(files)
	newest := strings.TrimSuffix(filepath.Base(files[len(files)-1]), ".up.sql")

	var v VersionInfo
	if err := json.Unmarshal([]byte(run("", "version", "-o", "json")), &v); err != nil {
		t.Fatal(err)
	}
	if v.Version != "dev" || v.API != "v1" || v.OpenAPI == "" || v.BoltSchema != bolt.SchemaVersion || v.PostgresMigration != newest {
		t.Errorf("version = %+v, want dev, API v1, bolt schema %d, migration %s", v, bolt.SchemaVersion, newest)
	}
	table := run("1.4.2", "version")
	for _, want := range []string{"ffrtmp:", "1.4.2", "API:", "v1", "Bolt schema:", "PostgreSQL schema:", newest} {
		if !strings.Contains(table, want) {
			t.Errorf("version table lacks %q:\n%s", want, table)
		}
	}
	if out := run("1.4.2", "--version"); !strings.Contains(out, "1.4.2") {
		t.Errorf("--version printed %q", out)
	}
}
