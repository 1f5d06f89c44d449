package fsm_test

import (
	"reflect"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// TestKindsCoverBatchAndState: every object field of Batch and State is
// the field of exactly one registered kind, and no two kinds share a
// name, bucket or table, so a kind added to Batch without a registration
// (which the stores and the forwarding codec would silently drop) fails
// here.
func TestKindsCoverBatchAndState(t *testing.T) {
	t.Parallel()
	seen := map[string]string{}
	for _, k := range fsm.Kinds {
		for _, name := range []string{"name " + k.Name, "bucket " + k.Bucket, "table " + k.Table} {
			if other, ok := seen[name]; ok {
				t.Errorf("kinds %s and %s share the %s", other, k.Name, name)
			}
			seen[name] = k.Name
		}
		if got := fsm.KindNamed(k.Name); got != k {
			t.Errorf("KindNamed(%q) = %v, want the kind", k.Name, got)
		}
		if got := fsm.KindOf(k.New()); got != k {
			t.Errorf("KindOf(%T) = %v, want kind %s", k.New(), got, k.Name)
		}
	}
	for _, v := range []any{&fsm.Batch{}, &fsm.State{}} {
		rv := reflect.ValueOf(v).Elem()
		owners := map[string][]string{}
		for _, k := range fsm.Kinds {
			o := k.New()
			if b, ok := v.(*fsm.Batch); ok {
				k.Add(b, o)
			} else {
				k.Keep(v.(*fsm.State), o)
			}
			for i := range rv.NumField() {
				if f := rv.Field(i); f.Kind() == reflect.Slice && f.Len() > 0 {
					owners[rv.Type().Field(i).Name] = append(owners[rv.Type().Field(i).Name], k.Name)
					f.SetLen(0)
				}
			}
		}
		for i := range rv.NumField() {
			name := rv.Type().Field(i).Name
			if rv.Field(i).Type() == reflect.TypeFor[[]fsm.Deletion]() {
				continue // Batch.Deleted: the deletions of every kind
			}
			if rv.Field(i).Kind() == reflect.Slice && len(owners[name]) != 1 {
				t.Errorf("%T.%s is the field of kinds %v; want exactly one registered kind", v, name, owners[name])
			}
		}
	}
}

// TestKindKeepsResidentObjects: Load keeps every tenant, key and worker
// but only the jobs that are not terminal.
func TestKindKeepsResidentObjects(t *testing.T) {
	t.Parallel()
	for _, s := range fsm.JobStates {
		if got, want := fsm.JobKind.Resident(&fsm.Job{State: s}), !s.Terminal(); got != want {
			t.Errorf("JobKind.Resident(%s job) = %v, want %v", s, got, want)
		}
	}
	for _, k := range []*fsm.Kind{fsm.TenantKind, fsm.APIKeyKind, fsm.WorkerKind} {
		if k.Partial() || !k.Resident(k.New()) {
			t.Errorf("kind %s: Partial %v, Resident %v; want every object kept", k.Name, k.Partial(), k.Resident(k.New()))
		}
	}
}
