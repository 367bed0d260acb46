package feed

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// rawClient opens /v1/events with a bare socket whose buffers are small
// in both directions, and reads nothing after the handshake's reply: what
// the server sends waits, and what the client sends is taken only as fast
// as the server reads it.
func rawClient(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = errors.Join(
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096),
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096))
		})
		return errors.Join(err, serr)
	}}
	conn, err := d.DialContext(ctxT(t), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	req := "GET /v1/events HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	// Byte by byte, so that nothing past the reply's headers is read.
	br := bufio.NewReaderSize(oneByte{conn}, 16)
	var head strings.Builder
	for !strings.HasSuffix(head.String(), "\r\n\r\n") {
		b, err := br.ReadByte()
		if err != nil {
			t.Fatalf("handshake: %v after %q", err, head.String())
		}
		head.WriteByte(b)
	}
	if !strings.HasPrefix(head.String(), "HTTP/1.1 101") {
		t.Fatalf("handshake: %q", head.String())
	}
	return conn
}

type oneByte struct{ net.Conn }

func (c oneByte) Read(p []byte) (int, error) { return c.Conn.Read(p[:1]) }

// clientFrame is one masked frame (a zero key leaves the payload as it is).
func clientFrame(opcode byte, payload []byte) []byte {
	if len(payload) > 125 {
		panic("clientFrame: payload too long")
	}
	f := []byte{0x80 | opcode, 0x80 | byte(len(payload)), 0, 0, 0, 0}
	return append(f, payload...)
}

// directOut waits until the hub writes to its one client itself, and
// returns that client's connection, its send buffer made small: the
// kernel's autotuning would otherwise let the socket take megabytes.
func directOut(t *testing.T, h *hub) *outConn {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		h.mu.Lock()
		for c := range h.clients {
			if c.out != nil {
				h.mu.Unlock()
				var serr error
				if err := c.out.raw.Control(func(fd uintptr) {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)
				}); err != nil || serr != nil {
					t.Fatal(err, serr)
				}
				return c.out
			}
		}
		h.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("no client is written to by the hub")
		}
	}
}

// flood sends frames to a client socket until the server has read them
// all or stops reading for a second, while watching how much the server
// keeps waiting for that client's socket. It fails the test once that
// passes bound.
func flood(t *testing.T, conn net.Conn, out *outConn, frames []byte, bound int) {
	t.Helper()
	type result struct {
		n   int
		err error
	}
	sent := make(chan result, 1)
	go func() {
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		n, err := conn.Write(frames)
		sent <- result{n, err}
	}()
	most := 0
	check := func() {
		if n := out.pendingLen(); n > most {
			most = n
		}
		if most > bound {
			t.Fatalf("%d bytes wait in memory for a client that reads nothing, more than the %d it may have queued", most, bound)
		}
	}
	for {
		check()
		select {
		case res := <-sent:
			if err := res.err; err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal(err)
			}
			if res.err == nil {
				// The server took every frame: let it answer them.
				for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
					check()
				}
			}
			t.Logf("the client sent %d of %d bytes; at most %d bytes waited for it", res.n, len(frames), most)
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// A client that sends ops and reads none of the results must not make
// the server keep the results in memory without bound: the corked writes
// made the reader wait for the socket, so the client's own socket held it
// back. Here the hub sends no events, so nothing else counts the bytes.
func TestOpResultsForAClientThatNeverReadsAreBounded(t *testing.T) {
	const bound = 1 << 20
	r := newRig(t, Options{QueueBytes: bound, WriteTimeout: time.Minute}, "-hang")
	conn := rawClient(t, r.srv.Addr())
	out := directOut(t, r.srv.hub)
	op := clientFrame(0x1, []byte(`{"op":"ping"}`))
	// Past the burst, each op is answered with an error of about 90
	// bytes: 8 MiB of ops would be answered with some 40 MiB.
	flood(t, conn, out, bytes.Repeat(op, (8<<20)/len(op)), bound)
}

// The same for pings: each is answered with a pong of the same size.
func TestPongsForAClientThatNeverReadsAreBounded(t *testing.T) {
	const bound = 1 << 20
	r := newRig(t, Options{QueueBytes: bound, WriteTimeout: time.Minute}, "-hang")
	conn := rawClient(t, r.srv.Addr())
	out := directOut(t, r.srv.hub)
	ping := clientFrame(0x9, bytes.Repeat([]byte("p"), 125))
	flood(t, conn, out, bytes.Repeat(ping, (8<<20)/len(ping)), bound)
}

// A client evicted to make room is told so with 1008 even while bytes
// still wait for its socket, and even if the hub, which still has it,
// sends an event during the close handshake: the hub's write fails (the
// close frame is sent), and that must not cut the connection with the
// close frame still waiting behind the backlog.
func TestEvictedClientWithABacklogHearsWhy(t *testing.T) {
	r := newRig(t, Options{MaxAnonymousClients: 1, AnonymousIdle: time.Nanosecond, WriteTimeout: time.Minute}, "-hang")
	ctx := ctxT(t)
	quiet := dialSlow(t, r)
	if _, err := readHello(ctx, quiet); err != nil {
		t.Fatal(err)
	}
	out := directOut(t, r.srv.hub)
	// A token holder paces the events and holds no anonymous place.
	pacer := r.dial(t, testToken)
	pacer.ws.SetReadLimit(1 << 20)
	blob := strings.Repeat("x", 64<<10)
	for i := 0; out.pendingLen() == 0; i++ {
		if i == 100 {
			t.Fatal("nothing waits for a client that reads nothing")
		}
		if err := r.m.Post(ctx, procmon.Event{Message: "filler", Data: map[string]any{"blob": blob}}); err != nil {
			t.Fatal(err)
		}
		pacer.next(procmon.EventNotice)
	}
	// The client reads nothing and its socket's send is stuck for a
	// minute: what waits only grows, by what is written.
	backlog := out.pendingLen()
	r.dial(t, "") // takes the quiet client's place
	for deadline := time.Now().Add(10 * time.Second); out.pendingLen() == backlog; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no close frame for the evicted client")
		}
	}
	// The close frame waits behind the backlog; an event comes.
	if err := r.m.Post(ctx, procmon.Event{Message: "during the close"}); err != nil {
		t.Fatal(err)
	}
	pacer.next(procmon.EventNotice)
	r.srv.hub.count() // the hub is done with the event
	if err := readToEnd(ctx, quiet); !isClose(err, websocket.StatusPolicyViolation) {
		t.Fatalf("the evicted client: %v, want close 1008", err)
	}
}

