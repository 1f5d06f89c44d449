package main

import (
	be "encoding/binary"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/ffrtmp/ffrtmp/server"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

// auditSpec is a job the audited calls submit.
const auditSpec = `{"scenario":"240p30-h264","input":{"url":"testsrc://?duration=1"},"outputs":[{"url":"file:///audit.mp4"}]}`

// auditedCalls makes n audited calls (submits) to the node at addr with
// key, and checks that the audit log lists them.
func auditedCalls(t *testing.T, addr, key string, n int, list func(...string) string) {
	t.Helper()
	for i := range n {
		req, _ := http.NewRequest("POST", "http://"+addr+"/v1/jobs", strings.NewReader(auditSpec))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("X-Request-Id", "e2e-"+string(rune('a'+i)))
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("submit %d: status %d", i, resp.StatusCode)
		}
	}
	var page server.AuditPage
	if err := json.Unmarshal([]byte(list("audit", "list", "-o", "json", "--action", "submitJob")), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != n || page.Records[0].RequestID != "e2e-"+string(rune('a'+n-1)) || page.Records[0].Result != "ok" {
		t.Fatalf("audit list = %+v, want the %d submits newest first", page.Records, n)
	}
}

// wantBroken checks that a verify failed, naming record seq and why.
func wantBroken(t *testing.T, what string, out string, err error, seq, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: audit verify succeeded (%s), want it to fail", what, out)
	}
	if !strings.Contains(err.Error(), "record "+seq+": ") || !strings.Contains(err.Error(), reason) {
		t.Fatalf("%s: audit verify failed with %v, want record %s named: %s", what, err, seq, reason)
	}
}

// TestAuditTamperBolt makes audited calls on a dev node, stops it, and
// alters, deletes and reorders records in its state.db with bbolt: the
// offline `ffrtmp audit verify --data-dir` exits non-zero naming the
// record each time, and zero on the intact chain, as does the online one.
func TestAuditTamperBolt(t *testing.T) {
	d := newDev(t)
	d.start()
	cfg := readCLIConfig(t, d.env)
	auditedCalls(t, d.httpAddr, cfg, 3, d.mustCLI)
	if out := d.mustCLI("audit", "verify"); !strings.Contains(out, "ok: 3 records verified") {
		t.Fatalf("online verify: %s", out)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.cmd.Wait()

	dataDir := filepath.Join(filepath.Dir(cfgDir(d.env)), "data")
	offline := []string{"audit", "verify", "--data-dir", dataDir, "--cluster-key-file", filepath.Join(dataDir, "cluster.key")}
	d.mustCLI(offline...)
	edit := func(fn func(b *bbolt.Bucket)) {
		db, err := bbolt.Open(filepath.Join(dataDir, "state.db"), 0o600, &bbolt.Options{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.Update(func(tx *bbolt.Tx) error { fn(tx.Bucket([]byte("audit"))); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	seq := func(n uint64) []byte { return be.BigEndian.AppendUint64(nil, n) }
	var orig [4][]byte
	edit(func(b *bbolt.Bucket) {
		for i := uint64(1); i <= 3; i++ {
			orig[i] = append([]byte(nil), b.Get(seq(i))...)
		}
	})
	restore := func() {
		edit(func(b *bbolt.Bucket) {
			for i := uint64(1); i <= 3; i++ {
				b.Put(seq(i), orig[i])
			}
		})
	}

	edit(func(b *bbolt.Bucket) {
		b.Put(seq(2), []byte(strings.Replace(string(orig[2]), `"result":"ok"`, `"result":"forged"`, 1)))
	})
	out, err := d.cli(offline...)
	wantBroken(t, "altered", out, err, "2", "altered")
	restore()

	edit(func(b *bbolt.Bucket) { b.Delete(seq(2)) })
	out, err = d.cli(offline...)
	wantBroken(t, "deleted", out, err, "2", "missing")
	restore()

	edit(func(b *bbolt.Bucket) { b.Put(seq(2), orig[3]); b.Put(seq(3), orig[2]) })
	out, err = d.cli(offline...)
	wantBroken(t, "reordered", out, err, "2", "out of order")
	restore()

	if out := d.mustCLI(offline...); !strings.Contains(out, "ok: 3 records verified") {
		t.Fatalf("offline verify of the restored chain: %s", out)
	}
	d.start()
	if out := d.mustCLI("audit", "verify"); !strings.Contains(out, "ok: 3 records verified") {
		t.Fatalf("online verify after restart: %s", out)
	}
}

// TestAuditTamperPostgres makes audited calls on a server on PostgreSQL,
// then, while it runs, alters, deletes and reorders records with SQL:
// `ffrtmp audit verify` exits non-zero naming the record each time, and
// zero once the chain is put back.
func TestAuditTamperPostgres(t *testing.T) {
	c := newTestCluster(t, 1)
	dbURL := pgtest.URL(t)
	c.nodes[0].args = append(c.nodes[0].args, "--store", dbURL)
	c.startAll()
	c.mustCLI("cluster", "init", "--addr", c.addrs(c.nodes...), "--cluster-key-file", c.keyFile)
	auditedCalls(t, c.nodes[0].httpAddr, c.key(), 3, c.mustCLI)
	c.mustCLI("audit", "verify")

	sql := func(q string) { pgtest.Exec(t, dbURL, q) }
	sql(`CREATE TABLE saved AS SELECT * FROM audit_records`)
	restore := func() {
		sql(`DELETE FROM audit_records`)
		sql(`INSERT INTO audit_records SELECT * FROM saved`)
	}

	sql(`UPDATE audit_records SET doc = jsonb_set(doc, '{target}', '"someone-else"') WHERE seq = 2`)
	out, err := c.cli("audit", "verify")
	wantBroken(t, "altered", out, err, "2", "altered")
	restore()

	sql(`DELETE FROM audit_records WHERE seq = 2`)
	out, err = c.cli("audit", "verify")
	wantBroken(t, "deleted", out, err, "2", "missing")
	restore()

	sql(`UPDATE audit_records a SET doc = (SELECT doc FROM saved s WHERE s.seq = 5 - a.seq) WHERE seq IN (2, 3)`)
	out, err = c.cli("audit", "verify")
	wantBroken(t, "reordered", out, err, "2", "out of order")
	restore()

	// The newest record removed: the node's committed head catches it.
	sql(`DELETE FROM audit_records WHERE seq = 3`)
	out, err = c.cli("audit", "verify")
	wantBroken(t, "newest deleted", out, err, "3", "missing")
	restore()

	if out := c.mustCLI("audit", "verify"); !strings.Contains(out, "ok: 3 records verified") {
		t.Fatalf("verify of the restored chain: %s", out)
	}
	// The offline verification reads the same database.
	c.mustCLI("audit", "verify", "--store", dbURL, "--cluster-key-file", c.keyFile)
}

// cfgDir returns the XDG config directory of env.
func cfgDir(env []string) string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "XDG_CONFIG_HOME="); ok {
			return v
		}
	}
	return ""
}

// readCLIConfig returns the API key the CLI config of env holds.
func readCLIConfig(t *testing.T, env []string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cfgDir(env), "ffrtmp", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		APIKey string `json:"api_key"`
	}
	json.Unmarshal(b, &v)
	return v.APIKey
}
