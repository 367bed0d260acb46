package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
