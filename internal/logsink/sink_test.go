package logsink

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// blockingWriter stands for a stderr nobody reads: writes wait for release.
type blockingWriter struct {
	release chan struct{}
	mu      sync.Mutex
	got     bytes.Buffer
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	<-b.release
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.got.Write(p)
}

func TestLogSinkNeverBlocksAndCountsDrops(t *testing.T) {
	bw := &blockingWriter{release: make(chan struct{})}
	s := newSink(bw, 1000, true)
	rec := []byte(strings.Repeat("r", 99) + "\n")
	// The first record may already be in the stuck Write; the rest queue
	// up to the limit and then are dropped, and no Write call waits.
	for i := 0; i < 50; i++ {
		if n, err := s.Write(rec); n != len(rec) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	close(bw.release)
	s.Close(10 * time.Second)
	bw.mu.Lock()
	out := bw.got.String()
	bw.mu.Unlock()
	kept, dropped, notices := 0, 0, 0
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line == strings.Repeat("r", 99) {
			kept++
			continue
		}
		var notice struct {
			Msg     string
			Dropped int
		}
		if err := json.Unmarshal([]byte(line), &notice); err != nil || notice.Dropped == 0 {
			t.Fatalf("unexpected line %q (%v)", line, err)
		}
		dropped += notice.Dropped
		notices++
	}
	// At most one batch in flight and one queued, each within the limit.
	if kept+dropped != 50 || kept > 20 || notices == 0 {
		t.Fatalf("kept %d + dropped %d (in %d notices) of 50 records", kept, dropped, notices)
	}
	// After Close, records are discarded rather than queued forever.
	s.Write(rec)
	if s.pendingLen() != 0 {
		t.Fatal("records queued after Close")
	}
}

func (s *Sink) pendingLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

type failingWriter struct{ calls int }

func (f *failingWriter) Write(p []byte) (int, error) {
	f.calls++
	return 0, syscall.EPIPE
}

func TestLogSinkStopsWritingAfterAnError(t *testing.T) {
	fw := &failingWriter{}
	s := newSink(fw, 1<<20, false)
	s.Write([]byte("one\n"))
	s.Close(10 * time.Second)
	calls := fw.calls
	s.Write([]byte("two\n"))
	if calls != 1 || fw.calls != 1 {
		t.Fatalf("writes after EPIPE: %d then %d", calls, fw.calls)
	}
}

// slowWriter takes a moment over each write, reading p only at the end, as
// a slow disk or collector would; a buffer reused too early shows up as
// damaged records.
type slowWriter struct {
	mu  sync.Mutex
	got bytes.Buffer
	n   chan int // the bytes written so far, after each write
}

func (w *slowWriter) Write(p []byte) (int, error) {
	for i := 0; i < 50; i++ {
		runtime.Gosched()
	}
	w.mu.Lock()
	w.got.Write(p)
	n := w.got.Len()
	w.mu.Unlock()
	select { // keep only the latest count
	case <-w.n:
	default:
	}
	w.n <- n
	return len(p), nil
}

// steppedWriter lets a test decide when each write reads its buffer.
type steppedWriter struct {
	got     bytes.Buffer
	started chan struct{}
	proceed chan struct{}
}

func (w *steppedWriter) Write(p []byte) (int, error) {
	w.started <- struct{}{}
	<-w.proceed
	w.got.Write(p)
	return len(p), nil
}

// TestLogSinkKeepsRecordsWhole queues a record while the one before it is
// being written, again and again with the writer going idle in between:
// the writer's two buffers must never become one, or the second record
// lands in the buffer being written.
func TestLogSinkKeepsRecordsWhole(t *testing.T) {
	w := &steppedWriter{started: make(chan struct{}), proceed: make(chan struct{})}
	s := newSink(w, 1<<20, true)
	var want bytes.Buffer
	for i := 0; i < 50; i++ {
		a := fmt.Appendf(nil, "record %d.a %s\n", i, strings.Repeat("x", 40))
		b := fmt.Appendf(nil, "record %d.b %s\n", i, strings.Repeat("y", 40))
		want.Write(a)
		want.Write(b)
		s.Write(a)
		<-w.started
		s.Write(b)
		w.proceed <- struct{}{}
		<-w.started
		w.proceed <- struct{}{}
	}
	go func() {
		for range w.started {
			w.proceed <- struct{}{}
		}
	}()
	s.Close(10 * time.Second)
	close(w.started)
	if got := w.got.String(); got != want.String() {
		t.Fatalf("records damaged:\n%s", got)
	}
}

