package feed

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// corkConn is the connection under one websocket of /v1/events. The
// websocket library writes each frame with a write of its own; a client
// that falls a few events behind, as every client does when a crash
// brings several events in a burst, would cost a syscall per event. While
// the session's writer holds the connection corked, writes are kept in
// memory instead, and uncork sends them with one write: the bytes on the
// wire are the same, frame for frame, in the same order.
//
// Every write that reaches the socket has a deadline, the server's
// WriteTimeout, so a peer that stops reading cannot hold a writer for
// longer than that. A failed or timed-out write closes the connection,
// and every write after it fails.
type corkConn struct {
	net.Conn
	timeout time.Duration

	mu     sync.Mutex // held across socket writes, so they go out in order
	corked bool
	buf    []byte // what was written while corked
	err    error  // the write that failed; the connection is closed
}

// keepCork is the largest buffer a connection keeps between batches; a
// bigger one, left by a burst of large events, is given back.
const keepCork = 16 << 10

func newCorkConn(c net.Conn, timeout time.Duration) *corkConn {
	return &corkConn{Conn: c, timeout: timeout}
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.corked {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.send(p)
}

// send writes p to the socket under the write deadline; c.mu is held.
func (c *corkConn) send(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		c.fail(err)
		return 0, err
	}
	n, err := c.Conn.Write(p)
	if err != nil {
		c.fail(err)
	}
	return n, err
}

// fail records err and closes the connection, as the websocket library
// does when a write times out; c.mu is held.
func (c *corkConn) fail(err error) {
	c.err = err
	c.buf = nil
	c.Conn.Close()
}

// cork holds later writes in memory until uncork.
func (c *corkConn) cork() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = true
}

// uncork sends what was written since cork with one write, and lets later
// writes through at once.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if c.err != nil {
		return c.err
	}
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.send(c.buf)
	if cap(c.buf) > keepCork {
		c.buf = nil
	} else if c.buf != nil {
		c.buf = c.buf[:0]
	}
	return err
}

// abort closes the connection, ending a write under way.
func (c *corkConn) abort() { c.Conn.Close() }

// corkWriter is the http.ResponseWriter given to websocket.Accept: the
// websocket takes the connection through Hijack, and gets it wrapped in a
// corkConn. After Accept, conn is that corkConn.
type corkWriter struct {
	http.ResponseWriter
	timeout time.Duration
	conn    *corkConn
}

func (w *corkWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *corkWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the response cannot be hijacked")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The websocket writes through brw.Writer, which writes to the bare
	// connection: send what it may hold, then point it at the wrapper.
	if err := brw.Writer.Flush(); err != nil {
		nc.Close()
		return nil, nil, err
	}
	cc := newCorkConn(nc, w.timeout)
	brw.Writer.Reset(cc)
	w.conn = cc
	return cc, brw, nil
}
