package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/bridge/sim"
	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// TestDemoRunsAndCleansUp runs the README's first command: the sidecar over
// its simulated bridge, which must start, show a pairing QR code, stop on
// Ctrl-C with exit 0, and leave no temporary session behind.
func TestDemoRunsAndCleansUp(t *testing.T) {
	bin, _ := binaries(t)
	p := startSidecar(t, bin, "run", "--demo", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir())
	logRec := p.waitLog("appending the bridge's output to bridge.log")
	demoDir := filepath.Dir(logRec["path"].(string))
	bridge := pidOf(t, p.waitLog("bridge started"))
	p.waitLog("pairing QR code #1")
	p.signal(syscall.SIGINT)
	p.waitLog("bridge stopped")
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d; log:\n%s", code, p.logText())
	}
	if proctest.Running(bridge) {
		t.Fatal("simulated bridge still running")
	}
	if _, err := os.Stat(demoDir); !os.IsNotExist(err) {
		t.Fatalf("demo session %s left behind (%v)", demoDir, err)
	}
}

// The demo's story is the normal life of a bridge under the sidecar's
// default backoff: a few QR codes before the scan, a disconnect in every
// run, and crashes rare enough that each respawned bridge is forgiven
// (backoff reset) before the next one, so restarts never climb towards
// the longest delay as they would in a crash loop.
func TestDemoStoryIsTheNormalLifeOfABridge(t *testing.T) {
	d, b := sim.Demo(), procmon.DefaultBackoff
	if d.PairAfter < 2*d.QREvery {
		t.Errorf("the scan comes after %s with a QR code every %s: fewer than two codes are shown", d.PairAfter, d.QREvery)
	}
	if d.FlipEvery <= 0 || d.FlipEvery+d.ReconnectAfter >= d.CrashAfter {
		t.Errorf("no disconnect and reconnect within a run: drop after %s, back after %s, crash at %s", d.FlipEvery, d.ReconnectAfter, d.CrashAfter)
	}
	// A respawned bridge is forgiven b.Reset after its start; it crashes
	// d.CrashAfter after its start, plus the time the process takes to start.
	if d.CrashAfter <= b.Reset+5*time.Second {
		t.Errorf("the bridge crashes %s after its start, not clearly after the backoff reset of %s: the demo would look like a crash loop", d.CrashAfter, b.Reset)
	}
	if d.CrashAfter > 5*time.Minute {
		t.Errorf("the first crash comes after %s: too late for a demo", d.CrashAfter)
	}
}

// The chaos knobs: simulator flags after `run --demo --` change the
// story. Compressed here, with a short --backoff-reset, the demo shows a
// crash, a respawn after the initial delay, the respawned bridge being
// forgiven, and the next crash starting again from the initial delay.
func TestDemoKnobsShowTheBackoffReset(t *testing.T) {
	bin, _ := binaries(t)
	p := startSidecar(t, bin, "run", "--demo", "--backoff-reset", "1500ms", "--",
		"--qr-every", "100ms", "--pair-after", "250ms", "--flip-every", "300ms", "--reconnect-after", "100ms", "--crash-after", "2s", "--crash", "exception")
	p.waitLog("pairing QR code #1")
	for run := 1; run <= 2; run++ {
		p.waitLog("bridge failed")
		rec := p.waitLog("restarting the bridge after a delay")
		if n, _ := rec["failures"].(float64); n != 1 {
			t.Fatalf("crash %d: %v failures in a row, want 1 (the backoff was not reset); log:\n%s", run, rec["failures"], p.logText())
		}
		p.waitLog("bridge started")
		p.waitLog("earlier failures forgiven")
	}
	p.stopOK()
}

func TestDemoRefusesKnobsItCannotTake(t *testing.T) {
	bin, _ := binaries(t)
	for _, knobs := range [][]string{{"--port", "3000"}, {"--crash", "explode"}, {"node", "bridge.js"}} {
		out, code := runOutput(t, exec.Command(bin, append([]string{"run", "--demo", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--"}, knobs...)...))
		if code != 64 || !strings.Contains(out, "--demo") || !strings.Contains(out, "drop --demo") {
			t.Errorf("run --demo -- %s: exit %d, want 64 with a hint:\n%s", strings.Join(knobs, " "), code, out)
		}
	}
}

// asUser runs cmd as a user whose default state directory is under home:
// the current one when not root; as root (whose default is the machine's
// /var/lib/wa-sidecar), proctest.Nobody.
func asUser(t *testing.T, cmd *exec.Cmd, home string) *exec.Cmd {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WA_SIDECAR_") && !strings.HasPrefix(kv, "XDG_STATE_HOME=") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "NO_COLOR=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "HOME="+home, "XDG_STATE_HOME="+filepath.Join(home, "state"))
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: proctest.Nobody, Gid: proctest.Nobody}}
	}
	return cmd
}

// userHome makes a home directory, and a copy of the binary, that the
// user of asUser can use.
func userHome(t *testing.T) (bin, home string) {
	t.Helper()
	built, _ := binaries(t)
	dir := proctest.SharedTempDir(t)
	home = filepath.Join(dir, "home")
	bin = filepath.Join(dir, "wa-sidecar")
	data, err := os.ReadFile(built)
	if err == nil {
		err = os.WriteFile(bin, data, 0o755)
	}
	if err == nil {
		err = os.Mkdir(home, 0o700)
	}
	if err == nil && os.Geteuid() == 0 {
		err = os.Chown(home, proctest.Nobody, proctest.Nobody)
	}
	if err != nil {
		t.Fatal(err)
	}
	return bin, home
}

