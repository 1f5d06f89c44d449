package cluster_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/ffrtmp/ffrtmp/cluster"
)

// TestHCLoggerFormatsValues: raft's hclog.Fmt values and the like reach
// the log formatted, as hclog would print them, not as "[%0.2f%% 100]".
func TestHCLoggerFormatsValues(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := cluster.NewHCLogger(slog.New(slog.NewTextHandler(&buf, nil)), "raft")
	l.Info("snapshot restore progress", "percent-complete", hclog.Fmt("%0.2f%%", 100.0), "servers", hclog.Fmt("%+v", struct{ ID string }{"n1"}),
		"received", hclog.Fmt("%d / %d", 3, 4), "flags", hclog.Hex(255), "name", hclog.Quote("a b"))
	got := buf.String()
	for _, want := range []string{`percent-complete=100.00%`, `servers={ID:n1}`, `received="3 / 4"`, `flags=0xff`, `name="\"a b\""`, "component=raft"} {
		if !strings.Contains(got, want) {
			t.Errorf("log %q lacks %s", got, want)
		}
	}
	if strings.Contains(got, "[%") {
		t.Errorf("log %q has a raw format verb", got)
	}
}

// TestStdLoggerLevels: a library's standard logger lines ("[WARN]
// memberlist: ...") log at their level, without the prefix; other lines
// at the default level.
func TestStdLoggerLevels(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	sl := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l := cluster.NewStdLogger(sl, "memberlist", slog.LevelDebug)
	l.Printf("[WARN] memberlist: Was able to connect to %s over TCP but UDP probes failed", "n2")
	l.Printf("[ERR] memberlist: Failed to send ping")
	l.Printf("[DEBUG] memberlist: Stream connection from=%s", "1.2.3.4")
	l.Printf("http: TLS handshake error from 1.2.3.4:5: EOF")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		`level=WARN msg="Was able to connect to n2 over TCP but UDP probes failed" component=memberlist`,
		`level=ERROR msg="Failed to send ping" component=memberlist`,
		`level=DEBUG msg="Stream connection from=1.2.3.4" component=memberlist`,
		`level=DEBUG msg="http: TLS handshake error from 1.2.3.4:5: EOF" component=memberlist`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], "time=") || !strings.HasSuffix(lines[i], w) {
			t.Errorf("line %d = %q, want ...%s", i, lines[i], w)
		}
	}
}
