package procmon

import (
	"context"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
)

// fakeBridge is the path of testdata/fakebridge, built once for the package.
var fakeBridge string

func TestMain(m *testing.M) {
	os.Exit(proctest.Main(m, &fakeBridge))
}

// harness runs a Monitor for one test and records its events.
type harness struct {
	t      *testing.T
	m      *Monitor
	sub    *Subscription
	cancel context.CancelFunc
	done   chan error
	events proctest.Events[Event, Kind]
}

// fast is a backoff without jitter, so delays can be asserted exactly.
var fast = Backoff{Initial: 20 * time.Millisecond, Max: 160 * time.Millisecond, Multiplier: 2, Reset: time.Hour}

// newTestMonitor is New for a test: the fast backoff unless cfg has one.
func newTestMonitor(t *testing.T, cfg Config) *Monitor {
	t.Helper()
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = fast
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func start(t *testing.T, cfg Config) *harness {
	t.Helper()
	m := newTestMonitor(t, cfg)
	sub, _ := m.Subscribe(4096)
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, m: m, sub: sub, cancel: cancel, done: make(chan error, 1)}
	h.events = proctest.Events[Event, Kind]{C: sub.C, Err: sub.Err, Kind: func(e Event) Kind { return e.Kind }, Seq: func(e Event) uint64 { return e.Seq }}
	go func() { h.done <- m.Run(ctx) }()
	t.Cleanup(h.shutdown)
	return h
}

func (h *harness) shutdown() {
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		h.t.Fatal("monitor did not stop within 30s")
	}
	h.sub.Close()
}

// next waits for the next event of one of kinds, checking that sequence
// numbers never skip.
func (h *harness) next(kinds ...Kind) Event {
	h.t.Helper()
	return h.events.Next(h.t, kinds...)
}

// nextUnless is next, but fails if one of forbidden comes first.
func (h *harness) nextUnless(want Kind, forbidden ...Kind) Event {
	h.t.Helper()
	return h.events.NextUnless(h.t, want, forbidden...)
}

// saw says whether an event of kind has been seen.
func (h *harness) saw(kind Kind) bool { return h.events.Saw(kind) }

func (h *harness) kinds() []Kind { return h.events.Kinds() }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if !proctest.Running(pid) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d still runs", pid)
}

func openFDs() int {
	entries, _ := os.ReadDir("/proc/self/fd")
	return len(entries)
}

func settleGoroutines(want int) int {
	n := runtime.NumGoroutine()
	for i := 0; i < 200 && n > want; i++ {
		time.Sleep(5 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	return n
}

func ctxWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
