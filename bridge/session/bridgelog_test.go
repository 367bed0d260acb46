package session

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// once keeps a bridge that has exited from running again while the test
// reads what it wrote.
var once = procmon.Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 2, Reset: time.Hour}

func TestBridgeLogPath(t *testing.T) {
	if got := BridgeLogPath("/h/.hermes/platforms/whatsapp/session/"); got != "/h/.hermes/platforms/whatsapp/bridge.log" {
		t.Fatalf("BridgeLogPath = %s", got)
	}
}

// The bridge's output of both streams is appended, line by line, after
// what an earlier run left in the file, which stays private.
func TestBridgeLogAppendsBridgeOutput(t *testing.T) {
	path := filepath.Join(t.TempDir(), "whatsapp", "bridge.log")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("earlier run\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bl, err := OpenBridgeLog(BridgeLogConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	h := startMonitor(t, nil, procmon.Config{
		Command: []string{fakeBridge, "-say", "🌉 WhatsApp bridge listening on port 3000 (mode: self-chat)|✅ WhatsApp connected!", "-say-err", "boom", "-exit", "0"},
		Hooks:   []procmon.Hook{procmon.LineFunc(bl.Line)},
		Backoff: once,
	})
	h.next(procmon.EventExited)

	lines := strings.Split(readFile(t, path), "\n")
	if lines[0] != "earlier run" || lines[len(lines)-1] != "" {
		t.Fatalf("file %q", lines)
	}
	got := append([]string{}, lines[1:len(lines)-1]...)
	sort.Strings(got)
	want := []string{"boom", "✅ WhatsApp connected!", "🌉 WhatsApp bridge listening on port 3000 (mode: self-chat)"}
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("lines %q, want %q", got, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode())
	}
}

// A new bridge.log is made private, and an unwritable place is refused
// with the flags that fix it.
func TestOpenBridgeLogErrors(t *testing.T) {
	dir := t.TempDir()
	bl, err := OpenBridgeLog(BridgeLogConfig{Path: filepath.Join(dir, "new", "bridge.log")})
	if err != nil {
		t.Fatal(err)
	}
	bl.Close()
	if fi, err := os.Stat(filepath.Join(dir, "new", "bridge.log")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("new bridge.log: %v %v", err, fi.Mode())
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	_, err = OpenBridgeLog(BridgeLogConfig{Path: filepath.Join(file, "bridge.log")})
	var ble *BridgeLogError
	if !errors.As(err, &ble) || ble.Path != filepath.Join(file, "bridge.log") || !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("OpenBridgeLog under a file: %v; want a *BridgeLogError for its path", err)
	}
	if _, err := OpenBridgeLog(BridgeLogConfig{Path: filepath.Join(dir, "b.log"), MaxSizeMB: -1}); err == nil {
		t.Fatal("negative size accepted")
	}
}

// Rotation by size keeps every line whole, in one file or the next,
// whether each line is written on its own or each batch of them at once.
func TestBridgeLogRotatesWholeLines(t *testing.T) {
	t.Run("line", func(t *testing.T) { testRotatesWholeLines(t, false) })
	t.Run("batched", func(t *testing.T) { testRotatesWholeLines(t, true) })
}

func testRotatesWholeLines(t *testing.T, batched bool) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bridge.log")
	bl, err := OpenBridgeLog(BridgeLogConfig{Path: path, MaxSizeMB: 1, MaxBackups: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	const total = 3 << 20
	const lineLen = 1000
	cfg := procmon.Config{
		Command: []string{fakeBridge, "-spew", "3145728", "-line", "1000", "-exit", "0"},
		Hooks:   []procmon.Hook{procmon.LineFunc(bl.Line)},
		Backoff: once,
	}
	if batched {
		cfg.Hooks = []procmon.Hook{bl}
	}
	h := startMonitor(t, nil, cfg)
	h.next(procmon.EventExited)

	files, _ := filepath.Glob(filepath.Join(dir, "bridge*.log"))
	if len(files) < 3 {
		t.Fatalf("files %v, want rotation into at least 3", files)
	}
	var n int
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := fh.Stat()
		if fi.Size() > 1<<20 {
			t.Errorf("%s is %d bytes, over the 1 MB limit", f, fi.Size())
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			l := sc.Text()
			if strings.HasPrefix(l, "spew done") {
				continue
			}
			if len(l) != lineLen-1 {
				t.Fatalf("%s: a line of %d bytes, want %d: rotation split a line", f, len(l), lineLen-1)
			}
			n++
		}
		fh.Close()
	}
	if want := (total + lineLen - 1) / lineLen; n != want {
		t.Fatalf("%d lines in all files, want %d", n, want)
	}
}

