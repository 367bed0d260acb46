package feed

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// outConn is the connection under one websocket of /v1/events. Its writes
// never wait for the peer: what the socket takes at once goes out, and the
// rest waits in memory for a goroutine of the connection's own (flush),
// which sends it under the server's WriteTimeout. So the hub can write each
// event to every client itself, one after another, without a goroutine to
// wake per client and per event, and a client that stops reading holds up
// no one: its backlog is counted against the bytes it may have queued
// (backlog), and a write that times out closes the connection.
//
// Bytes go out in the order they were written: once some wait, every
// later write joins them. Each send waits at most the write timeout, and
// takes at most sendChunk bytes, so a client that reads slowly but reads
// is not cut. A failed write closes the connection, and every write after
// it fails. Closed while bytes wait, the connection is left to flush to
// send them (the last close frame among them) for at most the write
// timeout more; abort closes it at once.
type outConn struct {
	net.Conn
	timeout time.Duration
	raw     syscall.RawConn // for writes that do not wait; nil: every byte goes through flush

	mu       sync.Mutex
	pending  []byte // written, not yet taken by the socket
	sending  int    // bytes of pending that flush took and is writing now
	wrote    int64  // bytes written, all told; the last len(pending) of them wait for a send
	flushing bool   // flush runs: it owns the socket's writes
	closing  bool   // closed while bytes waited: flush closes the socket after them
	err      error  // the write that failed; the connection is closed
	// taken is closed when flush next takes bytes of pending for a
	// send, or the connection fails; nil while nothing is pending.
	taken   chan struct{}
	flushes sync.WaitGroup
}

func newOutConn(c net.Conn, timeout time.Duration) *outConn {
	oc := &outConn{Conn: c, timeout: timeout}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			oc.raw = raw
		}
	}
	return oc
}

func (c *outConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.closing {
		return 0, net.ErrClosed
	}
	if c.flushing {
		c.keep(p)
		c.wrote += int64(len(p))
		return len(p), nil
	}
	n, err := c.try(p)
	if err != nil {
		c.fail(err)
		return 0, err
	}
	c.wrote += int64(len(p))
	if n < len(p) {
		c.keep(p[n:])
		c.flushing = true
		c.flushes.Add(1)
		go c.flush()
	}
	return len(p), nil
}

// keep adds p to what waits for flush; c.mu is held.
func (c *outConn) keep(p []byte) {
	c.pending = append(c.pending, p...)
	if c.taken == nil {
		c.taken = make(chan struct{})
	}
}

// took tells wait that flush took bytes of pending, all of them or a
// send's worth; c.mu is held.
func (c *outConn) took() {
	if c.taken != nil {
		close(c.taken)
		c.taken = nil
	}
	if len(c.pending) > 0 {
		c.taken = make(chan struct{})
	}
}

// wait returns once flush has taken what was pending when it was called
// (at once if nothing was), though more may wait behind it, the
// connection has failed, or ctx is done. The session's reader waits so
// after each answer to the peer (a result, a pong) before it reads on: a
// peer that sends and never reads is held back by its socket, as it was
// when writes waited, rather than leaving its answers to pile up in
// memory.
func (c *outConn) wait(ctx context.Context) error {
	c.mu.Lock()
	mark := c.wrote
	for c.err == nil && c.wrote-int64(len(c.pending)) < mark {
		ch := c.taken
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		c.mu.Lock()
	}
	c.mu.Unlock()
	return nil
}

// try writes what the socket takes of p without waiting; c.mu is held and
// flush is not running.
func (c *outConn) try(p []byte) (int, error) {
	if c.raw == nil || len(p) == 0 {
		return 0, nil
	}
	var n int
	var werr error
	err := c.raw.Write(func(fd uintptr) bool {
		for {
			n, werr = unix.Write(int(fd), p)
			if werr != unix.EINTR {
				break
			}
		}
		if werr == unix.EAGAIN {
			n, werr = 0, nil
		}
		return true // one attempt: what is left waits for flush
	})
	if err == nil {
		err = werr
	}
	if n < 0 || err != nil {
		n = 0
	}
	return n, err
}

// sendChunk is the most one send of flush takes, each under its own
// deadline.
const sendChunk = 256 << 10

// flush sends what is pending, a chunk at a time, each waiting for the
// socket as long as the write timeout allows, until nothing is left or a
// write fails.
func (c *outConn) flush() {
	defer c.flushes.Done()
	for {
		c.mu.Lock()
		p := c.pending
		if len(p) > sendChunk {
			// Later writes append beyond the end of pending, never into
			// p, the part before it.
			p, c.pending = p[:sendChunk], p[sendChunk:]
		} else {
			c.pending = nil
		}
		c.took()
		c.sending = len(p)
		closing := c.closing
		if len(p) == 0 || c.err != nil {
			switch {
			case c.err != nil:
			case closing:
				c.err = net.ErrClosed
				c.Conn.Close()
			default:
				// Writes that do not wait need no deadline; one left
				// in the past would fail them.
				if err := c.Conn.SetWriteDeadline(time.Time{}); err != nil {
					c.fail(err)
				}
			}
			c.flushing = false
			c.mu.Unlock()
			return
		}
		var err error
		if !closing {
			// Under the lock, so that a Close after it sets the last
			// deadline; once closing, the one Close set stands.
			err = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
		}
		c.mu.Unlock()
		if err == nil {
			_, err = c.Conn.Write(p)
		}
		if err != nil {
			c.mu.Lock()
			c.fail(err)
			c.flushing = false
			c.mu.Unlock()
			return
		}
	}
}

// backlog is what waits for the socket: queued bytes wait for the next
// send, sending ones are those of the send under way. Of the bytes
// written, all told (wrote), the first taken no longer wait for a send:
// the socket took them at once, or a send took them.
func (c *outConn) backlog() (queued, sending int, wrote, taken int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending), c.sending, c.wrote, c.wrote - int64(len(c.pending))
}

// fail records err and closes the connection, as the websocket library
// does when a write fails; c.mu is held.
func (c *outConn) fail(err error) {
	c.err = err
	c.pending = nil
	c.sending = 0
	c.took()
	c.Conn.Close()
}

// Close closes the connection, once what waits for the socket has gone
// out if there is any: the websocket library closes its connection right
// after it answers a peer's close frame, and that answer may wait behind a
// backlog. The rest has the write timeout, from now, to go out.
func (c *outConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.flushing || c.err != nil {
		return c.Conn.Close()
	}
	if !c.closing {
		c.closing = true
		if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
			c.fail(err)
		}
	}
	return nil
}

// abort closes the connection at once, ending a flush under way.
func (c *outConn) abort() { c.Conn.Close() }

// outWriter is the http.ResponseWriter given to websocket.Accept: the
// websocket takes the connection through Hijack, and gets it wrapped in an
// outConn. After Accept, conn is that outConn.
type outWriter struct {
	http.ResponseWriter
	timeout time.Duration
	conn    *outConn
}

func (w *outWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *outWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
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
	oc := newOutConn(nc, w.timeout)
	brw.Writer.Reset(oc)
	w.conn = oc
	return oc, brw, nil
}
