package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/gatewaymodel"
	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
)

// These tests put the real sidecar next to a model of the Hermes gateway's
// WhatsApp adapter (internal/gatewaymodel: its connect() with the adoption
// check, the kill by pidfile and port, the 1 s sleep and its own spawn; its
// poll loop; its disconnect()), in each order the two can start in. The
// bridges are the simulated bridge, reporting the hash of the gateway's
// bridge.js as the real one reports its own.

// hermesInstall lays out a Hermes home as the installer does: the code,
// and so the bridge, under hermes-agent/, its node_modules stamped as the
// gateway stamps them, and a paired session.
type hermesInstall struct {
	home, script, session string
}

func newHermesInstall(t *testing.T) hermesInstall {
	t.Helper()
	home := t.TempDir()
	dir := filepath.Join(home, "hermes-agent", "scripts", "whatsapp-bridge")
	pkg := `{"name":"hermes-whatsapp-bridge","version":"1.0.0"}`
	sum := sha256.Sum256([]byte(pkg))
	for name, content := range map[string]string{
		"bridge.js":                     "// the Hermes bridge, release 1\n",
		"package.json":                  pkg,
		"node_modules/.hermes-pkg-hash": hex.EncodeToString(sum[:])[:16],
	} {
		writeTestFile(t, filepath.Join(dir, name), content)
	}
	session := filepath.Join(home, "platforms", "whatsapp", "session")
	writeTestFile(t, filepath.Join(session, "creds.json"), `{"me":{"id":"1@s.whatsapp.net"}}`)
	return hermesInstall{home: home, script: filepath.Join(dir, "bridge.js"), session: session}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// adoptionSetup is one Hermes install, one bridge port, and the command
// that runs a simulated bridge on them, for both sides.
type adoptionSetup struct {
	t      *testing.T
	bin    string
	in     hermesInstall
	port   int
	listen string
}

func newAdoptionSetup(t *testing.T) *adoptionSetup {
	bin, _ := binaries(t)
	s := &adoptionSetup{t: t, bin: bin, in: newHermesInstall(t), port: proctest.FreePort(t), listen: "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t))}
	// The gateway's bridge_port, as a user sets it.
	writeTestFile(t, filepath.Join(s.in.home, "config.yaml"), "platforms:\n  whatsapp:\n    extra:\n      bridge_port: "+strconv.Itoa(s.port)+"\n")
	return s
}

// bridge is the command of a simulated bridge of this install, taking
// connectAfter to connect with its saved credentials.
func (s *adoptionSetup) bridge(connectAfter time.Duration) []string {
	return []string{s.bin, "simulate-bridge", "--port", strconv.Itoa(s.port), "--session", s.in.session,
		"--script-hash-of", s.in.script, "--connect-after", connectAfter.String()}
}

// sidecar starts wa-sidecar over a simulated bridge of the install.
func (s *adoptionSetup) sidecar(connectAfter time.Duration) *sidecarProc {
	args := append([]string{"run", "--listen", s.listen, "--state-dir", s.t.TempDir(),
		"--bridge-script", s.in.script, "--health-period", "300ms", "--"}, s.bridge(connectAfter)...)
	cmd := exec.Command(s.bin, args...)
	cmd.Env = append(os.Environ(), "HERMES_HOME="+s.in.home)
	return startCmd(s.t, cmd)
}

// gateway is the gateway's adapter, configured as on this install.
func (s *adoptionSetup) gateway() *gatewaymodel.Gateway {
	g := gatewaymodel.New(gatewaymodel.Config{
		Script: s.in.script, SessionDir: s.in.session, Port: s.port,
		Spawn:        s.bridge(300 * time.Millisecond),
		StartTimeout: 5 * time.Second, ConnectTimeout: 5 * time.Second, PollEvery: 100 * time.Millisecond,
		Logf: s.t.Logf,
	})
	s.t.Cleanup(g.Close)
	return g
}

// status is the sidecar's /v1/status, or nil while it does not answer.
func (s *adoptionSetup) status() map[string]any {
	resp, err := http.Get("http://" + s.listen + "/v1/status")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var st map[string]any
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return nil
	}
	return st
}

// waitStatus waits until ok holds for the sidecar's status.
func (s *adoptionSetup) waitStatus(what string, ok func(map[string]any) bool) map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var st map[string]any
	for time.Now().Before(deadline) {
		if st = s.status(); st != nil && ok(st) {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("the sidecar never became %s; last status %v", what, st)
	return nil
}

func adoptable(st map[string]any) bool {
	return st["state"] == "running" && st["ready"] == true && adoptionOf(st)["adoptable"] == true
}

func adoptionOf(st map[string]any) map[string]any {
	a, _ := whatsapp(st)["adoption"].(map[string]any)
	return a
}

func whatsapp(st map[string]any) map[string]any {
	d, _ := st["details"].(map[string]any)
	w, _ := d["whatsapp"].(map[string]any)
	return w
}

func num(st map[string]any, key string) int {
	f, _ := st[key].(float64)
	return int(f)
}

// calm checks the sidecar never counted the fight as failures.
func calm(t *testing.T, st map[string]any) {
	t.Helper()
	if num(st, "consecutive_failures") != 0 || st["crashloop"] == true {
		t.Fatalf("the sidecar counted failures: %v", st)
	}
}

func connectCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestGatewayAdoptsTheSidecarsBridgeWhenTheSidecarStartsFirst(t *testing.T) {
	s := newAdoptionSetup(t)
	sc := s.sidecar(200 * time.Millisecond)
	before := s.waitStatus("adoptable", adoptable)
	bridgePid := num(before, "pid")

	g := s.gateway()
	r := g.Connect(connectCtx(t))
	if r.Outcome != gatewaymodel.Adopted || len(r.Killed) != 0 || r.NPMInstall {
		t.Fatalf("gateway connect: %+v", r)
	}

	// The gateway polls the adopted bridge. A SIGKILL (the OOM killer) so
	// soon after the start is a failure to the sidecar, which respawns
	// after the first backoff delay; the poll loop only sees errors until
	// the new bridge answers.
	ctx, stop := context.WithCancel(context.Background())
	polled := make(chan error, 64)
	done := make(chan error, 1)
	go func() { done <- g.Poll(ctx, 50*time.Millisecond, func(err error) { polled <- err }) }()
	if err := syscall.Kill(bridgePid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	after := s.waitStatus("running a new adoptable bridge", func(st map[string]any) bool {
		return adoptable(st) && num(st, "pid") != bridgePid
	})
	if num(after, "consecutive_failures") != 1 || after["crashloop"] == true {
		t.Fatalf("an outside SIGKILL so soon after the start is one failure, not a crash loop: %v", after)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("the poll loop ended with %v", err)
	}
	// Once adopted again, the gateway does not replace it either.
	if r := g.Connect(connectCtx(t)); r.Outcome != gatewaymodel.Adopted || len(r.Killed) != 0 {
		t.Fatalf("second connect: %+v", r)
	}
	sc.stopOK()
}

func TestGatewayConnectingWhileDisconnectedLosesThePortAndAdoptsNextTime(t *testing.T) {
	s := newAdoptionSetup(t)
	// Up, but not yet connected for 2 s: what a gateway restart during a
	// 3 s reconnect meets.
	sc := s.sidecar(2 * time.Second)
	first := s.waitStatus("answering /health", func(st map[string]any) bool { return whatsapp(st)["health"] == "ok" })
	g := s.gateway()
	r := g.Connect(connectCtx(t))
	if r.Replaced != gatewaymodel.NotConnected || len(r.Killed) == 0 {
		t.Fatalf("the gateway should have replaced a disconnected bridge: %+v", r)
	}
	// The sidecar took the port back within the gateway's 1 s sleep: the
	// gateway's own bridge could not listen, and its attempt failed cleanly.
	if r.Outcome != gatewaymodel.Failed {
		t.Fatalf("the gateway's own bridge won the port: %+v", r)
	}
	st := s.waitStatus("adoptable again", func(st map[string]any) bool { return adoptable(st) && num(st, "pid") != num(first, "pid") })
	calm(t, st)
	if r := g.Connect(connectCtx(t)); r.Outcome != gatewaymodel.Adopted || len(r.Killed) != 0 {
		t.Fatalf("the gateway's next attempt: %+v", r)
	}
	sc.stopOK()
}

func TestSidecarYieldsToTheGatewaysBridgeAndTakesOverWhenItGoes(t *testing.T) {
	s := newAdoptionSetup(t)
	g := s.gateway()
	r := g.Connect(connectCtx(t))
	if r.Outcome != gatewaymodel.Spawned || r.Own == nil {
		t.Fatalf("a gateway alone should run its own bridge: %+v", r)
	}
	sc := s.sidecar(200 * time.Millisecond)
	y := s.waitStatus("yielded", func(st map[string]any) bool { return st["state"] == "yielded" })
	if num(y, "pid") != 0 || num(y, "restarts") != 0 {
		t.Fatalf("yielded status: %v", y)
	}
	// It stays yielded: no failures, no crashloop, no spawn.
	time.Sleep(3 * time.Second)
	st := s.status()
	if st["state"] != "yielded" || num(st, "restarts") != 0 {
		t.Fatalf("after 3 s yielded: %v", st)
	}
	calm(t, st)
	if !proctest.Running(r.Own.Pid) {
		t.Fatal("the gateway's bridge was stopped")
	}

	// The gateway stops (its disconnect kills its own bridge); the sidecar
	// takes over.
	freed := make(chan time.Time, 1)
	go func() { // when the port is free: the gateway's bridge is gone
		for {
			c, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(s.port))
			if err != nil {
				freed <- time.Now()
				return
			}
			c.Close()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	g.Disconnect()
	st = s.waitStatus("running its own bridge", func(st map[string]any) bool { return st["state"] == "running" && num(st, "pid") > 0 })
	t.Logf("the sidecar's bridge started %s after the port was freed", time.Since(<-freed).Round(time.Millisecond))
	calm(t, st)
	s.waitStatus("adoptable", adoptable)
	if r := g.Connect(connectCtx(t)); r.Outcome != gatewaymodel.Adopted || len(r.Killed) != 0 {
		t.Fatalf("the restarted gateway: %+v", r)
	}
	sc.stopOK()
}

func TestHashMismatchIsReportedAndTheBridgeRestartedAfterAnUpdate(t *testing.T) {
	s := newAdoptionSetup(t)
	sc := s.sidecar(200 * time.Millisecond)
	before := s.waitStatus("adoptable", adoptable)

	// `hermes update` changes bridge.js under the running bridge. Until the
	// sidecar restarts it, the gateway would take it for stale.
	writeTestFile(t, s.in.script, "// the Hermes bridge, release 2\n")
	sc.waitLog("files changed on disk")
	after := s.waitStatus("adoptable with the new files", func(st map[string]any) bool {
		return adoptable(st) && num(st, "pid") != num(before, "pid")
	})
	if adoptionOf(after)["disk_hash"] == adoptionOf(before)["disk_hash"] {
		t.Fatalf("disk hash unchanged: %v / %v", adoptionOf(before), adoptionOf(after))
	}
	calm(t, after)
	if r := s.gateway().Connect(connectCtx(t)); r.Outcome != gatewaymodel.Adopted {
		t.Fatalf("gateway connect after the update: %+v", r)
	}

	sc.stopOK()
}

func TestABridgeServingOtherFilesIsNotReady(t *testing.T) {
	s := newAdoptionSetup(t)
	// The simulator's own scriptHash: not the hash of the gateway's bridge.js.
	cmd := exec.Command(s.bin, "run", "--listen", s.listen, "--state-dir", t.TempDir(), "--bridge-script", s.in.script,
		"--health-period", "300ms", "--",
		s.bin, "simulate-bridge", "--port", strconv.Itoa(s.port), "--session", s.in.session, "--connect-after", "100ms")
	cmd.Env = append(os.Environ(), "HERMES_HOME="+s.in.home)
	sc := startCmd(t, cmd)
	st := s.waitStatus("connected", func(st map[string]any) bool {
		if whatsapp(st)["connection"] != "connected" {
			return false
		}
		reasons, _ := adoptionOf(st)["reasons"].([]any)
		for _, r := range reasons {
			if m, _ := r.(map[string]any); m["code"] == "script_hash_differs" {
				return true
			}
		}
		return false
	})
	if st["ready"] == true {
		t.Fatalf("ready, though the gateway would replace it: %v", st)
	}
	resp, err := http.Get("http://" + s.listen + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var rd map[string]any
	json.NewDecoder(resp.Body).Decode(&rd)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(rd["reason"].(string), "scriptHash") {
		t.Fatalf("/readyz: %d %v", resp.StatusCode, rd)
	}
	sc.stopOK()
}

func TestABridgeOffTheGatewaysPortIsNotAdoptable(t *testing.T) {
	s := newAdoptionSetup(t)
	other := proctest.FreePort(t)
	cmd := exec.Command(s.bin, "run", "--listen", s.listen, "--state-dir", t.TempDir(), "--port", strconv.Itoa(other), "--health-period", "300ms", "--",
		s.bin, "simulate-bridge", "--port", strconv.Itoa(other), "--session", s.in.session, "--script-hash-of", s.in.script, "--connect-after", "100ms")
	cmd.Env = append(os.Environ(), "HERMES_HOME="+s.in.home)
	sc := startCmd(t, cmd)
	st := s.waitStatus("judged", func(st map[string]any) bool {
		reasons, _ := adoptionOf(st)["reasons"].([]any)
		for _, r := range reasons {
			if m, _ := r.(map[string]any); m["code"] == "port_differs" {
				return whatsapp(st)["connection"] == "connected"
			}
		}
		return false
	})
	if st["ready"] == true {
		t.Fatalf("ready on a port the gateway never looks at: %v", st)
	}
	sc.stopOK()
}

func TestMissingNodeModulesIsSaid(t *testing.T) {
	bin, fake := binaries(t)
	in := newHermesInstall(t)
	if err := os.RemoveAll(filepath.Join(filepath.Dir(in.script), "node_modules")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--node", fake)
	cmd.Env = append(os.Environ(), "HERMES_HOME="+in.home, "WA_SIDECAR_LISTEN=127.0.0.1:0", "WA_SIDECAR_STATE_DIR="+t.TempDir())
	p := startCmd(t, cmd)
	rec := p.waitLog("dependencies are not installed")
	if msg, _ := rec["msg"].(string); !strings.Contains(msg, "prepare-bridge "+filepath.Dir(in.script)) {
		t.Fatalf("no way out named: %v", rec)
	}
	p.stopOK()
}
