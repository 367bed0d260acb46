package main

import (
	"os"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
	"path/filepath"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
)

// A first start that spawns nothing (a command that cannot be run, so
// every start fails) still ends in READY=1, with sidecar.json there.
func TestReadyWhenTheFirstSpawnFails(t *testing.T) {
	bin, _ := binaries(t)
	sock, conn := notifySocket(t)
	state := t.TempDir()
	t.Setenv("NOTIFY_SOCKET", sock)
	// An executable whose interpreter is missing: its exec fails at each spawn.
	script := filepath.Join(t.TempDir(), "bridge")
	if err := os.WriteFile(script, []byte("#!/nonexistent/interpreter\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	p := startSidecar(t, bin, "run", "--state-dir", state, "--listen", "127.0.0.1:0", "--backoff-initial", "50ms", "--backoff-max", "200ms",
		"--", script)
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no READY=1: %v; log:\n%s", err, p.logText())
		}
		if string(buf[:n]) == "READY=1" {
			if _, err := feed.ReadDiscovery(state); err != nil {
				t.Fatalf("READY=1 before sidecar.json: %v", err)
			}
			break
		}
	}
	p.stopOK()
}

// The session guard records the bridge it has just spawned (bridge.json,
// which lets the next sidecar find what a crashed one left behind) before
// the state directory's token and sidecar.json are written: those are for
// clients and may wait, while a sidecar killed between the spawn and the
// record leaves a bridge's process group that no later sidecar recognises.
// The order is read from one inotify queue, which keeps the order of the
// renames that complete the two atomic writes.
func TestTheBridgeIsRecordedBeforeTheStateFiles(t *testing.T) {
	bin, fake := binaries(t)
	dir := t.TempDir()
	state, session := filepath.Join(dir, "state"), filepath.Join(dir, "session")
	record := filepath.Join(session, ".wa-sidecar")
	for _, d := range []string{state, record} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Skipf("inotify: %v", err)
	}
	defer unix.Close(fd)
	for _, d := range []string{state, record} {
		if _, err := unix.InotifyAddWatch(fd, d, unix.IN_MOVED_TO); err != nil {
			t.Fatal(err)
		}
	}
	p := startSidecar(t, bin, "run", "--state-dir", state, "--session-dir", session, "--port", freeTestPort(t),
		"--listen", "127.0.0.1:0", "--", fake, "-hang")
	p.waitLog("bridge started")
	var order []string
	buf := make([]byte, 64<<10)
	for len(order) < 3 {
		n, err := unix.Read(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
			order = append(order, name)
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
	p.stopOK()
	if i := slices.Index(order, "bridge.json"); i != 0 {
		t.Fatalf("renames in the order %q: the bridge was recorded after the token and sidecar.json", order)
	}
}
