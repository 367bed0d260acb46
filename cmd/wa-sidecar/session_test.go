package main

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
	"github.com/wa-sidecar/wa-sidecar/signals"
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
	// Its line is in bridge.log before the stop below, however slow the
	// machine: the log record comes from the same batch.
	first.waitLog("hello from the bridge")

	second := startSidecar(t, sidecar, "run", "--session-dir", sess, "--port", port, "--", fake, "-hang")
	if code := second.wait(); code != exitTempFail {
		t.Fatalf("second sidecar exited %d, want %d; log:\n%s", code, exitTempFail, second.logText())
	}
	want := "in use by another wa-sidecar (pid " + strconv.Itoa(first.cmd.Process.Pid) + ", wa-sidecar"
	if !strings.Contains(second.logText(), want) || !strings.Contains(second.logText(), "give this one its own --session-dir") {
		t.Fatalf("second sidecar's message does not name the first (%q) and --session-dir:\n%s", want, second.logText())
	}
	if !proctest.Running(bridgePid) {
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
	p.stopOK()
	if _, err := os.Stat(filepath.Join(root, "bridge.log")); !os.IsNotExist(err) {
		t.Fatalf("bridge.log written with --bridge-log off: %v", err)
	}
}

// port_busy names the program that holds the bridge's port where a
// gateway reads it: on the wire of the status feed, not only in the
// sidecar's own events ("pid" is the event's own field there, so the
// holder's pid needs a name of its own).
func TestPortBusyNamesTheHolderOnTheWire(t *testing.T) {
	p, sidecar, state, port := sidecarWithPortHeld(t)

	watch := exec.Command(sidecar, "watch", "--json", "--state-dir", state)
	out, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		watch.Process.Kill()
		watch.Wait()
	}()
	// Spawns keep being refused while the port is held: one comes soon.
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var busy map[string]any
	for busy == nil && sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["event"] == "port_busy" {
			busy = m
		}
	}
	if busy == nil {
		t.Fatalf("watch ended without a port_busy event: %v", sc.Err())
	}
	me := float64(os.Getpid())
	if busy["holder_pid"] != me || busy["holder_name"] != signals.ProcessName(os.Getpid()) || busy["port"] != float64(port) {
		t.Fatalf("port_busy on the wire does not name this test (pid %v) as the holder: %v", me, busy)
	}
	p.stopOK()
}

// sidecarWithPortHeld starts a sidecar whose bridge port a program of the
// test's holds (a listener the sidecar must leave alone), and waits until
// its status server listens.
func sidecarWithPortHeld(t *testing.T) (p *sidecarProc, sidecar, state string, port int) {
	t.Helper()
	sidecar, fake := binaries(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	port = ln.Addr().(*net.TCPAddr).Port
	state = t.TempDir()
	p = startSidecar(t, sidecar, "run", "--state-dir", state, "--session-dir", filepath.Join(t.TempDir(), "session"),
		"--port", strconv.Itoa(port), "--backoff-initial", "50ms", "--backoff-max", "200ms", "--", fake, "-hang")
	// sidecar.json comes once the first start has been refused.
	p.waitDiscoveryOf(state)
	return p, sidecar, state, port
}
