package main

import (
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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