// What waits in memory for a client counts against QueueBytes whether it
// is still pending or already handed to the connection's send under way:
// a client that read a little, so that the send took most of its backlog
// at once, and then stopped, may not be sent another QueueBytes on top.
func TestBacklogInASendUnderWayCountsAgainstQueueBytes(t *testing.T) {
	const bound = 1 << 20
	r := newRig(t, Options{QueueBytes: bound, QueueLen: 100000, WriteTimeout: time.Minute}, "-hang")
	ctx := ctxT(t)
	conn := rawClient(t, r.srv.Addr())
	out := directOut(t, r.srv.hub)
	// A token holder paces the events; they carry no private fields, so
	// it reads each event as the slow client is sent it.
	pacer := r.dial(t, testToken)
	pacer.ws.SetReadLimit(1 << 20)
	written := 0 // bytes of events sent to the slow client: message and frame header
	post := func() {
		t.Helper()
		if err := r.m.Post(ctx, procmon.Event{Message: "filler", Data: map[string]any{"blob": strings.Repeat("x", 64<<10)}}); err != nil {
			t.Fatal(err)
		}
		for {
			_, b, err := pacer.ws.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if m, err := DecodeMessage(b); err == nil && m.Type == TypeEvent && m.Event == procmon.EventNotice {
				written += len(b) + 10 // 64 KiB and more: a 10-byte header
				return
			}
		}
	}
	// The slow client falls 768 KiB behind.
	for out.pendingLen() < 768<<10 {
		post()
	}
	// It reads until the send under way takes that backlog, then stops.
	queued := func() int {
		out.mu.Lock()
		defer out.mu.Unlock()
		return len(out.pending)
	}
	read := 0
	buf := make([]byte, 4096)
	for queued() > 0 {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		read += n
	}
	// The hello and what it read before are in written - read, and so is
	// what the kernel holds in both sockets' buffers (a few KiB each):
	// 64 KiB more than the bound leaves room for all of it.
	most, counted := 0, 0
	for r.srv.hub.count() > 1 {
		if unsent := written - read; unsent > most {
			most, counted = unsent, out.pendingLen()
		}
		post()
	}
	if most > bound+64<<10 {
		t.Fatalf("up to %d KiB waited for a client that read nothing before it was dropped, %d KiB more than it may have queued; pendingLen counted %d KiB of them",
			most>>10, (most-bound)>>10, counted>>10)
	}
}

