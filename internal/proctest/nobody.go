package proctest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Nobody is the uid and gid AsNobody runs as: a second local user.
const Nobody = 65534

// AsNobody runs a command as another local user (uid and gid 65534, no
// supplementary groups) through setpriv(1), and fails the test if it
// fails. Such tests need root, and are skipped without it.
func AsNobody(t testing.TB, args ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as a second user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv(1) to act as a second user")
	}
	cmd := exec.Command(setpriv, append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as uid 65534: %v: %v\n%s", args, err, out)
	}
}

// SharedTempDir is t.TempDir made reachable (mode 0755, as is the test's
// own temporary directory above it) by the user AsNobody runs as.
func SharedTempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// VictimFile makes a file that an attack through a planted link tries to
// overwrite or read; untouched fails the test if it changed.
func VictimFile(t testing.TB) (path string, untouched func()) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(path, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, func() {
		t.Helper()
		if b, err := os.ReadFile(path); err != nil || string(b) != "precious\n" {
			t.Fatalf("the planted link's target changed: %q, %v", b, err)
		}
	}
}
