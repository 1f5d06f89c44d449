package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ffrtmp/ffrtmp/cluster"
	"github.com/ffrtmp/ffrtmp/fsm"
)

// Principal is the authenticated caller of a request.
type Principal struct {
	KeyID    string
	User     string
	TenantID string
	Role     fsm.Role
}

type principalKey struct{}

// PrincipalFrom returns the request's principal.
func PrincipalFrom(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok
}

// keyPrefix starts every API key, so that leaked keys are easy to find.
const keyPrefix = "ffk_"

// NewAPIKey creates a key for user in tenant with role: the secret token
// to give to the user once, and the record to store (hash only).
func NewAPIKey(tenantID, user string, role fsm.Role, now time.Time, ttl time.Duration) (token string, key fsm.APIKey) {
	id := make([]byte, 8)
	secret := make([]byte, 32)
	rand.Read(id)
	rand.Read(secret)
	key = fsm.APIKey{
		ID:        hex.EncodeToString(id),
		TenantID:  tenantID,
		User:      user,
		Role:      role,
		CreatedAt: now,
	}
	if ttl > 0 {
		key.ExpiresAt = now.Add(ttl)
	}
	s := base64.RawURLEncoding.EncodeToString(secret)
	sum := sha256.Sum256([]byte(s))
	key.Hash = sum[:]
	return keyPrefix + key.ID + "_" + s, key
}

// authenticate resolves the request's bearer token to a principal. Keys
// are random 256-bit secrets, so a plain SHA-256 is a sound hash at rest
// and the comparison is constant-time.
func (s *Server) authenticate(r *http.Request) (*Principal, error) {
	h := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || token == "" {
		return nil, fsm.Errorf(CodeUnauthenticated, "an API key is required: Authorization: Bearer <key>")
	}
	rest, ok := strings.CutPrefix(token, keyPrefix)
	id, secret, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 {
		return nil, fsm.Errorf(CodeUnauthenticated, "malformed API key")
	}
	k, found := s.fsm.APIKey(id)
	if !found {
		// The key may be newer than this node's state (created through
		// another node a moment ago): catch up with the leader once. If
		// that is impossible now (an election), the key cannot be judged:
		// unavailable, not unauthenticated.
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		err := s.raft.ReadIndex(ctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%w: verify API key: %w", cluster.ErrNoLeader, err)
		}
		k, found = s.fsm.APIKey(id)
	}
	sum := sha256.Sum256([]byte(secret))
	if !found || subtle.ConstantTimeCompare(sum[:], k.Hash) != 1 {
		return nil, fsm.Errorf(CodeUnauthenticated, "invalid API key")
	}
	if k.Revoked {
		return nil, fsm.Errorf(CodeUnauthenticated, "API key has been revoked")
	}
	if !k.ExpiresAt.IsZero() && !s.now().Before(k.ExpiresAt) {
		return nil, fsm.Errorf(CodeUnauthenticated, "API key expired at %s", k.ExpiresAt.Format(time.RFC3339))
	}
	return &Principal{KeyID: k.ID, User: k.User, TenantID: k.TenantID, Role: k.Role}, nil
}

// permission is what a route requires of the principal's role.
type permission int

const (
	permPublic permission = iota // no key needed
	permRead                     // any role
	permWrite                    // operator and above
	permAdmin                    // super-admin only
)

func allowed(role fsm.Role, p permission) bool {
	switch p {
	case permPublic, permRead:
		return role != ""
	case permWrite:
		return role == fsm.RoleOperator || role == fsm.RoleTenantAdmin || role == fsm.RoleSuperAdmin
	case permAdmin:
		return role == fsm.RoleSuperAdmin
	}
	return false
}

// tenantScope returns the tenant a request acts on: the principal's own,
// or for a super-admin the one named by ?tenant= ("" meaning all tenants
// where the route allows it).
func tenantScope(r *http.Request, p *Principal, allowAll bool) (string, error) {
	q := r.URL.Query()
	if p.Role == fsm.RoleSuperAdmin {
		if t := q.Get("tenant"); t != "" {
			return t, nil
		}
		if allowAll {
			return "", nil
		}
		return p.TenantID, nil
	}
	if t := q.Get("tenant"); t != "" && t != p.TenantID {
		return "", fsm.Errorf(CodePermissionDenied, "only a super-admin may act on another tenant")
	}
	return p.TenantID, nil
}
