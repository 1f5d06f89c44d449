package token_test

import (
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/token"
)

func TestNewParse(t *testing.T) {
	t.Parallel()
	f := token.Format{Prefix: "ffw_"}
	text, id, hash := f.New()
	gotID, secret, ok := f.Parse(text)
	if !ok || gotID != id {
		t.Fatalf("Parse(New()) = %q, %v; want %q, true", gotID, ok, id)
	}
	if !token.Matches(secret, hash) {
		t.Error("the parsed secret does not match the hash New returned")
	}
	if token.Matches(secret+"x", hash) {
		t.Error("another secret matches the hash")
	}
	if _, _, ok := (token.Format{Prefix: "ffk_"}).Parse(text); ok {
		t.Error("a worker token parses as an API key")
	}
	unsummed := text[:len(text)-token.SumLen]
	for name, bad := range map[string]string{
		"empty":         "",
		"prefix only":   "ffw_",
		"typo":          text[:20] + string(text[20]^1) + text[21:],
		"bad sum":       text[:len(text)-1] + string(text[len(text)-1]^1),
		"no sum":        unsummed,
		"non-hex id":    "ffw_" + strings.Repeat("z", token.IDLen) + text[4+token.IDLen:],
		"trailing junk": text + "x",
	} {
		if _, _, ok := f.Parse(bad); ok {
			t.Errorf("%s: Parse(%q) accepted", name, bad)
		}
	}
	if _, _, ok := (token.Format{Prefix: "ffw_", Unsummed: true}).Parse(unsummed); !ok {
		t.Error("a format that accepts unsummed tokens refused one")
	}
}
