package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// runToFiles runs the sidecar with its stdout and stderr in files (regular
// files: the sink's direct path), waits for the bridge's done file, stops
// the sidecar with SIGTERM and returns what each file holds.
func runToFiles(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	bin, _ := binaries(t)
	dir := t.TempDir()
	outF, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer outF.Close()
	errF, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errF.Close()
	done := filepath.Join(dir, "done")
	cmd := startOn(t, outF, errF, append(append([]string{bin}, args...), "-done-file", done, "-hang")...)
	waitFile(t, done)
	// Stopping must not lose what the bridge wrote: the readers drain its
	// pipes to the end, and the sinks are written out, before the exit.
	cmd.Process.Signal(syscall.SIGTERM)
	if code := exitCode(t, cmd); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	o, _ := os.ReadFile(outF.Name())
	e, _ := os.ReadFile(errF.Name())
	return string(o), string(e)
}

// TestBridgeOutputRaw: with --bridge-output raw the bridge's stdout comes
// out of the sidecar's stdout byte for byte (a line far over
// --max-line-bytes included), its stderr on the sidecar's stderr beside
// the sidecar's own JSON records, and no line is wrapped.
func TestBridgeOutputRaw(t *testing.T) {
	_, fake := binaries(t)
	stdout, stderr := runToFiles(t, "run", "--bridge-output", "raw", "--max-line-bytes", "1000", "--",
		fake, "-long-line", "70000", "-say", `hello|{"not":"a record"}|wörld`, "-say-err", "oops|again")
	want := strings.Repeat("x", 70000) + "\nafter-long-line\nhello\n" + `{"not":"a record"}` + "\nwörld\n"
	if stdout != want {
		t.Fatalf("stdout is not the bridge's output unchanged: %d bytes, want %d; starts %.80q", len(stdout), len(want), stdout)
	}
	var raw []string
	for _, l := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil {
			if rec["bridge"] != nil {
				t.Errorf("a bridge line was logged as a record in raw mode: %s", l)
			}
			continue
		}
		raw = append(raw, l)
	}
	if strings.Join(raw, "|") != "oops|again" {
		t.Fatalf("stderr's raw lines = %q, want the bridge's two stderr lines; stderr:\n%s", raw, stderr)
	}
	if !strings.Contains(stderr, `"msg":"bridge stopped"`) {
		t.Fatalf("the sidecar's own records are missing from stderr:\n%s", stderr)
	}
}

// TestBridgeOutputOff: the bridge's lines appear on neither stream.
func TestBridgeOutputOff(t *testing.T) {
	_, fake := binaries(t)
	stdout, stderr := runToFiles(t, "run", "--bridge-output", "off", "--", fake, "-say", "hello-out", "-say-err", "hello-err")
	if stdout != "" {
		t.Fatalf("stdout = %q, want nothing", stdout)
	}
	for _, l := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) != nil || rec["bridge"] != nil {
			t.Fatalf("a bridge line reached stderr: %s", l)
		}
	}
	if !strings.Contains(stderr, `"msg":"bridge stopped"`) {
		t.Fatalf("the sidecar's own records are missing from stderr:\n%s", stderr)
	}
}

// TestBridgeOutputLogToFile: the default mode, with stderr in a file (the
// direct path), still makes every line a record that says its stream.
func TestBridgeOutputLogToFile(t *testing.T) {
	_, fake := binaries(t)
	stdout, stderr := runToFiles(t, "run", "--", fake, "-say", "hello-out", "-say-err", "hello-err")
	if stdout != "" {
		t.Fatalf("stdout = %q, want nothing", stdout)
	}
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("stderr line is not JSON: %q", l)
		}
		if s, ok := rec["bridge"].(string); ok {
			got[rec["msg"].(string)] = s
		}
	}
	if got["hello-out"] != "stdout" || got["hello-err"] != "stderr" {
		t.Fatalf("bridge records = %v, want hello-out on stdout and hello-err on stderr", got)
	}
}

// TestUnreadStdoutBlocksNothingInRawMode: raw output to a pipe nobody reads
// must not hold the bridge up or keep the sidecar from stopping it.
func TestUnreadStdoutBlocksNothingInRawMode(t *testing.T) {
	unreadPipeBlocksNothing(t, "stdout")
}

func TestCannotStall(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for _, c := range []struct {
		name string
		f    *os.File
		want bool
	}{{"regular file", f, true}, {"/dev/null", null, true}, {"pipe", w, false}} {
		if got := cannotStall(c.f); got != c.want {
			t.Errorf("cannotStall(%s) = %v, want %v", c.name, got, c.want)
		}
	}
}

// orderWriter records writes, slowly now and then, so that batches
// written directly and records queued for the writer goroutine overlap.
type orderWriter struct {
	mu  sync.Mutex
	got bytes.Buffer
	n   int
}

