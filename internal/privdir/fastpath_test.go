package privdir

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func describeOpen(fd int, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "fstat: " + err.Error()
	}
	return fmt.Sprintf("dir %d:%d", st.Dev, st.Ino)
}

// The fast path opens what the component walk opens, or fails as it
// fails, for every kind of path the walk meets: plain, through a link of
// ours, ending in a link, through /proc's magic links, with .. after a
// link, a file, a missing name.
func TestFastPathAgreesWithTheWalk(t *testing.T) {
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(base, "a", "b"), 0o700))
	must(os.Symlink(filepath.Join(base, "a"), filepath.Join(base, "la")))
	must(os.Symlink("b", filepath.Join(base, "a", "lb")))
	must(os.WriteFile(filepath.Join(base, "a", "f"), nil, 0o600))
	paths := []string{}
	if os.Geteuid() == 0 {
		// A link another user owns, which the walk refuses.
		must(os.Symlink(filepath.Join(base, "a"), filepath.Join(base, "theirs")))
		must(os.Lchown(filepath.Join(base, "theirs"), 65534, 65534))
		paths = append(paths, filepath.Join(base, "theirs"), filepath.Join(base, "theirs", "b"))
	}
	dfd, err := unix.Open(filepath.Join(base, "a"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	must(err)
	defer unix.Close(dfd)
	for _, p := range append(paths,
		filepath.Join(base, "a", "b"),
		filepath.Join(base, "la", "b"),
		filepath.Join(base, "a", "lb"),
		filepath.Join(base, "la", "..", "a"),
		"/proc/self/fd/"+strconv.Itoa(dfd),
		"/proc/self/fd/"+strconv.Itoa(dfd)+"/b",
		"/proc/thread-self/cwd",
		filepath.Join(base, "a", "f"),
		filepath.Join(base, "a", "f", "x"),
		filepath.Join(base, "a", "missing"),
		"/",
	) {
		fast, walked := describeOpen(walk(p, false)), describeOpen(walkLinks(p, false))
		if fast != walked {
			t.Errorf("%s: %s; the component walk: %s", p, fast, walked)
		}
	}
}

// A directory its user may read but not search (mode 0600) is refused by
// Open, as the component walk refused it (it opens "." in it), rather
// than opened only for every file in it to fail later.
func TestOpenRefusesADirectoryItCannotSearch(t *testing.T) {
	if dir := os.Getenv("PRIVDIR_NOSEARCH_DIR"); dir != "" {
		d, err := Open(dir, false)
		if err == nil {
			d.Close()
			fmt.Println("opened")
			os.Exit(1)
		}
		fmt.Println(err)
		os.Exit(0)
	}
	const nobody = 65534
	dir, err := os.MkdirTemp("", "privdir-nosearch-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	d := filepath.Join(dir, "d")
	if err := os.Mkdir(d, 0o600); err != nil {
		t.Fatal(err)
	}
	self := os.Args[0]
	if os.Geteuid() == 0 {
		// Root searches any directory: ask as another user, with a copy
		// of this test binary that user can run.
		b, err := os.ReadFile(self)
		if err != nil {
			t.Fatal(err)
		}
		self = filepath.Join(dir, "privdir.test")
		if err := os.WriteFile(self, b, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{dir, d} {
			if err := os.Chown(p, nobody, nobody); err != nil {
				t.Fatal(err)
			}
		}
	}
	cmd := exec.Command(self, "-test.run=^TestOpenRefusesADirectoryItCannotSearch$")
	cmd.Env = append(os.Environ(), "PRIVDIR_NOSEARCH_DIR="+d)
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("Open of a directory mode 0600: %v: %s", err, out)
	}
}
