package privdir

import (
	"errors"
	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func unsafeErr(t *testing.T, err error, want string) {
	t.Helper()
	var ue *UnsafeError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want an UnsafeError saying %q", err, want)
	}
}

func TestOpenCreatesPrivateDirs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	d, err := Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, p := range []string{dir, filepath.Dir(dir)} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: %v %v", p, err, fi.Mode())
		}
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing"), false); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing dir without create: %v", err)
	}
}

// A directory that others can write is refused with the command that
// fixes it; one owned by another user is refused too.
func TestOpenRefusesDirsOthersCanChange(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	os.Mkdir(dir, 0o700)
	for _, mode := range []os.FileMode{0o777, 0o1777, 0o702} {
		os.Chmod(dir, mode)
		_, err := Open(dir, false)
		unsafeErr(t, err, "chmod go-w "+dir)
	}
	os.Chmod(dir, 0o755)
	d, err := Open(dir, false)
	if err != nil {
		t.Fatalf("0755: %v", err)
	}
	d.Close()
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a directory to another user")
	}
	os.Chown(dir, 65534, 65534)
	_, err = Open(dir, false)
	unsafeErr(t, err, "is owned by uid 65534")
}

// A symbolic link in the path is followed when this user owns it, and
// refused when another does.
func TestOpenFollowsOnlyTrustedLinks(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	os.Mkdir(real, 0o700)
	link := filepath.Join(base, "link")
	os.Symlink("real", link)
	d, err := Open(filepath.Join(link, "sub"), true)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if _, err := os.Stat(filepath.Join(real, "sub")); err != nil {
		t.Fatalf("not created through the link: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a link to another user")
	}
	if err := os.Lchown(link, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err = Open(filepath.Join(link, "sub"), false)
	unsafeErr(t, err, "symbolic link owned by uid 65534")
}

// Planted links, hard links, FIFOs and others' files are refused and
// their targets left alone.
func TestOpenFileRefusesPlantedFiles(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	target, untouched := proctest.VictimFile(t)

	os.Symlink(target, filepath.Join(dir, "lock"))
	_, err = d.OpenFile("lock", os.O_RDWR|os.O_CREATE, 0o600)
	unsafeErr(t, err, "is a symbolic link")
	_, err = d.ReadFile("lock", 100)
	unsafeErr(t, err, "is a symbolic link")

	if err := os.Link(target, filepath.Join(dir, "hard")); err != nil {
		t.Fatal(err)
	}
	_, err = d.OpenFile("hard", os.O_RDWR, 0)
	unsafeErr(t, err, "2 hard links")

	unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600)
	_, err = d.ReadFile("fifo", 100) // must not block
	unsafeErr(t, err, "not a regular file")

	os.WriteFile(filepath.Join(dir, "loose"), nil, 0o600)
	os.Chmod(filepath.Join(dir, "loose"), 0o666)
	_, err = d.ReadFile("loose", 100)
	unsafeErr(t, err, "writable by other users")

	if _, err := d.OpenFile("x", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600); err == nil {
		t.Fatal("O_TRUNC accepted")
	}
	if _, err := d.OpenFile("../x", os.O_RDONLY, 0); err == nil {
		t.Fatal("a path accepted as a name")
	}
	untouched()
}

// WriteFile replaces a planted link instead of writing through it.
func TestWriteFileReplacesLinks(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	target, untouched := proctest.VictimFile(t)
	os.Symlink(target, filepath.Join(dir, "token"))
	if err := d.WriteFile("token", []byte("new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	untouched()
	b, err := d.ReadFile("token", 100)
	if err != nil || string(b) != "new\n" {
		t.Fatalf("ReadFile = %q, %v", b, err)
	}
	if fi, _ := os.Lstat(filepath.Join(dir, "token")); fi.Mode() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if names, _ := d.Names(); len(names) != 1 {
		t.Fatalf("temporary files left: %v", names)
	}
	if _, err := d.ReadFile("token", 2); err == nil {
		t.Fatal("a file over the limit was read")
	}
}

// The package's WriteFile works in a directory it does not vouch for, with
// the same atomic rename: a link at the path is replaced, the mode is the
// one asked for, and no temporary file is left.
func TestWriteFileAnyDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	target, untouched := proctest.VictimFile(t)
	path := filepath.Join(dir, "unit.service")
	os.Symlink(target, path)
	if err := WriteFile(path, []byte("[Unit]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	untouched()
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode() != 0o644 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
	if b, _ := os.ReadFile(path); string(b) != "[Unit]\n" {
		t.Fatalf("content %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "x"), nil, 0o600); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing directory: %v", err)
	}
}

// A file a flag names may be a link, but a FIFO or a device named by
// mistake must not hang the read: --token-file on a FIFO blocked the
// sidecar in open(2) before it could act on SIGTERM, and /dev/zero was
// read without end.
func TestReadRegularFileRefusesFIFOsAndDevices(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, 100), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(big, link); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fifo, "/dev/zero", big} {
		done := make(chan error, 1)
		go func() {
			_, err := ReadRegularFile(path, 10)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("ReadRegularFile(%s) = nil error", path)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("ReadRegularFile(%s) still blocks", path)
		}
	}
	if b, err := ReadRegularFile(link, 100); err != nil || len(b) != 100 {
		t.Errorf("ReadRegularFile through a link: %d bytes, %v", len(b), err)
	}
}

// BenchmarkOpen opens a directory five levels down, as the sidecar opens
// its session's and state directories several times at start.
func BenchmarkOpen(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "a", "b", "c", "d")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		d, err := Open(dir, false)
		if err != nil {
			b.Fatal(err)
		}
		d.Close()
	}
}

// RenameNoReplace moves a file to a free name, and leaves a taken one as
// it is.
func TestRenameNoReplace(t *testing.T) {
	d, err := Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for name, data := range map[string]string{"a": "a", "b": "b"} {
		if err := d.WriteFile(name, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.RenameNoReplace("a", "b"); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("onto a taken name: %v, want EEXIST", err)
	}
	if b, _ := d.ReadFile("b", 10); string(b) != "b" {
		t.Fatalf("the taken name now holds %q", b)
	}
	if err := d.RenameNoReplace("a", "c"); err != nil {
		t.Fatal(err)
	}
	if b, _ := d.ReadFile("c", 10); string(b) != "a" {
		t.Fatalf("c holds %q", b)
	}
}
