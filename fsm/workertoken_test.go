package fsm_test

import (
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/ffrtmp/ffrtmp/fsm"
)

func token(id, tenant string) *fsm.CreateWorkerToken {
	h := sha256.Sum256([]byte(id))
	return &fsm.CreateWorkerToken{Token: fsm.WorkerToken{ID: id, TenantID: tenant, Name: id, Hash: h[:], CreatedAt: t0, CreatedBy: "k1"}}
}

// TestWorkerTokenBinding: a worker token registers one worker, in its
// tenant; revoking it takes that worker down and requeues its jobs, and
// the worker cannot register with it again.
func TestWorkerTokenBinding(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.tenant("acme")
	n.tenant("globex")
	n.applyOK(token("tk-a", "acme"))
	n.applyOK(token("tk-shared", ""))
	n.refused(token("tk-x", "nobody"), fsm.CodeNotFound)

	reg := func(id, tenant, tok string) *fsm.RegisterWorker {
		return &fsm.RegisterWorker{At: t0, Worker: fsm.Worker{ID: id, TenantID: tenant, TokenID: tok, Name: id,
			Incarnation: "i1", Slots: 1, Encoders: []string{"libx264"}}}
	}
	n.refused(reg("w1", "globex", "tk-a"), fsm.CodeTokenRefused) // another tenant
	n.refused(reg("w1", "", "tk-a"), fsm.CodeTokenRefused)       // the shared pool
	n.refused(reg("w1", "acme", "tk-none"), fsm.CodeTokenRefused)
	w := n.applyOK(reg("w1", "acme", "tk-a")).(*fsm.Worker)
	if w.TokenID != "tk-a" {
		t.Fatalf("worker token ID %q, want tk-a", w.TokenID)
	}
	if tk, _ := n.f.WorkerToken("tk-a"); tk.WorkerID != "w1" {
		t.Fatalf("token bound to %q, want w1", tk.WorkerID)
	}
	n.applyOK(reg("w1", "acme", "tk-a"))                        // a restart: the same worker
	n.refused(reg("w2", "acme", "tk-a"), fsm.CodeTokenRefused)  // bound to w1
	n.refused(reg("w1", "", "tk-shared"), fsm.CodeTokenRefused) // w1 keeps its live token

	j := n.submit("j1", "acme", spec("240p30-h264"), t0)
	n.run(j.ID, "w1", t0)
	n.applyOK(&fsm.RevokeWorkerToken{ID: "tk-a", At: at(1)})
	if wk, _ := n.f.Worker("w1"); wk.State != fsm.WorkerDown {
		t.Errorf("worker of a revoked token is %s, want down", wk.State)
	}
	if got := n.get(j.ID); got.State != fsm.JobQueued || got.WorkerID != "" || got.Error == nil || !strings.Contains(got.Error.Message, "revoked") {
		t.Errorf("job of the revoked token's worker: %s on %q (%+v), want queued again", got.State, got.WorkerID, got.Error)
	}
	n.refused(reg("w1", "acme", "tk-a"), fsm.CodeTokenRefused)
	n.refused(&fsm.RevokeWorkerToken{ID: "tk-none", At: at(2)}, fsm.CodeNotFound)
	if r := n.applyOK(&fsm.RevokeWorkerToken{ID: "tk-a", At: at(3)}).(*fsm.WorkerToken); !r.Revoked {
		t.Error("a second revoke did not answer the revoked token")
	}
	// Its token revoked, the worker may move to a new one.
	n.applyOK(token("tk-a2", "acme"))
	n.applyOK(reg("w1", "acme", "tk-a2"))
}

// TestWorkerTokenValidate: commands a store could not keep, or that skip
// the token's life, are refused before the log.
func TestWorkerTokenValidate(t *testing.T) {
	t.Parallel()
	ok := token("tk", "")
	for name, mod := range map[string]func(c *fsm.CreateWorkerToken){
		"no id":        func(c *fsm.CreateWorkerToken) { c.Token.ID = "" },
		"short hash":   func(c *fsm.CreateWorkerToken) { c.Token.Hash = c.Token.Hash[:8] },
		"bound":        func(c *fsm.CreateWorkerToken) { c.Token.WorkerID = "w1" },
		"revoked":      func(c *fsm.CreateWorkerToken) { c.Token.Revoked = true },
		"control name": func(c *fsm.CreateWorkerToken) { c.Token.Name = "a\x1b[2J" },
		"long name":    func(c *fsm.CreateWorkerToken) { c.Token.Name = strings.Repeat("n", fsm.MaxNameLen+1) },
	} {
		c := *ok
		c.Token.Hash = append([]byte(nil), ok.Token.Hash...)
		mod(&c)
		if err := c.Validate(); fsm.ErrorCode(err) != fsm.CodeInvalidArgument {
			t.Errorf("%s: Validate() = %v, want invalid_argument", name, err)
		}
	}
	if err := ok.Validate(); err != nil {
		t.Errorf("a good token: %v", err)
	}
	if err := (&fsm.RevokeWorkerToken{}).Validate(); fsm.ErrorCode(err) != fsm.CodeInvalidArgument {
		t.Errorf("revoke without an id: %v", err)
	}
}
