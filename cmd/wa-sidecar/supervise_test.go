package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// The signals the sidecar passes on reach the monitor in the order they
// came. They are fed to supervise as os/signal would hand them over, so
// that the order of delivery by the runtime, which is not guaranteed
// between two threads, plays no part.
func TestSuperviseForwardsSignalsInOrder(t *testing.T) {
	_, fake := binaries(t)
	m, err := procmon.New(procmon.Config{Command: []string{fake, "-report-signals", "-hang"}})
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := m.Subscribe(4096)
	sigs := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- supervise(m, nil, sigs, slog.New(slog.NewTextHandler(io.Discard, nil)), func() {}) }()
	next := func() procmon.Event {
		t.Helper()
		select {
		case ev := <-sub.C:
			return ev
		case <-time.After(20 * time.Second):
			t.Fatal("no event from the monitor")
			return procmon.Event{}
		}
	}
	for next().Kind != procmon.EventStarted {
	}
	catches(t, m.Status().Pid, syscall.SIGUSR1, syscall.SIGUSR2)
	// 60 signals: fewer than supervise keeps waiting (64), which drops the
	// rest of a flood as os/signal itself does.
	const rounds = 30
	for i := 0; i < rounds; i++ {
		sigs <- syscall.SIGUSR1
		sigs <- syscall.SIGUSR2
	}
	var got []string
	for len(got) < 2*rounds {
		if ev := next(); ev.Kind == procmon.EventSignal {
			got = append(got, ev.Signal)
		}
	}
	for i, s := range got {
		want := "SIGUSR1"
		if i%2 == 1 {
			want = "SIGUSR2"
		}
		if s != want {
			t.Fatalf("signal %d reached the monitor as %s, want %s; order: %v", i, s, want, got)
		}
	}
	sigs <- syscall.SIGTERM
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sub.Close()
}

// catches waits until process pid has handlers for sigs, as its
// /proc/PID/status shows (SigCgt): a Go program dies of USR1 until it has
// called signal.Notify.
func catches(t *testing.T, pid int, sigs ...syscall.Signal) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			hex, ok := strings.CutPrefix(line, "SigCgt:")
			if !ok {
				continue
			}
			mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatalf("SigCgt %q: %v", hex, err)
			}
			all := true
			for _, s := range sigs {
				all = all && mask&(1<<(uint(s)-1)) != 0
			}
			if all {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d never caught %v", pid, sigs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The first stop signal asks the monitor to stop the bridge without
// waiting for systemd to be told: a notify socket nobody reads holds each
// write for up to its timeout, and the stop must not wait behind it. The
// stopping callback here returns only once the monitor is stopping the
// bridge, so supervise hangs if it calls it first. Later stop signals
// call it no more.
func TestSuperviseStopsTheBridgeBeforeTellingSystemd(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	_, fake := binaries(t)
	m, err := procmon.New(procmon.Config{Command: []string{fake, "-hang"}})
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := m.Subscribe(4096)
	defer sub.Close()
	started, stoppingBridge := make(chan struct{}), make(chan struct{})
	go func() {
		for ev := range sub.C {
			switch ev.Kind {
			case procmon.EventStarted:
				close(started)
			case procmon.EventStopping:
				close(stoppingBridge)
			}
		}
	}()
	var told atomic.Int32
	stopping := func() {
		told.Add(1)
		select {
		case <-stoppingBridge:
		case <-time.After(20 * time.Second):
			t.Error("the monitor was not asked to stop the bridge before systemd was told")
		}
	}
	sigs := make(chan os.Signal, 4)
	done := make(chan error, 1)
	go func() { done <- supervise(m, nil, sigs, slog.New(slog.NewTextHandler(io.Discard, nil)), stopping) }()
	<-started
	sigs <- syscall.SIGTERM
	sigs <- syscall.SIGQUIT
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := told.Load(); n != 1 {
		t.Fatalf("systemd told of the stop %d times, want once", n)
	}
}

// A part that fails stops the bridge and the other parts, tells systemd
// that the sidecar is stopping, and supervise returns its error, named,
// once everything has ended.
func TestSuperviseAFailingPartStopsTheBridge(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	_, fake := binaries(t)
	m, err := procmon.New(procmon.Config{Command: []string{fake, "-hang"}})
	if err != nil {
		t.Fatal(err)
	}
	failing := &failAfterStart{f: m.Follow(64)}
	follower := &followToEnd{f: m.Follow(64)}
	parts := []part{{"failing part", failing}, {"follower", follower}}
	sigs := make(chan os.Signal, 1)
	var told atomic.Int32
	err = supervise(m, parts, sigs, slog.New(slog.NewTextHandler(io.Discard, nil)), func() { told.Add(1) })
	if err == nil || !strings.Contains(err.Error(), "failing part: boom") {
		t.Fatalf("supervise returned %v, want the failing part's error", err)
	}
	// The sidecar is shutting down: systemd hears of it.
	if n := told.Load(); n != 1 {
		t.Fatalf("stopping called %d times after a part failed, want once", n)
	}
	select {
	case <-m.Done():
	default:
		t.Fatal("supervise returned before the monitor finished")
	}
	st := m.Status()
	if st.State != procmon.StateStopped || st.LastExit == nil || st.LastExit.Class != procmon.ClassRequested {
		t.Fatalf("after a failing part, status %s, last exit %+v; want the bridge stopped on request", st.State, st.LastExit)
	}
	if err := syscall.Kill(failing.pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("bridge pid %d still there after supervise returned (kill 0: %v)", failing.pid, err)
	}
}

// failAfterStart is a part that fails once the bridge has started.
type failAfterStart struct {
	f   *procmon.Follower
	pid int
}

func (p *failAfterStart) Run(ctx context.Context) error {
	defer p.f.Close()
	for {
		u, err := p.f.Next(ctx)
		if err != nil {
			return err
		}
		if u.Kind == procmon.EventStarted {
			p.pid = u.Pid
			return errors.New("boom")
		}
	}
}

// followToEnd is a part that follows the monitor until it ends.
type followToEnd struct{ f *procmon.Follower }

func (p *followToEnd) Run(ctx context.Context) error {
	defer p.f.Close()
	for {
		if _, err := p.f.Next(ctx); err != nil {
			return nil
		}
	}
}

// A stop signal that came while the sidecar was setting up (as when
// stopping a leftover bridge held it up) ends it without spawning a
// bridge only to stop it, and systemd is told of the stop once. A second
// interrupt, which has no bridge left to kill, changes nothing.
func TestSuperviseStopSignalDuringSetUpSpawnsNoBridge(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	_, fake := binaries(t)
	m, err := procmon.New(procmon.Config{Command: []string{fake, "-hang"}})
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := m.Subscribe(64)
	defer sub.Close()
	sigs := make(chan os.Signal, 4)
	sigs <- syscall.SIGUSR1
	sigs <- syscall.SIGINT
	sigs <- syscall.SIGINT
	var told atomic.Int32
	if err := supervise(m, nil, sigs, slog.New(slog.NewTextHandler(io.Discard, nil)), func() { told.Add(1) }); err != nil {
		t.Fatal(err)
	}
	var kinds []procmon.Kind
	for ev := range sub.C {
		kinds = append(kinds, ev.Kind)
	}
	if len(kinds) != 1 || kinds[0] != procmon.EventStopped {
		t.Fatalf("events %v, want only stopped: no bridge spawned", kinds)
	}
	if n := told.Load(); n != 1 {
		t.Fatalf("systemd told of the stop %d times, want once", n)
	}
}
