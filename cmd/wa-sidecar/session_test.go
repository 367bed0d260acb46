package main

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func freeTestPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// A second sidecar on a session that one already runs exits 75 at once,
// naming the first; the first is not disturbed and writes bridge.log next
// to the session, as the Hermes gateway did.
func TestSecondSidecarOnOneSessionExits75(t *testing.T) {
	sidecar, fake := binaries(t)
	root := t.TempDir()
	sess := filepath.Join(root, "session")
	port := freeTestPort(t)

	first := startSidecar(t, sidecar, "run", "--session-dir", sess, "--port", port, "--", fake, "-say", "hello from the bridge", "-hang")
	bridgePid := pidOf(t, first.waitLog("bridge started"))

	second := startSidecar(t, sidecar, "run", "--session-dir", sess, "--port", port, "--", fake, "-hang")
	if code := second.wait(); code != exitTempFail {
		t.Fatalf("second sidecar exited %d, want %d; log:\n%s", code, exitTempFail, second.logText())
	}
	want := "in use by another wa-sidecar (pid " + strconv.Itoa(first.cmd.Process.Pid) + ", wa-sidecar"
	if !strings.Contains(second.logText(), want) {
		t.Fatalf("second sidecar's message does not name the first (%q):\n%s", want, second.logText())
	}
	if !running(bridgePid) {
		t.Fatal("the first sidecar's bridge was disturbed")
	}

	first.signal(syscall.SIGTERM)
	if code := first.wait(); code != 0 {
		t.Fatalf("first sidecar exited %d", code)
	}
	log, err := os.ReadFile(filepath.Join(root, "bridge.log"))
	if err != nil || !strings.Contains(string(log), "hello from the bridge\n") {
		t.Fatalf("bridge.log: %q, %v", log, err)
	}
}

func TestBridgeLogOff(t *testing.T) {
	sidecar, fake := binaries(t)
	root := t.TempDir()
	p := startSidecar(t, sidecar, "run", "--session-dir", filepath.Join(root, "session"), "--bridge-log", "off", "--", fake, "-say", "hi", "-hang")
	p.waitLog("hi")
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(root, "bridge.log")); !os.IsNotExist(err) {
		t.Fatalf("bridge.log written with --bridge-log off: %v", err)
	}
}
