package notify

import (
	"context"
	"fmt"
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
	n, err := New(newMonitor(t, procmon.Config{Command: []string{fakeBridge, "-hang"}}), nil, procmon.Summary{Name: "bridge"})
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
	_, err := New(newMonitor(t, procmon.Config{Command: []string{fakeBridge}}), nil, procmon.Summary{Name: "bridge"})
	if err == nil || !strings.Contains(err.Error(), "WatchdogSec") {
		t.Fatalf("New with WATCHDOG_USEC=soon: got %v, want an error naming WatchdogSec", err)
	}
}

func TestWatchdogForAnotherPidIsIgnored(t *testing.T) {
	listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "1000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	n, err := New(newMonitor(t, procmon.Config{Command: []string{fakeBridge}}), nil, procmon.Summary{Name: "bridge"})
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
	n, err := New(m, nil, procmon.Summary{Name: "bridge"})
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
		return s == fmt.Sprintf("STATUS=bridge ready (pid %d), up <1m, 1 restart, last exit: exit 1 (failure) <1m ago", m.Status().Pid)
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
	n, err := New(m, slog.New(recordHandler{logs}), procmon.Summary{Name: "bridge"})
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
	n, err := New(m, slog.New(slog.NewTextHandler(lockedWriter{&mu, &logged}, nil)), procmon.Summary{Name: "bridge"})
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
