package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
	"github.com/wa-sidecar/wa-sidecar/procmon"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

func TestHelloThenOrderedEventsAcrossCrash(t *testing.T) {
	r := newRig(t, Options{}, "-hang")
	p := r.dial(t, "")
	h := p.hello
	if h.Protocol != Protocol || h.Sidecar == nil || h.Sidecar.Pid != os.Getpid() || h.Sidecar.Version != "test" {
		t.Fatalf("hello = %+v, sidecar %+v", h, h.Sidecar)
	}
	if h.Control || h.Status == nil {
		t.Fatalf("hello without token: control %v, status %v", h.Control, h.Status)
	}
	pid := p.untilState(procmon.StateRunning).Status.Pid

	// A death by SIGHUP is a crash: exited, backoff, then a new child.
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	ex := p.next(procmon.EventExited)
	var code *int
	var sig string
	var rc int
	var class procmon.Class
	var tail []string
	if !ex.Field("code", &code) || code != nil || !ex.Field("signal", &sig) || sig != "SIGHUP" ||
		!ex.Field("returncode", &rc) || rc != -1 || !ex.Field("class", &class) || class != procmon.ClassFailure ||
		!ex.Field("tail", &tail) {
		t.Fatalf("exited event fields wrong: %s", raw(ex))
	}
	for _, k := range []string{"pid", "requested", "uptime_ms"} {
		if _, ok := ex.Fields[k]; !ok {
			t.Errorf("exited event lacks %q: %s", k, raw(ex))
		}
	}
	if rec := ex.Exit(); rec == nil || rec.Pid != pid || rec.Signal == nil || *rec.Signal != "SIGHUP" {
		t.Fatalf("Exit() = %+v", rec)
	}
	if ex.Status.LastExit == nil || ex.Status.LastExit.Pid != pid || ex.Status.ConsecutiveFailures != 1 {
		t.Fatalf("status after the crash: %+v", ex.Status)
	}
	bo := p.read()
	var delay int64
	var attempt int
	if bo.Event != procmon.EventBackoff || !bo.Field("delay_ms", &delay) || !bo.Field("attempt", &attempt) || attempt != 2 {
		t.Fatalf("event after the crash: %s", raw(bo))
	}
	if bo.Status.State != procmon.StateBackoff || bo.Status.NextStartAt == nil {
		t.Fatalf("status in backoff: %+v", bo.Status)
	}
	st := p.next(procmon.EventStarted)
	if st.Status.Pid == pid || st.Status.Pid == 0 || st.Status.Restarts != 1 {
		t.Fatalf("respawn: %+v", st.Status)
	}

	// Every event carries the snapshot with the fields clients rely on.
	var snap map[string]json.RawMessage
	if err := json.Unmarshal(st.Fields["status"], &snap); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"state", "pid", "since", "ready", "restarts", "consecutive_failures", "crashloop", "last_exit", "next_start_at"} {
		if _, ok := snap[k]; !ok {
			t.Errorf("snapshot lacks %q", k)
		}
	}

	// A client joining now starts from the latest event.
	late := r.dial(t, "")
	if late.hello.Seq != p.seq || late.hello.Status.Pid != st.Status.Pid {
		t.Fatalf("late hello seq %d pid %d, want %d %d", late.hello.Seq, late.hello.Status.Pid, p.seq, st.Status.Pid)
	}
}

func raw(m Message) string {
	b, _ := json.Marshal(m.Fields)
	return string(b)
}

