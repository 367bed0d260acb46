package gatewaymodel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
)

func TestConnectPreflight(t *testing.T) {
	for _, tc := range []struct {
		name      string
		prepare   func(s *setup)
		wantFatal string
	}{
		{"no bridge script", func(s *setup) { os.Remove(s.script) }, FatalBridgeMissing},
		{"no creds.json", func(s *setup) { os.Remove(filepath.Join(s.session, "creds.json")) }, FatalNotPaired},
		{"no session dir", func(s *setup) { os.RemoveAll(s.session) }, FatalNotPaired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t)
			tc.prepare(s)
			_, res := connect(t, s.config(t, "--hash", s.hash))
			if res.Outcome != Failed || res.Fatal != tc.wantFatal || res.Own != nil || res.Killed != nil || res.Replaced != "" {
				t.Fatalf("got %+v, want a %s failure before anything else", res, tc.wantFatal)
			}
		})
	}
}

// An empty creds.json passes the gateway's check, which tests only that
// the file exists.
func TestConnectEmptyCredsCountAsPaired(t *testing.T) {
	s := newSetup(t)
	write(t, filepath.Join(s.session, "creds.json"), "")
	_, res := connect(t, s.config(t, "--hash", s.hash))
	if res.Outcome != Spawned || res.Replaced != NoBridge {
		t.Fatalf("got %+v, want its own bridge started", res)
	}
}

func TestConnectAdoptsConnectedBridge(t *testing.T) {
	s := newSetup(t)
	f := startFake(t, testBinary(t), s.port, "--hash", s.hash)
	requireOurs(t, s.port)
	// bridge.pid naming the running bridge does not make the gateway kill
	// it: adoption comes first.
	writePidfile(s.session, f.pid())

	g, res := connect(t, s.config(t))
	if res.Outcome != Adopted || res.Replaced != "" || res.Killed != nil || res.Own != nil {
		t.Fatalf("got %+v, want the running bridge adopted", res)
	}
	if res.Health["status"] != "connected" || res.Health["scriptHash"] != s.hash {
		t.Fatalf("Health = %v", res.Health)
	}
	if !f.alive() {
		t.Fatal("the adopted bridge is gone")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- g.Poll(ctx, 10*time.Millisecond, nil) }()
	waitFor(t, "the gateway to poll /messages", func() bool { return polls(s.port) > 0 })

	g.Disconnect()
	if err := <-stopped; err != nil {
		t.Fatalf("Poll = %v after Disconnect, want nil", err)
	}
	if !f.alive() || health(s.port) == nil {
		t.Fatal("Disconnect stopped the adopted bridge")
	}
	if _, err := os.Stat(s.pidfile()); !os.IsNotExist(err) {
		t.Fatalf("bridge.pid after Disconnect: %v, want it removed, as the gateway does", err)
	}
}

// KillWait stays at the gateway's 1 s here.
func TestConnectReplacesStaleBridge(t *testing.T) {
	s := newSetup(t)
	f := startFake(t, testBinary(t), s.port, "--hash", "0123456789abcdef")
	requireOurs(t, s.port)
	cfg := s.config(t, "--hash", s.hash)
	cfg.KillWait = 0

	g, res := connect(t, cfg)
	if res.Outcome != Spawned || res.Replaced != Stale || res.Reason != "bridge started" {
		t.Fatalf("got %+v, want the stale bridge replaced", res)
	}
	if !slices.Equal(res.Killed, []int{f.pid()}) {
		t.Fatalf("Killed = %v, want [%d]", res.Killed, f.pid())
	}
	requireTerminated(t, f)
	if h := health(s.port); h["scriptHash"] != s.hash {
		t.Fatalf("/health on the port = %v, want the gateway's own bridge", h)
	}
	st, _ := startTime(res.Own.Pid)
	b, _ := os.ReadFile(s.pidfile())
	if want := fmt.Sprintf("%d\n%d", res.Own.Pid, st); string(b) != want {
		t.Fatalf("bridge.pid = %q, want %q", b, want)
	}

	g.Disconnect()
	if err := res.Own.Signal(syscall.Signal(0)); !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("own bridge after Disconnect: Signal(0) = %v, want it reaped", err)
	}
	if _, err := os.Stat(s.pidfile()); !os.IsNotExist(err) {
		t.Fatalf("bridge.pid after Disconnect: %v", err)
	}
}

func TestConnectReplacesDisconnectedBridge(t *testing.T) {
	s := newSetup(t)
	f := startFake(t, testBinary(t), s.port, "--hash", s.hash, "--status", "disconnected")
	requireOurs(t, s.port)

	_, res := connect(t, s.config(t, "--hash", s.hash))
	if res.Outcome != Spawned || res.Replaced != NotConnected || !slices.Equal(res.Killed, []int{f.pid()}) {
		t.Fatalf("got %+v, want the disconnected bridge %d killed and replaced", res, f.pid())
	}
	requireTerminated(t, f)
}

