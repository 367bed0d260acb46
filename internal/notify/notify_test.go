package notify

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// fakeBridge is the path of testdata/fakebridge, built once for the package.
var fakeBridge string

func TestMain(m *testing.M) {
	os.Exit(proctest.Main(m, &fakeBridge))
}

// notifySocket is a stand-in for systemd's end of sd_notify: a real
// unixgram socket whose datagrams arrive on C.
type notifySocket struct {
	conn *net.UnixConn
	C    chan string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	// A short directory: socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &notifySocket{conn: conn, C: make(chan string, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			s.C <- string(buf[:n])
		}
	}()
	t.Setenv("NOTIFY_SOCKET", path)
	t.Cleanup(func() {
		conn.Close()
		<-done
		os.RemoveAll(dir)
	})
	return s
}

// waitFor returns the first message for which ok holds, failing the test
// after 20 s. Earlier messages are returned too, for assertions on order.
func (s *notifySocket) waitFor(t *testing.T, what string, ok func(string) bool) (string, []string) {
	t.Helper()
	var before []string
	deadline := time.After(20 * time.Second)
	for {
		select {
		case msg := <-s.C:
			if ok(msg) {
				return msg, before
			}
			before = append(before, msg)
		case <-deadline:
			t.Fatalf("no %s from the sidecar; got %q", what, before)
		}
	}
}

// newMonitor makes a monitor over the fake bridge, for a Notifier to
// follow; runMonitor runs it.
func newMonitor(t *testing.T, cfg procmon.Config) *procmon.Monitor {
	t.Helper()
	if cfg.Backoff == (procmon.Backoff{}) {
		cfg.Backoff = procmon.Backoff{Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond, Multiplier: 2, Reset: time.Hour}
	}
	m, err := procmon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// runMonitor runs m and n, a Notifier over it, and stops both when the
// test ends.
func runMonitor(t *testing.T, n *Notifier, m *procmon.Monitor) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	monDone := make(chan error, 1)
	notDone := make(chan error, 1)
	go func() { notDone <- n.Run(ctx) }()
	go func() { monDone <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for _, c := range []chan error{monDone, notDone} {
			select {
			case err := <-c:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("monitor or notifier did not stop within 30s")
			}
		}
	})
}

func TestDisabledWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n, err := New(newMonitor(t, procmon.Config{Command: []string{fakeBridge, "-hang"}}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n.Enabled() {
		t.Fatal("Enabled with NOTIFY_SOCKET empty")
	}
	// Outside systemd these must neither block nor fail.
	n.Ready()
	n.Stopping()
	if err := n.Run(context.Background()); err != nil {
		t.Fatalf("Run without NOTIFY_SOCKET: %v", err)
	}
}

func TestMalformedWatchdogIsAnError(t *testing.T) {
	listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "soon")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	_, err := New(newMonitor(t, procmon.Config{Command: []string{fakeBridge}}), nil)
	if err == nil || !strings.Contains(err.Error(), "WatchdogSec") {
		t.Fatalf("New with WATCHDOG_USEC=soon: got %v, want an error naming WatchdogSec", err)
	}
}

func TestWatchdogForAnotherPidIsIgnored(t *testing.T) {
	listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "1000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	n, err := New(newMonitor(t, procmon.Config{Command: []string{fakeBridge}}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n.Watchdog() != 0 {
		t.Fatalf("Watchdog() = %s for a WATCHDOG_PID that is not ours; want 0", n.Watchdog())
	}
}

