package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
)

// run refuses a state directory that other users can write, saying how to
// fix it, and writes nothing there; the client commands do not read one.
func TestRunRefusesAStateDirOthersCanWrite(t *testing.T) {
	bin, fake := binaries(t)
	state := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(state, 0o777)
	out, code := runOutput(t, exec.Command(bin, "run", "--state-dir", state, "--", fake, "-hang"))
	// 78: a configuration to fix, which the unit does not restart every 5 s.
	if code != exitConfig || !strings.Contains(out, "chmod go-w "+state) {
		t.Fatalf("run: exit %d, %q", code, out)
	}
	if entries, _ := os.ReadDir(state); len(entries) != 0 {
		t.Fatalf("run wrote into the state directory: %v", entries)
	}
	if _, stderr, code := cliRun(t, bin, os.Environ(), "status", "--state-dir", state); code == 0 || !strings.Contains(stderr, "chmod go-w "+state) {
		t.Fatalf("status: exit %d, %q", code, stderr)
	}
}

// The token and sidecar.json are written after the bridge is spawned, and
// in this order: whoever finds sidecar.json finds the token it names in
// place, never the one an earlier run left in the same file; and both are
// there by the time "bridge started" is logged. Each run starts in a state
// directory that still holds the previous run's token, and a client polls
// for sidecar.json as fast as it can.
func TestSidecarJSONNeverComesBeforeItsToken(t *testing.T) {
	bin, fake := binaries(t)
	state := filepath.Join(t.TempDir(), "state")
	for i := range 6 {
		p := startSidecar(t, bin, "run", "--state-dir", state, "--listen", "127.0.0.1:0", "--", fake, "-hang")
		pid := p.cmd.Process.Pid
		var d feed.Discovery
		for deadline := time.Now().Add(20 * time.Second); ; {
			if time.Now().After(deadline) {
				t.Fatalf("run %d: no sidecar.json of pid %d; log:\n%s", i, pid, p.logText())
			}
			if got, err := feed.ReadDiscovery(state); err == nil && got.Pid == pid {
				d = got
				break
			}
		}
		tok, err := feed.ReadTokenFile(d.TokenFile)
		if err != nil {
			t.Fatalf("run %d: sidecar.json names %s, which cannot be read: %v", i, d.TokenFile, err)
		}
		c, err := feed.NewClientOf(d.Listen, tok, pid)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Get(context.Background(), "/v1/status")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		c.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("run %d: the token in %s, read as soon as sidecar.json named it, got %d (an earlier run's?)", i, d.TokenFile, resp.StatusCode)
		}
		p.waitLog("bridge started")
		p.stopOK()
		log := p.logText()
		tokenAt := strings.Index(log, "generated a control token")
		if started := strings.Index(log, `"bridge started"`); tokenAt < 0 || started < tokenAt {
			t.Fatalf("run %d: bridge started was logged before the token was written:\n%s", i, log)
		}
	}
}

// When the first start spawns nothing (here a program the sidecar must
// leave alone holds the bridge's port), the token and sidecar.json are
// written all the same, once the start has failed.
func TestStateFilesWhenTheFirstStartSpawnsNothing(t *testing.T) {
	p, _, state, _ := sidecarWithPortHeld(t) // waits for sidecar.json
	d, err := feed.ReadDiscovery(state)
	if err != nil || d.Pid != p.cmd.Process.Pid {
		t.Fatalf("sidecar.json: %+v, %v", d, err)
	}
	tok, err := feed.ReadTokenFile(d.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := feed.NewClientOf(d.Listen, tok, d.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Get(context.Background(), "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/v1/status with the token: %d", resp.StatusCode)
	}
	if strings.Contains(p.logText(), `"bridge started"`) {
		t.Fatalf("a bridge was started while the port is held:\n%s", p.logText())
	}
	p.stopOK()
}

// A token that cannot be written once the bridge has been spawned stops
// that bridge and the sidecar, which exits 1 with the hint it gave when
// the token was written before the spawn, and leaves no sidecar.json.
func TestATokenThatCannotBeWrittenStopsTheBridge(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	// A directory where the token file goes: the rename onto it fails.
	if err := os.MkdirAll(filepath.Join(state, feed.TokenFileName, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	pidFile, stopped := filepath.Join(dir, "bridge.pid"), filepath.Join(dir, "stopped")
	// The bridge notes a stop signal; the parent-death signal, SIGKILL,
	// would end it without a note.
	p := startSidecar(t, bin, "run", "--state-dir", state, "--listen", "127.0.0.1:0", "--",
		"/bin/sh", "-c", `trap ': > "$1"; exit 0' TERM; echo $$ > "$0"; sleep 30 & wait`, pidFile, stopped)
	if code := p.wait(); code != exitError {
		t.Fatalf("exit code %d, want %d; log:\n%s", code, exitError, p.logText())
	}
	log := p.logText()
	if !strings.Contains(log, "pass --state-dir or --token-file") {
		t.Fatalf("no hint to pass --state-dir or --token-file:\n%s", log)
	}
	if b, err := os.ReadFile(pidFile); err == nil {
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if pid > 0 && proctest.Running(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the bridge (pid %d) outlived the sidecar", pid)
		}
		if _, err := os.Stat(stopped); err != nil {
			t.Fatalf("the bridge was not stopped with a stop signal before the sidecar exited: %v; log:\n%s", err, log)
		}
	}
	if _, err := os.Stat(filepath.Join(state, feed.DiscoveryFileName)); !os.IsNotExist(err) {
		t.Fatalf("sidecar.json after a failed token write: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(state, ".token*")); len(left) > 0 {
		t.Fatalf("the failed write left %v", left)
	}
}

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
