package feed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// hiddenListener hands out its connections without their sockets, as a
// wrapper that knows nothing of syscall.Conn would.
type hiddenListener struct{ net.Listener }

type hiddenConn struct{ net.Conn }

func (l hiddenListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return hiddenConn{c}, nil
}

// outPair is a websocket accepted through an outWriter on a real loopback
// socket, and the client's end of it.
type outPair struct {
	ws     *websocket.Conn // the server's end
	out    *outConn
	client *websocket.Conn
}

// shrinkSendBuffer gives the server's socket the smallest send buffer, so
// that a client which does not read holds writes back after a few KiB.
func (p *outPair) shrinkSendBuffer(t *testing.T) {
	t.Helper()
	var serr error
	if err := p.out.raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
}

// newOutPair serves one websocket with the given write timeout; dial, if
// not nil, sets up the client's socket. With hidden, the server's
// connection does not show its socket.
func newOutPair(t *testing.T, timeout time.Duration, hidden bool, dial func(network, address string, c syscall.RawConn) error) *outPair {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener = inner
	if hidden {
		ln = hiddenListener{inner}
	}
	type accepted struct {
		ws  *websocket.Conn
		out *outConn
	}
	got := make(chan accepted, 1)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ow := &outWriter{ResponseWriter: w, timeout: timeout}
		ws, err := websocket.Accept(ow, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		got <- accepted{ws, ow.conn}
	})}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	t.Cleanup(func() {
		hs.Close()
		<-served
	})

	tr := &http.Transport{DialContext: (&net.Dialer{Control: dial}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	client, _, err := websocket.Dial(ctxT(t), "ws://"+ln.Addr().String(), &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.CloseNow() })
	client.SetReadLimit(1 << 20)
	a := <-got
	if a.out != nil {
		// After the close below: a send under way ends with it.
		t.Cleanup(a.out.flushes.Wait)
	}
	// The server's end reads as a session's does, which is what takes in
	// pongs.
	reading := make(chan struct{})
	go func() {
		defer close(reading)
		for {
			if _, _, err := a.ws.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		a.ws.CloseNow()
		<-reading
	})
	if a.out == nil {
		t.Fatal("the websocket did not hijack through the outWriter")
	}
	if (a.out.raw == nil) != hidden {
		t.Fatalf("the connection's socket: %v, hidden %v", a.out.raw, hidden)
	}
	return &outPair{ws: a.ws, out: a.out, client: client}
}

// readN reads n text messages on the client's end.
func (p *outPair) readN(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for range n {
		typ, b, err := p.client.Read(ctxT(t))
		if err != nil {
			t.Fatalf("read after %d messages: %v", len(out), err)
		}
		if typ != websocket.MessageText {
			t.Fatalf("message %d is %v, want text", len(out), typ)
		}
		out = append(out, string(b))
	}
	return out
}

// Messages of every size, from empty to many times the socket's buffers,
// written while the client reads slowly, arrive whole and in order, with
// or without the socket to write to directly; once the client has read
// them nothing is left waiting.
func TestOutConnKeepsOrder(t *testing.T) {
	for _, hidden := range []bool{false, true} {
		t.Run(fmt.Sprintf("hidden=%v", hidden), func(t *testing.T) {
			p := newOutPair(t, 10*time.Second, hidden, smallBuffers)
			bg := context.Background()
			const n = 200
			var want []string
			for i := range n {
				msg := fmt.Sprintf("m%d %s", i, strings.Repeat("x", i*i*3))
				want = append(want, msg)
				if err := p.ws.Write(bg, websocket.MessageText, []byte(msg)); err != nil {
					t.Fatal(err)
				}
			}
			got := p.readN(t, n)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("message %d is %.40q, want %.40q", i, got[i], want[i])
				}
			}
			p.out.flushes.Wait()
			if left := p.out.pendingLen(); left != 0 {
				t.Fatalf("%d bytes still waiting after the client read everything", left)
			}
			// Later writes go straight out again.
			if err := p.ws.Write(bg, websocket.MessageText, []byte("after")); err != nil {
				t.Fatal(err)
			}
			if got := p.readN(t, 1); got[0] != "after" {
				t.Fatalf("got %q after the backlog", got[0])
			}
		})
	}
}

