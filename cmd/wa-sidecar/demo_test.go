package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
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
	if running(bridge) {
		t.Fatal("simulated bridge still running")
	}
	if _, err := os.Stat(demoDir); !os.IsNotExist(err) {
		t.Fatalf("demo session %s left behind (%v)", demoDir, err)
	}
}
