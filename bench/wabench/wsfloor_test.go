package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"go.uber.org/goleak"
)

// The test binary stands in for wabench when a test runs one of its
// server subcommands.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "fanout-ws-floor" {
		if err := wsFanoutFloorServer(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "fanout-ws-floor:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// The websocket floor's events read, to the sidecar's fan-out clients, as
// the sidecar's do: the exited one gives its pid, and is as long as the
// sidecar's; the others are no exit.
func TestFloorEvent(t *testing.T) {
	for i, ev := range sidecarEvents {
		msg := floorEvent(7+i, ev, 4194304, sidecarSizes[i])
		if len(msg) != sidecarSizes[i] {
			t.Errorf("%s: %d bytes, want %d", ev, len(msg), sidecarSizes[i])
		}
		pid, ok := exitedPid(msg)
		if want := ev == "exited"; ok != want || (ok && pid != 4194304) {
			t.Errorf("exitedPid(%s) = %d, %v", msg[:80], pid, ok)
		}
	}
}

// The websocket floor runs the child ten times and every client hears of
// every exit, through the same clients as the sidecar's fan-out figure.
func TestWSFanoutFloor(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the child ten times, 300 ms each")
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler (cc)")
	}
	_, here, _, _ := runtime.Caller(0)
	dir := t.TempDir()
	bin := filepath.Join(dir, "child")
	if out, err := exec.Command(cc, "-O2", "-pthread", "-o", bin, filepath.Join(filepath.Dir(here), "..", "cchild", "child.c")).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	c := &config{cchild: bin, self: os.Args[0], work: dir, clients: 5}
	for _, events := range []int{1, len(sidecarEvents)} {
		lat, n, err := measureFanoutWSFloor(c, events)
		if err != nil {
			t.Fatalf("%d events: %v", events, err)
		}
		if n != 5 || len(lat) != 50 {
			t.Fatalf("%d events: %d clients, %d notes; want 5 and 50", events, n, len(lat))
		}
		for _, l := range lat {
			if l <= 0 {
				t.Fatalf("%d events: a note before its exit: %d ns", events, l)
			}
		}
	}
}
