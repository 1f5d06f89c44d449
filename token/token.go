// Package token makes and parses the bearer secrets of ffrtmp: API keys
// and worker tokens share one text format and differ only in prefix.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"hash/crc32"
	"strings"
)

// A token is a prefix, a 16-hex-digit ID, "_", the secret (32 random
// bytes in unpadded base64url, 43 characters) and a checksum: CRC-32
// (IEEE) of everything before it in base62, 6 digits, as GitHub's tokens
// carry one. The prefix makes a leaked token easy to find and tells what
// it is; the checksum lets a node refuse a mistyped token before any
// lookup. Neither is secret, and neither is part of the stored hash,
// which is the SHA-256 of the secret alone: a random 256-bit secret needs
// no slow hash.
const (
	IDLen     = 16
	SecretLen = 43
	SumLen    = 6
)

// Format is one kind of token.
type Format struct {
	// Prefix starts every token of the kind, e.g. "ffk_".
	Prefix string
	// Unsummed accepts tokens made before tokens had a checksum (they end
	// at the secret).
	Unsummed bool
}

// Checksum returns the checksum of a token's text before the checksum.
func Checksum(body string) string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	n := crc32.ChecksumIEEE([]byte(body))
	var b [SumLen]byte
	for i := SumLen - 1; i >= 0; i-- {
		b[i] = digits[n%62]
		n /= 62
	}
	return string(b[:])
}

// New returns a new token's text, its ID and the hash of its secret (what
// is stored).
func (f Format) New() (text, id string, hash []byte) {
	idb := make([]byte, IDLen/2)
	secret := make([]byte, 32)
	rand.Read(idb)
	rand.Read(secret)
	id = hex.EncodeToString(idb)
	s := base64.RawURLEncoding.EncodeToString(secret)
	body := f.Prefix + id + "_" + s
	return body + Checksum(body), id, Hash(s)
}

// Parse splits a token into its ID and secret, checking its prefix, its
// shape and its checksum.
func (f Format) Parse(text string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(text, f.Prefix)
	if !ok || len(rest) < IDLen+1 || rest[IDLen] != '_' {
		return "", "", false
	}
	id, secret = rest[:IDLen], rest[IDLen+1:]
	if _, err := hex.DecodeString(id); err != nil {
		return "", "", false
	}
	switch len(secret) {
	case SecretLen:
		return id, secret, f.Unsummed
	case SecretLen + SumLen:
		secret, sum := secret[:SecretLen], secret[SecretLen:]
		if Checksum(f.Prefix+id+"_"+secret) != sum {
			return "", "", false
		}
		return id, secret, true
	}
	return "", "", false
}

// Hash returns the stored form of a secret: its SHA-256.
func Hash(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// Matches reports, in constant time, whether secret hashes to hash.
func Matches(secret string, hash []byte) bool {
	return subtle.ConstantTimeCompare(Hash(secret), hash) == 1
}