// A client that closes the websocket while it is behind gets the close
// frame that answers its own, after what it was behind on: the library
// answers from the reader and closes the connection at once, and what the
// socket had not taken yet, the answer included, must still go out.
func TestPeerThatClosesWhileBehindGetsTheAnswer(t *testing.T) {
	p := newOutPair(t, 10*time.Second, false, smallBuffers)
	p.shrinkSendBuffer(t)
	blob := []byte(strings.Repeat("y", 32<<10))
	for range 64 {
		if err := p.ws.Write(context.Background(), websocket.MessageText, blob); err != nil {
			t.Fatal(err)
		}
	}
	if p.out.pendingLen() == 0 {
		t.Fatal("nothing waits for the client")
	}
	// The client's Close reads (and drops) the messages before the answer.
	if err := p.client.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("the client's close handshake: %v", err)
	}
}

// A client that reads, if slowly, is not cut because its backlog as a
// whole takes longer than WriteTimeout to send: each send takes at most
// sendChunk and has the timeout to itself.
func TestSlowReaderKeepsItsConnection(t *testing.T) {
	p := newOutPair(t, time.Second, false, smallBuffers)
	p.shrinkSendBuffer(t)
	blob := []byte(strings.Repeat("s", 32<<10))
	const n = 96 // 3 MiB: read at about 1.5 MiB/s, two seconds of sending
	for range n {
		if err := p.ws.Write(context.Background(), websocket.MessageText, blob); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.out.pendingLen(); got <= sendChunk {
		t.Fatalf("only %d bytes wait; the test needs more than one send's worth", got)
	}
	for i := range n {
		_, b, err := p.client.Read(ctxT(t))
		if err != nil {
			t.Fatalf("the slow reader was cut after %d of %d messages: %v", i, n, err)
		}
		if len(b) != len(blob) {
			t.Fatalf("message %d has %d bytes", i, len(b))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A server that stops while a client that reads nothing has a backlog
// waiting for its socket stops: what waits is cut off after FlushTimeout,
// not after WriteTimeout (an hour here), also once the client has closed
// its websocket and the session has ended with the answer to its close
// frame still waiting.
func TestStopDoesNotWaitForAStalledClientsBacklog(t *testing.T) {
	r := newRig(t, Options{WriteTimeout: time.Hour, QueueBytes: 64 << 20, QueueLen: 100000, FlushTimeout: 200 * time.Millisecond}, "-hang")
	conn := rawClient(t, r.srv.Addr())
	out := directOut(t, r.srv.hub)
	fallBehind(t, r, out)
	// The client says goodbye, then goes on reading nothing: the answer
	// waits behind the backlog, and the session ends.
	if _, err := conn.Write(clientFrame(0x8, []byte{0x03, 0xe8})); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); r.srv.hub.count() > 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the session of the client that closed did not end")
		}
	}
	if out.pendingLen() == 0 {
		out.mu.Lock()
		t.Logf("err %v closing %v flushing %v", out.err, out.closing, out.flushing)
		out.mu.Unlock()
		t.Fatal("nothing waits any more for the client that closed")
	}
	r.stop(t) // fails the test if the server takes over 30 s
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, conn); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the client's connection did not end: %v", err)
	}
}

// A client of the server that closes its websocket while behind gets the
// answer to its close frame after its backlog: the session ends, and the
// connection stays open until what waited for its socket has gone out.
func TestSessionOfAClientThatClosesWhileBehindAnswersIt(t *testing.T) {
	r := newRig(t, Options{QueueBytes: 64 << 20, QueueLen: 100000}, "-hang")
	slow, out := slowClient(t, r)
	fallBehind(t, r, out)
	// Close reads (and drops) the backlog, then the answer.
	if err := slow.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("the close handshake of a client that was behind: %v", err)
	}
}

// slowClient connects a websocket client whose socket takes little at a
// time, as a client that reads slowly, and returns it with the connection
// the hub writes to it through. It must be the first client to connect.
func slowClient(t *testing.T, r *rig) (*websocket.Conn, *outConn) {
	t.Helper()
	return dialSlow(t, r), directOut(t, r.srv.hub)
}

