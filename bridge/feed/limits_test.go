package feed

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// When Run and the monitor are stopped at the same moment, as a process
// that shares one context between them does, clients still get the
// monitor's last events before the close.
func TestFinalEventsWhenRunAndMonitorStopTogether(t *testing.T) {
	m, err := procmon.New(procmon.Config{Command: []string{fakeBridge, "-hang"}, Backoff: fast, StopTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Monitor: m, Listen: "127.0.0.1:0", Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served, ran := make(chan error, 1), make(chan error, 1)
	go func() { served <- srv.Run(ctx) }()
	go func() { ran <- m.Run(ctx) }()
	r := &rig{m: m, srv: srv}
	p := r.dial(t, "")
	p.untilState(procmon.StateRunning)
	cancel()
	p.next(procmon.EventStopping)
	p.next(procmon.EventExited)
	p.next(procmon.EventStopped)
	_, _, err = p.ws.Read(ctxT(t))
	if !isClose(err, websocket.StatusGoingAway) {
		t.Fatalf("after stopped: %v, want close 1001", err)
	}
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// rawGet sends one request as it is written, on a new TCP connection, and
// returns the response.
func rawGet(t *testing.T, addr, request string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Probes of container runtimes and load balancers may speak HTTP/1.0 and
// send no Host; the Host check that defeats DNS rebinding still guards
// everything that is not a probe.
func TestProbesAnswerHTTP10WithoutHost(t *testing.T) {
	r := newRig(t, Options{}, "-hang")
	r.dial(t, "").untilState(procmon.StateRunning)
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/v1/status": 400, "/v1/events": 400} {
		if code, body := rawGet(t, r.srv.Addr(), "GET "+path+" HTTP/1.0\r\n\r\n"); code != want {
			t.Errorf("HTTP/1.0 GET %s without Host: %d %s, want %d", path, code, body, want)
		}
	}
	if code, body := rawGet(t, r.srv.Addr(), "GET /healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n"); code != 200 {
		t.Errorf("GET /healthz with a foreign Host: %d %s, want 200", code, body)
	}
	if code, _ := rawGet(t, r.srv.Addr(), "GET /v1/status HTTP/1.1\r\nHost: evil.example\r\n\r\n"); code != 400 {
		t.Errorf("GET /v1/status with a foreign Host: %d, want 400", code)
	}
}

// A keep-alive connection that stays idle is closed after IdleTimeout.
func TestIdleKeepAliveConnectionClosed(t *testing.T) {
	r := newRig(t, Options{IdleTimeout: 50 * time.Millisecond}, "-hang")
	c, err := net.Dial("tcp", r.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Close {
		t.Fatal("the server closed the connection after one request; the test needs keep-alive")
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("read on the idle connection: %v, want EOF", err)
	}
}

const fdLimitEnv = "FEED_TEST_FD_LIMIT_CHILD"

// Under a low file descriptor limit, a crowd of idle connections cannot
// take the descriptors the sidecar needs to spawn the bridge: the server
// holds at most MaxConns, derived from the limit, and the rest wait in the
// kernel's backlog until idle ones are closed. The server runs in a child
// process with RLIMIT_NOFILE at 200; this process opens the connections.
func TestConnectionCapLeavesFDsForSpawn(t *testing.T) {
	if os.Getenv(fdLimitEnv) != "" {
		fdLimitChild(t)
		return
	}
	const conns = 400
	cmd := exec.Command(os.Args[0], "-test.run=^TestConnectionCapLeavesFDsForSpawn$")
	cmd.Env = append(os.Environ(), fdLimitEnv+"=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("child: %v\n%s", err, stderr.String())
		}
	}()
	lines := bufio.NewScanner(stdout)
	line := func() string {
		t.Helper()
		for lines.Scan() {
			if l := lines.Text(); strings.HasPrefix(l, "child: ") {
				return strings.TrimPrefix(l, "child: ")
			}
		}
		t.Fatalf("the child ended early: %v\n%s", lines.Err(), stderr.String())
		return ""
	}
	var addr string
	var limit int
	if _, err := fmt.Sscanf(line(), "addr %s cap %d", &addr, &limit); err != nil {
		t.Fatal(err)
	}
	t.Logf("the server holds at most %d connections under a limit of 200 descriptors", limit)

	// Every connection sends a request and then stays open, idle.
	answered := make(chan error, conns)
	var wg sync.WaitGroup
	defer wg.Wait()
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			answered <- err
		}()
	}
	// Once as many as the server holds have their answer, it holds that
	// many idle connections (or has closed some, and holds others).
	for range min(limit, 150) {
		if err := <-answered; err != nil {
			t.Fatal(err)
		}
	}
	io.WriteString(stdin, "restart\n")
	if got := line(); got != "started" {
		t.Fatalf("restarting the bridge with the server full: %s", got)
	}
	// Idle connections are closed, and the waiting ones are served in turn.
	for range conns - min(limit, 150) {
		if err := <-answered; err != nil {
			t.Fatal(err)
		}
	}
}

// fdLimitChild is the server of TestConnectionCapLeavesFDsForSpawn. It
// says "child: addr ADDR cap N", restarts the bridge when told "restart"
// and says how that went, and stops when its stdin ends.
func fdLimitChild(t *testing.T) {
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 200, Max: 200}); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, Options{IdleTimeout: 300 * time.Millisecond}, "-hang")
	fmt.Printf("child: addr %s cap %d\n", r.srv.Addr(), r.srv.opts.MaxConns)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() != "restart" {
			continue
		}
		sub, _ := r.m.Subscribe(256)
		if err := r.m.Restart(ctxT(t)); err != nil {
			fmt.Printf("child: restart: %v\n", err)
			sub.Close()
			continue
		}
		for ev := range sub.C {
			if ev.Kind == procmon.EventStarted {
				fmt.Println("child: started")
				break
			}
			if ev.Kind == procmon.EventSpawnFailed {
				fmt.Printf("child: spawn_failed: %s\n", ev.Exit.Error)
				break
			}
		}
		sub.Close()
	}
}

