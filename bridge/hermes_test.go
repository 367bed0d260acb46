package bridge

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/qrcode"
	"github.com/wa-sidecar/wa-sidecar/bridge/sim"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// testOptions probe often, so that tests wait less; nothing asserts on it.
// testOptions probe often, so tests see /health's answers soon, but never
// restart a bridge for failed probes: on a busy machine three 100 ms
// probes in a row can time out on a healthy bridge, and tests that are
// not about unresponsive bridges then see a restart they did not cause.
// Those that are set HealthFailures themselves.
func testOptions(c sim.Config) Options {
	return Options{
		Port:           c.Port,
		SessionDir:     c.SessionDir,
		HealthPeriod:   100 * time.Millisecond,
		HealthTimeout:  100 * time.Millisecond,
		HealthFailures: 1 << 20,
		CredsPoll:      20 * time.Millisecond,
		ConnectGrace:   time.Minute,
	}
}

func TestPairingFromTheQRBlockThenConnected(t *testing.T) {
	c := simConfig(t)
	c.PairAfter = 300 * time.Millisecond
	h := start(t, simCommand(c), testOptions(c))

	started := h.next(procmon.EventStarted)
	if started.Status.Ready {
		t.Fatal("ready before /health said connected")
	}
	qr := h.nextUnless(EventQR, EventConnected)
	rows, _ := qr.Private["qr_rows"].([]string)
	if len(rows) < 11 {
		t.Fatalf("QR rows not captured: %q", rows)
	}
	for _, r := range rows {
		if ParseLine([]byte(r)).Kind != LineQRRow {
			t.Fatalf("captured a line that is not a QR row: %q", r)
		}
	}
	if qr.Data["source"] != "terminal" || qr.Data["qr_rows"] != nil {
		t.Fatalf("public data of the qr event: %v", qr.Data)
	}
	if d := details(t, qr); d.Connection != "pairing" {
		t.Fatalf("connection while showing a QR code: %q", d.Connection)
	}

	// Connected first, then ready: the cause before its effect.
	conn := h.nextUnless(EventConnected, procmon.EventReady, procmon.EventExited)
	h.nextUnless(EventPaired, procmon.EventReady)
	ready := h.nextUnless(procmon.EventReady, procmon.EventExited)
	if ready.Ready == nil || !*ready.Ready {
		t.Fatalf("ready event says %v", ready.Ready)
	}
	d := details(t, conn)
	if d.Connection != "connected" || d.Health != "ok" || len(d.ScriptHash) != 16 || !d.QueueLength.Known {
		t.Fatalf("details after connecting: %+v", d)
	}
	if !Paired(c.SessionDir) {
		t.Fatal("the simulator did not save credentials")
	}
}

func TestPairingFromJSONLines(t *testing.T) {
	c := simConfig(t)
	c.PairJSON = true
	c.PairAfter = 300 * time.Millisecond
	h := start(t, simCommand(c), testOptions(c))

	qr := h.nextUnless(EventQR, EventConnected)
	payload, _ := qr.Private["qr"].(string)
	if !strings.HasPrefix(payload, "2@") || strings.Count(payload, ",") != 3 {
		t.Fatalf("QR payload from --pair-json: %q", payload)
	}
	if qr.Data["source"] != "pair-json" || qr.Data["qr"] != nil {
		t.Fatalf("public data of the qr event: %v", qr.Data)
	}
	conn := h.next(EventConnected)
	u, _ := conn.Data["user"].(User)
	if u.ID == "" {
		t.Fatalf("connected event without the user from the JSON line: %v", conn.Data)
	}
	h.next(EventPaired)
}