// dialSlow connects a websocket client to r's events through a socket
// whose receive buffer is tiny (smallBuffers), so that what it does not
// read soon waits on the server's side.
func dialSlow(t *testing.T, r *rig) *websocket.Conn {
	t.Helper()
	tr := &http.Transport{DialContext: (&net.Dialer{Control: smallBuffers}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	ws, _, err := websocket.Dial(ctxT(t), "ws://"+r.srv.Addr()+"/v1/events", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	ws.SetReadLimit(1 << 20)
	return ws
}

// poster posts events of blob, each paced by a token holder: once it has
// one, the hub has written it to every client.
func poster(t *testing.T, r *rig, blob string) func() {
	pacer := r.dial(t, testToken)
	pacer.ws.SetReadLimit(1 << 20)
	return func() {
		t.Helper()
		if err := r.m.Post(ctxT(t), procmon.Event{Message: "filler", Data: map[string]any{"blob": blob}}); err != nil {
			t.Fatal(err)
		}
		pacer.next(procmon.EventNotice)
	}
}

// A client that stays a couple of events behind but reads every one is
// not dropped for QueueLen: only the events that still wait for its
// socket count, as when each send took all that waited, and as
// docs/protocol.md says (1008: "256 events ... waited for your socket").
// Each event here is larger than one send (sendChunk), so some of what
// waits is always queued for the next send.
func TestClientThatReadsWhileBehindIsNotDroppedForQueueLen(t *testing.T) {
	const queueLen = 8
	r := newRig(t, Options{QueueLen: queueLen, QueueBytes: 64 << 20, WriteTimeout: time.Minute, PingInterval: time.Hour}, "-hang")
	ctx := ctxT(t)
	slow, out := slowClient(t, r)
	post := poster(t, r, strings.Repeat("r", 400<<10))
	post()
	post()
	if got := out.pendingLen(); got <= sendChunk {
		t.Fatalf("only %d bytes wait for the client; the test needs more than a send's worth", got)
	}
	readEvent := func(i int) {
		t.Helper()
		for {
			_, b, err := slow.Read(ctx)
			if err != nil {
				t.Fatalf("a client never more than 3 events behind was dropped after reading %d of them (QueueLen %d): %v", i, queueLen, err)
			}
			if m, err := DecodeMessage(b); err == nil && m.Type == TypeEvent && m.Event == procmon.EventNotice {
				return
			}
		}
	}
	// It reads one event, and one more comes: two wait, or three.
	for i := range 3 * queueLen {
		readEvent(i)
		post()
	}
}

// A client that stays behind but reads gets an answer to each of its ops:
// after a result the reader waits until that result is taken for the
// socket, not until everything written after it has been too, which never
// happens while the client stays behind. Meanwhile the reader reads
// nothing: neither further ops nor pongs, nor the client's close frame.
func TestClientBehindGetsAnAnswerToEachOp(t *testing.T) {
	r := newRig(t, Options{QueueLen: 100000, QueueBytes: 64 << 20, WriteTimeout: time.Minute, PingInterval: time.Hour}, "-hang")
	ctx := ctxT(t)
	slow, out := slowClient(t, r)
	post := poster(t, r, strings.Repeat("o", 400<<10))
	post()
	post()
	if got := out.pendingLen(); got <= sendChunk {
		t.Fatalf("only %d bytes wait for the client; the test needs more than a send's worth", got)
	}
	for _, op := range []string{`{"op":"ping","id":1}`, `{"op":"ping","id":2}`} {
		if err := slow.Write(ctx, websocket.MessageText, []byte(op)); err != nil {
			t.Fatal(err)
		}
	}
	// The client reads on, and each event it reads is followed by one
	// more: it stays one or two events behind.
	since := -1 // events read since the first result
	for {
		_, b, err := slow.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m, err := DecodeMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case m.Type == TypeResult && string(m.ID) == "2":
			return
		case m.Type == TypeResult:
			since = 0
		case m.Type == TypeEvent && m.Event == procmon.EventNotice:
			if since >= 0 {
				if since++; since > 20 {
					t.Fatal("20 events after the answer to its first op, a client that reads has no answer to its second")
				}
			}
			post()
		}
	}
}

// readServerFrame reads one unmasked frame: its opcode and payload.
func readServerFrame(r io.Reader) (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126, 127:
		ext := make([]byte, map[uint64]int{126: 2, 127: 8}[n])
		if _, err := io.ReadFull(r, ext); err != nil {
			return 0, nil, err
		}
		n = 0
		for _, b := range ext {
			n = n<<8 | uint64(b)
		}
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, p, nil
}

// slowReader reads at most 4 KiB at a time, a millisecond apart.
type slowReader struct{ net.Conn }

func (s slowReader) Read(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	return s.Conn.Read(p[:min(len(p), 4096)])
}

// A client evicted while its op's result waits behind its backlog still
// hears why, once the library has given up waiting for its close frame
// (5 s) and closed the websocket, leaving the backlog to go out: the
// session's reader, which waited for that result to be taken, then finds
// the websocket closed (net.ErrClosed), which is not the peer gone, and
// must not cut the connection with the close frame still waiting.
func TestEvictedClientWaitingForAnAnswerHearsWhy(t *testing.T) {
	r := newRig(t, Options{MaxAnonymousClients: 1, AnonymousIdle: time.Nanosecond, WriteTimeout: time.Minute, PingInterval: time.Hour}, "-hang")
	conn := rawClient(t, r.srv.Addr())
	out := directOut(t, r.srv.hub)
	post := poster(t, r, strings.Repeat("e", 500<<10))
	post()
	grown := func(than int, what string) int {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			if n := out.pendingLen(); n > than {
				return n
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s does not wait behind the backlog", what)
			}
		}
	}
	backlog := grown(sendChunk, "an event larger than a send")
	// An op: its result waits behind the backlog, and so does the reader.
	if _, err := conn.Write(clientFrame(0x1, []byte(`{"op":"ping","id":1}`))); err != nil {
		t.Fatal(err)
	}
	backlog = grown(backlog, "the result")
	r.dial(t, "") // takes the client's place: 1008
	grown(backlog, "the close frame")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		out.mu.Lock()
		closing := out.closing
		out.mu.Unlock()
		if closing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the websocket was not closed with bytes waiting")
		}
	}
	// The client reads at last.
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(slowReader{conn})
	var last []byte
	frames := 0
	for {
		op, p, err := readServerFrame(br)
		if err != nil {
			t.Fatalf("the stream ended (%v) after %d frames without the close frame", err, frames)
		}
		frames++
		if op == 0x8 {
			last = p
			break
		}
	}
	if len(last) < 2 || int(last[0])<<8|int(last[1]) != int(websocket.StatusPolicyViolation) {
		t.Fatalf("close frame %q, want 1008", last)
	}
}

