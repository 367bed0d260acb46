package feed

import (
	"encoding/json"
	"errors"
	"log/slog"
	"sync"

	"github.com/coder/websocket"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// frame is one event, encoded once for every client: the public form, and
// the form with private fields for clients that hold the token.
type frame struct {
	seq     uint64
	status  json.RawMessage
	public  []byte
	private []byte
}

// hub fans the monitor's events out to the connected clients. It holds one
// subscription and encodes each event once; each client has its own
// bounded queue of encoded frames, so a slow client costs the others
// nothing, and one whose queue is full is told to go away.
type hub struct {
	log *slog.Logger

	mu      sync.Mutex
	last    *frame // the newest event; a new client's hello carries its seq and status
	clients map[*client]struct{}
	closed  bool          // no more events will come
	done    chan struct{} // closed with closed
}

func newHub(log *slog.Logger) *hub {
	return &hub{log: log, clients: map[*client]struct{}{}, done: make(chan struct{})}
}

// client is what the hub knows of one connection.
type client struct {
	q    chan *frame
	kick chan struct{} // closed when the hub drops the client
	once sync.Once
	code websocket.StatusCode // why it was dropped, set before kick is closed
	why  string
}

func newClient(queue int) *client {
	return &client{q: make(chan *frame, queue), kick: make(chan struct{})}
}

func (c *client) drop(code websocket.StatusCode, why string) {
	c.once.Do(func() {
		c.code, c.why = code, why
		close(c.kick)
	})
}

// join adds c and returns the frame its hello must describe; every later
// event arrives in c.q. ok is false once the stream has ended.
func (h *hub) join(c *client) (last *frame, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return h.last, false
	}
	h.clients[c] = struct{}{}
	return h.last, true
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

// run follows the monitor until its stream ends or stop is closed, then
// closes every client's queue so each writer sends what is left and says
// goodbye.
func (h *hub) run(m *procmon.Monitor, sub *procmon.Subscription, stop <-chan struct{}) {
	defer h.finish()
	for {
		select {
		case ev, ok := <-sub.C:
			if ok {
				h.publish(h.encode(ev))
				continue
			}
			if !errors.Is(sub.Err(), procmon.ErrOverflow) {
				return
			}
			// The hub itself fell behind; its clients have missed events
			// and must resync from a fresh hello.
			h.log.Warn("status feed fell behind the monitor; asking clients to reconnect")
			h.dropAll(websocket.StatusTryAgainLater, "the sidecar fell behind; reconnect")
			var last procmon.Event
			sub, last = m.Subscribe(hubQueue)
			h.setLast(h.encode(last))
		case <-stop:
			sub.Close()
			return
		}
	}
}

// hubQueue is the hub's own queue in the monitor. The hub only encodes and
// enqueues, so it falls this far behind only if the machine is starved.
const hubQueue = 4096

func (h *hub) encode(ev procmon.Event) *frame {
	status, err := json.Marshal(ev.Status)
	if err != nil {
		h.log.Warn("status details cannot be encoded; sending the status without them", "seq", ev.Seq, "error", err)
		st := ev.Status
		st.Details = nil
		status, _ = json.Marshal(st)
	}
	f := &frame{seq: ev.Seq, status: status}
	var skipped []error
	f.public, skipped = encodeEvent(ev, status, false)
	f.private = f.public
	if len(ev.Private) > 0 {
		var more []error
		f.private, more = encodeEvent(ev, status, true)
		skipped = append(skipped, more...)
	}
	for _, err := range skipped {
		h.log.Warn("event field left out", "seq", ev.Seq, "event", ev.Kind, "error", err)
	}
	return f
}

func (h *hub) setLast(f *frame) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = f
}

func (h *hub) publish(f *frame) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = f
	for c := range h.clients {
		select {
		case c.q <- f:
		default:
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
