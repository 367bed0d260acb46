package bridge

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wa-sidecar/wa-sidecar/bridge/sim"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// simEnv makes the test binary act as the simulated bridge instead of
// running tests, so every test supervises a real, separate process.
const simEnv = "BRIDGE_TEST_SIMULATE"

// fakeBridge is the path of testdata/fakebridge, built once for the package.
var fakeBridge string

func TestMain(m *testing.M) {
	if os.Getenv(simEnv) != "" {
		os.Exit(sim.Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	dir, err := os.MkdirTemp("", "bridge-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fakeBridge = filepath.Join(dir, "fakebridge")
	build := exec.Command("go", "build", "-o", fakeBridge, "../testdata/fakebridge")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the fake bridge:", err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
		if c := children(); len(c) > 0 {
			fmt.Fprintln(os.Stderr, "child processes left:", c)
			code = 1
		}
	}
	os.Exit(code)
}

// children lists processes whose parent is this test binary.
func children() []int {
	var out []int
	me := strconv.Itoa(os.Getpid())
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == me {
			out = append(out, pid)
		}
	}
	return out
}

// simCommand is the argv that runs the simulated bridge with cfg.
func simCommand(cfg sim.Config) []string {
	return append([]string{os.Args[0]}, cfg.Args()...)
}

// simConfig is a simulated bridge on a free port in a fresh session, with
// timings short enough for tests.
func simConfig(t *testing.T) sim.Config {
	c := sim.Defaults()
	c.Port = freeTestPort(t)
	c.SessionDir = filepath.Join(t.TempDir(), "session")
	c.QREvery = 100 * time.Millisecond
	c.ConnectAfter = 10 * time.Millisecond
	c.ReconnectAfter = 50 * time.Millisecond
	return c
}

func freeTestPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// pair writes credentials, as a finished pairing would.
func pair(t *testing.T, session string) {
	t.Helper()
	if err := os.MkdirAll(session, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(session, "creds.json"), []byte(`{"me":{"id":"1@s.whatsapp.net"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
}

// harness runs a monitor with the Hermes layer for one test and records
// its events.
type harness struct {
	t      *testing.T
	m      *procmon.Monitor
	sub    *procmon.Subscription
	cancel context.CancelFunc
	done   chan struct{}
	seen   []procmon.Event
}

// fast is a backoff without jitter, so a respawn follows quickly.
var fast = procmon.Backoff{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond, Multiplier: 2, Reset: time.Hour}

func start(t *testing.T, command []string, opts Options) *harness {
	t.Helper()
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	cfg := procmon.Config{
		Command:     command,
		Env:         append(os.Environ(), simEnv+"=1"),
		Backoff:     fast,
		StopTimeout: 5 * time.Second,
	}
	h.Configure(&cfg)
	m, err := procmon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := m.Subscribe(4096)
	ctx, cancel := context.WithCancel(context.Background())
	hs := &harness{t: t, m: m, sub: sub, cancel: cancel, done: make(chan struct{})}
	ran := make(chan struct{})
	go func() { defer close(ran); h.Run(m) }()
	go func() {
		defer close(hs.done)
		if err := m.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
		<-ran
	}()
	t.Cleanup(hs.shutdown)
	return hs
}

func (h *harness) shutdown() {
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(30 * time.Second):
		h.t.Fatal("monitor did not stop within 30s")
	}
	h.sub.Close()
}

// next waits for the next event of one of kinds. The deadline only stops
// a test that would hang; no test depends on how fast anything happens.
func (h *harness) next(kinds ...procmon.Kind) procmon.Event {
	h.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-h.sub.C:
			if !ok {
				h.t.Fatalf("event stream ended (%v) while waiting for %v; seen %v", h.sub.Err(), kinds, h.kinds())
			}
			h.seen = append(h.seen, ev)
			for _, k := range kinds {
				if ev.Kind == k {
					return ev
				}
			}
		case <-deadline:
			h.t.Fatalf("timed out waiting for %v; seen %v", kinds, h.kinds())
		}
	}
}

// nextUnless is next, but fails if one of forbidden comes first.
func (h *harness) nextUnless(want procmon.Kind, forbidden ...procmon.Kind) procmon.Event {
	h.t.Helper()
	ev := h.next(append([]procmon.Kind{want}, forbidden...)...)
	if ev.Kind != want {
		h.t.Fatalf("got %s while waiting for %s; seen %v", ev.Kind, want, h.kinds())
	}
	return ev
}

func (h *harness) kinds() []procmon.Kind {
	out := make([]procmon.Kind, len(h.seen))
	for i, ev := range h.seen {
		out[i] = ev.Kind
	}
	return out
}

func details(t *testing.T, ev procmon.Event) Details {
	t.Helper()
	d, ok := ev.Status.Details[DetailsKey].(Details)
	if !ok {
		t.Fatalf("event %s has no %s details: %#v", ev.Kind, DetailsKey, ev.Status.Details)
	}
	return d
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
