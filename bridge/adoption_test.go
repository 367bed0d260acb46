package bridge

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/session"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// bridgeDir lays out a bridge folder as the Hermes installer does, with
// node_modules installed and stamped as the gateway stamps it (the first
// 16 hex digits of the SHA-256 of package.json), and returns bridge.js.
func bridgeDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "hermes-agent", "scripts", "whatsapp-bridge")
	pkg := `{"name":"hermes-whatsapp-bridge","dependencies":{}}`
	touch(t, filepath.Join(dir, "bridge.js"), "// the bridge, version 1\n")
	touch(t, filepath.Join(dir, "package.json"), pkg)
	sum := sha256.Sum256([]byte(pkg))
	touch(t, filepath.Join(dir, "node_modules", ".hermes-pkg-hash"), hex.EncodeToString(sum[:])[:16])
	return filepath.Join(dir, "bridge.js")
}

// adoption waits for the next adoption event and returns its verdict.
func adoption(t *testing.T, h *harness) (procmon.Event, *Adoption) {
	t.Helper()
	ev := h.next(EventAdoption)
	a := details(t, ev).Adoption
	if a == nil {
		t.Fatalf("adoption event without adoption details: %+v", ev)
	}
	return ev, a
}

func hasReason(a *Adoption, code string) bool {
	for _, r := range a.Reasons {
		if r.Code == code {
			return true
		}
	}
	return false
}

// startServing runs a paired simulated bridge that reports the hash of
// script (or its own, with script empty) under the Hermes layer, expecting
// ex with ex.Script set to script.
func startServing(t *testing.T, script string, ex Expect) *harness {
	t.Helper()
	c := simConfig(t)
	pair(t, c.SessionDir)
	c.ScriptHashOf = script
	opts := testOptions(c)
	opts.Expect = &ex
	return start(t, simCommand(c), opts)
}

func TestAdoptableOnceConnectedWithTheGatewaysFiles(t *testing.T) {
	script := bridgeDir(t)
	h := startServing(t, script, Expect{Script: script})

	// Connected comes first, then the verdict, then readiness: each cause
	// before its effect.
	h.nextUnless(EventConnected, procmon.EventReady)
	_, a := adoption(t, h)
	for hasReason(a, ReasonNotConnected) { // one verdict may come from before
		_, a = adoption(t, h)
	}
	if !a.Adoptable || len(a.Reasons) != 0 || len(a.DiskHash) != 16 {
		t.Fatalf("adoption of a connected bridge serving the gateway's files: %+v", a)
	}
	if ev := h.next(procmon.EventReady); ev.Ready == nil || !*ev.Ready {
		t.Fatalf("not ready while adoptable: %+v", ev)
	}
}

