package feed

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// fakeBridge is the path of testdata/fakebridge, built once for the package.
var fakeBridge string

func TestMain(m *testing.M) {
	os.Exit(proctest.Main(m, &fakeBridge))
}

const testToken = "s3cret-token"

// fast respawns at once, so a crash-and-respawn takes milliseconds.
var fast = procmon.Backoff{Initial: 10 * time.Millisecond, Max: 80 * time.Millisecond, Multiplier: 2, Reset: time.Hour}

// rig is a monitor running the fake bridge with a server over it.
type rig struct {
	m      *procmon.Monitor
	srv    *Server
	cancel context.CancelFunc
	ran    chan error
	served chan error
	once   sync.Once
}

// newRig starts a monitor with the fake bridge's args and a server on a
// free loopback port. Unset options get test values.
func newRig(t testing.TB, opts Options, args ...string) *rig {
	t.Helper()
	return newRigConfig(t, procmon.Config{}, opts, args...)
}

// newRigConfig is newRig with a monitor configured by cfg, whose command
// is the fake bridge with args.
func newRigConfig(t testing.TB, cfg procmon.Config, opts Options, args ...string) *rig {
	t.Helper()
	cfg.Command = append([]string{fakeBridge}, args...)
	if cfg.Backoff == (procmon.Backoff{}) {
		cfg.Backoff = fast
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 5 * time.Second
	}
	m, err := procmon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	opts.Monitor = m
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	if opts.Token == "" {
		opts.Token = testToken
	}
	if opts.Version == "" {
		opts.Version = "test"
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{m: m, srv: srv, cancel: cancel, ran: make(chan error, 1), served: make(chan error, 1)}
	go func() { r.served <- srv.Run(context.Background()) }()
	go func() { r.ran <- m.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop ends the monitor and waits for the server to close after it.
func (r *rig) stop(t testing.TB) {
	r.once.Do(func() {
		r.cancel()
		for name, c := range map[string]chan error{"monitor": r.ran, "server": r.served} {
			select {
			case err := <-c:
				if err != nil {
					t.Errorf("%s: %v", name, err)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("%s did not stop within 30s", name)
			}
		}
	})
}

func (r *rig) client(t testing.TB, token string) *Client {
	c, err := NewClient(r.srv.Addr(), token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// peer is a websocket client that checks the sequence as it reads.
type peer struct {
	t     testing.TB
	ws    *websocket.Conn
	hello Message
	seq   uint64
	seen  []Message
	// backlog holds events read while waiting for a result, for next.
	backlog []Message
}

func (r *rig) dial(t testing.TB, token string) *peer {
	t.Helper()
	ws, err := r.client(t, token).Events(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	p := &peer{t: t, ws: ws}
	p.hello = p.read()
	if p.hello.Type != TypeHello {
		t.Fatalf("first message is %q, want hello", p.hello.Type)
	}
	p.seq = p.hello.Seq
	return p
}

// read returns the next message, failing the test on a sequence gap.
func (p *peer) read() Message {
	p.t.Helper()
	_, b, err := p.ws.Read(ctxT(p.t))
	if err != nil {
		p.t.Fatalf("read: %v (events so far: %v)", err, p.kinds())
	}
	m, err := DecodeMessage(b)
	if err != nil {
		p.t.Fatalf("decode %s: %v", b, err)
	}
	if m.Type == TypeEvent {
		if m.Seq != p.seq+1 {
			p.t.Fatalf("seq %d after %d", m.Seq, p.seq)
		}
		p.seq = m.Seq
		p.seen = append(p.seen, m)
	}
	return m
}

// pop returns the next message: a held-back one first, else one read.
func (p *peer) pop() Message {
	p.t.Helper()
	if len(p.backlog) > 0 {
		m := p.backlog[0]
		p.backlog = p.backlog[1:]
		return m
	}
	return p.read()
}

// next reads until an event of one of kinds.
func (p *peer) next(kinds ...procmon.Kind) Message {
	p.t.Helper()
	for {
		m := p.pop()
		for _, k := range kinds {
			if m.Type == TypeEvent && m.Event == k {
				return m
			}
		}
	}
}

// untilState reads until the snapshot is in state st; the hello counts.
func (p *peer) untilState(st procmon.State) Message {
	p.t.Helper()
	if p.hello.Status.State == st && p.seq == p.hello.Seq {
		return p.hello
	}
	for {
		m := p.pop()
		if m.Type == TypeEvent && m.Status.State == st {
			return m
		}
	}
}

// op sends an op and returns its result, reading events on the way.
func (p *peer) op(op string, id any) Message {
	p.t.Helper()
	b, _ := json.Marshal(map[string]any{"op": op, "id": id})
	return p.send(string(b))
}

func (p *peer) send(raw string) Message {
	p.t.Helper()
	if err := p.ws.Write(ctxT(p.t), websocket.MessageText, []byte(raw)); err != nil {
		p.t.Fatal(err)
	}
	for {
		m := p.read()
		if m.Type == TypeResult {
			return m
		}
		p.backlog = append(p.backlog, m)
	}
}

func (p *peer) kinds() []procmon.Kind {
	var out []procmon.Kind
	for _, m := range p.seen {
		out = append(out, m.Event)
	}
	return out
}

// logTap is a slog handler that hands records to a test.
type logTap struct{ msgs chan string }

func newLogTap() *logTap { return &logTap{msgs: make(chan string, 1024)} }

func (l *logTap) Enabled(context.Context, slog.Level) bool { return true }
func (l *logTap) Handle(_ context.Context, r slog.Record) error {
	select {
	case l.msgs <- r.Message:
	default:
	}
	return nil
}
func (l *logTap) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logTap) WithGroup(string) slog.Handler      { return l }

// waitLog waits for a record whose message contains s.
func (l *logTap) waitLog(t testing.TB, s string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m := <-l.msgs:
			if strings.Contains(m, s) {
				return
			}
		case <-deadline:
			t.Fatalf("no log record %q within 30s", s)
		}
	}
}

// get fetches path and decodes its JSON body.
func get(t testing.TB, c *Client, path string, v any) int {
	t.Helper()
	resp, err := c.Get(ctxT(t), path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, b)
		}
	}
	return resp.StatusCode
}

func isClose(err error, code websocket.StatusCode) bool {
	var ce websocket.CloseError
	return errors.As(err, &ce) && ce.Code == code
}