// TestLogSinkWriteWaitKeepsEveryBatch gives the sink a reader slower than
// its producer: WriteWait must wait for room rather than drop.
func TestLogSinkWriteWaitKeepsEveryBatch(t *testing.T) {
	w := &slowWriter{n: make(chan int, 1)}
	s := newSink(w, 1000, true)
	var want bytes.Buffer
	for i := 0; i < 300; i++ {
		rec := fmt.Appendf(nil, "batch %03d %s\n", i, strings.Repeat("y", 90))
		want.Write(rec)
		s.WriteWait(rec)
	}
	s.Close(10 * time.Second)
	if got := w.got.String(); got != want.String() {
		t.Fatalf("batches lost or damaged: got %d bytes, want %d", len(got), want.Len())
	}
}

// fileSink is the sink of a new regular file, as Sinks.For makes it for a
// log redirected to a file, and a way to read what reached the file.
func fileSink(t *testing.T) (*Sink, func() string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var ss Sinks
	return ss.For(f, true), func() string { b, _ := os.ReadFile(path); return string(b) }
}

// TestLogSinkHandKeepsOrderAndOwnership mixes batches given away with
// Hand, small and large, with records and copied batches, on a slow writer
// and on a regular file (where small batches are written at once). The
// caller scribbles over each buffer Hand gives back before filling it
// again: if the sink still wrote from one, the scribble would show.
func TestLogSinkHandKeepsOrderAndOwnership(t *testing.T) {
	run := func(t *testing.T, s *Sink, got func() string) {
		var want bytes.Buffer
		var buf []byte
		for i := 0; i < 200; i++ {
			size := 100 // under directMax, and over it every third batch
			if i%3 == 0 {
				size = directMax + 1000
			}
			buf = fmt.Appendf(buf[:0], "hand %03d ", i)
			buf = append(buf, bytes.Repeat([]byte{'a' + byte(i%26)}, size)...)
			buf = append(buf, '\n')
			want.Write(buf)
			buf = s.Hand(buf)
			if len(buf) != 0 {
				t.Fatalf("Hand gave back a buffer holding %d bytes", len(buf))
			}
			scribble := buf[:cap(buf)]
			for j := range scribble {
				scribble[j] = 'X'
			}
			switch i % 4 {
			case 1:
				rec := fmt.Appendf(nil, "record %03d\n", i)
				want.Write(rec)
				s.Write(rec)
			case 2:
				batch := fmt.Appendf(nil, "copied %03d\n", i)
				want.Write(batch)
				s.WriteWait(batch)
			}
		}
		s.Close(10 * time.Second)
		if g := got(); g != want.String() {
			t.Fatalf("output differs from what was written: got %d bytes, want %d (scribbled: %v)", len(g), want.Len(), strings.Contains(g, "XXXX"))
		}
	}
	t.Run("slow writer", func(t *testing.T) {
		w := &slowWriter{n: make(chan int, 1)}
		run(t, newSink(w, 4<<20, true), func() string { w.mu.Lock(); defer w.mu.Unlock(); return w.got.String() })
	})
	t.Run("file", func(t *testing.T) {
		s, got := fileSink(t)
		if !s.direct {
			t.Fatal("a regular file's sink does not write directly")
		}
		run(t, s, got)
	})
}

