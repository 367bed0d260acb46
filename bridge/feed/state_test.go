package feed

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

func TestTokenFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := PrepareStateDir(dir); err != nil {
		t.Fatal(err)
	}
	tok, err := NewToken()
	if err != nil || len(tok) != 64 || CheckToken(tok) != nil {
		t.Fatalf("NewToken = %q, %v", tok, err)
	}
	path, err := WriteToken(dir, tok)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, mode %v", err, st.Mode().Perm())
	}
	if d, _ := os.Stat(dir); d.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode %v", d.Mode().Perm())
	}
	if got, err := ReadTokenFile(path); err != nil || got != tok {
		t.Fatalf("ReadTokenFile = %q, %v", got, err)
	}
	for content, want := range map[string]string{"\n  \n": "empty", "two words": "printable ASCII", "tök": "printable ASCII"} {
		p := filepath.Join(dir, "bad")
		os.WriteFile(p, []byte(content), 0o600)
		if _, err := ReadTokenFile(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("token %q: %v, want %q", content, err, want)
		}
	}
	if _, err := ReadTokenFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing token file: %v", err)
	}
}

func TestDiscovery(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadDiscovery(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no file: %v", err)
	}
	want := Discovery{Listen: "unix:/run/x.sock", TokenFile: "/run/tok", Pid: os.Getpid(), Version: "v1"}
	if err := WriteDiscovery(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadDiscovery(dir)
	if err != nil || got.Listen != want.Listen || got.TokenFile != want.TokenFile || got.Pid != want.Pid || got.StartTime == 0 {
		t.Fatalf("ReadDiscovery = %+v, %v", got, err)
	}
	// Another sidecar's file stays; our own goes.
	if err := RemoveDiscovery(dir, want.Pid+1); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDiscovery(dir); err != nil {
		t.Fatalf("removed another pid's file: %v", err)
	}
	if err := RemoveDiscovery(dir, want.Pid); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDiscovery(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file left: %v", err)
	}
}

func TestDefaultStateDir(t *testing.T) {
	if os.Geteuid() == 0 {
		if d, _ := DefaultStateDir(); d != "/var/lib/wa-sidecar" {
			t.Fatalf("as root: %q", d)
		}
		return
	}
	t.Setenv("XDG_STATE_HOME", "/x/state")
	if d, _ := DefaultStateDir(); d != "/x/state/wa-sidecar" {
		t.Fatalf("with XDG_STATE_HOME: %q", d)
	}
}

func TestListenErrors(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Listen(ln.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("taken port: %v", err)
	}
	// The holder (this test process) is named, found through /proc.
	if want := fmt.Sprintf("by pid %d (", os.Getpid()); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("taken port error does not name the holder (%q): %v", want, err)
	}
	for _, bad := range []string{"7390", "unix:", "localhost"} {
		if _, err := Listen(bad); err == nil {
			t.Errorf("Listen(%q) succeeded", bad)
		}
	}
	if !isLoopbackListener(ln) {
		t.Error("127.0.0.1 not loopback")
	}
	if _, err := NewClient("nowhere", ""); err == nil {
		t.Error("NewClient accepted an address without a port")
	}
}

func wantUnsafe(t *testing.T, what string, err error, says string) {
	t.Helper()
	var ue *privdir.UnsafeError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), says) {
		t.Fatalf("%s: %v, want a refusal saying %q", what, err, says)
	}
}

// A lock file planted as a link is refused, and its target is left alone
// (it used to be truncated and overwritten with the holder's pid).
func TestLockStateDirRefusesAPlantedLink(t *testing.T) {
	dir := t.TempDir()
	target, untouched := proctest.VictimFile(t)
	os.Symlink(target, filepath.Join(dir, LockFileName))
	_, err := LockStateDir(dir)
	wantUnsafe(t, "symlinked lock", err, "is a symbolic link")
	untouched()
}

// A state directory another user can write is refused, with the command
// that fixes it, before anything in it is opened: here uid 65534 planted
// a link to a root-only file where the lock goes.
func TestStateDirWritableByAnotherUserIsRefused(t *testing.T) {
	dir := filepath.Join(proctest.SharedTempDir(t), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777)
	target, untouched := proctest.VictimFile(t)
	for what, err := range map[string]error{
		"PrepareStateDir": PrepareStateDir(dir),
		"LockStateDir":    func() error { _, err := LockStateDir(dir); return err }(),
		"WriteToken":      func() error { _, err := WriteToken(dir, "x"); return err }(),
		"WriteDiscovery":  WriteDiscovery(dir, Discovery{Listen: "127.0.0.1:1", Pid: os.Getpid()}),
		"ReadDiscovery":   func() error { _, err := ReadDiscovery(dir); return err }(),
	} {
		wantUnsafe(t, what, err, "chmod go-w "+dir)
	}
	proctest.AsNobody(t, "ln", "-s", target, filepath.Join(dir, LockFileName))
	_, err := LockStateDir(dir)
	wantUnsafe(t, "after another user planted a link", err, "chmod go-w")
	untouched()

	// Owned by that user: refused even if its mode is tight.
	os.Chmod(dir, 0o700)
	os.Chown(dir, proctest.Nobody, proctest.Nobody)
	err = PrepareStateDir(dir)
	wantUnsafe(t, "another user's directory", err, "is owned by uid 65534")
}