func TestLoggedOutParksUntilCredsChange(t *testing.T) {
	c, h := startCrashing(t, 200*time.Millisecond, sim.CrashLogout)

	first := h.next(procmon.EventStarted)
	ex := h.nextUnless(procmon.EventExited, procmon.EventStarting)
	if ex.Exit.Code == nil || *ex.Exit.Code != 1 {
		t.Fatalf("logged-out exit: %s", ex.Exit.Describe())
	}
	parked := h.nextUnless(procmon.Kind(StateNeedsPairing), procmon.EventStarting, procmon.EventBackoff)
	if parked.Status.State != StateNeedsPairing || parked.Status.Reason != ReasonLoggedOut || !strings.Contains(parked.Status.Message, "creds.json") {
		t.Fatalf("parked in %q with message %q", parked.Status.State, parked.Status.Message)
	}

	// Nothing else starts the bridge: the first start must follow the
	// change of creds.json.
	repair(t, c.SessionDir)
	h.nextUnless(EventCredsChanged, procmon.EventStarting)
	second := h.next(procmon.EventStarted)
	if second.Pid == first.Pid {
		t.Fatal("no new bridge after creds.json changed")
	}

	// Logged out again; this time a start command resumes it.
	h.nextUnless(procmon.Kind(StateNeedsPairing), procmon.EventStarting)
	if err := h.m.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	h.nextUnless(procmon.EventStarted, EventCredsChanged)
}

// A connected, adoptable bridge that WhatsApp logs out changes the
// gateway's verdict as it exits, but the snapshot's message stays the
// park's, which says how to pair again (pair and status show it), and so
// does that of a bridge given up on.
func TestAParkedAdoptableBridgeKeepsItsStatesMessage(t *testing.T) {
	for _, tc := range []struct {
		crash   sim.Crash
		max     int
		state   procmon.State
		message string
	}{
		{sim.CrashLogout, 0, StateNeedsPairing, "logged this device out"},
		{sim.CrashException, 1, procmon.StateGivenUp, "it failed 1 time in a row"},
	} {
		t.Run(string(tc.state), func(t *testing.T) {
			c := simConfig(t)
			pair(t, c.SessionDir)
			c.CrashAfter = 2 * time.Second // time to become adoptable first
			c.Crashes = []sim.Crash{tc.crash}
			opts := testOptions(c)
			opts.Expect = &Expect{}
			h := startConfig(t, procmon.Config{Command: simCommand(c), MaxRestarts: tc.max}, opts)
			for _, a := adoption(t, h); !a.Adoptable; _, a = adoption(t, h) {
			}
			if _, a := adoption(t, h); a.Adoptable {
				t.Fatalf("still adoptable after the exit: %+v", a)
			}
			parked := h.nextUnless(procmon.Kind(tc.state), procmon.EventStarting, procmon.EventBackoff)
			if st := h.m.Status(); parked.Status.State != tc.state || !strings.Contains(parked.Status.Message, tc.message) || st.Message != parked.Status.Message {
				t.Fatalf("parked in %q with message %q (snapshot: %q), want one saying %q", parked.Status.State, parked.Status.Message, st.Message, tc.message)
			}
		})
	}
}