// TestLogSinkRecordsWaitForTheBridgesLine: where the bridge's raw output
// and the sidecar's records share a file (2>&1, journald), a record written
// while the bridge's last read ended inside a line waits until the bridge
// ends it, and then comes on a line of its own; if the line stays open, the
// record comes after holdOpen, after a newline, and at Close at the latest.
func TestLogSinkRecordsWaitForTheBridgesLine(t *testing.T) {
	t.Run("the line ends", func(t *testing.T) {
		s, got := fileSink(t)
		s.WriteWait([]byte("line one\nthe bridge's li"))
		s.Write([]byte("RECORD 1\n"))
		s.Write([]byte("RECORD 2\n"))
		s.WriteWait([]byte("ne, cut\nand an"))
		s.WriteWait([]byte("other\n"))
		s.Write([]byte("RECORD 3\n"))
		s.Close(10 * time.Second)
		want := "line one\nthe bridge's line, cut\nRECORD 1\nRECORD 2\nandanother\nRECORD 3\n"
		want = strings.Replace(want, "andanother", "and another", 1)
		if g := got(); g != want {
			t.Fatalf("got %q\nwant %q", g, want)
		}
	})
	t.Run("the line stays open", func(t *testing.T) {
		s, got := fileSink(t)
		s.WriteWait([]byte("Enter the code: "))
		s.Write([]byte("RECORD\n"))
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(got(), "RECORD") && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		s.WriteWait([]byte("1234\n"))
		s.Close(10 * time.Second)
		if g, want := got(), "Enter the code: \nRECORD\n1234\n"; g != want {
			t.Fatalf("got %q\nwant %q", g, want)
		}
	})
	t.Run("closed with the line open", func(t *testing.T) {
		s, got := fileSink(t)
		s.WriteWait([]byte("no newline"))
		s.Write([]byte("RECORD\n"))
		s.Close(10 * time.Second)
		if g, want := got(), "no newline\nRECORD\n"; g != want {
			t.Fatalf("got %q\nwant %q", g, want)
		}
	})
}

// TestLogSinkWriteWaitGivesUpOnAStalledReader checks that a stalled stderr
// holds the bridge's output up for one stall at most, then drops it.
func TestLogSinkWriteWaitGivesUpOnAStalledReader(t *testing.T) {
	bw := &blockingWriter{release: make(chan struct{})}
	s := newSink(bw, 1000, true)
	s.stall = 10 * time.Millisecond
	rec := []byte(strings.Repeat("r", 99) + "\n")
	for i := 0; i < 50; i++ {
		s.WriteWait(rec) // returns: queued, or dropped once the write is stuck
	}
	close(bw.release)
	s.Close(10 * time.Second)
	if !strings.Contains(bw.got.String(), "output dropped") {
		t.Fatal("no drop notice after a stalled reader")
	}
}

// TestLogSinkWriteWaitWritesALargeReadAtOnce: the raw mode hands each
// read on with WriteWait, and a read that finds nothing queued is written
// by its caller, however large, rather than copied for the writer
// goroutine: by the time WriteWait returns, it is in the file.
func TestLogSinkWriteWaitWritesALargeReadAtOnce(t *testing.T) {
	s, got := fileSink(t)
	defer s.Close(10 * time.Second)
	read := bytes.Repeat([]byte(strings.Repeat("r", 99)+"\n"), (256<<10)/100)
	for i := 0; i < 20; i++ {
		s.WriteWait(read)
		if n := len(got()); n != (i+1)*len(read) {
			t.Fatalf("read %d of %d bytes was not written when WriteWait returned (the file has %d bytes)", i, len(read), n)
		}
	}
}

