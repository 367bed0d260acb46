package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
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

// A demo keeps its token and sidecar.json in its temporary directory, so
// it never replaces those of a real sidecar in the default state
// directory, and takes them away when it ends.
func TestDemoKeepsItsStateToItself(t *testing.T) {
	bin, _ := binaries(t)
	home := t.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WA_SIDECAR_") && !strings.HasPrefix(kv, "XDG_STATE_HOME=") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(bin, "run", "--demo", "--listen", "127.0.0.1:0")
	cmd.Env = append(env, "HOME="+home, "XDG_STATE_HOME="+filepath.Join(home, "state"))
	p := startCmd(t, cmd)
	demoDir := filepath.Dir(p.waitLog("appending the bridge's output to bridge.log")["path"].(string))
	tok, _ := p.waitLog("generated a control token")["file"].(string)
	if !strings.HasPrefix(tok, demoDir+string(filepath.Separator)) {
		t.Fatalf("the demo's token went to %s, not into its directory %s", tok, demoDir)
	}
	p.waitLog("bridge started")
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d; log:\n%s", code, p.logText())
	}
	if _, err := os.Stat(tok); !os.IsNotExist(err) {
		t.Fatalf("the demo's token %s outlived it (%v)", tok, err)
	}
}
