package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStalledNotifySocketDoesNotHangExit runs the sidecar under a
// NOTIFY_SOCKET that nobody reads, its queue full: starting, reporting
// and SIGTERM must all go on, and the sidecar exits 0.
func TestStalledNotifySocketDoesNotHangExit(t *testing.T) {
	bin, fake := binaries(t)
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "notify")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	filler, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		filler.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := filler.Write([]byte("STATUS=filler")); err != nil {
			if !os.IsTimeout(err) {
				t.Fatal(err)
			}
			break
		}
	}
	filler.Close()

	// startCmd passes this process's environment on.
	t.Setenv("NOTIFY_SOCKET", path)
	p := startSidecar(t, bin, "run", "--", fake, "-hang")
	p.waitLog("cannot reach systemd's notify socket")
	p.waitLog("bridge started")
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d; log:\n%s", code, p.logText())
	}
}

// TestInheritedDescriptorIsNotPassedToTheBridge starts the sidecar with a
// descriptor it inherits without close-on-exec, as a careless parent can
// leave it: only stdin, stdout and stderr reach the bridge.
func TestInheritedDescriptorIsNotPassedToTheBridge(t *testing.T) {
	bin, fake := binaries(t)
	planted := filepath.Join(t.TempDir(), "parent-secret")
	if err := os.WriteFile(planted, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(planted)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, "run", "--", fake, "-fds", "-hang")
	cmd.ExtraFiles = []*os.File{f} // fd 3 in the sidecar, without close-on-exec
	p := startCmd(t, cmd)
	p.waitLog("FDS done")
	listing := p.logText()
	if !strings.Contains(listing, "FD=1 pipe:") {
		t.Fatalf("the bridge's listing is missing; log:\n%s", listing)
	}
	if strings.Contains(listing, "FD=3 "+planted) || strings.Contains(listing, " "+planted) {
		t.Fatalf("the sidecar's inherited descriptor reached the bridge; log:\n%s", listing)
	}
	p.stopOK()
}