// Batched, the lines are in the file in the order the bridge printed
// them, all of them by the time its exit is reported.
func TestBridgeLogBatchesKeepOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bridge.log")
	bl, err := OpenBridgeLog(BridgeLogConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	var want []string
	for i := range 500 {
		want = append(want, strconv.Itoa(i))
	}
	h := startMonitor(t, nil, procmon.Config{
		Command: []string{fakeBridge, "-say", strings.Join(want, "|"), "-exit", "0"},
		Hooks:   []procmon.Hook{bl},
		Backoff: once,
	})
	h.next(procmon.EventExited)
	if got := readFile(t, path); got != strings.Join(want, "\n")+"\n" {
		t.Fatalf("bridge.log holds %q, want the 500 lines in order", got)
	}
}

// BenchmarkBridgeLogLine measures the cost the log adds to each line of
// the bridge's output: one buffered copy and one write(2).
func BenchmarkBridgeLogLine(b *testing.B) {
	bl, err := OpenBridgeLog(BridgeLogConfig{Path: filepath.Join(b.TempDir(), "bridge.log"), MaxSizeMB: 100})
	if err != nil {
		b.Fatal(err)
	}
	defer bl.Close()
	line := procmon.Line{Stream: procmon.Stdout, Pid: 1, Text: []byte(strings.Repeat("x", 99))}
	b.SetBytes(100)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bl.Line(line)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/line")
}

func line(s string) procmon.Line {
	return procmon.Line{Stream: procmon.Stdout, Pid: 1, Text: []byte(s)}
}

// A bridge.log planted as a link is refused and its target left alone
// (the bridge's output, QR codes included, used to be appended to it).
func TestBridgeLogRefusesAPlantedLink(t *testing.T) {
	dir := t.TempDir()
	target, untouched := proctest.VictimFile(t)
	os.Symlink(target, filepath.Join(dir, "bridge.log"))
	_, err := OpenBridgeLog(BridgeLogConfig{Path: filepath.Join(dir, "bridge.log")})
	var ble *BridgeLogError
	if !errors.As(err, &ble) || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("OpenBridgeLog = %v, want a refusal of the link", err)
	}
	untouched()
}

// bridge.log in a directory others can write is refused: in a sticky
// one like /tmp, another user planted a link where it goes.
func TestBridgeLogInADirectoryOthersCanWriteIsRefused(t *testing.T) {
	dir := filepath.Join(proctest.SharedTempDir(t), "shared")
	os.Mkdir(dir, 0o700)
	os.Chmod(dir, 0o1777)
	target, untouched := proctest.VictimFile(t)
	path := filepath.Join(dir, "bridge.log")
	if _, err := OpenBridgeLog(BridgeLogConfig{Path: path}); err == nil || !strings.Contains(err.Error(), "chmod go-w "+dir) {
		t.Fatalf("OpenBridgeLog = %v, want a refusal with the fix", err)
	}
	proctest.AsNobody(t, "ln", "-s", target, path)
	if _, err := OpenBridgeLog(BridgeLogConfig{Path: path}); err == nil {
		t.Fatal("opened after another user planted a link")
	}
	untouched()
}

