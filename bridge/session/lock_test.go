package session

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

// Two sidecars on one session: the second fails at once, naming the first
// by pid and command name, and gets the session once the first has gone,
// however it went.
func TestTwoSidecarsOneSession(t *testing.T) {
	dir := newSession(t, pairedCreds)
	first := startHelper(t, "lock", "HELPER_SESSION="+dir)
	if first.first != "locked" {
		t.Fatalf("first sidecar: %q", first.first)
	}

	second := startHelper(t, "lock", "HELPER_SESSION="+dir)
	ws := second.wait(t)
	if ws.ExitStatus() != 75 {
		t.Fatalf("second sidecar exited with %d (%q), want 75", ws.ExitStatus(), second.first)
	}
	pid := first.cmd.Process.Pid
	name := signals.ProcessName(pid)
	for _, want := range []string{dir, "pid " + strconv.Itoa(pid), name, "knock each other off"} {
		if !strings.Contains(second.first, want) {
			t.Fatalf("refusal %q does not mention %q", second.first, want)
		}
	}

	// The first dies without a chance to clean up; the kernel drops its lock.
	first.cmd.Process.Kill()
	first.wait(t)
	third := startHelper(t, "lock", "HELPER_SESSION="+dir)
	if third.first != "locked" {
		t.Fatalf("after the first died: %q", third.first)
	}
}

func TestHeldErrorInProcess(t *testing.T) {
	dir := newSession(t, "")
	openGuard(t, Config{SessionDir: dir})
	_, err := Open(Config{SessionDir: dir})
	var held *HeldError
	if !errors.As(err, &held) {
		t.Fatalf("second Open: %v, want a HeldError", err)
	}
	if held.Holder.Pid != os.Getpid() || held.Since.IsZero() {
		t.Fatalf("holder %+v, want this process", held)
	}
}

// A lock file that names a process that no longer runs (or never ran) is
// not repeated as if it named the holder.
func TestHeldErrorWithStaleContents(t *testing.T) {
	dir := newSession(t, "")
	openGuard(t, Config{SessionDir: dir})
	lock := filepath.Join(dir, StateDirName, "lock")
	if err := os.WriteFile(lock, []byte(`{"pid":1,"start_time":12345}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Config{SessionDir: dir})
	var held *HeldError
	if !errors.As(err, &held) || held.Holder.Pid != 0 || !strings.Contains(err.Error(), "could not be read") {
		t.Fatalf("Open: %v", err)
	}
}

// Deleting the session directory to pair again must not leave the session
// unlocked: the next spawn locks it anew.
func TestLockSurvivesSessionDeletion(t *testing.T) {
	dir := newSession(t, pairedCreds)
	g := openGuard(t, Config{SessionDir: dir})
	var stream emitted
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := g.BeforeSpawn(stream.emit); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Config{SessionDir: dir})
	var held *HeldError
	if !errors.As(err, &held) || held.Holder.Pid != os.Getpid() {
		t.Fatalf("Open after re-lock: %v, want held by this process", err)
	}
}

// A session lock planted as a link is refused and its target left alone
// (it used to be truncated and overwritten with our pid).
func TestSessionLockRefusesAPlantedLink(t *testing.T) {
	dir := newSession(t, pairedCreds)
	target, untouched := proctest.VictimFile(t)
	os.Mkdir(filepath.Join(dir, StateDirName), 0o700)
	os.Symlink(target, filepath.Join(dir, StateDirName, "lock"))
	_, err := Open(Config{SessionDir: dir})
	var unsafe *privdir.UnsafeError
	if !errors.As(err, &unsafe) || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("Open = %v, want a refusal of the link", err)
	}
	untouched()
}

// A session directory, or its .wa-sidecar, that another user can change
// is refused with the command that fixes it.
func TestSessionDirOthersCanChangeIsRefused(t *testing.T) {
	dir := newSession(t, pairedCreds)
	for _, d := range []string{dir, filepath.Join(dir, StateDirName)} {
		os.Mkdir(d, 0o700)
		os.Chmod(d, 0o777)
		_, err := Open(Config{SessionDir: dir})
		var unsafe *privdir.UnsafeError
		if !errors.As(err, &unsafe) || !strings.Contains(err.Error(), "chmod go-w "+d) {
			t.Fatalf("%s mode 0777: Open = %v", d, err)
		}
		// Nothing is made in a directory that is refused.
		if _, err := os.Lstat(filepath.Join(dir, StateDirName)); d == dir && err == nil {
			t.Fatalf("Open made %s in a session directory it refused", StateDirName)
		}
		os.Chmod(d, 0o700)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a directory to another user")
	}
	os.Chown(filepath.Join(dir, StateDirName), proctest.Nobody, proctest.Nobody)
	if _, err := Open(Config{SessionDir: dir}); err == nil || !strings.Contains(err.Error(), "is owned by uid 65534") {
		t.Fatalf("another user's .wa-sidecar: Open = %v", err)
	}
}