// drainFrames reads the server's frames from conn, slowly, until a close
// frame, and returns its code; it fails the test if the stream ends first.
func drainFrames(t *testing.T, conn net.Conn) websocket.StatusCode {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(slowReader{conn})
	for frames := 0; ; frames++ {
		op, p, err := readServerFrame(br)
		if err != nil {
			t.Fatalf("the stream ended (%v) after %d frames without a close frame", err, frames)
		}
		if op == 0x8 {
			if len(p) < 2 {
				t.Fatalf("close frame %q", p)
			}
			return websocket.StatusCode(int(p[0])<<8 | int(p[1]))
		}
	}
}

// A client that sends a message over MaxMessageBytes while behind is
// told so with 1009, as docs/protocol.md says, after what it was behind
// on: the library answers with the close frame, which waits behind the
// backlog, and the session must not cut the connection before it goes.
func TestClientBehindThatSendsTooMuchHears1009(t *testing.T) {
	r := newRig(t, Options{WriteTimeout: time.Minute, PingInterval: time.Hour}, "-hang")
	conn := rawClient(t, r.srv.Addr())
	out := directOut(t, r.srv.hub)
	post := poster(t, r, strings.Repeat("m", 500<<10))
	post()
	if got := out.pendingLen(); got <= sendChunk {
		t.Fatalf("only %d bytes wait for the client; the test needs more than a send's worth", got)
	}
	const size = 5000 // over the 4096 allowed
	big := append([]byte{0x81, 0x80 | 126, size >> 8, size & 0xff, 0, 0, 0, 0}, bytes.Repeat([]byte("b"), size)...)
	if _, err := conn.Write(big); err != nil {
		t.Fatal(err)
	}
	if code := drainFrames(t, conn); code != websocket.StatusMessageTooBig {
		t.Fatalf("closed with %v, want 1009", code)
	}
}

// fallBehind posts events of 64 KiB until some wait for out's socket. A
// reading client paces them: once it has one, the hub has written it to
// out's client too.
func fallBehind(t *testing.T, r *rig, out *outConn) {
	t.Helper()
	pacer := r.dial(t, "")
	pacer.ws.SetReadLimit(1 << 20)
	blob := strings.Repeat("b", 64<<10)
	for i := 0; out.pendingLen() == 0; i++ {
		if i == 200 {
			t.Fatal("200 events of 64 KiB, and nothing waits for a client that reads nothing")
		}
		if err := r.m.Post(ctxT(t), procmon.Event{Message: "filler", Data: map[string]any{"blob": blob}}); err != nil {
			t.Fatal(err)
		}
		pacer.next(procmon.EventNotice)
	}
}

// readToEnd reads ws until a read fails, and returns why.
func readToEnd(ctx context.Context, ws *websocket.Conn) error {
	for {
		if _, _, err := ws.Read(ctx); err != nil {
			return err
		}
	}
}
