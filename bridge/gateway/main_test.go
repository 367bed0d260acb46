package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// layout writes files (paths relative to dir, "/" separated) with their
// content; a path ending in "/" is a directory.
func layout(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// chmod, symlinkTo, mkdir and grow turn a file into what a test needs.
func chmod(mode os.FileMode) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		t.Helper()
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
}

func symlinkTo(t *testing.T, path string) {
	t.Helper()
	real := path + ".real"
	if err := os.Rename(path, real); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, path); err != nil {
		t.Fatal(err)
	}
}

// linkTo makes path a symbolic link to a file beside it, which prepare
// then turns into what the test needs.
func linkTo(prepare func(*testing.T, string)) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		t.Helper()
		symlinkTo(t, path)
		prepare(t, path+".real")
	}
}

// linkLoop makes path a symbolic link to itself.
func linkLoop(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(path), path); err != nil {
		t.Fatal(err)
	}
}

// mkfifo replaces the file with a named pipe, which nothing writes to:
// an open that waited for a writer would hang the test.
func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

func grow(size int64) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		t.Helper()
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
	}
}

// env is a sidecar environment for Options.Getenv.
func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// loadHome loads the Hermes home dir with no root install, a sidecar
// environment of kv, and every install tree writable.
func loadHome(t *testing.T, dir string, kv ...string) Install {
	t.Helper()
	return Load(Options{
		HermesHome:    dir,
		Getenv:        env(kv...),
		SystemInstall: filepath.Join(t.TempDir(), "no-root-install"),
		writable:      func(string) bool { return true },
	})
}

// problemsText is every problem on its own line, for failure messages and
// for matching.
func problemsText(in Install) string {
	var sb strings.Builder
	for _, p := range in.Problems {
		sb.WriteString(p.Error())
		sb.WriteByte('\n')
	}
	return sb.String()
}

func noProblems(t *testing.T, in Install) {
	t.Helper()
	if len(in.Problems) > 0 {
		t.Errorf("unexpected problems:\n%s", problemsText(in))
	}
}

// onlyProblem checks that there is exactly one problem, in file at line,
// whose message holds every part.
func onlyProblem(t *testing.T, in Install, file string, line int, parts ...string) {
	t.Helper()
	if len(in.Problems) != 1 {
		t.Fatalf("want one problem, got %d:\n%s", len(in.Problems), problemsText(in))
	}
	p := in.Problems[0]
	if p.File != file || p.Line != line {
		t.Errorf("problem at %s:%d, want %s:%d: %s", p.File, p.Line, file, line, p.Message)
	}
	for _, part := range parts {
		if !strings.Contains(p.Message, part) {
			t.Errorf("problem %q does not say %q", p.Message, part)
		}
	}
}

// envVar is the variable name of in.Env, or a zero Var.
func envVar(in Install, name string) (Var, bool) {
	for _, v := range in.Env {
		if v.Name == name {
			return v, true
		}
	}
	return Var{}, false
}
