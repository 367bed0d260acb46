package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// frame is one event, encoded once for every client: the public form, and
// the form with private fields for clients that hold the token.
type frame struct {
	seq     uint64
	kind    procmon.Kind
	status  json.RawMessage
	public  []byte
	private []byte
}

// hub fans the monitor's events out to the connected clients. It holds one
// subscription and encodes each event once. It writes each event to each
// client's websocket itself, one client after another: the connection
// under it (outConn) takes the bytes without waiting, and keeps what the
// socket will not take yet, so a slow client costs the others nothing, and
// one with too much waiting is told to go away. Until its hello is sent a
// client's events wait in its queue, and a client the sidecar dialled out
// to (push mode) has its own writer, which takes them from the queue.
type hub struct {
	log        *slog.Logger
	queueBytes int64 // what one client may have queued, or waiting for its socket
	queueLen   int   // events one client may have queued, or waiting for its socket

	mu   sync.Mutex
	last *frame // the newest event; a new client's hello carries its seq and status
	// qr is the latest qr event while the bridge waits for a scan, for
	// the hello of token holders who join after it was drawn.
	qr      *frame
	clients map[*client]struct{}
	closed  bool          // no more events will come
	done    chan struct{} // closed with closed
}

func newHub(log *slog.Logger, queueBytes, queueLen int) *hub {
	return &hub{log: log, queueBytes: int64(queueBytes), queueLen: queueLen, clients: map[*client]struct{}{}, done: make(chan struct{})}
}

// client is what the hub and the admission know of one connection.
type client struct {
	q       chan *frame
	trusted bool          // holds the token: gets private fields
	queued  atomic.Int64  // bytes of the frames in q
	heard   atomic.Int64  // when the client last sent a message (or connected), on the server's clock
	kick    chan struct{} // closed when the hub drops the client
	once    sync.Once
	code    websocket.StatusCode // why it was dropped, set before kick is closed
	why     string

	admitted bool // holds a place; guarded by the admission's lock

	// Once out is set (guarded by the hub's lock, by direct), the hub
	// writes each event to ws itself rather than queueing it. ends holds
	// where each event written to out that still waits for a send ends,
	// in the bytes written to out.
	ws   *websocket.Conn
	out  *outConn
	ends []int64
}

func newClient(queue int, trusted bool, now time.Duration) *client {
	c := &client{q: make(chan *frame, queue), trusted: trusted, kick: make(chan struct{})}
	c.heard.Store(int64(now))
	return c
}

// msg is the form of f this client gets.
func (c *client) msg(f *frame) []byte {
	if c.trusted {
		return f.private
	}
	return f.public
}

// took notes that f left the queue.
func (c *client) took(f *frame) { c.queued.Add(-int64(len(c.msg(f)))) }

func (c *client) hear(now time.Duration) { c.heard.Store(int64(now)) }

func (c *client) lastHeard() time.Duration { return time.Duration(c.heard.Load()) }

func (c *client) drop(code websocket.StatusCode, why string) {
	c.once.Do(func() {
		c.code, c.why = code, why
		close(c.kick)
	})
}

// join adds c and returns the frame its hello must describe, and the QR
// code waiting for a scan if there is one; every later event arrives in
// c.q until direct, and is then written to the client by the hub. ok is
// false once the stream has ended.
func (h *hub) join(c *client) (last, qr *frame, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return h.last, h.qr, false
	}
	h.clients[c] = struct{}{}
	return h.last, h.qr, true
}

// direct sends c the events queued for it since it joined, and from then
// on has the hub write each event to ws itself. It reports an error if a
// write failed; the connection is then closed.
func (h *hub) direct(c *client, ws *websocket.Conn, out *outConn) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		select {
		case f, ok := <-c.q:
			if !ok {
				return nil // the stream has ended; the session says goodbye
			}
			c.took(f)
			if err := ws.Write(context.Background(), websocket.MessageText, c.msg(f)); err != nil {
				return err
			}
		default:
			if _, ok := h.clients[c]; ok {
				c.ws, c.out = ws, out
			}
			return nil
		}
	}
}

// write sends f to a client the hub writes to itself. A client is dropped
// as too slow once more bytes wait for its socket than it may have
// queued, or as many events; so is one whose write failed: its connection
// is closed, and its session ends. h.mu is held.
func (h *hub) write(c *client, f *frame) {
	msg := c.msg(f)
	n := int64(len(msg))
	// Bytes of a send under way count, as they stay in memory; events
	// count until a send has taken the last of their bytes, as events
	// taken from a queue did. A send takes at most sendChunk: that
	// something waits does not tell that an event written long ago does.
	queued, sending, _, taken := c.out.backlog()
	k := 0
	for k < len(c.ends) && c.ends[k] <= taken {
		k++
	}
	c.ends = append(c.ends[:0], c.ends[k:]...)
	if q := int64(queued+sending) + n; (q > h.queueBytes && q > n) || len(c.ends) >= h.queueLen {
		delete(h.clients, c)
		c.drop(websocket.StatusPolicyViolation, fmt.Sprintf("too slow: %d events or more than %d KiB waiting to be sent; reconnect to resync", h.queueLen, h.queueBytes>>10))
		return
	}
	err := c.ws.Write(context.Background(), websocket.MessageText, msg)
	if err == nil {
		// Bytes another writer wrote just after it may count as its own:
		// it counts a little longer.
		if _, _, end, taken := c.out.backlog(); end > taken {
			c.ends = append(c.ends, end)
		}
		return
	}
	delete(h.clients, c)
	// Once the session has sent its close frame, which may still wait
	// behind what the socket has not taken, writes fail with
	// net.ErrClosed: the session ends the connection after the close
	// handshake, and cutting it here would lose that frame.
	if !errors.Is(err, net.ErrClosed) {
		c.out.abort()
	}
}

