package feed

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	want := Discovery{Listen: "unix:/tmp/x.sock", TokenFile: "/tmp/tok", Pid: 42, Version: "v1"}
	if err := WriteDiscovery(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadDiscovery(dir)
	if err != nil || got.Listen != want.Listen || got.TokenFile != want.TokenFile || got.Pid != 42 {
		t.Fatalf("ReadDiscovery = %+v, %v", got, err)
	}
	// Another sidecar's file stays; our own goes.
	if err := RemoveDiscovery(dir, 43); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDiscovery(dir); err != nil {
		t.Fatalf("removed another pid's file: %v", err)
	}
	if err := RemoveDiscovery(dir, 42); err != nil {
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