func TestControlOps(t *testing.T) {
	r := newRig(t, Options{}, "-hang")
	ro := r.dial(t, "")
	rw := r.dial(t, testToken)
	if !rw.hello.Control {
		t.Fatal("hello with the token: control false")
	}
	rw.untilState(procmon.StateRunning)

	for _, op := range []string{OpRestart, OpStop, OpStart} {
		res := ro.op(op, "a")
		if res.OK || !strings.Contains(res.Error, "token") || string(res.ID) != `"a"` {
			t.Fatalf("%s without the token: ok %v, error %q, id %s", op, res.OK, res.Error, res.ID)
		}
	}
	if res := ro.op(OpStatus, 7); !res.OK || res.Status == nil || string(res.ID) != "7" {
		t.Fatalf("status without the token: %+v", res)
	}
	if res := ro.op(OpPing, nil); !res.OK || string(res.ID) != "null" {
		t.Fatalf("ping: %+v id %s", res, res.ID)
	}

	if res := rw.op(OpStop, "s"); !res.OK || res.Status == nil {
		t.Fatalf("stop: %+v", res)
	}
	ex := rw.next(procmon.EventExited)
	if rec := ex.Exit(); rec.Class != procmon.ClassRequested || !rec.Requested {
		t.Fatalf("exit after stop: %+v", rec)
	}
	rw.next(procmon.EventStopped)
	if res := rw.op(OpStart, "g"); !res.OK {
		t.Fatalf("start: %+v", res)
	}
	first := rw.next(procmon.EventStarted).Status.Pid
	if res := rw.op(OpRestart, "r"); !res.OK {
		t.Fatalf("restart: %+v", res)
	}
	rw.next(procmon.EventExited)
	second := rw.next(procmon.EventStarted).Status.Pid
	if second == first {
		t.Fatal("restart kept the same pid")
	}
	// The read-only client saw the same stream, without gaps.
	if err := r.m.Post(ctxT(t), procmon.Event{Message: "sync"}); err != nil {
		t.Fatal(err)
	}
	ro.next(procmon.EventNotice)
	rw.next(procmon.EventNotice)
	if ro.seq != rw.seq {
		t.Fatalf("read-only client at seq %d, control client at %d", ro.seq, rw.seq)
	}

	_, err := r.client(t, "wrong").Events(ctxT(t))
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %v", err)
	}
}

func TestControlOpsAreRateLimited(t *testing.T) {
	r := newRig(t, Options{ControlPerSecond: 0.001}, "-hang")
	p := r.dial(t, testToken)
	p.untilState(procmon.StateRunning)
	for i := range 5 {
		// start while running fails in the monitor, but counts as an op
		if res := p.op(OpStart, i); strings.Contains(res.Error, "too many") {
			t.Fatalf("op %d refused within the burst: %s", i, res.Error)
		}
	}
	if res := p.op(OpStart, 5); res.OK || !strings.Contains(res.Error, "too many control ops") {
		t.Fatalf("sixth control op: %+v", res)
	}
	if res := p.op(OpPing, 6); !res.OK {
		t.Fatalf("ping after the control limit: %+v", res)
	}
}

func TestCrossOriginRefused(t *testing.T) {
	r := newRig(t, Options{AllowOrigins: []string{"app.example.com"}}, "-hang")
	url := "ws://" + r.srv.Addr() + "/v1/events"
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"http://" + r.srv.Addr(), true},
		{"https://app.example.com", true},
		{"https://evil.example.com", false},
		{"http://localhost:9999", false},
		{"null", false},
	} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		ws, resp, err := websocket.Dial(ctxT(t), url, &websocket.DialOptions{HTTPHeader: h})
		if tc.ok {
			if err != nil {
				t.Errorf("origin %q refused: %v", tc.origin, err)
				continue
			}
			ws.CloseNow()
			continue
		}
		if err == nil {
			ws.CloseNow()
			t.Errorf("origin %q accepted", tc.origin)
		} else if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("origin %q: %v, want 403", tc.origin, err)
		}
	}

	// A page that rebinds its own name to 127.0.0.1 is refused by Host.
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, "http://"+r.srv.Addr()+"/v1/status", nil)
	req.Host = "rebind.example.com"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("foreign Host: %s, want 400", resp.Status)
	}
}

// On a listener beyond loopback, requests from this machine still get the
// Host check, so a rebinding page in a local browser gets no read access;
// the host named in --listen is allowed.
func TestHostCheckBeyondLoopback(t *testing.T) {
	r := newRig(t, Options{Listen: "0.0.0.0:0"}, "-hang")
	_, port, _ := net.SplitHostPort(r.srv.Addr())
	for host, want := range map[string]int{
		"rebind.example.com": http.StatusBadRequest,
		"127.0.0.1:" + port:  http.StatusOK,
		"localhost":          http.StatusOK,
		"0.0.0.0:" + port:    http.StatusOK,
	} {
		req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, "http://127.0.0.1:"+port+"/v1/status", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %s, want %d", host, resp.Status, want)
		}
	}
}