func (h *hub) leave(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.clients, c)
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// run follows the monitor until its stream ends, then closes every
// client's queue, which tells each session that nothing more comes (a
// session in push mode sends what is left first) and to say goodbye. Once
// ctx is done it waits at most grace more for the stream to end, as it
// does when the monitor is told to stop at the same time: the monitor's
// last events (stopping, exited, stopped) still go out.
func (h *hub) run(ctx context.Context, f *procmon.Follower, grace time.Duration) {
	defer h.finish()
	follow, cancel := withGrace(ctx, grace)
	defer cancel()
	for {
		u, err := f.Next(follow)
		switch {
		case err != nil:
			return
		case u.Missed > 0:
			// The hub itself fell behind; its clients have missed events
			// and must resync from a fresh hello.
			h.log.Warn("status feed fell behind the monitor; asking clients to reconnect", "missed_events", u.Missed)
			h.dropAll(websocket.StatusTryAgainLater, "the sidecar fell behind; reconnect")
			h.setLast(h.encode(u.Event))
		default:
			h.publish(h.encode(u.Event))
		}
	}
}

// withGrace returns a context that ends grace after ctx does, or when
// cancel is called.
func withGrace(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	late, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var mu sync.Mutex
	var timer *time.Timer
	ended := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !ended {
			timer = time.AfterFunc(grace, cancel)
		}
	})
	return late, func() {
		stop()
		mu.Lock()
		ended = true
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

// hubQueue is the hub's own queue in the monitor. The hub only encodes and
// enqueues, so it falls this far behind only if the machine is starved.
const hubQueue = 4096

// maxFrame is the largest message the server sends: docs/protocol.md
// promises that a client which accepts 1 MiB gets every message whole.
const maxFrame = 1 << 20

// maxStatus bounds the snapshot within a message, so that a hello can
// carry one and a QR event, which has a snapshot of its own, within
// maxFrame.
const maxStatus = 384 << 10

func (h *hub) encode(ev procmon.Event) *frame {
	status := h.encodeStatus(ev)
	f := &frame{seq: ev.Seq, kind: ev.Kind, status: status}
	var skipped []error
	f.public, skipped = fitEvent(ev, status, false)
	f.private = f.public
	if len(ev.Private) > 0 {
		var more []error
		f.private, more = fitEvent(ev, status, true)
		skipped = append(skipped, more...)
	}
	for _, err := range skipped {
		h.log.Warn("event field left out", "seq", ev.Seq, "event", ev.Kind, "error", err)
	}
	return f
}

// encodeStatus encodes the snapshot of ev within maxStatus: the exit
// record's tail loses its oldest lines first, then the layers' details go.
func (h *hub) encodeStatus(ev procmon.Event) []byte {
	st := ev.Status
	b, err := json.Marshal(st)
	if err != nil {
		h.log.Warn("status details cannot be encoded; sending the status without them", "seq", ev.Seq, "error", err)
		st.Details = nil
		b, _ = json.Marshal(st)
	}
	if len(b) <= maxStatus {
		return b
	}
	if x := st.LastExit; x != nil && len(x.Tail) > 0 {
		y := *x
		y.Tail = fitTail(x.Tail, maxStatus-(len(b)-jsonLen(x.Tail)))
		st.LastExit = &y
		b, _ = json.Marshal(st)
	}
	if len(b) > maxStatus && st.Details != nil {
		h.log.Warn("status details left out: the snapshot would pass its bound", "seq", ev.Seq, "bytes", len(b), "bound", maxStatus)
		st.Details = nil
		b, _ = json.Marshal(st)
	}
	return b
}

// fitEvent encodes ev as encodeEvent does, within maxFrame: the exit
// record's tail loses its oldest lines first, then the fields of the layer
// above go, largest first.
func fitEvent(ev procmon.Event, status []byte, private bool) ([]byte, []error) {
	msg, skipped := encodeEvent(ev, status, private)
	if len(msg) <= maxFrame {
		return msg, skipped
	}
	var tail []string // the whole tail, when it was cut
	var cut []error
	sizes := map[*map[string]any]map[string]int{&ev.Data: fieldSizes(ev.Data)}
	if private {
		sizes[&ev.Private] = fieldSizes(ev.Private)
	}
	for len(msg) > maxFrame {
		// Whatever takes most room goes first: a field of the layer
		// above, or the older half of the tail.
		var fields *map[string]any
		name, size := "", 0
		for m, sz := range sizes {
			for _, k := range sortedKeys(*m) {
				if sz[k] > size {
					fields, name, size = m, k, sz[k]
				}
			}
		}
		if x := ev.Exit; x != nil && len(x.Tail) > 1 && jsonLen(x.Tail) >= size {
			if tail == nil {
				tail = x.Tail
			}
			y := *x
			y.Tail = fitTail(tail, jsonLen(x.Tail)/2)
			ev.Exit = &y
		} else if name != "" {
			*fields = without(*fields, name)
			cut = append(cut, fmt.Errorf("field %q: it would make the event larger than %d KiB", name, maxFrame>>10))
		} else {
			break
		}
		msg, skipped = encodeEvent(ev, status, private)
	}
	if tail != nil {
		// Halving may have cut more than needed; keep all that fits.
		y := *ev.Exit
		y.Tail = fitTail(tail, maxFrame-(len(msg)-jsonLen(y.Tail)))
		ev.Exit = &y
		msg, skipped = encodeEvent(ev, status, private)
	}
	if len(msg) > maxFrame && len(ev.Message) > 1024 {
		ev.Message = strings.ToValidUTF8(ev.Message[:1024], "") + "…"
		cut = append(cut, fmt.Errorf("message cut to 1 KiB: the event would be larger than %d KiB", maxFrame>>10))
		msg, skipped = encodeEvent(ev, status, private)
	}
	return msg, append(skipped, cut...)
}

// fitTail keeps the newest lines of tail whose JSON fits in budget bytes,
// after a first line that says how many were left out.
func fitTail(tail []string, budget int) []string {
	budget -= 128 // the marker
	k, size := 0, 2
	for ; k < len(tail); k++ {
		if size += jsonLen(tail[len(tail)-1-k]) + 1; size > budget {
			break
		}
	}
	if k == len(tail) {
		return tail
	}
	out := make([]string, 0, k+1)
	out = append(out, fmt.Sprintf("[wa-sidecar: %d earlier lines left out to keep the message under 1 MiB]", len(tail)-k))
	return append(out, tail[len(tail)-k:]...)
}

// jsonLen is the length of v in JSON.
func jsonLen(v any) int {
	b, _ := json.Marshal(v)
	return len(b)
}

// fieldSizes measures each field of m in JSON.
func fieldSizes(m map[string]any) map[string]int {
	sizes := make(map[string]int, len(m))
	for k, v := range m {
		sizes[k] = jsonLen(v)
	}
	return sizes
}

// without is a copy of m without key k: an event's maps are shared with
// every other subscriber of the monitor.
func without(m map[string]any, k string) map[string]any {
	out := make(map[string]any, len(m))
	for key, v := range m {
		if key != k {
			out[key] = v
		}
	}
	return out
}

func (h *hub) setLast(f *frame) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = f
	h.qr = nil // what came before is not known
}

