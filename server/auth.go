package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// Principal is the authenticated caller of a request.
type Principal struct {
	KeyID    string
	User     string
	TenantID string
	Role     fsm.Role
	// ExpiresAt is when the key stops working; zero for never.
	ExpiresAt time.Time
	// UserID and Email name the key's user; both "" for a key made
	// before keys had users (see keyPrincipal).
	UserID string
	Email  string
	// Scopes, if any, narrow Role: Authorize allows only these.
	Scopes []Permission
}

type principalKey struct{}

// PrincipalFrom returns the request's principal.
func PrincipalFrom(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok
}

// apiKeys is the format of API keys: "ffk_", an ID, the secret and a
// checksum (see package token). Keys made before keys had a checksum end
// at the secret and keep working.
var apiKeys = tokenFormat{Prefix: "ffk_", Unsummed: true}

// parseKey splits an API key into its ID and secret, checking its shape
// and, where it has one, its checksum.
func parseKey(text string) (id, secret string, ok bool) { return apiKeys.Parse(text) }

// NewAPIKey creates a key for user in tenant with role: the secret token
// to give to the user once, and the record to store (hash only).
func NewAPIKey(tenantID, user string, role fsm.Role, now time.Time, ttl time.Duration) (text string, key fsm.APIKey) {
	text, id, hash := apiKeys.New()
	key = fsm.APIKey{ID: id, TenantID: tenantID, User: user, Role: role, Hash: hash, CreatedAt: now}
	if ttl > 0 {
		key.ExpiresAt = now.Add(ttl)
	}
	return text, key
}

// authenticate resolves the request's bearer token to a principal. Keys
// are random 256-bit secrets, so a plain SHA-256 is a sound hash at rest
// and the comparison is constant-time. A refusal never reaches Raft: it
// is counted and logged by authFailed, with a reason for the operator;
// the caller is told no more than before (an unknown key and a wrong
// secret are both "invalid API key").
func (s *Server) authenticate(r *http.Request) (*Principal, error) {
	bearer, ok := bearerOf(r)
	if !ok {
		s.authFailed(r, authMissing, "")
		return nil, fsm.Errorf(CodeUnauthenticated, "an API key is required: Authorization: Bearer <key>")
	}
	id, secret, ok := parseKey(bearer)
	if !ok {
		s.authFailed(r, authMalformed, "")
		return nil, fsm.Errorf(CodeUnauthenticated, "malformed API key: check that it was copied whole")
	}
	k, found := s.fsm.APIKey(id)
	if !found && !readFresh(r.Context()) {
		// The key may be newer than this node's state (created through
		// another node a moment ago): catch up with the leader once. If
		// that is impossible now (an election), the key cannot be judged:
		// unavailable, not unauthenticated.
		if err := s.catchUp(r.Context()); err != nil {
			return nil, fmt.Errorf("verify API key: %w", err)
		}
		k, found = s.fsm.APIKey(id)
	}
	if !found {
		s.authFailed(r, authUnknownKey, id)
		return nil, fsm.Errorf(CodeUnauthenticated, "invalid API key")
	}
	if !tokenMatches(secret, k.Hash) {
		s.authFailed(r, authWrongSecret, id)
		return nil, fsm.Errorf(CodeUnauthenticated, "invalid API key")
	}
	if k.Revoked {
		s.authFailed(r, authRevoked, id)
		return nil, fsm.Errorf(CodeUnauthenticated, "API key has been revoked")
	}
	if !k.ExpiresAt.IsZero() && !s.now().Before(k.ExpiresAt) {
		s.authFailed(r, authExpired, id)
		return nil, fsm.Errorf(CodeUnauthenticated, "API key expired at %s", k.ExpiresAt.Format(time.RFC3339))
	}
	p, reason, err := s.keyPrincipal(k)
	if err != nil {
		s.authFailed(r, reason, id)
		return nil, err
	}
	if err := s.tenantAdmits(r, p); err != nil {
		return nil, err
	}
	s.keyUse.seen(s, k)
	return p, nil
}

// tenantAdmits refuses a key whose tenant is disabled or deleted: all of
// a tenant's keys stop at once. A super-admin's key acts on the whole
// installation, so its tenant's state does not stop it (disabling the
// tenant that holds the super-admin keys must not lock the operator out).
func (s *Server) tenantAdmits(r *http.Request, p *Principal) error {
	if p.Role == fsm.RoleSuperAdmin {
		return nil
	}
	if t, ok := s.fsm.Tenant(p.TenantID); ok && !t.Disabled && !t.Deleted() {
		return nil
	}
	s.authFailed(r, authTenantDisabled, p.KeyID)
	return fsm.Errorf(CodeUnauthenticated, "API key's tenant is disabled")
}

// bearerOf returns the request's bearer token.
func bearerOf(r *http.Request) (string, bool) {
	b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return b, ok && b != ""
}

// authReason is why a request failed authentication: a label of
// ffrtmp_auth_failures_total and of the warning line, from the fixed set
// authReasons, so that a caller cannot grow the metric's series.
type authReason string

// Reasons for an authentication failure.
const (
	authMissing     authReason = "missing"      // no bearer token
	authMalformed   authReason = "malformed"    // not a key's shape, or a bad checksum
	authUnknownKey  authReason = "unknown_key"  // no key has the ID
	authWrongSecret authReason = "wrong_secret" // the key exists; the secret is not its
	authRevoked     authReason = "revoked"
	authExpired     authReason = "expired"
	// authTenantDisabled: the key's tenant is disabled or deleted.
	authTenantDisabled authReason = "tenant_disabled"
	authNoUser         authReason = "no_user"       // the key's user does not exist
	authDisabled       authReason = "user_disabled" // the key's user is disabled
)

// authReasons lists every authReason, for the metric's initial series.
var authReasons = []authReason{authMissing, authMalformed, authUnknownKey, authWrongSecret, authRevoked, authExpired, authTenantDisabled, authNoUser, authDisabled}

// authLogWindow is the shortest time between two warning lines about
// authentication failures of the same reason.
const authLogWindow = 10 * time.Second

// authFailed counts a failed authentication and logs it, rate-limited:
// one warning line per reason per authLogWindow, which reports how many
// failures of that reason were left unlogged since the last line. The
// line names the source address and, where the token had a key's shape,
// the key's ID (not secret: it is how an operator finds the key); never
// the token itself.
func (s *Server) authFailed(r *http.Request, reason authReason, keyID string) {
	s.metrics.authFailures.WithLabelValues(string(reason)).Inc()
	suppressed, ok := s.authLog.allow(reason, s.now())
	if !ok {
		return
	}
	attrs := []any{"reason", string(reason), "source", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "request_id", requestIDOf(r)}
	if keyID != "" {
		attrs = append(attrs, "key_id", keyID)
	}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	s.log.Warn("API authentication failed", attrs...)
}

// rateLimiter lets one event per key through per window and counts the
// ones it holds back. It is safe for concurrent use; the caller passes
// the time, so that a test drives the window with a clock of its own.
type rateLimiter struct {
	window time.Duration

	mu         sync.Mutex
	last       map[authReason]time.Time
	suppressed map[authReason]int
}

// allow reports whether an event of key at now may be logged and, if so,
// how many were held back since the last one that was.
func (l *rateLimiter) allow(key authReason, now time.Time) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last, l.suppressed = map[authReason]time.Time{}, map[authReason]int{}
	}
	if last, seen := l.last[key]; seen && now.Sub(last) < l.window {
		l.suppressed[key]++
		return 0, false
	}
	suppressed = l.suppressed[key]
	l.last[key], l.suppressed[key] = now, 0
	return suppressed, true
}
