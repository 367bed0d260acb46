package feed

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// A held state directory follows the protocol the client commands rely
// on: created private, locked against a second server, the discovery file
// published as this process's, and on release removed only if this
// process published it and it is still its own.
func TestHeldStateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	h, err := HoldStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory: %v, %v", fi, err)
	}
	var held *StateDirHeldError
	if _, err := HoldStateDir(dir); !errors.As(err, &held) || held.Pid != os.Getpid() {
		t.Fatalf("a second hold: %v; want a *StateDirHeldError naming pid %d", err, os.Getpid())
	}
	if _, err := ReadDiscovery(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a discovery file before Publish: %v", err)
	}
	if err := h.Publish(Discovery{Listen: "127.0.0.1:1", TokenFile: filepath.Join(dir, TokenFileName), Version: "v1"}); err != nil {
		t.Fatal(err)
	}
	d, err := ReadDiscovery(dir)
	if err != nil || d.Pid != os.Getpid() || d.StartTime == 0 || d.StartedAt.IsZero() || d.Listen != "127.0.0.1:1" {
		t.Fatalf("ReadDiscovery = %+v, %v; want this process's, with its start", d, err)
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDiscovery(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the discovery file after Release: %v", err)
	}

	// A newer server's discovery file survives an older one's release.
	h, err = HoldStateDir(dir)
	if err != nil {
		t.Fatalf("hold after release: %v", err)
	}
	if err := h.Publish(Discovery{Listen: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if err := WriteDiscovery(dir, Discovery{Listen: "127.0.0.1:2", Pid: 1}); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, DiscoveryFileName)); err != nil {
		t.Fatalf("another process's discovery file was removed: %v", err)
	}

	// One that never published leaves the file alone, even one naming it.
	if err := WriteDiscovery(dir, Discovery{Listen: "127.0.0.1:3", Pid: os.Getpid()}); err != nil {
		t.Fatal(err)
	}
	h, err = HoldStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, DiscoveryFileName)); err != nil {
		t.Fatalf("a release without Publish removed the discovery file: %v", err)
	}
}

// A state directory others can write is refused before it is locked.
func TestHoldStateDirRefusesAnUnsafeDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	_, err := HoldStateDir(dir)
	wantUnsafe(t, "HoldStateDir", err, "chmod go-w "+dir)
	if _, err := os.Stat(filepath.Join(dir, LockFileName)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the lock file was created in an unsafe directory: %v", err)
	}
}
