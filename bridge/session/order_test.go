package session

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// kindsUntil reads h's stream until n events of kind have come, and
// returns the kinds of all the events read.
func kindsUntil(h *harness, kind procmon.Kind, n int) []procmon.Kind {
	h.t.Helper()
	for range n {
		h.next(kind)
	}
	return h.kinds()
}

// With the port held by a foreign process, what the guard finds comes
// before the failed spawn it causes: the session details and port_busy,
// then spawn_failed and backoff. A retry that finds the session as it was
// posts no session event; the port_busy of each attempt comes again.
func TestPortBusyCausesComeBeforeTheirEffects(t *testing.T) {
	other := startHelper(t, "listen", "HELPER_PORT=0")
	dir := newSession(t, pairedCreds)
	g := openGuard(t, Config{SessionDir: dir, Port: other.port(t)})
	h := startMonitor(t, g, procmon.Config{Command: []string{fakeBridge, "-hang"}})

	got := kindsUntil(h, procmon.EventBackoff, 3)
	attempt := []procmon.Kind{procmon.EventStarting, EventPortBusy, procmon.EventSpawnFailed, procmon.EventBackoff}
	want := append([]procmon.Kind{procmon.EventStarting, EventSession}, attempt[1:]...)
	want = append(append(want, attempt...), attempt...)
	if !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	busy := h.events.Seen[2]
	if failed := h.events.Seen[3]; failed.Seq != busy.Seq+1 || failed.Exit.Reason != ReasonPortBusy || failed.Status.Message != busy.Message {
		t.Fatalf("port_busy %+v, then %+v", busy, failed)
	}
}

// A retry posts a session event again once the session has changed, and
// before the spawn it precedes.
func TestSessionEventOnlyWhenTheSessionChanged(t *testing.T) {
	other := startHelper(t, "listen", "HELPER_PORT=0")
	dir := newSession(t, pairedCreds)
	g := openGuard(t, Config{SessionDir: dir, Port: other.port(t)})
	h := startMonitor(t, g, procmon.Config{Command: []string{fakeBridge, "-hang"}})
	first := sessionDetails(t, h.nextUnless(EventSession, procmon.EventSpawnFailed))
	h.nextUnless(procmon.EventBackoff, EventSession)
	h.nextUnless(procmon.EventBackoff, EventSession) // a retry that changed nothing

	// Paired anew, not yet scanned; renamed into place, so that the
	// retry going on meanwhile never reads half a file.
	tmp := filepath.Join(dir, "creds.json.tmp")
	if err := os.WriteFile(tmp, []byte(pendingCreds), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "creds.json")); err != nil {
		t.Fatal(err)
	}
	next := sessionDetails(t, h.nextUnless(EventSession, procmon.EventStarted))
	if !first.Paired || next.Paired || next.Creds != CredsOK {
		t.Fatalf("details %+v, then %+v", first, next)
	}
	if k := h.next(EventPortBusy, procmon.EventSpawnFailed).Kind; k != EventPortBusy {
		t.Fatalf("after the session event: %s, want port_busy; seen %v", k, h.kinds())
	}
}

// A bridge an earlier sidecar left running is stopped before the monitor
// runs, and its leftover_stopped event comes in the first spawn's place:
// after its starting, before the creds and session events and the started.
func TestLeftoverStoppedComesBeforeTheFirstSpawn(t *testing.T) {
	left, g := leftoverBridge(t)
	g.StopLeftover()
	if ws := left.wait(t); !ws.Signaled() {
		t.Fatalf("the leftover ended with %v before the monitor ran", ws)
	}
	h := startMonitor(t, g, procmon.Config{Command: []string{fakeBridge, "-hang"}})
	got := kindsUntil(h, procmon.EventStarted, 1)
	want := []procmon.Kind{procmon.EventStarting, EventLeftoverStopped, EventSession, procmon.EventStarted}
	if !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if ev := h.events.Seen[1]; ev.Data["bridge_pid"] != left.cmd.Process.Pid {
		t.Fatalf("leftover_stopped: %+v", ev)
	}
	// Only once: the next spawn has nothing left over to report.
	if err := h.m.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	h.nextUnless(procmon.EventStarted, EventLeftoverStopped)
}