// TestReadyAndStatusFollowTheBridge runs a bridge that fails once and then
// stays up, and checks that systemd hears READY=1 once and a STATUS= for
// each step: the failure with its exit, then ready with one restart.
func TestReadyAndStatusFollowTheBridge(t *testing.T) {
	sock := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "")
	count := filepath.Join(t.TempDir(), "count")
	m := newMonitor(t, procmon.Config{Command: []string{fakeBridge, "-count-file", count, "-fail-times", "1"}})
	n, err := New(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !n.Enabled() {
		t.Fatal("not enabled with NOTIFY_SOCKET set")
	}
	runMonitor(t, n, m)
	n.Ready()
	n.Ready()

	_, before := sock.waitFor(t, "ready status after the restart", func(s string) bool {
		return s == "STATUS=bridge ready, up <1m, 1 restart"
	})
	readies := 0
	sawFailure := false
	for _, msg := range before {
		switch {
		case msg == "READY=1":
			readies++
		case strings.HasPrefix(msg, "STATUS=bridge down after exit 1 (failure), next start at "):
			sawFailure = true
		}
	}
	if readies != 1 {
		t.Errorf("READY=1 sent %d times before the bridge came back; want exactly 1 (messages %q)", readies, before)
	}
	if !sawFailure {
		t.Errorf("no STATUS= for the failed run; messages %q", before)
	}
	if got := m.Status(); got.Restarts != 1 || !got.Ready {
		t.Errorf("monitor status %+v; want ready with 1 restart", got)
	}

	n.Stopping()
	sock.waitFor(t, "STOPPING=1", func(s string) bool { return strings.HasPrefix(s, "STOPPING=1\n") })
}

// recordHandler passes log records to a channel, so a test can wait for
// the notifier to say something instead of sleeping.
type recordHandler struct{ c chan slog.Record }

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.c <- r:
	default:
	}
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

// TestWatchdogOnlyWhileTheMonitorAnswers holds the monitor goroutine inside
// a BeforeSpawner: the watchdog must be withheld while it is stuck, and resume
// once it answers again.
func TestWatchdogOnlyWhileTheMonitorAnswers(t *testing.T) {
	sock := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	logs := make(chan slog.Record, 16)
	release := make(chan struct{})
	var releaseOnce sync.Once
	unstick := func() { releaseOnce.Do(func() { close(release) }) }
	stuck := true
	m := newMonitor(t, procmon.Config{
		Command: []string{fakeBridge, "-hang"},
		Hooks: []procmon.Hook{procmon.BeforeSpawnFunc(func(func(procmon.Event)) error {
			if stuck {
				stuck = false
				<-release
			}
			return nil
		})},
	})
	n, err := New(m, slog.New(recordHandler{logs}))
	if err != nil {
		t.Fatal(err)
	}
	if n.Watchdog() != 100*time.Millisecond {
		t.Fatalf("Watchdog() = %s; want 100ms", n.Watchdog())
	}
	runMonitor(t, n, m)
	// Cleanups run last first: a failed test unsticks the monitor before
	// runMonitor's cleanup waits for it.
	t.Cleanup(unstick)

	select {
	case r := <-logs:
		if !strings.Contains(r.Message, "withholding the systemd watchdog") {
			t.Fatalf("unexpected log while the monitor is stuck: %q", r.Message)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the notifier never noticed the stuck monitor")
	}
	for len(sock.C) > 0 {
		if msg := <-sock.C; msg == "WATCHDOG=1" {
			t.Fatal("WATCHDOG=1 sent while the monitor goroutine was stuck")
		}
	}
	unstick()
	sock.waitFor(t, "WATCHDOG=1 after the monitor recovered", func(s string) bool { return s == "WATCHDOG=1" })
}

func TestDescribe(t *testing.T) {
	now := time.Date(2025, 5, 1, 12, 0, 0, 0, time.Local)
	ago := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	code := func(c int) *int { return &c }
	next := now.Add(4 * time.Second)
	tests := []struct {
		name string
		st   procmon.Status
		want string
	}{
		{"ready", procmon.Status{State: procmon.StateRunning, Ready: true, StartedAt: ago(2 * time.Hour), Restarts: 3},
			"bridge ready, up 2h, 3 restarts"},
		{"not ready", procmon.Status{State: procmon.StateRunning, StartedAt: ago(10 * time.Second)},
			"bridge running, not ready yet, up <1m"},
		{"minutes", procmon.Status{State: procmon.StateRunning, Ready: true, StartedAt: ago(12*time.Minute + 59*time.Second), Restarts: 1},
			"bridge ready, up 12m, 1 restart"},
		{"hours and minutes", procmon.Status{State: procmon.StateRunning, Ready: true, StartedAt: ago(2*time.Hour + 5*time.Minute)},
			"bridge ready, up 2h5m"},
		{"days", procmon.Status{State: procmon.StateRunning, Ready: true, StartedAt: ago(50 * time.Hour)},
			"bridge ready, up 2d2h"},
		{"whole days", procmon.Status{State: procmon.StateRunning, Ready: true, StartedAt: ago(48*time.Hour + 59*time.Minute)},
			"bridge ready, up 2d"},
		{"starting", procmon.Status{State: procmon.StateStarting}, "bridge starting"},
		{"backoff", procmon.Status{State: procmon.StateBackoff, Restarts: 2, NextStartAt: &next,
			LastExit: &procmon.ExitRecord{Code: code(1), Class: procmon.ClassFailure}},
			"bridge down after exit 1 (failure), next start at " + next.Format(time.TimeOnly) + ", 2 restarts"},
		{"crashloop", procmon.Status{State: procmon.StateBackoff, Crashloop: true, ConsecutiveFailures: 6,
			LastExit: &procmon.ExitRecord{Code: code(1), Class: procmon.ClassFailure}},
			"bridge crash-looping (6 failures in a row) after exit 1 (failure)"},
		{"stopping", procmon.Status{State: procmon.StateStopping}, "bridge stopping"},
		{"stopped", procmon.Status{State: procmon.StateStopped, Restarts: 1}, "bridge stopped on request, 1 restart"},
		{"given up", procmon.Status{State: procmon.StateGivenUp, Message: "gave up after 4 consecutive failures"},
			"bridge given up: gave up after 4 consecutive failures"},
		{"parked by the bridge layer", procmon.Status{State: "needs_pairing", Message: "run wa-sidecar pair"},
			"bridge needs pairing: run wa-sidecar pair"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Describe(tt.st, now); got != tt.want {
				t.Errorf("Describe = %q; want %q", got, tt.want)
			}
		})
	}
}

