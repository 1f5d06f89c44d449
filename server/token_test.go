package server

import (
	"strings"
	"testing"
)

func TestTokenNewParse(t *testing.T) {
	t.Parallel()
	f := tokenFormat{Prefix: "ffw_"}
	text, id, hash := f.New()
	gotID, secret, ok := f.Parse(text)
	if !ok || gotID != id {
		t.Fatalf("Parse(New()) = %q, %v; want %q, true", gotID, ok, id)
	}
	if !tokenMatches(secret, hash) {
		t.Error("the parsed secret does not match the hash New returned")
	}
	if tokenMatches(secret+"x", hash) {
		t.Error("another secret matches the hash")
	}
	if _, _, ok := (tokenFormat{Prefix: "ffk_"}).Parse(text); ok {
		t.Error("a worker token parses as an API key")
	}
	unsummed := text[:len(text)-tokenSumLen]
	for name, bad := range map[string]string{
		"empty":         "",
		"prefix only":   "ffw_",
		"typo":          text[:20] + string(text[20]^1) + text[21:],
		"bad sum":       text[:len(text)-1] + string(text[len(text)-1]^1),
		"no sum":        unsummed,
		"non-hex id":    "ffw_" + strings.Repeat("z", tokenIDLen) + text[4+tokenIDLen:],
		"trailing junk": text + "x",
	} {
		if _, _, ok := f.Parse(bad); ok {
			t.Errorf("%s: Parse(%q) accepted", name, bad)
		}
	}
	if _, _, ok := (tokenFormat{Prefix: "ffw_", Unsummed: true}).Parse(unsummed); !ok {
		t.Error("a format that accepts unsummed tokens refused one")
	}
}
