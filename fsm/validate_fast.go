package fsm

import (
	"cmp"
	"reflect"
	"strings"
	"sync"
	"time"
	"unicode"
)

// The leader checks every string of every command it proposes
// (checkStrings), and a batch of 1,000 jobs holds some 20,000 of them.
// checkStrings names each field as it walks, for its error message, which
// costs an allocation per field; stringsOK applies the same rules without
// names, walking each struct type by a plan computed once, and skipping
// what holds no strings. Only a command it refuses is walked again by
// checkStrings, for the message. TestStringsOKAgreesWithCheckStrings keeps
// the two in step.

// fieldPlan is one exported struct field that can hold a string.
type fieldPlan struct {
	index int
	rule  stringRule
	// inherit marks an embedded field, which checkStrings names after
	// its parent, and so checks under the parent's rule.
	inherit bool
}

var (
	plansMu    sync.RWMutex
	plans      = map[reflect.Type][]fieldPlan{}
	withString = map[reflect.Type]bool{}
)

// stringsOK reports whether checkStrings finds nothing wrong in v, whose
// own rule is rule.
func stringsOK(v reflect.Value, rule stringRule) bool {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		return v.IsNil() || stringsOK(v.Elem(), rule)
	case reflect.Struct:
		for _, f := range structPlan(v.Type()) {
			r := f.rule
			if f.inherit {
				r = rule
			}
			if !stringsOK(v.Field(f.index), r) {
				return false
			}
		}
	case reflect.Slice, reflect.Array:
		if !holdsStrings(v.Type().Elem()) {
			return true
		}
		for i := range v.Len() {
			if !stringsOK(v.Index(i), ruleText) {
				return false
			}
		}
	case reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			if !stringsOK(iter.Key(), ruleText) || !stringsOK(iter.Value(), ruleText) {
				return false
			}
		}
	case reflect.String:
		return stringOK(v.String(), rule)
	}
	return true
}

// stringOK is checkString for one string under rule, without a name.
func stringOK(s string, rule stringRule) bool {
	max, allow := rule.limits()
	if len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 || b >= 0x7f {
			// Not printable ASCII: the full check.
			if validText("", s, max, allow) != nil {
				return false
			}
			break
		}
	}
	return rule != ruleURL || !strings.Contains(s, "%") || strings.IndexFunc(percentDecode(s), unicode.IsControl) < 0
}

// structPlan returns the fields of struct type t that checkStrings walks
// and that can hold a string.
func structPlan(t reflect.Type) []fieldPlan {
	return cached(plans, t, func() []fieldPlan {
		var p []fieldPlan
		if t == reflect.TypeFor[time.Time]() {
			return p
		}
		for i := range t.NumField() {
			sf := t.Field(i)
			if !sf.IsExported() || !holdsStringsLocked(sf.Type, map[reflect.Type]bool{}) {
				continue
			}
			tag, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
			p = append(p, fieldPlan{index: i, rule: ruleFor(cmp.Or(tag, sf.Name)), inherit: sf.Anonymous})
		}
		return p
	})
}

// cached returns m[t], computed by compute with plansMu held the first
// time.
func cached[V any](m map[reflect.Type]V, t reflect.Type, compute func() V) V {
	plansMu.RLock()
	v, ok := m[t]
	plansMu.RUnlock()
	if ok {
		return v
	}
	plansMu.Lock()
	defer plansMu.Unlock()
	v = compute()
	m[t] = v
	return v
}

// holdsStrings reports whether a value of type t can hold a string that
// checkStrings checks.
func holdsStrings(t reflect.Type) bool {
	return cached(withString, t, func() bool { return holdsStringsLocked(t, map[reflect.Type]bool{}) })
}

func holdsStringsLocked(t reflect.Type, visiting map[reflect.Type]bool) bool {
	if h, ok := withString[t]; ok {
		return h
	}
	if visiting[t] {
		return true // a recursive type: assume it may
	}
	visiting[t] = true
	h := false
	switch t.Kind() {
	case reflect.String, reflect.Interface:
		h = true
	case reflect.Pointer:
		h = holdsStringsLocked(t.Elem(), visiting)
	case reflect.Slice, reflect.Array:
		h = t.Elem().Kind() != reflect.Uint8 && holdsStringsLocked(t.Elem(), visiting)
	case reflect.Map:
		h = holdsStringsLocked(t.Key(), visiting) || holdsStringsLocked(t.Elem(), visiting)
	case reflect.Struct:
		if t != reflect.TypeFor[time.Time]() {
			for i := range t.NumField() {
				sf := t.Field(i)
				if sf.IsExported() && holdsStringsLocked(sf.Type, visiting) {
					h = true
					break
				}
			}
		}
	}
	delete(visiting, t)
	withString[t] = h
	return h
}
