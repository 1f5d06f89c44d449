package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// TestWhoami checks that GET /v1/whoami answers the key's own principal:
// user, key, tenant with its name, role, the role's permissions and the
// expiry, and never the key's hash.
func TestWhoami(t *testing.T) {
	t.Parallel()
	e := setup(t, envOpts{})
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)

	var admin server.Whoami
	if resp := e.do("GET", "/v1/whoami", nil, &admin); resp.StatusCode != http.StatusOK {
		t.Fatalf("whoami: status %d", resp.StatusCode)
	}
	if admin.Role != fsm.RoleSuperAdmin || admin.Tenant.ID != "default" || admin.Tenant.Name != "default" || admin.ExpiresAt != nil || admin.KeyID == "" {
		t.Errorf("super-admin whoami = %+v", admin)
	}
	if !slices.Equal(admin.Permissions, server.AllPermissions()) {
		t.Errorf("super-admin permissions %v, want %v", admin.Permissions, server.AllPermissions())
	}

	if _, err := e.node.Apply(ctx, &fsm.CreateTenant{Tenant: fsm.Tenant{ID: "t-acme", Name: "t-acme", CreatedAt: now}}); err != nil {
		t.Fatal(err)
	}
	tok, key := server.NewAPIKey("t-acme", "vera@acme.example", fsm.RoleViewer, now, 48*time.Hour)
	if _, err := e.node.Apply(ctx, &fsm.CreateAPIKey{Key: key}); err != nil {
		t.Fatal(err)
	}
	_, body := get(t, e.url+"/v1/whoami", tok)
	for _, h := range []string{hex.EncodeToString(key.Hash), base64.StdEncoding.EncodeToString(key.Hash), `"hash"`} {
		if strings.Contains(body, h) {
			t.Errorf("whoami shows the key's hash: %s", body)
		}
	}
	var viewer server.Whoami
	e.doKey(tok, "GET", "/v1/whoami", nil, &viewer)
	want := server.Whoami{
		User: "vera@acme.example", KeyID: key.ID, Tenant: server.WhoamiTenant{ID: "t-acme", Name: "t-acme"},
		Role: fsm.RoleViewer, Permissions: server.RolePermissions(fsm.RoleViewer),
	}
	if viewer.User != want.User || viewer.KeyID != want.KeyID || viewer.Tenant != want.Tenant || viewer.Role != want.Role ||
		!slices.Equal(viewer.Permissions, want.Permissions) {
		t.Errorf("viewer whoami = %+v, want %+v", viewer, want)
	}
	if viewer.ExpiresAt == nil || !viewer.ExpiresAt.Equal(key.ExpiresAt) {
		t.Errorf("viewer key expires %v, want %v", viewer.ExpiresAt, key.ExpiresAt)
	}
	var ae apiError
	if resp := e.doKey("", "GET", "/v1/whoami", nil, &ae); resp.StatusCode != http.StatusUnauthorized || ae.Error.Code != "unauthenticated" {
		t.Errorf("whoami without a key: %d %+v", resp.StatusCode, ae)
	}
}

// get sends a GET with key and returns the status and body.
func get(t *testing.T, url, key string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// lockedBuffer is a log destination that handlers write concurrently.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the logged lines that contain every one of parts.
func (b *lockedBuffer) lines(parts ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		if l != "" && !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(l, p) }) {
			out = append(out, l)
		}
	}
	return out
}

