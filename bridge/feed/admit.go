package feed

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"
)

// admission counts the websocket clients and keeps a share of the places
// for token holders: clients without the token cannot fill the server,
// so the gateway and 'wa-sidecar restart' always get in. When the
// anonymous share is full, a new anonymous client takes the place of the
// one that has been quiet longest, if that one has sent nothing for at
// least idle; a client that only listens is quiet, so under pressure the
// oldest listeners give way to new ones rather than lock them out.
type admission struct {
	max, maxAnon int
	idle         time.Duration

	mu    sync.Mutex
	total int
	anon  map[*client]struct{}
}

// errFull is the refusal of a websocket for want of a place.
type errFull struct {
	limit   int
	trusted bool
}

func (e *errFull) Error() string {
	if e.trusted {
		return fmt.Sprintf("too many clients (limit %d); try again later", e.limit)
	}
	return fmt.Sprintf("too many clients without the token (limit %d, the rest is kept for token holders); try again later, or connect with 'Authorization: Bearer <token>'", e.limit)
}

func newAdmission(max, maxAnon int, idle time.Duration) *admission {
	return &admission{max: max, maxAnon: maxAnon, idle: idle, anon: map[*client]struct{}{}}
}

// admit takes a place for c, which was created at now (as the server's
// clock tells it), or says why there is none. A token holder that finds
// every place taken takes the place of the quietest anonymous client.
func (a *admission) admit(c *client, now time.Duration) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	full := a.total >= a.max || (!c.trusted && len(a.anon) >= a.maxAnon)
	if !full {
		return a.take(c)
	}
	if v := a.quietest(); v != nil && (c.trusted || now-v.lastHeard() >= a.idle) {
		a.evict(v)
		return a.take(c)
	}
	if c.trusted {
		return &errFull{limit: a.max, trusted: true}
	}
	return &errFull{limit: a.maxAnon}
}

// take gives c a place; a.mu is held and there is room.
func (a *admission) take(c *client) error {
	a.total++
	if !c.trusted {
		a.anon[c] = struct{}{}
	}
	c.admitted = true
	return nil
}

// quietest is the anonymous client that has been quiet longest; a.mu is
// held.
func (a *admission) quietest() *client {
	var q *client
	for c := range a.anon {
		if q == nil || c.lastHeard() < q.lastHeard() {
			q = c
		}
	}
	return q
}

// evict gives up v's place and tells its session to close; a.mu is held.
func (a *admission) evict(v *client) {
	a.drop(v)
	v.drop(websocket.StatusPolicyViolation, "made room for a new client: this one had sent nothing for a while and holds no token; reconnect, or connect with the token")
}

func (a *admission) drop(c *client) {
	if !c.admitted {
		return
	}
	c.admitted = false
	a.total--
	delete(a.anon, c)
}

// release gives back c's place, if it still holds one.
func (a *admission) release(c *client) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.drop(c)
}

func (a *admission) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total
}

// fdReserve is how many file descriptors the HTTP server leaves free, on
// top of those open when it starts, for what the sidecar does besides
// serving: spawning the bridge (pipes for its output, /dev/null), its log
// file, health probes of the bridge, reading /proc.
const fdReserve = 64

// connLimit derives the default bound on connections from the file
// descriptor limit, so that clients cannot take the descriptors the
// sidecar needs to spawn the bridge.
func connLimit() int {
	const most, least = 4096, 8
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return most
	}
	open := 32 // a guess when /proc does not tell
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		open = len(fds)
	}
	n := int64(min(rl.Cur, most+fdReserve+uint64(open))) - int64(open) - fdReserve
	return int(max(n, least))
}

// clientLimits are the websocket caps within a bound of maxConns
// connections: a quarter of the connections stays free for probes and
// /v1/status, and a quarter of the websocket places for token holders.
func clientLimits(o *Options) (clients, anon int) {
	clients = min(o.MaxClients, max(1, o.MaxConns-o.MaxConns/4))
	anon = o.MaxAnonymousClients
	if anon <= 0 {
		anon = max(1, clients-clients/4)
	}
	if anon >= clients && clients > 1 {
		anon = clients - max(1, clients/4)
	}
	return clients, anon
}

// idleReaper closes idle keep-alive connections when the server holds
// as many connections as it may: a connection waiting in the backlog, a
// probe perhaps, then gets in at once instead of after IdleTimeout. HTTP
// clients expect a server to close an idle connection at any time.
//
// It counts connections from their accept to their close, as the
// listener below does: a websocket holds its connection after the HTTP
// server lets go of it (StateHijacked), so the server's connection states
// alone would never find it full while websockets hold places.
type idleReaper struct {
	max  int
	open atomic.Int64 // connections accepted and not yet closed

	mu   sync.Mutex
	idle map[net.Conn]time.Time // since when each idle connection is idle
}

func newIdleReaper(max int) *idleReaper {
	return &idleReaper{max: max, idle: map[net.Conn]time.Time{}}
}

// listener counts the connections ln accepts until each is closed, and
// holds at most r.max of them: while that many are open, Accept waits, and
// the next connection waits in the kernel's backlog. The server must serve
// the listener it returns, so that track sees the same connections.
//
// The cap is kept here rather than by x/net's LimitListener, whose
// connections hide the socket: the websockets write to it without waiting
// (outConn), which needs its syscall.RawConn.
func (r *idleReaper) listener(ln net.Listener) net.Listener {
	return &reapedListener{Listener: ln, r: r, slots: make(chan struct{}, max(1, r.max)), closed: make(chan struct{})}
}

type reapedListener struct {
	net.Listener
	r         *idleReaper
	slots     chan struct{} // one per open connection
	closed    chan struct{} // closed by Close
	closeOnce sync.Once
}

func (l *reapedListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	l.r.open.Add(1)
	return &reapedConn{Conn: c, r: l.r, slots: l.slots}, nil
}

func (l *reapedListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.closed) })
	return err
}

type reapedConn struct {
	net.Conn
	r     *idleReaper
	slots chan struct{}
	once  sync.Once
}

// SyscallConn is the socket's, for the writes that do not wait.
func (c *reapedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("the connection has no socket of its own")
}

func (c *reapedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.r.open.Add(-1)
		<-c.slots
	})
	return err
}

// track is the server's http.Server.ConnState.
func (r *idleReaper) track(c net.Conn, st http.ConnState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch st {
	case http.StateIdle:
		r.idle[c] = time.Now()
	case http.StateActive, http.StateHijacked, http.StateClosed:
		delete(r.idle, c)
	}
	if r.open.Load() < int64(r.max) || (st != http.StateNew && st != http.StateIdle) {
		return
	}
	// Full: the longest idle connection makes room for the next one.
	var oldest net.Conn
	for ic, since := range r.idle {
		if oldest == nil || since.Before(r.idle[oldest]) {
			oldest = ic
		}
	}
	if oldest != nil {
		delete(r.idle, oldest)
		oldest.Close()
	}
}