// When bridge.log's directory is deleted (to pair again), the next line
// warns once and goes to a new file, not to the deleted one.
func TestBridgeLogAfterItsDirectoryIsDeleted(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "whatsapp")
	path := filepath.Join(dir, "bridge.log")
	var logged strings.Builder
	bl, err := OpenBridgeLog(BridgeLogConfig{Path: path, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	bl.Line(line("before"))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	bl.Line(line("after"))
	bl.Line(line("and more"))
	if got := readFile(t, path); got != "after\nand more\n" {
		t.Fatalf("new bridge.log %q", got)
	}
	if n := strings.Count(logged.String(), "was deleted or moved away"); n != 1 {
		t.Fatalf("warned %d times, want once:\n%s", n, logged.String())
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("directory made again: %v %v", err, fi.Mode())
	}
	// Moved away (as by logrotate without copytruncate): the same.
	os.Rename(path, path+".1")
	bl.Line(line("moved"))
	if got := readFile(t, path); got != "moved\n" {
		t.Fatalf("after a move: %q", got)
	}
}

// Rotation keeps only --bridge-log-max-backups old files.
func TestBridgeLogKeepsMaxBackups(t *testing.T) {
	dir := t.TempDir()
	bl, err := OpenBridgeLog(BridgeLogConfig{Path: filepath.Join(dir, "bridge.log"), MaxSizeMB: 1, MaxBackups: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	big := strings.Repeat("x", 600<<10)
	for i := 0; i < 12; i++ {
		bl.Line(line(big))
	}
	files, _ := filepath.Glob(filepath.Join(dir, "bridge*.log"))
	if len(files) != 3 {
		t.Fatalf("files %v, want bridge.log and 2 backups", files)
	}
}

// Rotations within one millisecond keep every backup: each takes the
// next free millisecond for its name rather than replacing the last.
func TestBridgeLogRotationsInOneMillisecond(t *testing.T) {
	at := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	backupClock = func() time.Time { return at }
	t.Cleanup(func() { backupClock = time.Now })
	dir := t.TempDir()
	bl, err := OpenBridgeLog(BridgeLogConfig{Path: filepath.Join(dir, "bridge.log"), MaxSizeMB: 1, MaxBackups: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	for i := range 4 {
		bl.Line(line(strconv.Itoa(i) + strings.Repeat("x", 600<<10)))
	}
	for i, ms := range []string{"000", "001", "002"} {
		b, err := os.ReadFile(filepath.Join(dir, "bridge-2026-12-02T06-00-00."+ms+".log"))
		if err != nil || !strings.HasPrefix(string(b), strconv.Itoa(i)+"x") {
			t.Fatalf("backup %d: %v, holding %.10q", i, err, b)
		}
	}
}

// Batches large enough to be written in the background, faster than the
// file takes them, end up in the file whole and in order, across
// rotations, by the time EndOutput returns; and Close writes the rest.
func TestBridgeLogBackgroundWritesKeepEveryLine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bridge.log")
	bl, err := OpenBridgeLog(BridgeLogConfig{Path: path, MaxSizeMB: 1, MaxBackups: 100})
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 90)
	n := 0
	for batch := range 80 { // about 4 MiB, in batches of 48 KiB
		for range 500 {
			bl.WriteLine(line(fmt.Sprintf("%07d %s", n, pad)))
			n++
		}
		bl.FlushLines(procmon.Stdout)
		if batch == 40 {
			bl.EndOutput(procmon.Stdout)
			if got := countLines(t, dir); got != n {
				t.Fatalf("after EndOutput: %d lines in the files, want %d", got, n)
			}
		}
	}
	bl.WriteLine(line("last, unflushed"))
	if err := bl.Close(); err != nil {
		t.Fatal(err)
	}
	next := 0
	eachLoggedLine(t, dir, 1<<20, func(f, l string) {
		if next == n {
			if l != "last, unflushed" {
				t.Fatalf("%s: %q after the numbered lines", f, l)
			}
			next++
			return
		}
		if want := fmt.Sprintf("%07d %s", next, pad); l != want {
			t.Fatalf("%s: line %q where %07d was due", f, l[:min(len(l), 12)], next)
		}
		next++
	})
	if next != n+1 {
		t.Fatalf("%d lines in the files, want %d", next, n+1)
	}
}

// eachLoggedLine calls fn with each line of dir's bridge.log and its
// backups, oldest first, and checks that no file passes max bytes.
func eachLoggedLine(t *testing.T, dir string, max int, fn func(file, line string)) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "bridge*.log"))
	sort.Strings(files) // the backups by time, then bridge.log ('-' sorts before '.')
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > max {
			t.Errorf("%s is %d bytes, over the limit of %d", f, len(b), max)
		}
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			fn(f, l)
		}
	}
}

func countLines(t *testing.T, dir string) int {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "bridge*.log"))
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n += strings.Count(string(b), "\n")
	}
	return n
}