// A client given the address of a server that listens on every address,
// as its sidecar.json names it ([::]:port) or as --listen gave it
// (0.0.0.0:port), reaches it: a Host of [::] would be refused.
func TestClientReachesAServerOnEveryAddress(t *testing.T) {
	r := newRig(t, Options{Listen: "0.0.0.0:0"}, "-hang")
	_, port, _ := net.SplitHostPort(r.srv.Addr())
	for _, addr := range []string{r.srv.Addr(), "0.0.0.0:" + port, "[::]:" + port, ":" + port} {
		c, err := NewClient(addr, "")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Get(ctxT(t), "/v1/status")
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("client for %s: %s, want 200", addr, resp.Status)
		}
		ws, err := c.Events(ctxT(t))
		if err != nil {
			t.Errorf("client for %s: events: %v", addr, err)
		} else {
			ws.CloseNow()
		}
		c.Close()
	}
}

func TestMalformedAndOversizedFrames(t *testing.T) {
	r := newRig(t, Options{MaxMessageBytes: 1024}, "-hang")
	p := r.dial(t, "")
	for _, tc := range []struct{ send, want, id string }{
		{"not json", "not a JSON object", "null"},
		{`["op","ping"]`, "not a JSON object", "null"},
		{`{"op":"fly","id":"x"}`, "unknown op", `"x"`},
		{`{"id":1}`, `missing "op"`, "1"},
		{`{"op":7}`, `"op" must be a string`, "null"},
		{`{"op":"ping","id":{"a":1}}`, `"id" must be a string or a number`, "null"},
	} {
		res := p.send(tc.send)
		if res.OK || !strings.Contains(res.Error, tc.want) || string(res.ID) != tc.id {
			t.Errorf("%s: ok %v error %q id %s; want error with %q, id %s", tc.send, res.OK, res.Error, res.ID, tc.want, tc.id)
		}
	}
	if err := p.ws.Write(ctxT(t), websocket.MessageBinary, []byte(`{"op":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	for {
		if m := p.read(); m.Type == TypeResult {
			if m.OK || !strings.Contains(m.Error, "text messages") {
				t.Fatalf("binary op: %+v", m)
			}
			break
		}
	}
	if res := p.op(OpPing, "still-open"); !res.OK {
		t.Fatalf("ping after bad input: %+v", res)
	}

	big := `{"op":"ping","id":"` + strings.Repeat("x", 2048) + `"}`
	if err := p.ws.Write(ctxT(t), websocket.MessageText, []byte(big)); err != nil {
		t.Fatal(err)
	}
	for {
		_, _, err := p.ws.Read(ctxT(t))
		if err == nil {
			continue
		}
		if !isClose(err, websocket.StatusMessageTooBig) {
			t.Fatalf("after an oversized frame: %v, want close 1009", err)
		}
		break
	}
}

// follow reads events after seq until one satisfies done, checking that
// no seq is skipped. It runs in its own goroutine, so it returns errors.
func follow(ctx context.Context, ws *websocket.Conn, seq uint64, done func(Message) bool) (uint64, error) {
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			return seq, err
		}
		m, err := DecodeMessage(b)
		if err != nil {
			return seq, err
		}
		if m.Type != TypeEvent {
			continue
		}
		if m.Seq != seq+1 {
			return seq, fmt.Errorf("seq %d after %d", m.Seq, seq)
		}
		seq = m.Seq
		if done(m) {
			return seq, nil
		}
	}
}

func readHello(ctx context.Context, ws *websocket.Conn) (Message, error) {
	_, b, err := ws.Read(ctx)
	if err != nil {
		return Message{}, err
	}
	m, err := DecodeMessage(b)
	if err == nil && m.Type != TypeHello {
		err = fmt.Errorf("first message %q", m.Type)
	}
	return m, err
}

func isMarker(text string) func(Message) bool {
	return func(m Message) bool {
		return m.Event == procmon.EventNotice && m.Fields["message"] != nil && strings.Contains(string(m.Fields["message"]), text)
	}
}

func TestThousandConcurrentClients(t *testing.T) {
	const n = 1000
	r := newRig(t, Options{}, "-hang")
	c := r.client(t, testToken) // clients without it have three quarters of the places
	ctx := ctxT(t)
	type result struct {
		seq uint64
		err error
	}
	results := make(chan result, n)
	var ready sync.WaitGroup
	ready.Add(n)
	sem := make(chan struct{}, 32)
	for range n {
		go func() {
			sem <- struct{}{}
			ws, err := c.Events(ctx)
			var h Message
			if err == nil {
				h, err = readHello(ctx, ws)
			}
			<-sem
			ready.Done()
			if err != nil {
				results <- result{err: err}
				return
			}
			defer ws.CloseNow()
			seq, err := follow(ctx, ws, h.Seq, isMarker("fan-out"))
			results <- result{seq, err}
		}()
	}
	ready.Wait()
	if got := r.srv.Clients(); got != n {
		t.Fatalf("%d clients connected, want %d", got, n)
	}
	if err := r.m.Post(ctx, procmon.Event{Message: "fan-out"}); err != nil {
		t.Fatal(err)
	}
	var last uint64
	for range n {
		res := <-results
		if res.err != nil {
			t.Fatal(res.err)
		}
		if last != 0 && res.seq != last {
			t.Fatalf("clients saw the marker at seq %d and %d", last, res.seq)
		}
		last = res.seq
	}
}

// smallBuffers makes a client's receive buffer tiny, so a client that does
// not read backs up into the server at once.
func smallBuffers(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
	})
	return errors.Join(err, serr)
}

func TestClientThatNeverReads(t *testing.T) {
	r := newRig(t, Options{QueueLen: 16, WriteTimeout: 500 * time.Millisecond}, "-hang")
	ctx := ctxT(t)
	good := make([]*peer, 2)
	for i := range good {
		good[i] = r.dial(t, "")
	}
	slow := dialSlow(t, r)
	// Its handshake's answer can come before its session joins the hub.
	for deadline := time.Now().Add(10 * time.Second); r.srv.hub.count() <= len(good); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the client that never reads did not join the hub")
		}
	}

	// The reading clients acknowledge each filler event, and the next one
	// is posted only then: they are never behind, the silent one falls
	// further behind with every event.
	type result struct {
		seq uint64
		err error
	}
	results := make(chan result, len(good))
	acks := make(chan int, 2*len(good))
	for i, p := range good {
		p.ws.SetReadLimit(1 << 20)
		go func() {
			seq, err := follow(ctx, p.ws, p.seq, func(m Message) bool {
				if isMarker("filler")(m) {
					acks <- i
				}
				return isMarker("the end")(m)
			})
			results <- result{seq, err}
		}()
	}
	blob := strings.Repeat("x", 32<<10)
	posted := 0
	for r.srv.hub.count() > len(good) {
		if posted == 5000 {
			t.Fatalf("the client that never reads is still connected after %d events of 32 KiB", posted)
		}
		if err := r.m.Post(ctx, procmon.Event{Message: "filler", Data: map[string]any{"blob": blob}}); err != nil {
			t.Fatal(err)
		}
		posted++
		for range good {
			select {
			case <-acks:
			case res := <-results:
				t.Fatalf("a reading client stopped: %v", res.err)
			}
		}
	}
	if err := r.m.Post(ctx, procmon.Event{Message: "the end"}); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for range good {
		res := <-results
		if res.err != nil {
			t.Fatalf("a reading client: %v", res.err)
		}
		seqs = append(seqs, res.seq)
	}
	if seqs[0] != seqs[1] {
		t.Fatalf("reading clients ended at seq %d and %d", seqs[0], seqs[1])
	}
	t.Logf("dropped the client that never reads after %d events of 32 KiB", posted)

	// Reading now, the dropped client finds its stream cut short.
	slow.SetReadLimit(1 << 20)
	h, err := readHello(ctx, slow)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := follow(ctx, slow, h.Seq, isMarker("the end"))
	if err == nil {
		t.Fatalf("the dropped client got every event up to seq %d", seq)
	}
	var ce websocket.CloseError
	if errors.As(err, &ce) && ce.Code != websocket.StatusPolicyViolation {
		t.Fatalf("the dropped client was closed with %v, want 1008 or a cut connection", ce.Code)
	}
	t.Logf("the dropped client read up to seq %d, then: %v", seq, err)
}

func TestDeadPeerDroppedByKeepalive(t *testing.T) {
	tap := newLogTap()
	r := newRig(t, Options{PingInterval: 20 * time.Millisecond, PingTimeout: 100 * time.Millisecond, Logger: slog.New(tap)}, "-hang")
	// This client never reads, so it never answers a ping.
	ws, err := r.client(t, "").Events(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	tap.waitLog(t, "stopped answering pings")
}

func TestPrivateFieldsOnlyWithToken(t *testing.T) {
	r := newRig(t, Options{}, "-hang")
	ro := r.dial(t, "")
	rw := r.dial(t, testToken)
	err := r.m.Post(ctxT(t), procmon.Event{
		Kind:    "pairing",
		Data:    map[string]any{"phase": "qr", "seq": 999, "bad name": 1},
		Private: map[string]any{"qr": "2@abc"},
	})
	if err != nil {
		t.Fatal(err)
	}
	a, b := ro.next("pairing"), rw.next("pairing")
	var phase, qr string
	if !a.Field("phase", &phase) || phase != "qr" || a.Fields["qr"] != nil {
		t.Fatalf("read-only client: %s", raw(a))
	}
	if !b.Field("qr", &qr) || qr != "2@abc" || !b.Field("phase", &phase) {
		t.Fatalf("token holder: %s", raw(b))
	}
	if b.Seq == 999 || b.Fields["bad name"] != nil {
		t.Fatalf("a layer above replaced a reserved field or used a bad name: %s", raw(b))
	}
}

func TestProbesAndStatus(t *testing.T) {
	r := newRig(t, Options{}, "-hang")
	c := r.client(t, "")
	p := r.dial(t, testToken)
	p.untilState(procmon.StateRunning)

	var health map[string]any
	if code := get(t, c, "/healthz", &health); code != 200 || health["ok"] != true {
		t.Fatalf("healthz: %d %v", code, health)
	}
	var rd readiness
	if code := get(t, c, "/readyz", &rd); code != 200 || !rd.Ready || rd.State != procmon.StateRunning {
		t.Fatalf("readyz while running: %d %+v", code, rd)
	}
	var snap map[string]json.RawMessage
	if code := get(t, c, "/v1/status", &snap); code != 200 || string(snap["state"]) != `"running"` {
		t.Fatalf("status: %d %v", code, snap)
	}

	if res := p.op(OpStop, 1); !res.OK {
		t.Fatal(res.Error)
	}
	p.untilState(procmon.StateStopped)
	if code := get(t, c, "/readyz", &rd); code != 503 || rd.Ready || !strings.Contains(rd.Reason, "stopped") {
		t.Fatalf("readyz while stopped: %d %+v", code, rd)
	}
	if code := get(t, c, "/healthz", nil); code != 200 {
		t.Fatalf("healthz while the bridge is stopped: %d", code)
	}
}

func TestClientsSeeTheFinalEventsThenGoingAway(t *testing.T) {
	r := newRig(t, Options{}, "-hang")
	p := r.dial(t, "")
	p.untilState(procmon.StateRunning)
	r.cancel()
	p.next(procmon.EventStopping)
	p.next(procmon.EventExited)
	p.next(procmon.EventStopped)
	_, _, err := p.ws.Read(ctxT(t))
	if !isClose(err, websocket.StatusGoingAway) {
		t.Fatalf("after stopped: %v, want close 1001", err)
	}
	r.stop(t)
}

func TestTooManyClients(t *testing.T) {
	r := newRig(t, Options{MaxClients: 2}, "-hang")
	r.dial(t, testToken)
	r.dial(t, testToken)
	_, err := r.client(t, testToken).Events(ctxT(t))
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable {
		t.Fatalf("third client: %v, want 503", err)
	}
}

// Clients without the token cannot take the places token holders need:
// with every anonymous place taken by clients that stay connected and
// answer pings but never send anything, a token holder still gets in, as
// many as the places left, and a new anonymous client is refused while
// the others have been quiet for less than AnonymousIdle.
func TestAnonymousClientsLeaveRoomForTokenHolders(t *testing.T) {
	r := newRig(t, Options{MaxClients: 8, MaxAnonymousClients: 5, AnonymousIdle: time.Hour}, "-hang")
	for range 5 {
		r.dial(t, "")
	}
	_, err := r.client(t, "").Events(ctxT(t))
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable {
		t.Fatalf("a sixth client without the token: %v, want 503", err)
	}
	for i := range 3 {
		if p := r.dial(t, testToken); !p.hello.Control {
			t.Fatalf("token holder %d got no control", i)
		}
	}
	if got := r.srv.Clients(); got != 8 {
		t.Fatalf("%d clients, want 8", got)
	}
	// Every place is taken now; a token holder still gets in, in the
	// place of an anonymous client.
	p := r.dial(t, testToken)
	if !p.hello.Control {
		t.Fatal("the ninth client, a token holder, got no control")
	}
	if got := r.srv.Clients(); got != 8 {
		t.Fatalf("%d clients after a token holder took an anonymous place, want 8", got)
	}
}

// When the anonymous places are taken, a new anonymous client takes the
// place of the one that has sent nothing for longest, once that is
// longer than AnonymousIdle; the one that sent an op is kept.
func TestIdleAnonymousClientMakesRoom(t *testing.T) {
	r := newRig(t, Options{MaxClients: 8, MaxAnonymousClients: 2, AnonymousIdle: time.Nanosecond}, "-hang")
	busy := r.dial(t, "")
	quiet := r.dial(t, "")
	if res := busy.op(OpPing, 1); !res.OK {
		t.Fatal(res.Error)
	}
	r.dial(t, "") // a third takes the quiet one's place
	_, _, err := quiet.ws.Read(ctxT(t))
	for err == nil {
		_, _, err = quiet.ws.Read(ctxT(t))
	}
	if !isClose(err, websocket.StatusPolicyViolation) {
		t.Fatalf("the quiet client: %v, want close 1008", err)
	}
	if res := busy.op(OpPing, 2); !res.OK {
		t.Fatalf("the client that sent an op was dropped: %v", res.Error)
	}
	if got := r.srv.Clients(); got != 2 {
		t.Fatalf("%d clients, want 2", got)
	}
}

func TestUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "feed.sock")
	// A socket file left by a sidecar that died is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	r := newRig(t, Options{Listen: "unix:" + path}, "-hang")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", st.Mode().Perm())
	}
	if r.srv.Addr() != "unix:"+path {
		t.Fatalf("Addr %q", r.srv.Addr())
	}
	p := r.dial(t, testToken)
	if !p.hello.Control {
		t.Fatal("token over the Unix socket not accepted")
	}
	var rd readiness
	get(t, r.client(t, ""), "/readyz", &rd)

	if _, err := Listen("unix:" + path); err == nil || !strings.Contains(err.Error(), "already answers") {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	// The socket was bound in a private directory and moved into place;
	// nothing of that is left beside it.
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("files beside the socket: %v", ents)
	}
}

// TestUnixListenerCloseRemovesOnlyItsOwnSocket: Close takes the socket file
// away, unless another server has put its own socket at the path since.
func TestUnixListenerCloseRemovesOnlyItsOwnSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "feed.sock")
	ln, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	if got := AddrOf(ln); got != "unix:"+path {
		t.Fatalf("AddrOf = %q", got)
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file after Close: %v", err)
	}

	ln, err = Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	// Another server replaces the file (as a newer sidecar would after
	// this one stopped answering).
	os.Remove(path)
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("Close removed another server's socket: %v", err)
	}
}

// Wildcards that would let in any page, or every site under a public
// suffix, are refused before anything binds; named origins are fine.
func TestAllowOriginRefusesOpenWildcards(t *testing.T) {
	for _, p := range []string{"*", "https://*", "http://*:*", "*.com", "*.*", "?*"} {
		if err := checkOriginPattern(p); err == nil || !strings.Contains(err.Error(), "too many sites") {
			t.Errorf("--allow-origin %q: %v", p, err)
		}
	}
	for _, p := range []string{"app.example.com", "https://app.example.com", "*.example.com", "localhost:8080", "https://*.example.com"} {
		if err := checkOriginPattern(p); err != nil {
			t.Errorf("--allow-origin %q: %v", p, err)
		}
	}
	m, err := procmon.New(procmon.Config{Command: []string{fakeBridge}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Monitor: m, Listen: "127.0.0.1:0", AllowOrigins: []string{"app.example.com", "https://*"}}); err == nil {
		t.Fatal("New took --allow-origin https://*")
	}
}

// --listen unix:PATH replaces only a dead socket; whatever else is at PATH
// stays, and the error says what is there.
func TestUnixListenKeepsOtherFiles(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(file, []byte("keep me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	for path, kind := range map[string]string{file: "regular file", sub: "directory", link: "symbolic link"} {
		ln, err := Listen("unix:" + path)
		if err == nil {
			ln.Close()
			t.Fatalf("Listen on a %s succeeded", kind)
		}
		if !strings.Contains(err.Error(), kind) || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("Listen on a %s: %v", kind, err)
		}
		if _, err := os.Lstat(path); err != nil {
			t.Errorf("the %s is gone: %v", kind, err)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me\n" {
		t.Fatalf("file after Listen: %q, %v", b, err)
	}
}

func TestPushModeReconnects(t *testing.T) {
	tap := newLogTap()
	// The secrets a gateway URL may carry must never reach the log.
	const pwSecret, querySecret = "pw-in-userinfo", "q-in-query"
	var logged proctest.LockedBuffer
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	conns := make(chan *websocket.Conn)
	handler := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ws, err := websocket.Accept(w, req, nil)
		if err != nil {
			return
		}
		conns <- ws
	})
	gw := &http.Server{Handler: handler}
	go gw.Serve(ln)

	r := newRig(t, Options{
		GatewayURL:  "ws://gw:" + pwSecret + "@" + addr + "/whatsapp/sidecar?secret=" + querySecret,
		Logger:      slog.New(slog.NewMultiHandler(tap, slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))),
		PushBackoff: procmon.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, Multiplier: 2, Reset: time.Hour},
	}, "-hang")
	ctx := ctxT(t)

	first := &peer{t: t, ws: <-conns}
	first.hello = first.read()
	if first.hello.Type != TypeHello || !first.hello.Control {
		t.Fatalf("push hello: %+v", first.hello)
	}
	first.seq = first.hello.Seq
	first.untilState(procmon.StateRunning)

	// The gateway goes away, and stays away for a few attempts.
	gw.Close()
	first.ws.Close(websocket.StatusGoingAway, "gateway restarting")
	tap.waitLog(t, "lost the connection to the gateway")
	tap.waitLog(t, "could not connect to the gateway")
	tap.waitLog(t, "could not connect to the gateway")

	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("relisten on %s: %v", addr, err)
	}
	gw2 := &http.Server{Handler: handler}
	go gw2.Serve(ln2)
	defer gw2.Close()

	second := &peer{t: t, ws: <-conns}
	defer second.ws.CloseNow()
	second.hello = second.read()
	if second.hello.Type != TypeHello || second.hello.Seq < first.seq {
		t.Fatalf("hello after reconnecting: %+v", second.hello)
	}
	second.seq = second.hello.Seq
	if res := second.op(OpRestart, "gw"); !res.OK {
		t.Fatalf("restart from the gateway: %+v", res)
	}
	second.next(procmon.EventStarted)

	// When the sidecar exits, the gateway gets the last events and 1001.
	r.cancel()
	second.next(procmon.EventStopped)
	if _, _, err := second.ws.Read(ctx); !isClose(err, websocket.StatusGoingAway) {
		t.Fatalf("after stopped: %v", err)
	}
	r.stop(t)
	text := logged.String()
	if !strings.Contains(text, "could not connect to the gateway") {
		t.Fatalf("the log lacks the failed dials:\n%s", text)
	}
	for _, secret := range []string{pwSecret, querySecret} {
		if strings.Contains(text, secret) {
			t.Errorf("the log holds %q from the gateway URL:\n%s", secret, text)
		}
	}
}

// TestUnixListenOneWinner: two sidecars starting at once on one path; only
// one may get it, the other must be told.
func TestUnixListenOneWinner(t *testing.T) {
	for round := range 30 {
		path := filepath.Join(t.TempDir(), "feed.sock")
		type res struct {
			ln  net.Listener
			err error
		}
		results := make(chan res, 2)
		for range 2 {
			go func() {
				ln, err := Listen("unix:" + path)
				results <- res{ln, err}
			}()
		}
		a, b := <-results, <-results
		won := 0
		for _, r := range []res{a, b} {
			if r.err == nil {
				won++
				r.ln.Close()
			} else if !strings.Contains(r.err.Error(), "unix:"+path) {
				t.Errorf("round %d: the error does not name the path: %v", round, r.err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d listeners got %s (errors: %v, %v)", round, won, path, a.err, b.err)
		}
	}
}

// TestUnixListenPathTooLong: a path too long for a socket is refused with a
// message about the user's path, not the temporary one.
func TestUnixListenPathTooLong(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, strings.Repeat("s", max(1, 104-len(dir)))+".sock")
	_, err := Listen("unix:" + path)
	if err == nil || !strings.Contains(err.Error(), "too long") || strings.Contains(err.Error(), "/.wa") {
		t.Fatalf("Listen on a %d-byte path: %v", len(path), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

// A bad push backoff is blamed on feed's own setting, never on the
// monitor's restart backoff (whose flags cmd would name).
func TestBadPushBackoffNamesItsOwnSetting(t *testing.T) {
	m, err := procmon.New(procmon.Config{Command: []string{fakeBridge}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Options{Monitor: m, Listen: "127.0.0.1:0", PushBackoff: procmon.Backoff{Initial: time.Second, Max: time.Millisecond, Multiplier: 2}})
	var pe *PushBackoffError
	var be *procmon.BackoffError
	if !errors.As(err, &pe) || !errors.As(err, &be) || be.Field != "Max" || !strings.Contains(err.Error(), "PushBackoff") {
		t.Fatalf("New = %v, want a *PushBackoffError for its Max", err)
	}
}

// Listen's errors are typed and say what is wrong with the address in
// feed's words; cmd names the flag that set it.
func TestListenErrorsAreTyped(t *testing.T) {
	for addr, want := range map[string]string{
		"unix:":        "unix: needs a path, e.g. unix:/run/wa-sidecar.sock",
		"127.0.0.1:xx": `127.0.0.1:xx: "xx" is not a port number`,
	} {
		_, err := Listen(addr)
		var le *ListenError
		if !errors.As(err, &le) || le.Addr != addr || err.Error() != want {
			t.Errorf("Listen(%q) = %v; want a *ListenError %q", addr, err, want)
		}
	}
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Listen(ln.Addr().String())
	var inUse *AddrInUseError
	me, _ := signals.IdentityOf(os.Getpid())
	if !errors.As(err, &inUse) || inUse.Holder == nil || inUse.Holder.Identity != me {
		t.Fatalf("Listen on a busy address = %v; want an *AddrInUseError naming this process", err)
	}
	if want := ln.Addr().String() + " is already in use by " + inUse.Holder.String(); err.Error() != want {
		t.Errorf("Listen on a busy address: %q; want %q", err, want)
	}
}
