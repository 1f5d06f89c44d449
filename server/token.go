package server

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"hash/crc32"
	"strings"
)

// Tokens are the bearer secrets of ffrtmp: API keys, worker tokens and
// invitations share one text format and differ only in prefix. A token
// is a prefix, a 16-hex-digit ID, "_", the secret (32 random
// bytes in unpadded base64url, 43 characters) and a checksum: CRC-32
// (IEEE) of everything before it in base62, 6 digits, as GitHub's tokens
// carry one. The prefix makes a leaked token easy to find and tells what
// it is; the checksum lets a node refuse a mistyped token before any
// lookup. Neither is secret, and neither is part of the stored hash,
// which is the SHA-256 of the secret alone: a random 256-bit secret needs
// no slow hash.
const (
	tokenIDLen     = 16
	tokenSecretLen = 43
	tokenSumLen    = 6
)

// tokenFormat is one kind of token.
type tokenFormat struct {
	// Prefix starts every token of the kind, e.g. "ffk_".
	Prefix string
	// Unsummed accepts tokens made before tokens had a checksum (they end
	// at the secret).
	Unsummed bool
}

// tokenChecksum returns the checksum of a token's text before the checksum.
func tokenChecksum(body string) string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	n := crc32.ChecksumIEEE([]byte(body))
	var b [tokenSumLen]byte
	for i := tokenSumLen - 1; i >= 0; i-- {
		b[i] = digits[n%62]
		n /= 62
	}
	return string(b[:])
}

// New returns a new token's text, its ID and the hash of its secret (what
// is stored).
func (f tokenFormat) New() (text, id string, hash []byte) {
	idb := make([]byte, tokenIDLen/2)
	secret := make([]byte, 32)
	rand.Read(idb)
	rand.Read(secret)
	id = hex.EncodeToString(idb)
	s := base64.RawURLEncoding.EncodeToString(secret)
	body := f.Prefix + id + "_" + s
	return body + tokenChecksum(body), id, tokenHash(s)
}

// Parse splits a token into its ID and secret, checking its prefix, its
// shape and its checksum.
func (f tokenFormat) Parse(text string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(text, f.Prefix)
	if !ok || len(rest) < tokenIDLen+1 || rest[tokenIDLen] != '_' {
		return "", "", false
	}
	id, secret = rest[:tokenIDLen], rest[tokenIDLen+1:]
	if _, err := hex.DecodeString(id); err != nil {
		return "", "", false
	}
	switch len(secret) {
	case tokenSecretLen:
		return id, secret, f.Unsummed
	case tokenSecretLen + tokenSumLen:
		secret, sum := secret[:tokenSecretLen], secret[tokenSecretLen:]
		if tokenChecksum(f.Prefix+id+"_"+secret) != sum {
			return "", "", false
		}
		return id, secret, true
	}
	return "", "", false
}

// tokenHash returns the stored form of a secret: its SHA-256.
func tokenHash(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// tokenMatches reports, in constant time, whether secret hashes to hash.
func tokenMatches(secret string, hash []byte) bool {
	return subtle.ConstantTimeCompare(tokenHash(secret), hash) == 1
}