// A thousand 2 KB lines of output made every event several MiB, and
// clients that accept the 1 MiB the protocol promises were closed with
// 1009. They now read the exit and the events after it.
func TestLongTailFitsClientsOfOneMiB(t *testing.T) {
	r := newRigConfig(t, procmon.Config{TailLines: 1000, Backoff: procmon.Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 2, Reset: time.Hour}},
		Options{}, "-spew", "2048000", "-line", "2048", "-exit", "1")
	p := r.dial(t, testToken)
	p.ws.SetReadLimit(1 << 20)
	ex := p.next(procmon.EventExited)
	if rec := ex.Exit(); len(rec.Tail) == 0 || !strings.HasPrefix(rec.Tail[len(rec.Tail)-1], "spew done") {
		t.Fatalf("the tail does not end with the last line: %d lines", len(rec.Tail))
	}
	p.next(procmon.EventBackoff)
	// A new client's hello carries the same exit record.
	if q := r.dial(t, ""); q.hello.Status.LastExit == nil {
		t.Fatal("the hello has no last exit")
	}
}

// Whatever the fields of an event, its message fits in 1 MiB: the exit
// record's tail gives up its oldest lines first, with a line that says so,
// then the largest fields of the layer above go.
func TestEventsFitInOneMiB(t *testing.T) {
	var tail []string
	for i := range 120 {
		tail = append(tail, fmt.Sprintf("%04d %s", i, strings.Repeat("\x01", 2000))) // six bytes each in JSON
	}
	rec := &procmon.ExitRecord{Pid: 42, Class: procmon.ClassFailure, Tail: tail}
	ev := procmon.Event{
		Seq: 7, Kind: procmon.EventExited, Exit: rec,
		Status:  procmon.Status{State: procmon.StateBackoff, LastExit: rec},
		Data:    map[string]any{"blob": strings.Repeat("d", maxFrame), "small": "kept"},
		Private: map[string]any{"secret": strings.Repeat("p", maxFrame), "qr": "2@abc"},
	}
	tap := newLogTap()
	h := newHub(slog.New(tap), 8<<20, 256)
	f := h.encode(ev)
	if len(f.status) > maxStatus {
		t.Fatalf("status is %d bytes, want at most %d", len(f.status), maxStatus)
	}
	for name, msg := range map[string][]byte{"public": f.public, "private": f.private} {
		if len(msg) > maxFrame {
			t.Fatalf("%s message is %d bytes, want at most %d", name, len(msg), maxFrame)
		}
		m, err := DecodeMessage(msg)
		if err != nil {
			t.Fatal(err)
		}
		got := m.Exit().Tail
		if len(got) < 20 || !strings.Contains(got[0], "earlier lines left out") || got[len(got)-1] != tail[len(tail)-1] {
			t.Fatalf("%s tail: %d lines, first %.60q", name, len(got), got[0])
		}
		if m.Fields["blob"] != nil || m.Fields["secret"] != nil || !m.Field("small", new(string)) {
			t.Fatalf("%s message: the large fields are not the ones left out", name)
		}
		if st := m.Status.LastExit; st == nil || !strings.Contains(st.Tail[0], "earlier lines left out") {
			t.Fatalf("%s message: the snapshot's exit record was not cut", name)
		}
	}
	var qr string
	if m, _ := DecodeMessage(f.private); !m.Field("qr", &qr) {
		t.Fatal("the token holders' message lost its small private field")
	}
	tap.waitLog(t, "event field left out")
}