// The event kinds of the bridge layer that end a wait for a QR scan; the
// monitor's own kinds that end it are in endsPairing.
const (
	kindQR        procmon.Kind = "qr"
	kindConnected procmon.Kind = "connected"
	kindPaired    procmon.Kind = "paired"
)

// endsPairing reports whether the QR code shown before an event of kind k
// is of no more use: the bridge connected, or the bridge that drew it is
// gone or being replaced.
func endsPairing(k procmon.Kind) bool {
	switch k {
	case kindConnected, kindPaired, procmon.EventStarting, procmon.EventStarted, procmon.EventSpawnFailed,
		procmon.EventStopping, procmon.EventKilling, procmon.EventExited, procmon.EventStopped, procmon.EventGivenUp:
		return true
	}
	return false
}

func (h *hub) publish(f *frame) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = f
	switch {
	case f.kind == kindQR:
		h.qr = f
	case endsPairing(f.kind):
		h.qr = nil
	}
	for c := range h.clients {
		if c.out != nil {
			h.write(c, f)
			continue
		}
		n := int64(len(c.msg(f)))
		if q := c.queued.Add(n); q > h.queueBytes && q > n {
			delete(h.clients, c)
			c.drop(websocket.StatusPolicyViolation, fmt.Sprintf("too slow: more than %d KiB of events queued; reconnect to resync", h.queueBytes>>10))
			continue
		}
		select {
		case c.q <- f:
		default:
			c.queued.Add(-n)
			delete(h.clients, c)
			c.drop(websocket.StatusPolicyViolation, "too slow: events queued beyond the limit; reconnect to resync")
		}
	}
}

func (h *hub) dropAll(code websocket.StatusCode, why string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		delete(h.clients, c)
		c.drop(code, why)
	}
}

func (h *hub) finish() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	close(h.done)
	for c := range h.clients {
		delete(h.clients, c)
		close(c.q)
	}
}
