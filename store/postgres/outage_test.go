package postgres_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/ffrtmp/ffrtmp/fsm"
	"github.com/ffrtmp/ffrtmp/store/postgres"
	"github.com/ffrtmp/ffrtmp/store/postgres/pgtest"
)

// proxy forwards TCP connections to PostgreSQL until it is cut: then it
// resets every open connection and refuses new ones, as a database that
// restarts does, until it is restored. The real server keeps running for
// the other tests.
type proxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		go p.forward(c)
	}
}

func (p *proxy) forward(c net.Conn) {
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		c.Close()
		s.Close()
		return
	}
	p.conns[c], p.conns[s] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(c, s)
	go pipe(s, c)
	<-done
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, s)
	p.mu.Unlock()
}

// cut resets every connection and refuses new ones.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST, as a killed server's kernel sends
		}
		c.Close()
	}
}

func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// via returns dbURL with its host and port replaced by the proxy's.
func (p *proxy) via(t *testing.T, dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.ln.Addr().String()
	return u.String()
}

// retryCounter is a slog handler that signals each "store commit failed;
// retrying" the FSM logs.
type retryCounter struct {
	slog.Handler
	ch chan struct{}
}

func (h retryCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelError {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	return nil
}

func (h retryCounter) Enabled(context.Context, slog.Level) bool { return true }

func TestDatabaseOutage(t *testing.T) {
	t.Parallel()
	direct := pgtest.URL(t)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, u.Host)
	st := pgtest.OpenURL(t, p.via(t, direct), postgres.Options{Timeout: 3 * time.Second})
	retries := make(chan struct{}, 16)
	f, err := fsm.New(ctx, fsm.Config{Store: st, Logger: slog.New(retryCounter{slog.DiscardHandler, retries})})
	if err != nil {
		t.Fatal(err)
	}
	s := newScript(t, 3, 120)
	f.ApplyBatch(s.logs[:60])

	p.cut()
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := st.Ping(pctx); err == nil {
		t.Fatal("Ping succeeded while the database is unreachable")
	}

	// A batch applied during the outage: Raft has committed it, so the
	// FSM retries the store until it takes the batch.
	// (ApplyBatch may return before its commit; Flush waits for it.)
	committed := make(chan struct{})
	go func() {
		f.ApplyBatch(s.logs[60:120])
		f.Flush()
		close(committed)
	}()
	for n := 0; n < 2; n++ { // two failed attempts, at least
		select {
		case <-retries:
		case <-committed:
			t.Fatal("the batch was committed while the database was unreachable")
		case <-time.After(20 * time.Second):
			t.Fatal("no failed commit logged within 20s of the outage")
		}
	}
	select {
	case <-committed:
		t.Fatal("the batch was committed while the database was unreachable")
	default:
	}
	if got := f.Index(); got >= s.logs[119].Index {
		t.Fatalf("Index() = %d during the outage: the batch up to %d is not in the store", got, s.logs[119].Index)
	}

	p.restore()
	select {
	case <-committed:
	case <-time.After(30 * time.Second):
		t.Fatal("the batch was not committed within 30s of the database coming back")
	}
	if err := st.Ping(ctx); err != nil {
		t.Errorf("Ping after the outage: %v", err)
	}
	assertEqual(t, "memory after the outage", memory(f, s.ids), memory(s.ref, s.ids))
	// Read back without the proxy: the batch is in the database.
	fresh := newFSM(t, pgtest.OpenURL(t, direct, postgres.Options{}))
	assertEqual(t, "a new node's memory loaded after the outage", memory(fresh, s.ids), memory(s.ref, s.ids))
	assertEqual(t, "database after the outage", contents(t, fresh.Store()), contents(t, s.ref.Store()))
}