// TestAuthFailures checks that every kind of refused API key is counted
// by reason in ffrtmp_auth_failures_total, logged at most once per
// reason per window with the number held back, never with the secret,
// and that none of it changes the replicated state.
func TestAuthFailures(t *testing.T) {
	t.Parallel()
	base := time.Now().UTC()
	var skew atomic.Int64
	clock := func() time.Time { return base.Add(time.Duration(skew.Load())) }
	logs := &lockedBuffer{}
	e := setup(t, envOpts{now: clock, log: slog.New(slog.NewTextHandler(logs, nil))})
	ctx := context.Background()

	good, key := server.NewAPIKey("default", "ann", fsm.RoleViewer, base, 0)
	revoked, rkey := server.NewAPIKey("default", "rob", fsm.RoleViewer, base, 0)
	expired, ekey := server.NewAPIKey("default", "eve", fsm.RoleViewer, base.Add(-2*time.Hour), time.Hour)
	for _, k := range []fsm.APIKey{key, rkey, ekey} {
		if _, err := e.node.Apply(ctx, &fsm.CreateAPIKey{Key: k}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.node.Apply(ctx, &fsm.RevokeAPIKey{ID: rkey.ID, At: base}); err != nil {
		t.Fatal(err)
	}
	// The same ID with another secret (and a valid checksum), and a
	// well-formed key no one holds.
	other, _ := server.NewAPIKey("default", "x", fsm.RoleViewer, base, 0)
	wrongSecret := server.WithKeyChecksum("ffk_" + key.ID + other[len("ffk_")+16:len(other)-6])
	unknown := other
	secretOf := func(tok string) string { return tok[len("ffk_")+17 : len("ffk_")+17+43] }

	index := e.fsm.Flush()
	tries := []struct {
		key    string
		reason string
		n      int
	}{
		{"", "missing", 5},
		{"ffk_not-a-key", "malformed", 1},
		{unknown, "unknown_key", 1},
		{wrongSecret, "wrong_secret", 2},
		{revoked, "revoked", 1},
		{expired, "expired", 1},
	}
	for _, tc := range tries {
		for range tc.n {
			if status, body := get(t, e.url+"/v1/jobs", tc.key); status != http.StatusUnauthorized {
				t.Fatalf("%s: status %d %s, want 401", tc.reason, status, body)
			}
		}
	}
	// (Checked before the good key's request, whose use is recorded
	// through Raft.)
	if got := e.fsm.Flush(); got != index {
		t.Errorf("failed authentications moved the applied index from %d to %d", index, got)
	}
	if status, _ := get(t, e.url+"/v1/jobs", good); status != http.StatusOK {
		t.Fatalf("good key: status %d", status)
	}

	metrics := e.metricsText()
	for _, tc := range tries {
		line := fmt.Sprintf("ffrtmp_auth_failures_total{reason=%q} %d\n", tc.reason, tc.n)
		if !strings.Contains(metrics, line) {
			t.Errorf("metrics lack %q", strings.TrimSpace(line))
		}
		if got := logs.lines("API authentication failed", "reason="+tc.reason); len(got) != 1 {
			t.Errorf("reason %s: %d log lines, want 1 (rate-limited): %q", tc.reason, len(got), got)
		}
	}
	for _, tok := range []string{good, revoked, expired, unknown, wrongSecret} {
		if s := secretOf(tok); len(logs.lines(s)) != 0 {
			t.Errorf("the log shows a presented secret %q", s)
		}
	}
	if got := logs.lines("reason=unknown_key", "key_id="+other[4:20], "source=127.0.0.1:"); len(got) != 1 {
		t.Errorf("unknown key line lacks its key ID or source: %q", logs.lines("reason=unknown_key"))
	}

	// Within the window, nothing more is logged; after it, one line
	// reports how many were held back.
	skew.Store(int64(9 * time.Second))
	get(t, e.url+"/v1/jobs", "")
	if got := logs.lines("reason=missing"); len(got) != 1 {
		t.Fatalf("within the window: %d lines for missing, want 1: %q", len(got), got)
	}
	skew.Store(int64(10 * time.Second))
	get(t, e.url+"/v1/jobs", "")
	got := logs.lines("reason=missing")
	if len(got) != 2 || !strings.Contains(got[1], "suppressed=5") {
		t.Fatalf("after the window: lines %q, want a second one with suppressed=5", got)
	}
	if got := logs.lines("reason=malformed"); len(got) != 1 {
		t.Errorf("another reason's window moved: %q", got)
	}
}
