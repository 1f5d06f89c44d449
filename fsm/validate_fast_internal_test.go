package fsm

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// TestStringsOKAgreesWithCheckStrings fills every command type with
// random values, strings drawn from ones that each rule accepts and
// refuses (control characters, newlines where only logs allow them,
// percent-encoded controls in URLs, invalid UTF-8, lengths at and past
// each bound), and checks that the fast check refuses exactly what
// checkStrings refuses: a command it let through that checkStrings would
// refuse would reach the log unchecked.
func TestStringsOKAgreesWithCheckStrings(t *testing.T) {
	pool := []string{
		"", "a", "job-1", "file:///out/a.mp4", "testsrc://?duration=5", "héllo wörld",
		"a\nb", "a\tb", "a\x07b", "a\x1b[2J", "a\x7fb", "a\u0085b", "\xff\xfe", "ok\xc3",
		"file:///a%0Ab.mp4", "file:///a%41b.mp4", "file:///a%zz%0", "100%",
		strings.Repeat("x", MaxTextLen), strings.Repeat("x", MaxTextLen+1),
		strings.Repeat("x", MaxURLLen), strings.Repeat("x", MaxURLLen+1),
		strings.Repeat("x", MaxLogLen), strings.Repeat("x", MaxLogLen+1),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	checked, refused := 0, 0
	for typ, ct := range commandTypes {
		for range 300 {
			c := ct.new()
			v := reflect.ValueOf(c).Elem()
			// Most strings good, so that a single bad one decides.
			bad := 0.02 + rng.Float64()*0.1
			fillRandom(rng, v, pool, bad, 0)
			want := checkStrings("", reflect.ValueOf(c)) == nil
			if got := stringsOK(reflect.ValueOf(c), ruleText); got != want {
				t.Fatalf("type %d: stringsOK = %v, checkStrings accepts = %v, for %+v", typ, got, want, c)
			}
			checked++
			if !want {
				refused++
			}
		}
	}
	// The draw must exercise both answers, or the test shows nothing.
	if refused < checked/10 || refused > checked*9/10 {
		t.Fatalf("%d of %d commands refused: the draw does not test both ways", refused, checked)
	}
}

// fillRandom sets v's exported fields, elements and map entries to random
// values; a string is one of pool's good ones (index < 6 or a URL) with
// probability 1-bad.
func fillRandom(rng *rand.Rand, v reflect.Value, pool []string, bad float64, depth int) {
	if depth > 6 {
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if rng.IntN(3) > 0 {
			v.Set(reflect.New(v.Type().Elem()))
			fillRandom(rng, v.Elem(), pool, bad, depth+1)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fillRandom(rng, v.Field(i), pool, bad, depth+1)
			}
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte("\x00\x01"))
			return
		}
		n := rng.IntN(3)
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			fillRandom(rng, s.Index(i), pool, bad, depth+1)
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for range rng.IntN(3) {
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fillRandom(rng, k, pool, bad, depth+1)
			fillRandom(rng, e, pool, bad, depth+1)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	case reflect.String:
		s := pool[rng.IntN(6)]
		if rng.Float64() < bad {
			s = pool[rng.IntN(len(pool))]
		}
		v.SetString(s)
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(rng.Int64N(100))
	case reflect.Uint, reflect.Uint64, reflect.Uint32:
		v.SetUint(rng.Uint64N(100))
	case reflect.Bool:
		v.SetBool(rng.IntN(2) == 0)
	}
}