// A token or discovery file planted as a link is replaced, never written
// through.
func TestStateFilesReplacePlantedLinks(t *testing.T) {
	dir := t.TempDir()
	target, untouched := proctest.VictimFile(t)
	for _, name := range []string{TokenFileName, DiscoveryFileName} {
		os.Symlink(target, filepath.Join(dir, name))
	}
	if _, err := WriteToken(dir, "tok"); err != nil {
		t.Fatal(err)
	}
	if err := WriteDiscovery(dir, Discovery{Listen: "127.0.0.1:1", Pid: os.Getpid()}); err != nil {
		t.Fatal(err)
	}
	untouched()
	for _, name := range []string{TokenFileName, DiscoveryFileName} {
		if fi, err := os.Lstat(filepath.Join(dir, name)); err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("%s: %v %v", name, err, fi.Mode())
		}
	}
}

// A forged or stale sidecar.json is refused before any client acts on it.
func TestReadDiscoveryRefusesForgeries(t *testing.T) {
	self, err := signals.IdentityOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	good := Discovery{Listen: "127.0.0.1:7390", Pid: self.Pid, StartTime: self.StartTime}
	for _, tc := range []struct {
		name   string
		edit   func(*Discovery)
		stale  bool
		saying string
	}{
		{"remote address", func(d *Discovery) { d.Listen = "203.0.113.7:7390" }, false, "not an address of this machine"},
		{"host name", func(d *Discovery) { d.Listen = "attacker.example:7390" }, false, "not an IP address"},
		{"relative socket", func(d *Discovery) { d.Listen = "unix:x.sock" }, false, "not absolute"},
		{"relative token file", func(d *Discovery) { d.TokenFile = "token" }, false, "not a clean absolute path"},
		{"no pid", func(d *Discovery) { d.Pid = 0 }, false, "names no process"},
		{"pid reused", func(d *Discovery) { d.StartTime++ }, true, ""},
		{"no such pid", func(d *Discovery) { d.Pid, d.StartTime = 1<<30, 0 }, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d := good
			tc.edit(&d)
			b, _ := json.Marshal(d)
			os.WriteFile(filepath.Join(dir, DiscoveryFileName), b, 0o600)
			_, err := ReadDiscovery(dir)
			var stale *StaleDiscoveryError
			var bad *DiscoveryError
			switch {
			case tc.stale && (!errors.As(err, &stale) || !errors.Is(err, fs.ErrNotExist)):
				t.Fatalf("got %v, want a stale file that counts as none", err)
			case !tc.stale && (!errors.As(err, &bad) || !strings.Contains(err.Error(), tc.saying)):
				t.Fatalf("got %v, want a DiscoveryError saying %q", err, tc.saying)
			}
		})
	}
	t.Run("a link", func(t *testing.T) {
		dir := t.TempDir()
		b, _ := json.Marshal(good)
		real := filepath.Join(t.TempDir(), "elsewhere.json")
		os.WriteFile(real, b, 0o600)
		os.Symlink(real, filepath.Join(dir, DiscoveryFileName))
		_, err := ReadDiscovery(dir)
		wantUnsafe(t, "symlinked sidecar.json", err, "is a symbolic link")
	})
	t.Run("another user's sidecar", func(t *testing.T) {
		// A live process, but not one of the file's owner: not the
		// sidecar that wrote it.
		dir := proctest.SharedTempDir(t)
		os.Chmod(dir, 0o777)
		pidFile := filepath.Join(dir, "pid")
		proctest.AsNobody(t, "sh", "-c", "sleep 600 </dev/null >/dev/null 2>&1 & echo $! >"+pidFile)
		pid := proctest.WaitPids(t, pidFile, 1)[0]
		defer unix.Kill(pid, unix.SIGKILL)
		d := good
		d.Pid, d.StartTime = pid, 0
		b, _ := json.Marshal(d)
		os.Chmod(dir, 0o700)
		os.WriteFile(filepath.Join(dir, DiscoveryFileName), b, 0o600)
		var stale *StaleDiscoveryError
		if _, err := ReadDiscovery(dir); !errors.As(err, &stale) {
			t.Fatalf("got %v, want a stale file", err)
		}
	})
}

// The token file sidecar.json names is read only where it is safe: never
// through a link in the state directory, and elsewhere only from a file
// that root or the sidecar's user owns and no one else can write.
func TestReadDiscoveredToken(t *testing.T) {
	dir := t.TempDir()
	self, _ := signals.IdentityOf(os.Getpid())
	disc := func(tokenFile string) Discovery {
		b, _ := json.Marshal(Discovery{Listen: "127.0.0.1:7390", TokenFile: tokenFile, Pid: self.Pid, StartTime: self.StartTime})
		os.WriteFile(filepath.Join(dir, DiscoveryFileName), b, 0o600)
		d, err := ReadDiscovery(dir)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	path, err := WriteToken(dir, "good-token")
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := ReadDiscoveredToken(dir, disc(path)); err != nil || tok != "good-token" {
		t.Fatalf("token in the state dir: %q, %v", tok, err)
	}
	target, _ := proctest.VictimFile(t) // one line, so it would pass as a token
	os.Remove(path)
	os.Symlink(target, path)
	if tok, err := ReadDiscoveredToken(dir, disc(path)); err == nil {
		t.Fatalf("read %q through a link", tok)
	}
	outside := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(outside, []byte("outside-token\n"), 0o600)
	if tok, err := ReadDiscoveredToken(dir, disc(outside)); err != nil || tok != "outside-token" {
		t.Fatalf("--token-file elsewhere: %q, %v", tok, err)
	}
	os.Chmod(outside, 0o666)
	_, err = ReadDiscoveredToken(dir, disc(outside))
	wantUnsafe(t, "token file others can write", err, "writable by other users")
	if os.Geteuid() == 0 {
		os.Chmod(outside, 0o600)
		os.Chown(outside, proctest.Nobody, proctest.Nobody)
		_, err = ReadDiscoveredToken(dir, disc(outside))
		wantUnsafe(t, "another user's token file", err, "owned by uid 65534")
	}
}
