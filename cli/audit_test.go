package cli

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/server"
)

func TestCLIAudit(t *testing.T) {
	d := startDevWorkers(t, 0)
	var ids []string
	for range 2 {
		ids = append(ids, strings.TrimSpace(d.mustRun("jobs", "submit", "--scenario", "240p30-h264", "--input", "testsrc://?duration=2", "--output", "file:///a.mp4")))
	}
	d.mustRun("jobs", "cancel", ids[0])

	table := d.mustRun("audit", "list")
	if !strings.Contains(table, "SEQ") || strings.Count(table, "submitJob") != 2 || !strings.Contains(table, "cancelJob") || !strings.Contains(table, ids[0]) {
		t.Fatalf("audit list table:\n%s", table)
	}
	var page server.AuditPage
	if err := json.Unmarshal([]byte(d.mustRun("audit", "list", "--action", "cancelJob", "-o", "json")), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 1 || page.Records[0].Target != ids[0] || page.Records[0].Result != "ok" || page.Records[0].Tenant != "default" {
		t.Fatalf("audit list --action cancelJob = %+v", page.Records)
	}
	if err := json.Unmarshal([]byte(d.mustRun("audit", "list", "--limit", "1", "--since", "1h", "-o", "json")), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 1 || page.Next == "" {
		t.Fatalf("audit list --limit 1 = %+v, want one record and a cursor", page)
	}
	var rest server.AuditPage
	json.Unmarshal([]byte(d.mustRun("audit", "list", "--after", page.Next, "-o", "json")), &rest)
	if len(rest.Records) != 2 || rest.Records[0].Seq >= page.Records[0].Seq {
		t.Fatalf("audit list --after %s = %+v, want the two older records", page.Next, rest.Records)
	}
	if out := d.mustRun("audit", "list", "--until", "1h"); strings.Contains(out, "submitJob") {
		t.Fatalf("audit list --until 1h ago shows records:\n%s", out)
	}

	out := d.mustRun("audit", "verify")
	if !strings.Contains(out, "ok: 3 records verified") {
		t.Fatalf("audit verify:\n%s", out)
	}
	var v server.AuditVerification
	json.Unmarshal([]byte(d.mustRun("audit", "verify", "-o", "json")), &v)
	d.mustRun("audit", "verify", "--head", v.Head.Text)
	_, err := d.run("audit", "verify", "--head", "9:"+v.Head.Hash)
	if !errors.Is(err, ErrAuditBroken) || !strings.Contains(err.Error(), "record 4: records 4 to 9 are missing") {
		t.Fatalf("verify against a head the chain does not reach: %v", err)
	}
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2026-01-01T00:00:00Z": time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		"24h":                  now.Add(-24 * time.Hour),
		"90m":                  now.Add(-90 * time.Minute),
	} {
		if got, err := parseWhen(in, now); err != nil || !got.Equal(want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"yesterday", "-1h", ""} {
		if _, err := parseWhen(in, now); err == nil {
			t.Errorf("parseWhen(%q) accepted", in)
		}
	}
}
