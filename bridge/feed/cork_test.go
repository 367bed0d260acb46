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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// countingListener counts the writes made to the connections it accepts,
// that is the writes that reach the socket.
type countingListener struct {
	net.Listener
	writes atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &l.writes}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}

// corkPair is a websocket accepted through a corkWriter on a real loopback
// socket, and the client's end of it.
type corkPair struct {
	ws     *websocket.Conn // the server's end
	cc     *corkConn
	client *websocket.Conn
	ln     *countingListener
}

// newCorkPair serves one websocket with the given write timeout; dial, if
// not nil, sets up the client's socket.
func newCorkPair(t *testing.T, timeout time.Duration, dial func(network, address string, c syscall.RawConn) error) *corkPair {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &countingListener{Listener: inner}
	type accepted struct {
		ws *websocket.Conn
		cc *corkConn
	}
	got := make(chan accepted, 1)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &corkWriter{ResponseWriter: w, timeout: timeout}
		ws, err := websocket.Accept(cw, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		got <- accepted{ws, cw.conn}
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
	if a.cc == nil {
		t.Fatal("the websocket did not hijack through the corkWriter")
	}
	return &corkPair{ws: a.ws, cc: a.cc, client: client, ln: ln}
}

// readN reads n text messages on the client's end.
func (p *corkPair) readN(t *testing.T, n int) []string {
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

func (c *corkConn) buffered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buf)
}