func TestNotAdoptableWhileTheHashDiffersAndNeverRestartedForIt(t *testing.T) {
	script := bridgeDir(t)
	// The simulator's own hash: a bridge.js other than the gateway's.
	c := simConfig(t)
	pair(t, c.SessionDir)
	opts := testOptions(c)
	opts.Expect = &Expect{Script: script}
	h := start(t, simCommand(c), opts)
	h.next(EventConnected)
	var a *Adoption
	for a == nil || !hasReason(a, ReasonScriptHashDiffers) {
		_, a = adoption(t, h)
	}
	if a.Adoptable || hasReason(a, ReasonNotConnected) {
		t.Fatalf("verdict: %+v", a)
	}
	if st := h.m.Status(); st.Ready {
		t.Fatal("ready, though the gateway would replace this bridge")
	}
	// Several probes later it still runs: restarting could not fix it.
	pid := h.m.Status().Pid
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if st := h.m.Status(); st.Pid != pid {
			t.Fatalf("bridge restarted (%d → %d) for a hash it never matched: %v", pid, st.Pid, h.kinds())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestUpdatedFilesRestartTheBridgeSoHashesAgreeAgain(t *testing.T) {
	script := bridgeDir(t)
	h := startServing(t, script, Expect{Script: script})
	first := h.next(procmon.EventStarted)
	for {
		_, a := adoption(t, h)
		if a.Adoptable {
			break
		}
		if !hasReason(a, ReasonNotConnected) {
			t.Fatalf("not adoptable before the update: %+v", a)
		}
	}

	// `hermes update` rewrites bridge.js under the running bridge.
	touch(t, script, "// the bridge, version 2\n")
	upd := h.next(EventBridgeUpdated)
	if upd.Data["running_hash"] == upd.Data["disk_hash"] || upd.Message == "" {
		t.Fatalf("bridge_updated event: %+v", upd)
	}
	ex := h.next(procmon.EventExited)
	if ex.Pid != first.Pid || ex.Exit.Class != procmon.ClassRequested {
		t.Fatalf("exit after the update: %+v", ex.Exit)
	}
	second := h.next(procmon.EventStarted)
	var a *Adoption
	for a == nil || !a.Adoptable {
		_, a = adoption(t, h)
	}
	if second.Status.ConsecutiveFailures != 0 {
		t.Fatalf("the update restart counted as a failure: %+v", second.Status)
	}
}

func TestReadReceiptsAndCredsAreChecked(t *testing.T) {
	script := bridgeDir(t)
	// The gateway sends read receipts; the bridge (WHATSAPP_SEND_READ_RECEIPTS
	// unset) does not.
	h := startServing(t, script, Expect{Script: script, SendReadReceipts: true})
	h.next(EventConnected)
	var a *Adoption
	for a == nil || !hasReason(a, ReasonReadReceiptsDiffer) {
		_, a = adoption(t, h)
	}
	if a.Adoptable || len(a.Reasons) != 1 {
		t.Fatalf("verdict: %+v", a)
	}
}

func TestUnpairedIsNotAdoptable(t *testing.T) {
	c := simConfig(t) // no creds.json
	opts := testOptions(c)
	opts.Expect = &Expect{}
	h := start(t, simCommand(c), opts)
	h.next(procmon.EventStarted)
	_, a := adoption(t, h)
	if a.Adoptable || !hasReason(a, ReasonNoCreds) || !hasReason(a, ReasonNotConnected) {
		t.Fatalf("verdict for an unpaired bridge: %+v", a)
	}
	st := procmon.Status{State: procmon.StateRunning, Pid: 7, Details: map[string]any{DetailsKey: Details{Adoption: a, BridgePid: 7}}}
	want := fmt.Sprintf("the gateway would not adopt it: %s (and %d more)", a.Reasons[0].Message, len(a.Reasons)-1)
	if got := NotReadyReason(st); got != want {
		t.Fatalf("NotReadyReason = %q; want %q", got, want)
	}
}

func TestPortTakenAtStartIsAStandbyOnce(t *testing.T) {
	// Someone else holds the port, and no guard finds out who: the first
	// EADDRINUSE is taken for a lost race, the next ones are failures.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := simConfig(t)
	c.Port = ln.Addr().(*net.TCPAddr).Port
	pair(t, c.SessionDir)
	// The stranger's listener accepts the probes and never answers them;
	// testOptions never restarts a bridge for that.
	h := start(t, simCommand(c), testOptions(c))

	ex := h.next(procmon.EventExited)
	if ex.Exit.Reason != ReasonPortTaken {
		t.Fatalf("first EADDRINUSE exit: %+v", ex.Exit)
	}
	y := h.nextUnless(procmon.Kind(session.StateYielded), procmon.EventBackoff)
	if y.Status.ConsecutiveFailures != 0 || y.Reason != ReasonPortTaken {
		t.Fatalf("standby after a lost race: %+v", y)
	}
	h.next(procmon.EventExited)
	bo := h.nextUnless(procmon.EventBackoff, procmon.Kind(session.StateYielded))
	if bo.Status.ConsecutiveFailures != 1 {
		t.Fatalf("the second EADDRINUSE in a row is not a failure: %+v", bo.Status)
	}
}

func TestAStaleNPMStampWarnsButStaysAdoptable(t *testing.T) {
	script := bridgeDir(t)
	// As after `hermes whatsapp`: dependencies installed, no stamp.
	if err := os.Remove(filepath.Join(filepath.Dir(script), "node_modules", ".hermes-pkg-hash")); err != nil {
		t.Fatal(err)
	}
	h := startServing(t, script, Expect{Script: script})
	var a *Adoption
	for a == nil || !a.Adoptable {
		_, a = adoption(t, h)
	}
	if len(a.Warnings) != 1 || a.Warnings[0].Code != ReasonNPMStampDiffers || !strings.Contains(a.Warnings[0].Message, "prepare-bridge") {
		t.Fatalf("warnings: %+v", a.Warnings)
	}
}

func TestABridgeOnAnotherPortOrSessionIsNotTheGatewaysOne(t *testing.T) {
	c := simConfig(t)
	pair(t, c.SessionDir)
	opts := testOptions(c)
	opts.Expect = &Expect{Port: c.Port + 1, SessionDir: t.TempDir()}
	h := start(t, simCommand(c), opts)
	h.next(EventConnected)
	var a *Adoption
	for a == nil || hasReason(a, ReasonNotConnected) {
		_, a = adoption(t, h)
	}
	if a.Adoptable || !hasReason(a, ReasonPortDiffers) || !hasReason(a, ReasonSessionDiffers) {
		t.Fatalf("verdict: %+v", a)
	}
}

func TestTheVerdictChangesWhenTheBridgeStops(t *testing.T) {
	c := simConfig(t)
	pair(t, c.SessionDir)
	opts := testOptions(c)
	opts.Expect = &Expect{}
	h := start(t, simCommand(c), opts)
	var a *Adoption
	for a == nil || !a.Adoptable {
		_, a = adoption(t, h)
	}
	if err := h.m.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	h.next(procmon.EventExited)
	if _, a := adoption(t, h); a.Adoptable || !hasReason(a, ReasonNotRunning) {
		t.Fatalf("after the stop: %+v", a)
	}
}