// repair replaces creds.json in one atomic change, as a finished pairing
// would: a second change (a write, then a touch) could land after the
// next park and resume the bridge a second time.
func repair(t *testing.T, session string) {
	t.Helper()
	tmp := filepath.Join(session, "creds.json.tmp")
	if err := os.WriteFile(tmp, []byte(`{"me":{"id":"2@s.whatsapp.net"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Second)
	if err := os.Chtimes(tmp, later, later); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(session, "creds.json")); err != nil {
		t.Fatal(err)
	}
}

func TestDeletingTheSessionResumesAPairing(t *testing.T) {
	c, h := startCrashing(t, 200*time.Millisecond, sim.CrashLogout)
	h.nextUnless(procmon.Kind(StateNeedsPairing), procmon.EventBackoff)
	if err := os.RemoveAll(c.SessionDir); err != nil {
		t.Fatal(err)
	}
	ev := h.nextUnless(EventCredsChanged, procmon.EventStarting)
	if ev.Data["exists"] != false {
		t.Fatalf("creds_changed data: %v", ev.Data)
	}
	// Unpaired now, the bridge shows a QR code instead of logging out.
	h.nextUnless(EventQR, procmon.Kind(StateNeedsPairing))
}

func TestOtherExit1IsRespawned(t *testing.T) {
	_, h := startCrashing(t, 100*time.Millisecond, sim.CrashException)
	h.next(procmon.EventExited)
	h.nextUnless(procmon.EventBackoff, procmon.Kind(StateNeedsPairing))
	h.next(procmon.EventStarted)
}

func TestAbortIsASignalDeath(t *testing.T) {
	_, h := startCrashing(t, 100*time.Millisecond, sim.CrashAbort)
	ex := h.next(procmon.EventExited)
	if ex.Exit.Signal == nil || *ex.Exit.Signal != "SIGABRT" || ex.Exit.Class != procmon.ClassFailure {
		t.Fatalf("abort: %s", ex.Exit.Describe())
	}
}

func TestFlapping(t *testing.T) {
	c := simConfig(t)
	pair(t, c.SessionDir)
	c.FlipEvery = 60 * time.Millisecond
	c.ReconnectAfter = 60 * time.Millisecond
	h := start(t, simCommand(c), testOptions(c))
	ev := h.nextUnless(EventFlapping, procmon.EventExited)
	if n, _ := ev.Data["flips"].(int); n <= 5 {
		t.Fatalf("flapping after %v flips", ev.Data["flips"])
	}
	if !details(t, ev).Flapping || !strings.Contains(ev.Status.Message, "changed") {
		t.Fatalf("status after flapping: %+v, %q", details(t, ev), ev.Status.Message)
	}
	var flips int
	for _, e := range h.events.Seen {
		if e.Kind == EventConnected || e.Kind == EventDisconnected {
			flips++
		}
	}
	if flips <= 5 {
		t.Fatalf("flapping raised after %d connected/disconnected events", flips)
	}
}

func TestReadinessFollowsTheConnection(t *testing.T) {
	c := simConfig(t)
	pair(t, c.SessionDir)
	c.FlipEvery = 200 * time.Millisecond
	c.ReconnectAfter = 200 * time.Millisecond
	h := start(t, simCommand(c), testOptions(c))
	for _, want := range []bool{true, false, true} {
		ev := h.nextUnless(procmon.EventReady, procmon.EventExited)
		if *ev.Ready != want {
			t.Fatalf("ready %v, want %v; seen %v", *ev.Ready, want, h.kinds())
		}
	}
	d := h.next(EventDisconnected)
	if d.Reason != "connectionLost" {
		t.Fatalf("disconnect reason %q, want the one the bridge printed", d.Reason)
	}
}

func TestUnresponsiveBridgeIsRestarted(t *testing.T) {
	c := simConfig(t)
	pair(t, c.SessionDir)
	c.HealthHang = true
	opts := testOptions(c)
	opts.HealthTimeout = 50 * time.Millisecond
	opts.HealthFailures = 3
	h := start(t, simCommand(c), opts)
	first := h.next(procmon.EventStarted)
	ev := h.nextUnless(EventUnresponsive, procmon.EventExited)
	if ev.Data["failures"] != 3 || !strings.Contains(ev.Reason, "did not answer") {
		t.Fatalf("unresponsive: data %v, reason %q", ev.Data, ev.Reason)
	}
	if ev.Pid != first.Pid || ev.Data["pid"] != nil {
		t.Fatalf("unresponsive names pid %d (data %v), want the event's own pid %d", ev.Pid, ev.Data, first.Pid)
	}
	ex := h.next(procmon.EventExited)
	if ex.Pid != first.Pid || !ex.Exit.Requested {
		t.Fatalf("the hung bridge was not stopped by the sidecar: %+v", ex.Exit)
	}
	if second := h.next(procmon.EventStarted); second.Pid == first.Pid {
		t.Fatal("no new bridge")
	}
}

// A bridge that hangs again after each restart is a failing bridge: its
// restarts back off and count, as crashes do (#104014's tight loop).
func TestUnresponsiveRestartsBackOffAndCount(t *testing.T) {
	c := simConfig(t)
	pair(t, c.SessionDir)
	c.HealthHang = true
	opts := testOptions(c)
	opts.HealthTimeout = 50 * time.Millisecond
	opts.HealthFailures = 3
	h := start(t, simCommand(c), opts)
	var delays []int64
	for i := 1; i <= 2; i++ {
		started := h.next(procmon.EventStarted)
		h.nextUnless(EventUnresponsive, procmon.EventExited)
		ex := h.next(procmon.EventExited)
		if ex.Pid != started.Pid || ex.Exit.Class != procmon.ClassFailure || !strings.Contains(ex.Exit.Reason, "unresponsive") {
			t.Fatalf("cycle %d: exit of the hung bridge: %+v", i, ex.Exit)
		}
		bo := h.nextUnless(procmon.EventBackoff, procmon.EventStarting)
		if bo.Status.ConsecutiveFailures != i {
			t.Fatalf("cycle %d: consecutive_failures %d", i, bo.Status.ConsecutiveFailures)
		}
		delays = append(delays, bo.DelayMS)
	}
	if delays[0] <= 0 || delays[1] <= delays[0] {
		t.Fatalf("backoff delays after unresponsive restarts: %v, want growing", delays)
	}
}

func TestConnectTimeoutIsReportedNotFatal(t *testing.T) {
	c := simConfig(t) // never paired, never scanned
	opts := testOptions(c)
	opts.ConnectGrace = 300 * time.Millisecond
	h := start(t, simCommand(c), opts)
	ev := h.nextUnless(EventConnectTimeout, procmon.EventExited)
	if ev.Status.State != procmon.StateRunning {
		t.Fatalf("connect_timeout in state %s", ev.Status.State)
	}
	// The advice depends on whether the bridge got as far as a QR code
	// within the grace period.
	sawQR := false
	for _, e := range h.events.Seen {
		sawQR = sawQR || e.Kind == EventQR
	}
	if want := map[bool]string{true: "QR scan", false: "network"}[sawQR]; !strings.Contains(ev.Message, want) {
		t.Fatalf("connect_timeout (QR shown: %v) says %q, want it to mention %q", sawQR, ev.Message, want)
	}
	// Still the same bridge, still showing codes.
	h.nextUnless(EventQR, procmon.EventExited, procmon.EventStopping)
}

func TestWithoutAPortTheOutputDecides(t *testing.T) {
	h := start(t, []string{fakeBridge, "-say", "📱 Scan this QR code with WhatsApp on your phone:|" +
		strings.Join(rowsOf("2@abc,def,ghi,jkl"), "|") + "|Waiting for scan...|✅ WhatsApp connected!|⚠️  Connection closed (reason: 428). Reconnecting in 3s...",
		"-hang"}, Options{})
	started := h.next(procmon.EventStarted)
	if !started.Status.Ready {
		t.Fatal("without a port, readiness should stay the monitor's (ready once spawned)")
	}
	qr := h.next(EventQR)
	if rows, _ := qr.Private["qr_rows"].([]string); len(rows) != len(rowsOf("2@abc,def,ghi,jkl")) {
		t.Fatalf("QR rows: got %d", len(rows))
	}
	h.nextUnless(EventConnected, EventDisconnected)
	h.next(EventPaired)
	d := h.next(EventDisconnected)
	if d.Reason != "428" || details(t, d).Health != "off" {
		t.Fatalf("disconnected: reason %q, details %+v", d.Reason, details(t, d))
	}
}

func rowsOf(payload string) []string { return qrcode.Lines(payload) }

// sayConnection is a fake bridge without a port that prints a QR code if
// asked, then the connection lines given (true: connected), then hangs.
func sayConnection(qr bool, ups ...bool) []string {
	var lines []string
	if qr {
		lines = append(lines, "📱 Scan this QR code with WhatsApp on your phone:")
		lines = append(lines, rowsOf("2@abc,def,ghi,jkl")...)
		lines = append(lines, "Waiting for scan...")
	}
	for _, up := range ups {
		if up {
			lines = append(lines, "✅ WhatsApp connected!")
		} else {
			lines = append(lines, "⚠️  Connection closed (reason: 428). Reconnecting in 3s...")
		}
	}
	return []string{fakeBridge, "-say", strings.Join(lines, "|"), "-hang"}
}

// paired is said once per pairing, not again when the same session
// reconnects later.
func TestPairedIsSaidOnce(t *testing.T) {
	h := start(t, sayConnection(true, true, false, true), Options{})
	h.next(EventQR)
	h.nextUnless(EventConnected, EventDisconnected)
	h.nextUnless(EventPaired, EventDisconnected)
	h.nextUnless(EventDisconnected, EventConnected)
	h.nextUnless(EventConnected, EventPaired)
	// The watcher posts paired right after connected, and the disconnect
	// of this stop after both: nothing may come between.
	if err := h.m.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	h.nextUnless(EventDisconnected, EventPaired)
}

// flapping clears by itself once the window passes while the connection
// stays up.
func TestFlappingClearsWhenTheConnectionSettles(t *testing.T) {
	h := start(t, sayConnection(false, true, false, true, false, true, false, true), Options{FlapLimit: 5, FlapWindow: 300 * time.Millisecond})
	ev := h.nextUnless(EventFlapping, procmon.EventExited)
	if !details(t, ev).Flapping {
		t.Fatal("flapping event without flapping in the details")
	}
	for {
		ev = h.nextUnless(EventHealth, procmon.EventExited, EventDisconnected)
		if !details(t, ev).Flapping {
			break
		}
	}
	if d := details(t, ev); d.Connection != "connected" || !strings.Contains(ev.Status.Message, "settled") {
		t.Fatalf("after flapping cleared: %+v, message %q", d, ev.Status.Message)
	}
}

// A stop the sidecar asked for is not a flip of the connection.
func TestRequestedStopIsNoFlip(t *testing.T) {
	h := start(t, sayConnection(false, true), Options{FlapLimit: 2, FlapWindow: time.Hour})
	h.next(EventConnected) // flip 1
	if err := h.m.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	h.nextUnless(EventDisconnected, EventFlapping) // requested: no flip
	h.nextUnless(EventConnected, EventFlapping)    // flip 2
	if err := h.m.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// Posted after anything connecting raised, by the same goroutine.
	h.nextUnless(EventDisconnected, EventFlapping)
}

// TestExitTailsCarryNoQRCode: exit records are readable without the token,
// so a bridge that dies while showing a QR code leaves no code in them.
func TestExitTailsCarryNoQRCode(t *testing.T) {
	for _, pairJSON := range []bool{false, true} {
		c := simConfig(t)
		c.PairJSON = pairJSON
		c.CrashAfter = 350 * time.Millisecond // after a few QR codes, before any pairing
		c.Crashes = []sim.Crash{sim.CrashException}
		h := start(t, simCommand(c), testOptions(c))
		h.nextUnless(EventQR, procmon.EventExited)
		ex := h.next(procmon.EventExited)
		if len(ex.Exit.Tail) == 0 {
			t.Fatal("empty tail")
		}
		for _, line := range ex.Exit.Tail {
			if CarriesPairingCode([]byte(line)) {
				t.Fatalf("pair-json=%v: QR code in the exit tail: %q", pairJSON, line)
			}
		}
		h.shutdown()
	}
}

// startCrashing runs a paired simulated bridge that crashes the given way
// once it has been up for after.
func startCrashing(t *testing.T, after time.Duration, crash sim.Crash) (sim.Config, *harness) {
	t.Helper()
	c := simConfig(t)
	pair(t, c.SessionDir)
	c.CrashAfter = after
	c.Crashes = []sim.Crash{crash}
	return c, start(t, simCommand(c), testOptions(c))
}

// TestAnOldBridgesEventsComeBeforeTheNextOnes restarts and then stops a
// connected, adoptable bridge: its disconnected event and the adoption
// verdict it changes come right after its exit, before the new bridge's
// started (and before stopped), each cause before its effect.
func TestAnOldBridgesEventsComeBeforeTheNextOnes(t *testing.T) {
	script := bridgeDir(t)
	h := startServing(t, script, Expect{Script: script})
	waitAdoptable := func() int {
		t.Helper()
		for {
			ev, a := adoption(t, h)
			if a.Adoptable {
				return ev.Status.Pid
			}
		}
	}
	// after checks the events that followed the exit of pid, up to and
	// including the first of until.
	after := func(pid int, until procmon.Kind) {
		t.Helper()
		ex := h.next(procmon.EventExited)
		if ex.Pid != pid {
			t.Fatalf("exit of %d, want %d", ex.Pid, pid)
		}
		end := h.next(until)
		var kinds []procmon.Kind
		for _, ev := range h.events.Seen {
			if ev.Seq > ex.Seq && ev.Seq <= end.Seq {
				kinds = append(kinds, ev.Kind)
				if ev.Kind == EventDisconnected && ev.Data["bridge_pid"] != pid {
					t.Fatalf("disconnected for %v after the exit of %d", ev.Data["bridge_pid"], pid)
				}
				if ev.Kind == EventDisconnected && details(t, ev).Connection != "down" {
					t.Fatalf("disconnected with details %+v", details(t, ev))
				}
			}
		}
		want := []procmon.Kind{EventDisconnected, EventAdoption}
		if len(kinds) < 2 || kinds[0] != want[0] || kinds[1] != want[1] {
			t.Fatalf("after the exit of %d: %v, want %v first", pid, kinds, want)
		}
	}
	first := waitAdoptable()
	if err := h.m.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	after(first, procmon.EventStarted)
	second := waitAdoptable()
	if second == first {
		t.Fatal("no new bridge")
	}
	if err := h.m.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	after(second, procmon.EventStopped)
	// Nothing about the old bridges comes later either: the watcher took
	// on what the monitor's hook posted.
	if err := h.m.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	h.next(procmon.EventStarted)
	h.next(EventConnected)
	for _, ev := range h.events.Seen {
		if ev.Kind == EventDisconnected && ev.Data["bridge_pid"] == nil {
			t.Fatalf("a disconnected event without a cause: %v", h.kinds())
		}
	}
	if n := countKind(h.kinds(), EventDisconnected); n != 2 {
		t.Fatalf("%d disconnected events for two ends: %v", n, h.kinds())
	}
}

func countKind(kinds []procmon.Kind, k procmon.Kind) int {
	n := 0
	for _, x := range kinds {
		if x == k {
			n++
		}
	}
	return n
}

// A probe setting New cannot use is a *ProbeError in bridge's words; cmd
// names the flags.
func TestBadProbeSettingsAreTyped(t *testing.T) {
	for _, tc := range []struct {
		opts  Options
		field string
		text  string
	}{
		{Options{HealthPeriod: time.Second, HealthTimeout: 2 * time.Second}, "HealthTimeout",
			"bridge: Options.HealthTimeout (2s) is longer than HealthPeriod (1s); the probes would overlap"},
		{Options{HealthFailures: -1}, "HealthFailures", "bridge: Options.HealthFailures must be at least 1 (got -1)"},
	} {
		_, err := New(tc.opts)
		var pe *ProbeError
		if !errors.As(err, &pe) || pe.Field != tc.field || err.Error() != tc.text {
			t.Errorf("New(%+v) = %v; want a *ProbeError %q", tc.opts, err, tc.text)
		}
	}
}
