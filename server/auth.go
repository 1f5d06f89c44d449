package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash/crc32"
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

// An API key is keyPrefix, a 16-hex-digit ID, "_", the secret (32 random
// bytes in unpadded base64url, 43 characters) and a checksum: CRC-32 (IEEE)
// of everything before it in base62, 6 digits, as GitHub's tokens carry
// one. The checksum lets a node refuse a mistyped key before any lookup
// or read barrier; it is no secret and not part of the stored hash. Keys
// made before it existed end at the secret and keep working.
const (
	keyIDLen     = 16
	keySecretLen = 43
	keySumLen    = 6
)

// keyChecksum returns the checksum of a key's text before the checksum.
func keyChecksum(body string) string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	n := crc32.ChecksumIEEE([]byte(body))
	var b [keySumLen]byte
	for i := keySumLen - 1; i >= 0; i-- {
		b[i] = digits[n%62]
		n /= 62
	}
	return string(b[:])
}

// parseKey splits an API key into its ID and secret, checking its shape
// and, where it has one, its checksum.
func parseKey(token string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(token, keyPrefix)
	if !ok || len(rest) < keyIDLen+1 || rest[keyIDLen] != '_' {
		return "", "", false
	}
	id, secret = rest[:keyIDLen], rest[keyIDLen+1:]
	if _, err := hex.DecodeString(id); err != nil {
		return "", "", false
	}
	switch len(secret) {
	case keySecretLen: // made before keys had a checksum
	case keySecretLen + keySumLen:
		secret, sum := secret[:keySecretLen], secret[keySecretLen:]
		if keyChecksum(keyPrefix+id+"_"+secret) != sum {
			return "", "", false
		}
		return id, secret, true
	default:
		return "", "", false
	}
	return id, secret, true
}

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
	body := keyPrefix + key.ID + "_" + s
	return body + keyChecksum(body), key
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
	id, secret, ok := parseKey(token)
	if !ok {
		return nil, fsm.Errorf(CodeUnauthenticated, "malformed API key: check that it was copied whole")
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