// A client that has stopped reading is dropped once the events queued for
// it pass QueueBytes, long before QueueLen events, and told so with 1008.
func TestStalledClientDroppedByQueuedBytes(t *testing.T) {
	r := newRig(t, Options{QueueLen: 100000, QueueBytes: 1 << 20, WriteTimeout: time.Minute}, "-hang")
	ctx := ctxT(t)
	// The reading client paces the events: once it has one, the hub has
	// queued it for the stalled client too.
	pacer := r.dial(t, "")
	pacer.ws.SetReadLimit(1 << 20)
	slow := dialSlow(t, r)
	// The hello comes after the client joined the hub; then it stops reading.
	if _, err := readHello(ctx, slow); err != nil {
		t.Fatal(err)
	}
	blob := strings.Repeat("x", 64<<10)
	posted := 0
	for r.srv.hub.count() > 1 {
		if posted == 500 {
			t.Fatalf("the stalled client is still connected after %d events of 64 KiB", posted)
		}
		if err := r.m.Post(ctx, procmon.Event{Message: "filler", Data: map[string]any{"blob": blob}}); err != nil {
			t.Fatal(err)
		}
		pacer.next(procmon.EventNotice)
		posted++
	}
	t.Logf("dropped after %d events of 64 KiB", posted)
	slow.SetReadLimit(1 << 20)
	if err := readToEnd(ctx, slow); !isClose(err, websocket.StatusPolicyViolation) {
		t.Fatalf("the stalled client: %v, want close 1008", err)
	}
}

// A token holder that connects after the QR code was drawn finds it in
// the hello, as the qr event it would have received; a client without
// the token does not, and once the bridge is connected nobody does.
func TestHelloCarriesTheQRWhilePairing(t *testing.T) {
	r := newRig(t, Options{}, "-hang")
	p := r.dial(t, testToken)
	p.untilState(procmon.StateRunning)
	rows := []string{"█▀▀▀█ ▄ █▀▀▀█", "█ ▀ █ ▄ █ ▀ █"}
	err := r.m.Post(ctxT(t), procmon.Event{
		Kind: "qr", Message: "waiting for a QR scan",
		Data:    map[string]any{"source": "terminal", "count": 1},
		Private: map[string]any{"qr_rows": rows},
	})
	if err != nil {
		t.Fatal(err)
	}
	sent := p.next("qr")

	late := r.dial(t, testToken)
	raw, ok := late.hello.Fields["qr"]
	if !ok {
		t.Fatalf("the hello of a token holder has no qr: %s", rawHello(late))
	}
	m, err := DecodeMessage(raw)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var source string
	var count int
	if m.Type != TypeEvent || m.Event != "qr" || m.Seq != sent.Seq || !m.Field("qr_rows", &got) || len(got) != 2 || got[0] != rows[0] ||
		!m.Field("source", &source) || source != "terminal" || !m.Field("count", &count) || count != 1 {
		t.Fatalf("the hello's qr is not the qr event: %s", raw)
	}
	if anon := r.dial(t, ""); anon.hello.Fields["qr"] != nil {
		t.Fatalf("a client without the token got the QR in its hello: %s", rawHello(anon))
	}

	if err := r.m.Post(ctxT(t), procmon.Event{Kind: "connected"}); err != nil {
		t.Fatal(err)
	}
	p.next("connected")
	if after := r.dial(t, testToken); after.hello.Fields["qr"] != nil {
		t.Fatalf("the QR is still in the hello after connected: %s", rawHello(after))
	}
}

func rawHello(p *peer) string {
	b, _ := json.Marshal(p.hello.Fields)
	return string(b)
}

// When every connection the server may hold is an idle keep-alive, a new
// connection is not kept waiting until one times out: the longest idle
// one is closed to make room.
func TestIdleConnectionsMakeRoomForProbes(t *testing.T) {
	const max = 4
	r := newRig(t, Options{MaxConns: max, IdleTimeout: time.Hour}, "-hang")
	for range max {
		idleKeepAlive(t, r.srv.Addr())
	}
	if code, body := rawGet(t, r.srv.Addr(), "GET /healthz HTTP/1.0\r\n\r\n"); code != 200 {
		t.Fatalf("a probe with every connection idle: %d %s", code, body)
	}
}

// idleKeepAlive opens a connection to addr that has had one answer and
// stays open, idle; the test's end closes it.
func idleKeepAlive(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// Websockets hold connections too: with every websocket place taken and
// the rest of the connections idle keep-alives, a probe is not kept
// waiting until one times out. (The reaper once stopped counting a
// connection when the websocket took it over, so it never found the
// server full, and probes waited in the backlog.)
func TestIdleConnectionsMakeRoomForProbesBesideWebsockets(t *testing.T) {
	const max = 8
	// The websockets stay: no ping asks them to answer while the test runs.
	r := newRig(t, Options{MaxConns: max, IdleTimeout: time.Hour, PingInterval: time.Hour}, "-hang")
	clients, _ := clientLimits(&r.srv.opts)
	for range clients {
		r.dial(t, testToken)
	}
	for range max - clients {
		idleKeepAlive(t, r.srv.Addr())
	}
	if code, body := rawGet(t, r.srv.Addr(), "GET /healthz HTTP/1.0\r\n\r\n"); code != 200 {
		t.Fatalf("a probe with every websocket place taken and the other connections idle: %d %s", code, body)
	}
}