func TestNextChange(t *testing.T) {
	now := time.Now()
	at := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	tests := []struct {
		up   time.Duration
		want time.Duration
	}{
		{10 * time.Second, 50 * time.Second},
		{61 * time.Second, 59 * time.Second},
		{25*time.Hour + time.Minute, 59 * time.Minute},
	}
	for _, tt := range tests {
		st := procmon.Status{State: procmon.StateRunning, StartedAt: at(tt.up)}
		got, ok := nextChange(st, now)
		if !ok || got != tt.want {
			t.Errorf("nextChange(up %s) = %s, %v; want %s", tt.up, got, ok, tt.want)
		}
		// The text must really change at that moment, or the timer is wasted.
		if Describe(st, now.Add(got-time.Nanosecond)) == Describe(st, now.Add(got)) {
			t.Errorf("up %s: text does not change after %s", tt.up, got)
		}
	}
	if _, ok := nextChange(procmon.Status{State: procmon.StateBackoff}, now); ok {
		t.Error("nextChange in backoff: want no timer")
	}
}

// stalledNotify is a notify socket that nobody reads, its queue filled
// up, as a wedged service manager's would be: every further write to it
// blocks.
func stalledNotify(t *testing.T) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	filler, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()
	for i := 0; ; i++ {
		filler.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := filler.Write([]byte("STATUS=filler")); err != nil {
			if !os.IsTimeout(err) {
				t.Fatal(err)
			}
			if i == 0 {
				t.Fatal("the socket took no datagram at all")
			}
			break
		}
	}
	t.Setenv("NOTIFY_SOCKET", path)
}

func TestStalledSocketNeverHoldsUpTheSidecar(t *testing.T) {
	stalledNotify(t)
	var logged strings.Builder
	var mu sync.Mutex
	m := newMonitor(t, procmon.Config{Command: []string{fakeBridge, "-hang"}})
	n, err := New(m, slog.New(slog.NewTextHandler(lockedWriter{&mu, &logged}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := m.Subscribe(64)
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	monDone := make(chan error, 1)
	go func() { monDone <- m.Run(ctx) }()
	// What the sidecar does from start to exit: READY=1, STATUS= updates
	// while it runs, STOPPING=1 at SIGTERM, then the end of Run.
	done := make(chan struct{})
	go func() {
		defer close(done)
		notDone := make(chan error, 1)
		go func() { notDone <- n.Run(ctx) }()
		n.Ready()
		for ev := range sub.C {
			if ev.Kind == procmon.EventStarted {
				break
			}
		}
		n.Stopping()
		cancel()
		<-notDone
		<-monDone
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("a stalled notify socket held up the sidecar's exit")
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logged.String(), "cannot reach systemd's notify socket") {
		t.Errorf("no warning about the stalled socket; log:\n%s", logged.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
