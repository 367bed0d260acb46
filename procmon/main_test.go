package procmon

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// fakeBridge is the path of testdata/fakebridge, built once for the package.
var fakeBridge string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "procmon-test")
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
		if z := zombieChildren(); len(z) > 0 {
			fmt.Fprintln(os.Stderr, "zombie children left:", z)
			code = 1
		}
	}
	os.Exit(code)
}

// harness runs a Monitor for one test and records its events.
type harness struct {
	t      *testing.T
	m      *Monitor
	sub    *Subscription
	cancel context.CancelFunc
	done   chan error
	seen   []Event
}

// fast is a backoff without jitter, so delays can be asserted exactly.
var fast = Backoff{Initial: 20 * time.Millisecond, Max: 160 * time.Millisecond, Multiplier: 2, Reset: time.Hour}

func start(t *testing.T, cfg Config) *harness {
	t.Helper()
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = fast
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := m.Subscribe(4096)
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, m: m, sub: sub, cancel: cancel, done: make(chan error, 1)}
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
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-h.sub.C:
			if !ok {
				h.t.Fatalf("event stream ended (%v) while waiting for %v; seen %v", h.sub.Err(), kinds, h.kinds())
			}
			if n := len(h.seen); n > 0 && ev.Seq != h.seen[n-1].Seq+1 {
				h.t.Fatalf("sequence gap: %d after %d", ev.Seq, h.seen[n-1].Seq)
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
func (h *harness) nextUnless(want Kind, forbidden ...Kind) Event {
	h.t.Helper()
	ev := h.next(append([]Kind{want}, forbidden...)...)
	if ev.Kind != want {
		h.t.Fatalf("got %s while waiting for %s; seen %v", ev.Kind, want, h.kinds())
	}
	return ev
}

// saw says whether an event of kind has been seen.
func (h *harness) saw(kind Kind) bool {
	for _, ev := range h.seen {
		if ev.Kind == kind {
			return true
		}
	}
	return false
}

func (h *harness) kinds() []Kind {
	out := make([]Kind, len(h.seen))
	for i, ev := range h.seen {
		out[i] = ev.Kind
	}
	return out
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// zombieChildren lists children of this process that have exited but were
// not reaped.
func zombieChildren() []int {
	var out []int
	me := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		st, ppid, ok := procState(pid)
		if ok && ppid == me && st == "Z" {
			out = append(out, pid)
		}
	}
	return out
}

// procState returns the state letter and parent pid of pid.
func procState(pid int) (string, int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", 0, false
	}
	f := strings.Fields(s[i+1:])
	var ppid int
	fmt.Sscanf(f[1], "%d", &ppid)
	return f[0], ppid, true
}

// gone reports whether pid no longer runs (absent, or a zombie that is not
// ours to reap).
func gone(pid int) bool {
	st, _, ok := procState(pid)
	return !ok || st == "Z" || st == "X"
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if gone(pid) {
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