func (w *orderWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.n++
	slow := w.n%3 == 0
	w.mu.Unlock()
	if slow {
		time.Sleep(time.Millisecond)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.got.Write(p)
}

// TestLogSinkDirectKeepsOrder: on the direct path a batch must never jump
// ahead of a record queued before it, nor two writes interleave.
func TestLogSinkDirectKeepsOrder(t *testing.T) {
	w := &orderWriter{}
	s := newLogSink(w, 1<<20, true)
	s.direct = true
	var want bytes.Buffer
	for i := 0; i < 300; i++ {
		rec := fmt.Appendf(nil, "record %03d\n", i)
		batch := fmt.Appendf(nil, "batch %03d a\nbatch %03d b\n", i, i)
		want.Write(rec)
		want.Write(batch)
		s.Write(rec)
		s.WriteWait(batch)
	}
	s.Close(10 * time.Second)
	if got := w.got.String(); got != want.String() {
		t.Fatalf("order lost or records damaged:\n%s", firstDiff(got, want.String()))
	}
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range min(len(g), len(w)) {
		if g[i] != w[i] {
			return fmt.Sprintf("line %d: got %q, want %q", i+1, g[i], w[i])
		}
	}
	return fmt.Sprintf("got %d lines, want %d", len(g), len(w))
}

// TestLogSinkOnAStalledPipe: on a pipe the sink writes batches itself,
// through a non-blocking copy of the pipe, with a deadline. With nobody
// reading, a batch bigger than the pipe must not hold its caller for more
// than a stall; what did not fit is written later, whole; later batches
// are dropped and counted; and every line that arrives is whole.
func TestLogSinkOnAStalledPipe(t *testing.T) {
	r, w, nb := reopenedPipe(t)
	s := &logSink{w: nb, nb: nb, direct: true, limit: 4096, json: true}
	startLogSink(s)
	s.stall = 50 * time.Millisecond

	line := func(b, i int) string { return fmt.Sprintf("batch %d line %04d %s\n", b, i, strings.Repeat("z", 80)) }
	batch := func(b, lines int) []byte {
		var out []byte
		for i := range lines {
			out = append(out, line(b, i)...)
		}
		return out
	}
	first := batch(0, 2000) // about 200 KiB, three times a pipe
	t0 := time.Now()
	s.WriteWait(first)
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("WriteWait on a stalled pipe took %v", d)
	}
	for b := 1; b <= 20; b++ {
		s.WriteWait(batch(b, 10))
	}

	got := make(chan string, 1)
	go func() {
		var all bytes.Buffer
		all.ReadFrom(r)
		got <- all.String()
	}()
	s.Close(10 * time.Second)
	nb.Close()
	w.Close()
	out := <-got
	if !strings.HasPrefix(out, string(first)) {
		t.Fatalf("the first batch did not arrive whole and first (%d bytes arrived)", len(out))
	}
	dropped := false
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if strings.Contains(l, "output dropped") {
			dropped = true
			continue
		}
		if len(l) != len(line(0, 0))-1 || !strings.HasPrefix(l, "batch ") {
			t.Fatalf("a damaged line arrived: %q", l)
		}
	}
	if !dropped {
		t.Fatal("batches written while the pipe stalled were neither kept nor reported dropped")
	}
}

// TestReopenNonblockingLeavesOthersAlone: a regular file is not reopened,
// and the pipe's own description stays blocking.
func TestReopenNonblockingLeavesOthersAlone(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if nb := reopenNonblocking(f); nb != nil {
		nb.Close()
		t.Fatal("a regular file was reopened")
	}
	_, w, _ := reopenedPipe(t)
	flags, err := unix.FcntlInt(w.Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.O_NONBLOCK != 0 {
		t.Fatal("the pipe's own description was made non-blocking")
	}
}

// TestStdoutAndStderrOnOnePipeShareASink: with 2>&1 both streams reach the
// same pipe; one sink, one writer at a time, keeps their batches from
// landing inside one another (a non-blocking write can stop part-way).
func TestStdoutAndStderrOnOnePipeShareASink(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fd, err := unix.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	w2 := os.NewFile(uintptr(fd), "w2")
	other, ow, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	a, b, c := sinkFor(w, true), sinkFor(w2, true), sinkFor(ow, true)
	if a != b {
		t.Fatal("two files on one pipe got two sinks")
	}
	if a == c {
		t.Fatal("two pipes got one sink")
	}
	// Out of the process-wide table, before a later pipe can reuse the
	// inode numbers.
	sinks.Delete(keyOf(w))
	sinks.Delete(keyOf(ow))
	for _, s := range []*logSink{a, c} {
		s.Close(time.Second)
		if s.nb != nil {
			s.nb.Close()
		}
	}
	w.Close()
	w2.Close()
	ow.Close()
}

// reopenedPipe returns a pipe's two ends and its write end opened again
// without blocking, all closed when the test ends.
func reopenedPipe(t *testing.T) (r, w, nb *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	nb = reopenNonblocking(w)
	if nb == nil {
		t.Fatal("a pipe could not be opened again without blocking")
	}
	t.Cleanup(func() { nb.Close() })
	return r, w, nb
}
