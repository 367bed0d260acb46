package lockfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

func openDir(t *testing.T) *privdir.Dir {
	t.Helper()
	d, err := privdir.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// A second Take, even from this process (flock locks belong to the open
// file), is refused with the holder named; once released, it succeeds.
func TestTakeNamesTheHolder(t *testing.T) {
	d := openDir(t)
	l, err := Take(d, "lock")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Take(d, "lock")
	var held *HeldError
	if !errors.As(err, &held) {
		t.Fatalf("second Take: %v, want a HeldError", err)
	}
	self, _ := signals.IdentityOf(os.Getpid())
	if held.Holder != self || held.Name != signals.ProcessName(os.Getpid()) || held.Since.IsZero() {
		t.Fatalf("holder %+v, want this process (%+v)", held, self)
	}
	if want := filepath.Join(d.Path(), "lock"); held.Path != want || !strings.Contains(err.Error(), want) {
		t.Fatalf("HeldError %q, path %q, want %q", err, held.Path, want)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Take(d, "lock")
	if err != nil {
		t.Fatalf("Take after Close: %v", err)
	}
	l.Close()
}

// A lock file naming a process that no longer runs is not repeated as if
// it named the holder.
func TestHeldWithStaleContents(t *testing.T) {
	d := openDir(t)
	l, err := Take(d, "lock")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.WriteFile(filepath.Join(d.Path(), "lock"), []byte(`{"pid":1,"start_time":12345}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Take(d, "lock")
	var held *HeldError
	if !errors.As(err, &held) || held.Holder.Pid != 0 || held.Name != "" {
		t.Fatalf("Take: %v (%+v), want a holder that cannot be told", err, held)
	}
}

// A lock whose file was removed or replaced is stale.
func TestStale(t *testing.T) {
	d := openDir(t)
	l, err := Take(d, "lock")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Stale() {
		t.Fatal("a fresh lock is stale")
	}
	path := filepath.Join(d.Path(), "lock")
	os.Remove(path)
	if !l.Stale() {
		t.Fatal("a removed lock file is not stale")
	}
	os.WriteFile(path, nil, 0o600)
	if !l.Stale() {
		t.Fatal("a lock file replaced by another is not stale")
	}
}

// A lock file planted as a link is refused untouched.
func TestTakeRefusesALink(t *testing.T) {
	d := openDir(t)
	target := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(target, []byte("keep"), 0o600)
	os.Symlink(target, filepath.Join(d.Path(), "lock"))
	var unsafe *privdir.UnsafeError
	if _, err := Take(d, "lock"); !errors.As(err, &unsafe) {
		t.Fatalf("Take through a link: %v", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatalf("the link's target was written: %q", b)
	}
}

func FuzzParseInfo(f *testing.F) {
	f.Add([]byte(`{"pid":12,"start_time":345,"since":"2026-01-02T03:04:05Z"}`))
	f.Add([]byte(`{"pid":-1}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := parseInfo(data)
		if err == nil && (in.Pid <= 0 || in.StartTime == 0) {
			t.Fatalf("accepted %+v", in)
		}
	})
}

func TestWhoNamesTheHolder(t *testing.T) {
	since := time.Date(2026, 12, 1, 10, 0, 0, 0, time.Local)
	for _, tt := range []struct {
		pid   int
		since time.Time
		want  string
	}{
		{812, since, "another wa-sidecar (pid 812, wa-sidecar, since 2026-12-01 10:00:00)"},
		{812, time.Time{}, "another wa-sidecar (pid 812, wa-sidecar)"},
		{0, since, "another process (its pid could not be read from the lock file)"},
	} {
		if got := Who(tt.pid, "wa-sidecar", tt.since, "the lock file"); got != tt.want {
			t.Errorf("Who(%d, …, %v) = %q, want %q", tt.pid, tt.since, got, tt.want)
		}
	}
}
