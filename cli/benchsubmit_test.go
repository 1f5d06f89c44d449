package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/server"
)

// TestBenchSubmitNamesAndAcks runs the open loop against a fake API that
// refuses every third submit: each request's job carries its own name,
// and Acked reports exactly the acknowledged ones, with the job the API
// returned.
func TestBenchSubmitNamesAndAcks(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]string{} // job name → idempotency key
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/v1/jobs" {
			http.NotFound(w, r)
			return
		}
		var spec fsm.JobSpec
		if err := json.NewDecoder(r.Body).Decode(&spec); err != nil {
			t.Errorf("decode spec: %v", err)
		}
		mu.Lock()
		seen[spec.Name] = r.Header.Get("Idempotency-Key")
		n++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(spec.Name, "0") || strings.HasSuffix(spec.Name, "3") || strings.HasSuffix(spec.Name, "6") {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":{"code":"invalid_spec","message":"refused"}}`)
			return
		}
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(server.Job{ID: "job-" + spec.Name, Spec: spec})
	}))
	t.Cleanup(srv.Close)
	client, err := NewClient(srv.URL, "k")
	if err != nil {
		t.Fatal(err)
	}
	var amu sync.Mutex
	acked := map[int]string{}
	cfg := SubmitBench{Rate: 200, Duration: 100 * time.Millisecond, MaxInFlight: 8, Keep: true, NameEach: true,
		Acked: func(i int, j *server.Job, at time.Time) {
			amu.Lock()
			defer amu.Unlock()
			if _, dup := acked[i]; dup {
				t.Errorf("request %d acknowledged twice", i)
			}
			acked[i] = j.ID
		}}
	if err := BenchSubmit(context.Background(), []*Client{client}, cfg, Output{W: io.Discard}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if n != 20 || len(seen) != 20 {
		t.Fatalf("%d requests with %d distinct names, want 20 and 20", n, len(seen))
	}
	keys := map[string]bool{}
	for i := range 20 {
		name := fmt.Sprintf("bench-%d", i)
		key, ok := seen[name]
		if !ok {
			t.Errorf("no request named %s", name)
		}
		if key == "" || keys[key] {
			t.Errorf("%s: idempotency key %q missing or reused", name, key)
		}
		keys[key] = true
		refused := strings.ContainsAny(name[len(name)-1:], "036")
		id, ok := acked[i]
		switch {
		case refused && ok:
			t.Errorf("refused request %d reported acknowledged", i)
		case !refused && id != "job-"+name:
			t.Errorf("request %d acknowledged as %q, want job-%s", i, id, name)
		}
	}
}