// A client that never reads makes no write wait: what its socket will not
// take is kept (and counted) until the write timeout, which closes the
// connection; every later write fails, and nothing is kept.
func TestOutConnNeverWaitsForAStalledClient(t *testing.T) {
	p := newOutPair(t, 300*time.Millisecond, false, smallBuffers)
	p.shrinkSendBuffer(t)
	bg := context.Background()
	blob := []byte(strings.Repeat("y", 32<<10))
	// The socket's buffers, both ends, take some KiB; 64 writes of 32 KiB
	// each return although the client reads none of it.
	for i := range 64 {
		if err := p.ws.Write(bg, websocket.MessageText, blob); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if got := p.out.pendingLen(); got < 1<<20 {
		t.Fatalf("%d bytes waiting after 2 MiB written to a client that reads nothing", got)
	}
	// The send of the backlog times out and closes the connection.
	p.out.flushes.Wait()
	var err error
	for i := 0; err == nil; i++ {
		if i == 100 {
			t.Fatal("writes still succeed after the send timed out")
		}
		err = p.ws.Write(bg, websocket.MessageText, []byte("more"))
	}
	p.out.mu.Lock()
	failed := p.out.err
	p.out.mu.Unlock()
	if !errors.Is(failed, os.ErrDeadlineExceeded) {
		t.Fatalf("the connection failed with %v, want a timeout", failed)
	}
	if got := p.out.pendingLen(); got != 0 {
		t.Fatalf("%d bytes kept after the connection failed", got)
	}
	if _, err := p.out.Write([]byte("more")); err == nil {
		t.Fatal("a write to the failed connection succeeded")
	}
	// The client, reading at last, finds its stream cut.
	for read := 0; ; read++ {
		if _, _, err := p.client.Read(ctxT(t)); err != nil {
			t.Logf("the client read %d messages, then: %v", read, err)
			break
		}
	}
}

// Writers at once (the hub, the op replies, pings) never interleave
// within a message, and each writer's messages arrive in its order, while
// the client's slow reads keep a backlog coming and going.
func TestOutConnConcurrentWriters(t *testing.T) {
	p := newOutPair(t, 10*time.Second, false, smallBuffers)
	bg := context.Background()
	const writers, each = 4, 300

	read := make(chan error, 1)
	go func() {
		next := make([]int, writers)
		for range writers * each {
			_, b, err := p.client.Read(bg)
			if err != nil {
				read <- err
				return
			}
			var w, i int
			if _, err := fmt.Sscanf(string(b), "w%d %d", &w, &i); err != nil || w < 0 || w >= writers {
				read <- fmt.Errorf("message %.40q", b)
				return
			}
			if want := fmt.Sprintf("w%d %d %s", w, i, strings.Repeat("z", i%7*1000)); string(b) != want {
				read <- fmt.Errorf("message %.40q is not whole", b)
				return
			}
			if i != next[w] {
				read <- fmt.Errorf("writer %d: message %d after %d", w, i, next[w]-1)
				return
			}
			next[w]++
		}
		// Keep reading, so the client answers the pings still to come.
		for {
			if _, _, err := p.client.Read(bg); err != nil {
				read <- nil
				return
			}
		}
	}()

	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				msg := fmt.Sprintf("w%d %d %s", w, i, strings.Repeat("z", i%7*1000))
				if err := p.ws.Write(bg, websocket.MessageText, []byte(msg)); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	var pings sync.WaitGroup
	pings.Add(1)
	go func() {
		defer pings.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := p.ws.Ping(ctxT(t)); err != nil {
				t.Errorf("ping: %v", err)
				return
			}
		}
	}()
	wg.Wait()
	close(done)
	pings.Wait()
	p.ws.Close(websocket.StatusNormalClosure, "")
	if err := <-read; err != nil {
		t.Fatal(err)
	}
}

// Once greeted, a client of the server is written to by the hub itself:
// its queue stays empty while it hears each event.
func TestHubWritesToGreetedClientsItself(t *testing.T) {
	r := newRig(t, Options{}, "-hang")
	ctx := ctxT(t)
	peers := []*peer{r.dial(t, ""), r.dial(t, ""), r.dial(t, "")}
	direct := func() (n int) {
		r.srv.hub.mu.Lock()
		defer r.srv.hub.mu.Unlock()
		for c := range r.srv.hub.clients {
			if c.out != nil {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(10 * time.Second); direct() < len(peers); {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d greeted clients are written to by the hub", direct(), len(peers))
		}
		time.Sleep(time.Millisecond)
	}
	for i := range 20 {
		if err := r.m.Post(ctx, procmon.Event{Message: fmt.Sprintf("note %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range peers {
		for i := range 20 {
			m := p.next(procmon.EventNotice)
			if got := string(m.Fields["message"]); got != fmt.Sprintf("%q", fmt.Sprintf("note %d", i)) {
				t.Fatalf("got %s, want note %d", got, i)
			}
		}
	}
	r.srv.hub.mu.Lock()
	defer r.srv.hub.mu.Unlock()
	for c := range r.srv.hub.clients {
		if len(c.q) != 0 {
			t.Fatalf("%d events went through a greeted client's queue", len(c.q))
		}
	}
}

// pendingLen is how many bytes wait for the socket: those pending, and
// those of the send under way, which stay in memory until it ends.
func (c *outConn) pendingLen() int {
	queued, sending, _, _ := c.backlog()
	return queued + sending
}
