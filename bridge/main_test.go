package bridge

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/sim"
	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
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
	os.Exit(proctest.Main(m, &fakeBridge))
}

// simCommand is the argv that runs the simulated bridge with cfg.
func simCommand(cfg sim.Config) []string {
	return append([]string{os.Args[0]}, cfg.Args()...)
}

// simConfig is a simulated bridge on a free port in a fresh session, with
// timings short enough for tests.
func simConfig(t *testing.T) sim.Config {
	c := sim.Defaults()
	c.Port = proctest.FreePort(t)
	c.SessionDir = filepath.Join(t.TempDir(), "session")
	c.QREvery = 100 * time.Millisecond
	c.ConnectAfter = 10 * time.Millisecond
	c.ReconnectAfter = 50 * time.Millisecond
	return c
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
	events proctest.Events[procmon.Event, procmon.Kind]
}

// fast is a backoff without jitter, so a respawn follows quickly.
var fast = procmon.Backoff{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond, Multiplier: 2, Reset: time.Hour}

func start(t *testing.T, command []string, opts Options) *harness {
	t.Helper()
	return startConfig(t, procmon.Config{Command: command}, opts)
}

// startConfig is start with the monitor's cfg (its Command set), given
// the test's environment, backoff and stop timeout.
func startConfig(t *testing.T, cfg procmon.Config, opts Options) *harness {
	t.Helper()
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Env = append(os.Environ(), simEnv+"=1")
	cfg.Backoff = fast
	cfg.StopTimeout = 5 * time.Second
	cfg.Hooks = append([]procmon.Hook{h.Hook()}, cfg.Hooks...)
	cfg.ExternalReadiness = cfg.ExternalReadiness || h.ExternalReadiness()
	m, err := procmon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := m.Subscribe(4096)
	ctx, cancel := context.WithCancel(context.Background())
	hs := &harness{t: t, m: m, sub: sub, cancel: cancel, done: make(chan struct{})}
	hs.events = proctest.Events[procmon.Event, procmon.Kind]{C: sub.C, Err: sub.Err, Kind: func(e procmon.Event) procmon.Kind { return e.Kind }, Seq: func(e procmon.Event) uint64 { return e.Seq }}
	ran := make(chan struct{})
	watch := h.Watch(m)
	go func() { defer close(ran); watch.Run(context.Background()) }()
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

// next waits for the next event of one of kinds.
func (h *harness) next(kinds ...procmon.Kind) procmon.Event {
	h.t.Helper()
	return h.events.Next(h.t, kinds...)
}

// nextUnless is next, but fails if one of forbidden comes first.
func (h *harness) nextUnless(want procmon.Kind, forbidden ...procmon.Kind) procmon.Event {
	h.t.Helper()
	return h.events.NextUnless(h.t, want, forbidden...)
}

func (h *harness) kinds() []procmon.Kind { return h.events.Kinds() }

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
