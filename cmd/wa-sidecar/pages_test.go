package main

import (
	"context"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/session"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

func TestSettled(t *testing.T) {
	running := procmon.Status{State: procmon.StateRunning}
	for _, tc := range []struct {
		ev   procmon.Event
		want bool
	}{
		{procmon.Event{Kind: procmon.EventStarted, Status: running}, false},
		{procmon.Event{Kind: procmon.EventReady, Status: procmon.Status{State: procmon.StateRunning, Ready: true}}, false},
		{procmon.Event{Kind: bridge.EventConnected, Status: running}, true},
		{procmon.Event{Kind: bridge.EventConnectTimeout, Status: running}, true},
		{procmon.Event{Kind: procmon.EventGivenUp, Status: procmon.Status{State: procmon.StateGivenUp}}, true},
		{procmon.Event{Kind: procmon.EventExited, Status: procmon.Status{State: bridge.StateNeedsPairing}}, true},
		{procmon.Event{Kind: procmon.EventNotice, Status: procmon.Status{State: session.StateYielded}}, true},
		{procmon.Event{Kind: procmon.EventStopped, Status: procmon.Status{State: procmon.StateStopped}}, false},
		{procmon.Event{Kind: procmon.EventExited, Status: procmon.Status{State: procmon.StateBackoff}}, false},
	} {
		if got := settled(tc.ev); got != tc.want {
			t.Errorf("%s in state %s: settled %v, want %v", tc.ev.Kind, tc.ev.Status.State, got, tc.want)
		}
	}
}

// TestSettleEnds checks how pageRelease's wait for the start to settle
// ends when no event settles it: after its wait, or not at all when the
// sidecar stops first.
func TestSettleEnds(t *testing.T) {
	_, fake := binaries(t)
	for _, tc := range []struct {
		name    string
		wait    time.Duration
		stop    func(cancelPart, stopMonitor context.CancelFunc)
		release bool
	}{
		{"the wait passes", 200 * time.Millisecond, nil, true},
		{"the sidecar's parts are stopped", time.Minute, func(part, _ context.CancelFunc) { part() }, false},
		{"the monitor finishes", time.Minute, func(_, mon context.CancelFunc) { mon() }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := procmon.New(procmon.Config{Command: []string{fake, "-hang"}})
			if err != nil {
				t.Fatal(err)
			}
			r := &pageRelease{follow: m.Follow(16), wait: tc.wait}
			watch := m.Follow(16)
			defer watch.Close()
			monCtx, stopMonitor := context.WithCancel(context.Background())
			ran := make(chan error, 1)
			go func() { ran <- m.Run(monCtx) }()
			defer func() {
				stopMonitor()
				if err := <-ran; err != nil {
					t.Error(err)
				}
			}()
			partCtx, cancelPart := context.WithCancel(context.Background())
			defer cancelPart()
			got := make(chan bool, 1)
			go func() { got <- r.settle(partCtx) }()
			if tc.stop != nil {
				for {
					u, err := watch.Next(context.Background())
					if err != nil {
						t.Fatal(err)
					}
					if u.Kind == procmon.EventStarted {
						break
					}
				}
				tc.stop(cancelPart, stopMonitor)
			}
			select {
			case release := <-got:
				if release != tc.release {
					t.Errorf("settle reported %v, want %v", release, tc.release)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("settle did not return")
			}
		})
	}
}