// The README's follow-up commands, typed as printed in a second shell,
// reach a demo: status, watch, and restart, which needs the token. A
// token file already in the default state directory (of a real sidecar
// that is not running) is left as it was, and the demo's announcement
// goes away with it.
func TestDemoAnswersTheREADMEsClientCommands(t *testing.T) {
	bin, home := userHome(t)
	state := filepath.Join(home, "state", "wa-sidecar")
	realToken := strings.Repeat("ab", 32) + "\n"
	for _, err := range []error{os.MkdirAll(state, 0o700), os.WriteFile(filepath.Join(state, feed.TokenFileName), []byte(realToken), 0o600)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if os.Geteuid() == 0 {
		for _, p := range []string{filepath.Join(home, "state"), state, filepath.Join(state, feed.TokenFileName)} {
			if err := os.Chown(p, proctest.Nobody, proctest.Nobody); err != nil {
				t.Fatal(err)
			}
		}
	}
	p := startCmd(t, asUser(t, exec.Command(bin, "run", "--demo", "--listen", "127.0.0.1:0"), home))
	p.waitLog("the client commands reach this demo")
	first := pidOf(t, p.waitLog("bridge started"))
	p.waitLog("pairing QR code #1")

	out, code := runOutput(t, asUser(t, exec.Command(bin, "status", "--json"), home))
	var st procmon.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.Pid != first {
		t.Fatalf("status: exit %d, %v:\n%s", code, err, out)
	}

	watch := asUser(t, exec.Command(bin, "watch", "--json"), home)
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watch.Process.Kill(); watch.Wait() })
	lines := make(chan map[string]any, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				lines <- m
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	next := func(what string, ok func(map[string]any) bool) {
		t.Helper()
		for m := range lines {
			if ok(m) {
				return
			}
		}
		t.Fatalf("watch ended before %s; sidecar log:\n%s", what, p.logText())
	}
	next("its hello", func(m map[string]any) bool { return m["type"] == "hello" })

	if out, code := runOutput(t, asUser(t, exec.Command(bin, "restart"), home)); code != 0 {
		t.Fatalf("restart: exit %d:\n%s", code, out)
	}
	next("the restarted bridge's started event", func(m map[string]any) bool {
		pid, _ := m["pid"].(float64)
		return m["event"] == "started" && int(pid) != first
	})
	watch.Process.Signal(syscall.SIGINT)
	if err := watch.Wait(); err != nil {
		t.Errorf("watch after Ctrl-C: %v", err)
	}

	p.stopOK()
	if _, err := os.Stat(filepath.Join(state, feed.DiscoveryFileName)); !os.IsNotExist(err) {
		t.Errorf("the demo's %s outlived it (%v)", feed.DiscoveryFileName, err)
	}
	if b, err := os.ReadFile(filepath.Join(state, feed.TokenFileName)); err != nil || string(b) != realToken {
		t.Errorf("the token file in the default state directory was changed: %q, %v", b, err)
	}
}

// When another sidecar holds the default state directory, a demo keeps
// its token and sidecar.json in its temporary directory, and, with no
// --listen, takes a free port rather than the default address, which the
// other most likely holds; it says how to reach it, and takes its files
// away when it ends; the other's stay.
func TestDemoKeepsItsStateToItselfBesideAnotherSidecar(t *testing.T) {
	bin, home := userHome(t)
	other := startCmd(t, asUser(t, exec.Command(bin, "run", "--demo", "--listen", "127.0.0.1:0"), home))
	other.waitLog("the client commands reach this demo")
	other.waitLog("bridge started")
	state := filepath.Join(home, "state", "wa-sidecar")
	before, err := os.ReadFile(filepath.Join(state, feed.DiscoveryFileName))
	if err != nil {
		t.Fatal(err)
	}

	p := startCmd(t, asUser(t, exec.Command(bin, "run", "--demo"), home))
	hint := p.waitLog("another sidecar uses the default state directory")
	own, _ := hint["state_dir"].(string)
	demoDir := filepath.Dir(p.waitLog("appending the bridge's output to bridge.log")["path"].(string))
	if own == "" || !strings.HasPrefix(own, demoDir+string(filepath.Separator)) || !strings.Contains(hint["try"].(string), "--state-dir "+own) {
		t.Fatalf("the demo's hint %v does not name its own state directory in %s", hint, demoDir)
	}
	// The token is written right after the bridge's spawn, and the
	// server listens meanwhile: the three may be logged in any order.
	recs := p.waitLogs("generated a control token", "status server listening", "bridge started")
	tok, _ := recs[0]["file"].(string)
	if !strings.HasPrefix(tok, own+string(filepath.Separator)) {
		t.Fatalf("the demo's token went to %s, not into its directory %s", tok, own)
	}
	if listen, _ := recs[1]["listen"].(string); listen == feed.DefaultListen || !strings.HasPrefix(listen, "127.0.0.1:") {
		t.Fatalf("the demo beside another sidecar listens on %q, want a free loopback port other than the default %s", listen, feed.DefaultListen)
	}
	if out, code := runOutput(t, asUser(t, exec.Command(bin, "status", "--json", "--state-dir", own), home)); code != 0 {
		t.Fatalf("status --state-dir %s: exit %d:\n%s", own, code, out)
	}
	p.stopOK()
	if _, err := os.Stat(tok); !os.IsNotExist(err) {
		t.Fatalf("the demo's token %s outlived it (%v)", tok, err)
	}
	if after, err := os.ReadFile(filepath.Join(state, feed.DiscoveryFileName)); err != nil || string(after) != string(before) {
		t.Fatalf("the other sidecar's %s changed: %s, %v", feed.DiscoveryFileName, after, err)
	}
	other.stopOK()
}