// TestLogSinkWriteWaitKeepsWhatFitsWhileStalled: WriteWait waits for a
// slow writer once waitLimit is queued, but a stalled one must not make it
// drop sooner than Write would: what fits in the sink's bound is kept for
// when the reader moves again.
func TestLogSinkWriteWaitKeepsWhatFitsWhileStalled(t *testing.T) {
	bw := &blockingWriter{release: make(chan struct{})}
	s := newSink(bw, 4<<20, true)
	s.stall = 10 * time.Millisecond
	var want bytes.Buffer
	for i := 0; i < 32; i++ { // 2 MiB: four times waitLimit, half the bound
		batch := fmt.Appendf(nil, "batch %02d %s\n", i, strings.Repeat("b", 64<<10-10))
		want.Write(batch)
		s.WriteWait(batch)
	}
	close(bw.release)
	s.Close(10 * time.Second)
	if got := bw.got.String(); got != want.String() {
		t.Fatalf("batches dropped while 2 MiB of a 4 MiB bound were queued: got %d bytes, want %d (notice: %v)",
			len(got), want.Len(), strings.Contains(got, "output dropped"))
	}
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
	s := newSink(w, 1<<20, true)
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
	s := start(&Sink{w: nb, nb: nb, direct: true, limit: 4096, json: true})
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
	var sinks Sinks
	a, b, c := sinks.For(w, true), sinks.For(w2, true), sinks.For(ow, true)
	if a != b {
		t.Fatal("two files on one pipe got two sinks")
	}
	if a == c {
		t.Fatal("two pipes got one sink")
	}
	sinks.Close(w, time.Second)
	sinks.Close(ow, time.Second)
	for _, s := range []*Sink{a, c} {
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

// The notice of dropped records is a record too: while the bridge's raw
// line is open it waits for that line's end like any other, rather than
// landing inside it.
func TestLogSinkDropNoticeWaitsForTheBridgesLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := start(&Sink{w: f, direct: true, limit: 64, json: true})
	s.WriteWait([]byte("the bridge's li"))
	s.Write([]byte(strings.Repeat("x", 100) + "\n")) // over the bound: dropped
	// Let the writer take the drop before the line ends.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		taken := s.dropped == 0
		s.mu.Unlock()
		if taken || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	s.WriteWait([]byte("ne\n"))
	s.Close(10 * time.Second)
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 2 || lines[0] != "the bridge's line" || !strings.Contains(lines[1], `"dropped":1`) {
		t.Fatalf("got %q; want the bridge's line whole, then the notice", b)
	}
}

// A batch of the bridge's that is dropped never reaches the output, so it
// neither opens a line there nor ends one: a record written after it is
// not held for it, and no empty line is put before the record.
func TestLogSinkADroppedBatchLeavesNoLineOpen(t *testing.T) {
	bw := &blockingWriter{release: make(chan struct{})}
	s := newSink(bw, 64, true)
	s.stall = time.Millisecond
	s.WriteWait([]byte("a\n")) // taken by the writer, whose Write is stuck
	for {
		s.mu.Lock()
		stuck := len(s.pending) == 0 && !s.writing.IsZero() && time.Since(s.writing) > 10*s.stall
		s.mu.Unlock()
		if stuck {
			break
		}
		time.Sleep(time.Millisecond)
	}
	s.WriteWait([]byte("b\n"))
	s.WriteWait([]byte(strings.Repeat("y", 70))) // over the bound while stalled: dropped
	s.Write([]byte("R\n"))
	close(bw.release)
	s.Close(10 * time.Second)
	bw.mu.Lock()
	out := bw.got.String()
	bw.mu.Unlock()
	if !strings.HasPrefix(out, "a\nb\nR\n") || strings.Contains(out, "\n\n") || !strings.Contains(out, `"dropped":1`) {
		t.Fatalf("got %q; want a, b, R, then the notice of the dropped batch", out)
	}
}

// A hold's timer that fires just as the line it waited for ends (too late
// for Stop) must not release the records of the next hold early, into the
// bridge's next open line.
func TestLogSinkALateHoldTimerLeavesTheNextHoldAlone(t *testing.T) {
	s, got := fileSink(t)
	s.WriteWait([]byte("first li"))
	s.Write([]byte("R1\n"))
	s.mu.Lock()
	first := s.holds
	s.mu.Unlock()
	s.WriteWait([]byte("ne\nsecond li"))
	s.Write([]byte("R2\n"))
	s.holdTimedOut(first) // the first hold's timer, firing late
	s.WriteWait([]byte("ne\n"))
	s.Close(10 * time.Second)
	if g, want := got(), "first line\nR1\nsecond line\nR2\n"; g != want {
		t.Fatalf("got %q\nwant %q", g, want)
	}
}
