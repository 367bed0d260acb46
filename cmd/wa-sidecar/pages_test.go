package main

import (
	"testing"

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
