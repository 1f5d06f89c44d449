package postgres_test

import (
	"encoding/binary"
	"net"
	"net/url"
	"sync"
	"testing"
)

// wireCounter is a TCP proxy in front of the test database that counts
// what a store's connections send: round trips (each time a connection
// sends after it has heard from the server) and the statements it
// executes and prepares, read from the frontend messages of the
// PostgreSQL protocol. It needs sslmode=disable, as the test URL has.
type wireCounter struct {
	ln     net.Listener
	target string

	mu sync.Mutex
	wireCounts
}

// wireCounts are the counts of a wireCounter.
type wireCounts struct {
	// RoundTrips counts the turns in which a connection sent and then
	// waited for the server.
	RoundTrips int
	// Statements counts Execute messages and simple Query messages.
	Statements int
	// Prepares counts Parse messages: statements prepared.
	Prepares int
}

// newWireCounter starts a proxy to the database of dbURL and returns it
// with dbURL changed to go through it.
func newWireCounter(t testing.TB, dbURL string) (*wireCounter, string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wireCounter{ln: ln, target: u.Host}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go w.serve(c)
		}
	}()
	u.Host = ln.Addr().String()
	q := u.Query()
	q.Set("sslmode", "disable")
	u.RawQuery = q.Encode()
	return w, u.String()
}

// take returns the counts so far and starts new ones.
func (w *wireCounter) take() wireCounts {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.wireCounts
	w.wireCounts = wireCounts{}
	return c
}

func (w *wireCounter) serve(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", w.target)
	if err != nil {
		return
	}
	defer up.Close()
	heard := true // the server has answered since the client last sent
	var hmu sync.Mutex
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				hmu.Lock()
				heard = true
				hmu.Unlock()
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				c.Close()
				return
			}
		}
	}()
	p := &frontendParser{}
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			hmu.Lock()
			turn := heard
			heard = false
			hmu.Unlock()
			execs, parses := p.feed(buf[:n])
			w.mu.Lock()
			if turn {
				w.RoundTrips++
			}
			w.Statements += execs
			w.Prepares += parses
			w.mu.Unlock()
			if _, err := up.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// frontendParser splits a client's stream into protocol messages: first
// untyped ones (SSL or GSS requests, then the startup message), then
// messages of a type byte and a length.
type frontendParser struct {
	started bool
	pending []byte
}

// feed takes the next bytes of the stream and counts the Execute and
// Query messages, and the Parse messages, that it completes.
func (p *frontendParser) feed(b []byte) (execs, parses int) {
	p.pending = append(p.pending, b...)
	for {
		if !p.started {
			if len(p.pending) < 8 {
				return
			}
			n := int(binary.BigEndian.Uint32(p.pending))
			if len(p.pending) < n {
				return
			}
			code := binary.BigEndian.Uint32(p.pending[4:])
			p.pending = p.pending[n:]
			// 80877103 asks for SSL, 80877104 for GSS encryption: the
			// startup message follows either.
			p.started = code != 80877103 && code != 80877104
			continue
		}
		if len(p.pending) < 5 {
			return
		}
		n := 1 + int(binary.BigEndian.Uint32(p.pending[1:]))
		if len(p.pending) < n {
			return
		}
		switch p.pending[0] {
		case 'E', 'Q':
			execs++
		case 'P':
			parses++
		}
		p.pending = p.pending[n:]
	}
}
