package signals

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestInheritedDescriptorsDoNotReachTheChild: a descriptor without
// close-on-exec, as a parent can leave the sidecar, is not passed on.
func TestInheritedDescriptorsDoNotReachTheChild(t *testing.T) {
	planted := filepath.Join(t.TempDir(), "inherited-secret")
	if err := os.WriteFile(planted, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(planted, unix.O_RDONLY, 0) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	r := NewReaper(ReaperOptions{})
	defer r.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	sh := "/bin/sh"
	c, err := r.Spawn(SpawnAttr{Path: sh, Args: []string{sh, "-c", `for f in /proc/$$/fd/*; do echo "$f $(readlink "$f")"; done`}, Env: os.Environ(), Stdout: outW})
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(outR)
	if err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if !strings.Contains(string(out), "/fd/1 pipe:") {
		t.Fatalf("the child's listing is not what was expected:\n%s", out)
	}
	if strings.Contains(string(out), planted) {
		t.Fatalf("an inherited descriptor reached the child:\n%s", out)
	}
	// The sidecar's own copy is untouched.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		t.Fatalf("the descriptor itself: %v", err)
	}
}

func TestCloseOnExecFromProc(t *testing.T) {
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY, 0) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := closeOnExecFromProc(); err != nil {
		t.Fatal(err)
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("flags %#x, %v: not close-on-exec", flags, err)
	}
}
