// Package proctest is for tests only: it holds the plumbing that the tests
// of several wa-sidecar packages share. It builds the fake bridge from
// testdata, reads processes from /proc, checks that a package's tests left
// no goroutines or child processes behind, and waits on event streams.
//
// It must not import procmon, whose own tests use it; that is why Events
// is generic.
package proctest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wa-sidecar/wa-sidecar/signals"
)

// Main runs a package's tests with the fake bridge built into a temporary
// directory and its path in *fakeBridge. If every test passed, it then
// fails the run on goroutines still running or child processes left
// behind, as CheckLeaks finds them with opts. It returns the exit code for
// os.Exit.
func Main(m *testing.M, fakeBridge *string, opts ...goleak.Option) int {
	dir, err := os.MkdirTemp("", "wa-sidecar-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer os.RemoveAll(dir)
	if *fakeBridge, err = BuildFakeBridge(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	code := m.Run()
	if code == 0 {
		if err := CheckLeaks(opts...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	return code
}

// BuildFakeBridge builds testdata/fakebridge into dir and returns the
// binary's path. It finds testdata from the module root, so it works from
// any package's directory.
func BuildFakeBridge(dir string) (string, error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root: go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	path := filepath.Join(dir, "fakebridge")
	build := exec.Command("go", "build", "-o", path, "./testdata/fakebridge")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the fake bridge: %w\n%s", err, out)
	}
	return path, nil
}

// CheckLeaks reports goroutines still running (ignoring those opts name)
// and child processes of this test binary, running or zombie. TestMain
// calls it once every test has passed.
func CheckLeaks(opts ...goleak.Option) error {
	var errs []error
	if err := goleak.Find(opts...); err != nil {
		errs = append(errs, fmt.Errorf("goroutine leak: %w", err))
	}
	if kids := Children(os.Getpid()); len(kids) > 0 {
		desc := make([]string, len(kids))
		for i, pid := range kids {
			st, _, _ := State(pid)
			desc[i] = fmt.Sprintf("%d (%s)", pid, st)
		}
		errs = append(errs, fmt.Errorf("child processes left: %s", strings.Join(desc, ", ")))
	}
	return errors.Join(errs...)
}

// State returns pid's state letter (R, S, Z, ...) and parent pid from
// /proc/PID/stat, and false once there is no such process.
func State(pid int) (state string, ppid int, ok bool) {
	s, err := signals.ReadStat(pid)
	if err != nil {
		return "", 0, false
	}
	return s.State, s.PPid, true
}

// Running reports whether pid is alive and not a zombie.
func Running(pid int) bool {
	st, _, ok := State(pid)
	return ok && st != "Z" && st != "X"
}

// Children lists the processes, running or zombie, whose parent is pid.
func Children(pid int) []int {
	return childrenWhere(pid, func(string) bool { return true })
}

// ZombieChildren lists the children of pid that have exited but were not
// reaped.
func ZombieChildren(pid int) []int {
	return childrenWhere(pid, func(st string) bool { return st == "Z" })
}

func childrenWhere(parent int, keep func(state string) bool) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ppid, ok := State(pid); ok && ppid == parent && keep(st) {
			out = append(out, pid)
		}
	}
	return out
}

// WaitPids waits until the file at path lists at least n pids, separated
// by white space, and returns all it lists. It fails the test after 20 s.
func WaitPids(t testing.TB, path string, n int) []int {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		f := strings.Fields(string(b))
		if len(f) >= n {
			pids := make([]int, len(f))
			for i := range f {
				pids[i], _ = strconv.Atoi(f[i])
			}
			return pids
		}
	}
	t.Fatalf("pid file %s never listed %d pids", path, n)
	return nil
}

// FreePort asks the kernel for a loopback TCP port nobody uses right now.
// Another program could take it before the test binds it; tests on one
// machine do not.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
