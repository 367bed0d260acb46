package main

import (
	"net"
	"os"
	"path/filepath"
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
