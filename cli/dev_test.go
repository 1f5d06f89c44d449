package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestDevJobCannotReachOwnAPI submits a job whose input is the dev node's
// own API on loopback, which the default policy's 127.0.0.1 would let
// through: the local worker refuses it with url_not_allowed.
func TestDevJobCannotReachOwnAPI(t *testing.T) {
	d := startDev(t)
	cfg, err := LoadConfig(d.getenv)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(d.mustRun("jobs", "submit", "--scenario", "240p30-h264",
		"--input", cfg.Addr+"/v1/jobs", "--output", "file:///api.mp4"))
	waitJob(t, d, id, fsm.JobFailed)
	var j fsm.Job
	if err := json.Unmarshal([]byte(d.mustRun("jobs", "get", id, "-o", "json")), &j); err != nil {
		t.Fatal(err)
	}
	if j.Error == nil || j.Error.Code != fsm.CodeURLNotAllowed || strings.Contains(j.Error.Message, d.dataDir) {
		t.Fatalf("job error %+v, want url_not_allowed without host paths", j.Error)
	}
}