// Phase 2 ends without "connected": the gateway warns and goes on. Phase 1
// keeps the generous StartTimeout, as the bridge must be serving HTTP by its
// end however slowly it starts; only phase 2, which it spends answering
// "disconnected", is short.
func TestConnectProceedsWhenOwnBridgeNeverConnects(t *testing.T) {
	s := newSetup(t)
	cfg := s.config(t, "--hash", s.hash, "--status", "disconnected")
	cfg.ConnectTimeout = 200 * time.Millisecond

	_, res := connect(t, cfg)
	if res.Outcome != Spawned || res.Replaced != NoBridge || res.Reason != "not connected after wait" || res.Killed != nil {
		t.Fatalf("got %+v, want its own bridge kept though not connected", res)
	}
}

func TestConnectOwnBridgeConnectsLate(t *testing.T) {
	s := newSetup(t)
	_, res := connect(t, s.config(t, "--hash", s.hash, "--connect-after", "150ms"))
	if res.Outcome != Spawned || res.Reason != "bridge started" {
		t.Fatalf("got %+v, want its own bridge connected", res)
	}
}

// The older gateway SIGTERMs any listener on its port; the newer one spares
// a listener that is not node, so its own bridge finds the port taken. The
// listener says "disconnected": one that said "connected" could answer the
// gateway's wait for its own bridge before that bridge's death is noticed.
func TestConnectPortListenerByVersion(t *testing.T) {
	for _, newer := range []bool{false, true} {
		t.Run(fmt.Sprintf("newer=%v", newer), func(t *testing.T) {
			s := newSetup(t)
			f := startFake(t, testBinary(t), s.port, "--hash", s.hash, "--status", "disconnected")
			requireOurs(t, s.port)
			if looksLikeNode(f.pid()) {
				t.Fatal("the fake bridge looks like node; the test needs one that does not")
			}
			cfg := s.config(t, "--hash", s.hash)
			cfg.Newer = newer

			_, res := connect(t, cfg)
			if !newer {
				if res.Outcome != Spawned || !slices.Equal(res.Killed, []int{f.pid()}) {
					t.Fatalf("got %+v, want listener %d killed and replaced", res, f.pid())
				}
				requireTerminated(t, f)
				return
			}
			if res.Outcome != Failed || res.Reason != "bridge process died (exit code 1)" || res.Killed != nil || res.Fatal != "" {
				t.Fatalf("got %+v, want its own bridge dead of the taken port", res)
			}
			if !f.alive() {
				t.Fatal("the newer gateway killed a listener that is not node")
			}
			log, _ := os.ReadFile(filepath.Join(filepath.Dir(s.session), "bridge.log"))
			if !strings.Contains(string(log), "EADDRINUSE") {
				t.Fatalf("bridge.log = %q, want the bridge's EADDRINUSE", log)
			}
			if slices.Contains(proctest.Children(os.Getpid()), res.Own.Pid) {
				t.Fatalf("own bridge %d was not reaped", res.Own.Pid)
			}
		})
	}
}

func TestConnectReadReceipts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		newer    bool
		setting  bool
		reported string // the running bridge's sendReadReceipts; empty leaves it out
		want     Outcome
	}{
		{"older ignores a difference", false, false, "true", Adopted},
		{"newer, same", true, true, "true", Adopted},
		{"newer, missing counts as false", true, false, "", Adopted},
		{"newer, different", true, false, "true", Spawned},
		{"newer, different the other way", true, true, "false", Spawned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t)
			f := startFake(t, nodeBinary(t), s.port, "--hash", s.hash, "--receipts", tc.reported)
			requireOurs(t, s.port)
			cfg := s.config(t, "--hash", s.hash, "--receipts", "env")
			cfg.Newer, cfg.SendReadReceipts = tc.newer, tc.setting

			_, res := connect(t, cfg)
			if res.Outcome != tc.want {
				t.Fatalf("got %+v, want %s", res, tc.want)
			}
			if tc.want == Adopted {
				if !f.alive() {
					t.Fatal("the adopted bridge is gone")
				}
				return
			}
			if res.Replaced != ReadReceipts || !slices.Equal(res.Killed, []int{f.pid()}) {
				t.Fatalf("got %+v, want node listener %d killed for its read receipts", res, f.pid())
			}
			requireTerminated(t, f)
			// The newer gateway tells its own bridge the setting.
			if h := health(s.port); h["sendReadReceipts"] != tc.setting {
				t.Fatalf("own bridge's /health = %v, want sendReadReceipts %v", h, tc.setting)
			}
		})
	}
}