func TestCorkedFramesArriveSeparatelyInOrder(t *testing.T) {
	p := newCorkPair(t, 10*time.Second, nil)
	bg := context.Background()

	// Uncorked, each message is a write of its own.
	before := p.ln.writes.Load()
	for i := range 3 {
		if err := p.ws.Write(bg, websocket.MessageText, []byte(fmt.Sprintf("plain %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.ln.writes.Load() - before; got != 3 {
		t.Fatalf("3 uncorked messages took %d writes", got)
	}

	// Corked, a batch goes out in one write, sizes from empty to larger
	// than the websocket's own buffer.
	const n = 100
	var want []string
	p.cc.cork()
	before = p.ln.writes.Load()
	for i := range n {
		msg := fmt.Sprintf("corked %d %s", i, strings.Repeat("x", i*i))
		if i == 0 {
			msg = ""
		}
		want = append(want, msg)
		if err := p.ws.Write(bg, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.ln.writes.Load() - before; got != 0 {
		t.Fatalf("%d writes reached the socket while corked", got)
	}
	if err := p.cc.uncork(); err != nil {
		t.Fatal(err)
	}
	if got := p.ln.writes.Load() - before; got != 1 {
		t.Fatalf("a corked batch of %d messages took %d writes, want 1", n, got)
	}
	if p.cc.buffered() != 0 {
		t.Fatalf("%d bytes left corked after uncork", p.cc.buffered())
	}

	got := p.readN(t, 3+n)
	for i := range 3 {
		if got[i] != fmt.Sprintf("plain %d", i) {
			t.Fatalf("message %d is %.40q", i, got[i])
		}
	}
	for i, w := range want {
		if got[3+i] != w {
			t.Fatalf("corked message %d is %.40q, want %.40q", i, got[3+i], w)
		}
	}

	// An empty batch writes nothing; later writes go straight out.
	p.cc.cork()
	before = p.ln.writes.Load()
	if err := p.cc.uncork(); err != nil {
		t.Fatal(err)
	}
	if err := p.ws.Write(bg, websocket.MessageText, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if got := p.ln.writes.Load() - before; got != 1 {
		t.Fatalf("an empty batch and a message took %d writes, want 1", got)
	}
	if got := p.readN(t, 1); got[0] != "after" {
		t.Fatalf("got %q after an empty batch", got[0])
	}
}

func TestPingDuringCorkedBatch(t *testing.T) {
	p := newCorkPair(t, 10*time.Second, nil)
	bg := context.Background()
	// The client answers pings only while it reads.
	read := make(chan []string, 1)
	go func() {
		var out []string
		for {
			_, b, err := p.client.Read(bg)
			if err != nil {
				read <- out
				return
			}
			out = append(out, string(b))
		}
	}()

	p.cc.cork()
	if err := p.ws.Write(bg, websocket.MessageText, []byte("one")); err != nil {
		t.Fatal(err)
	}
	held := p.cc.buffered()
	pinged := make(chan error, 1)
	go func() { pinged <- p.ws.Ping(ctxT(t)) }()
	// Wait until the ping frame has been written into the batch.
	for deadline := time.Now().Add(10 * time.Second); p.cc.buffered() == held; {
		if time.Now().After(deadline) {
			t.Fatal("the ping was not written within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.ws.Write(bg, websocket.MessageText, []byte("two")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-pinged:
		t.Fatalf("the ping returned while its frame was corked: %v", err)
	default:
	}
	if err := p.cc.uncork(); err != nil {
		t.Fatal(err)
	}
	if err := <-pinged; err != nil {
		t.Fatalf("ping: %v", err)
	}

	p.ws.Close(websocket.StatusNormalClosure, "")
	if got := <-read; strings.Join(got, ",") != "one,two" {
		t.Fatalf("the client read %q, want one, two", got)
	}
}

func TestCorkWriteTimeoutClosesConnection(t *testing.T) {
	p := newCorkPair(t, 200*time.Millisecond, smallBuffers)
	bg := context.Background()
	blob := []byte(strings.Repeat("y", 32<<10))

	// The client never reads: the socket's buffers fill, and a write
	// then waits until the deadline.
	var err error
	for i := 0; err == nil; i++ {
		if i == 10000 {
			t.Fatal("10000 messages of 32 KiB written to a client that never reads")
		}
		corked := i%2 == 1
		if corked {
			p.cc.cork()
		}
		err = p.ws.Write(bg, websocket.MessageText, blob)
		if corked {
			if uerr := p.cc.uncork(); err == nil {
				err = uerr
			}
		}
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the write failed with %v, want a timeout", err)
	}
	if p.cc.buffered() != 0 {
		t.Fatalf("%d bytes held after the write failed", p.cc.buffered())
	}
	// The connection is closed: every later write fails, corked or not,
	// and the client, reading at last, finds its stream cut.
	if err := p.ws.Write(bg, websocket.MessageText, []byte("more")); err == nil {
		t.Fatal("a write after the timeout succeeded")
	}
	p.cc.cork()
	if _, err := p.cc.Write([]byte("more")); err == nil {
		t.Fatal("a corked write after the timeout succeeded")
	}
	if err := p.cc.uncork(); err == nil {
		t.Fatal("uncork after the timeout succeeded")
	}
	var read int
	for {
		_, _, err := p.client.Read(ctxT(t))
		if err != nil {
			t.Logf("the client read %d messages, then: %v", read, err)
			break
		}
		read++
	}
}

func TestCorkConcurrentWriters(t *testing.T) {
	p := newCorkPair(t, 10*time.Second, nil)
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
				read <- fmt.Errorf("message %q", b)
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
				msg := fmt.Sprintf("w%d %d %s", w, i, strings.Repeat("z", i%7*100))
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
	// Meanwhile cork and uncork as a session's writer does.
	corking := make(chan struct{})
	go func() {
		defer close(corking)
		for {
			select {
			case <-done:
				return
			default:
			}
			p.cc.cork()
			time.Sleep(50 * time.Microsecond)
			if err := p.cc.uncork(); err != nil {
				t.Errorf("uncork: %v", err)
				return
			}
		}
	}()
	wg.Wait()
	close(done)
	<-corking
	pings.Wait()
	if p.cc.buffered() != 0 {
		t.Fatalf("%d bytes left corked", p.cc.buffered())
	}
	p.ws.Close(websocket.StatusNormalClosure, "")
	if err := <-read; err != nil {
		t.Fatal(err)
	}
}

func TestWriteFramesBatchesWhatIsQueued(t *testing.T) {
	p := newCorkPair(t, 10*time.Second, nil)
	s := &Server{opts: Options{WriteTimeout: 10 * time.Second}}
	ctx := context.Background()
	const n = batchFrames + 10
	c := newClient(n+1, false, 0)
	for i := range n {
		pub := []byte(fmt.Sprintf("public %d", i))
		c.q <- &frame{seq: uint64(i), public: pub, private: append([]byte("private "), pub...)}
	}
	close(c.q)

	// The first batch stops at its bound, the second at the closed queue;
	// each goes out in one write.
	var sent []string
	for batch := 0; ; batch++ {
		before := p.ln.writes.Load()
		f := <-c.q
		c.trusted = batch == 1
		open, err := s.writeFrames(ctx, p.ws, p.cc, c, f)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.ln.writes.Load() - before; got != 1 {
			t.Fatalf("batch %d took %d writes", batch, got)
		}
		if p.cc.buffered() != 0 {
			t.Fatalf("batch %d left %d bytes corked", batch, p.cc.buffered())
		}
		want := batchFrames
		if batch == 1 {
			want = n - batchFrames
		}
		sent = append(sent, p.readN(t, want)...)
		if !open {
			break
		}
		if batch == 1 {
			t.Fatal("the closed queue was not noticed")
		}
	}
	for i, msg := range sent {
		want := fmt.Sprintf("public %d", i)
		if i >= batchFrames {
			want = "private " + want
		}
		if msg != want {
			t.Fatalf("message %d is %q, want %q", i, msg, want)
		}
	}
	if len(sent) != n {
		t.Fatalf("%d messages sent, want %d", len(sent), n)
	}
}