// A bridge that never serves HTTP is left running by the failed attempt;
// the next attempt kills it through bridge.pid. The short StartTimeout is
// safe under load: the bridge waits a minute before listening.
func TestConnectKillsItsEarlierBridgeByPidfile(t *testing.T) {
	s := newSetup(t)
	cfg := s.config(t, "--hash", s.hash, "--listen-after", "1m")
	cfg.StartTimeout = 200 * time.Millisecond
	g, first := connect(t, cfg)
	if first.Outcome != Failed || first.Reason != "bridge HTTP server did not start in 200ms" || first.Fatal != "" {
		t.Fatalf("first attempt: %+v, want the HTTP server missing", first)
	}
	if !proctest.Running(first.Own.Pid) {
		t.Fatal("the first attempt's bridge does not run; the gateway leaves it running")
	}

	second := g.Connect(context.Background())
	t.Logf("second attempt: %+v", second)
	if !slices.Contains(second.Killed, first.Own.Pid) {
		t.Fatalf("second attempt killed %v, want the first bridge %d among them", second.Killed, first.Own.Pid)
	}
	waitFor(t, "the first bridge to end", func() bool { return !proctest.Running(first.Own.Pid) })

	g.Close()
	for _, pid := range []int{first.Own.Pid, second.Own.Pid} {
		if slices.Contains(proctest.Children(os.Getpid()), pid) {
			t.Fatalf("bridge %d not reaped after Close", pid)
		}
	}
}

// An adopted bridge that goes away is a poll error, retried; a bridge that
// comes back on the port is polled again.
func TestPollPicksUpRestartedBridge(t *testing.T) {
	s := newSetup(t)
	first := startFake(t, testBinary(t), s.port, "--hash", s.hash)
	g, res := connect(t, s.config(t))
	if res.Outcome != Adopted {
		t.Fatalf("got %+v, want adopted", res)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pollErrs := make(chan error, 1)
	stopped := make(chan error, 1)
	go func() {
		stopped <- g.Poll(ctx, 10*time.Millisecond, func(err error) {
			select {
			case pollErrs <- err:
			default:
			}
		})
	}()
	waitFor(t, "the first bridge to be polled", func() bool { return polls(s.port) > 0 })

	_ = first.cmd.Process.Kill()
	first.exitStatus(t)
	select {
	case err := <-pollErrs:
		t.Logf("poll error: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no poll error after the bridge went away")
	}
	startFake(t, testBinary(t), s.port, "--hash", s.hash)
	waitFor(t, "the restarted bridge to be polled", func() bool { return polls(s.port) > 0 })

	cancel()
	if err := <-stopped; err != nil {
		t.Fatalf("Poll = %v, want nil when ctx ends", err)
	}
}

func TestPollEndsWhenOwnBridgeExits(t *testing.T) {
	s := newSetup(t)
	g, res := connect(t, s.config(t, "--hash", s.hash))
	if res.Outcome != Spawned {
		t.Fatalf("got %+v, want spawned", res)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- g.Poll(context.Background(), 10*time.Millisecond, nil) }()
	waitFor(t, "own bridge to be polled", func() bool { return polls(s.port) > 0 })
	if err := res.Own.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var exit *BridgeExitError
	if err := <-stopped; !errors.As(err, &exit) || exit.Code != -int(syscall.SIGKILL) {
		t.Fatalf("Poll = %v, want the bridge's exit with code -9", err)
	}
	g.Disconnect()
}

// A bridge that ignores SIGTERM gets SIGKILL after KillWait.
func TestDisconnectKillsStubbornBridge(t *testing.T) {
	s := newSetup(t)
	g, res := connect(t, s.config(t, "--hash", s.hash, "--ignore-term"))
	if res.Outcome != Spawned {
		t.Fatalf("got %+v, want spawned", res)
	}
	own := g.own
	g.Disconnect()
	if code := own.exitCode(); code != -int(syscall.SIGKILL) {
		t.Fatalf("own bridge's returncode = %d, want -9", code)
	}
}

// The gateway's wait asks the port, not its own bridge: a listener it spared
// that says "connected" passes for its bridge, whose death the poll loop
// then reports.
func TestConnectWaitTakesWhateverAnswersThePort(t *testing.T) {
	s := newSetup(t)
	f := startFake(t, testBinary(t), s.port, "--hash", "0123456789abcdef")
	requireOurs(t, s.port)
	cfg := s.config(t, "--hash", s.hash, "--listen-after", "300ms")
	cfg.Newer = true

	g, res := connect(t, cfg)
	if res.Outcome != Spawned || res.Replaced != Stale || res.Killed != nil {
		t.Fatalf("got %+v, want the spared listener taken for its own bridge", res)
	}
	var exit *BridgeExitError
	if err := g.Poll(context.Background(), 10*time.Millisecond, nil); !errors.As(err, &exit) || exit.Code != 1 {
		t.Fatalf("Poll = %v, want its own bridge's exit with code 1", err)
	}
	if !f.alive() {
		t.Fatal("the spared listener is gone")
	}
}
