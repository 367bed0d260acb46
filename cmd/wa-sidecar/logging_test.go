package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// FuzzAppendJSONString checks the line writer's escaping against slog's
// own JSON handler: for any bridge output, both must give valid JSON that
// decodes to the same message.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{
		"", "plain ascii line of the bridge", `quote " and \ backslash`,
		"tab\tcr\rnul\x00esc\x1b[31mred", "📱 Scan this QR code", "█▀▀▀▀▀█ ▄ █",
		"bad \xff\xfe utf-8", "sep \u2028 \u2029", "\x7f del", "trailing\\",
		strings.Repeat("12345678", 9) + "\"", "\xe2\x80", "\xed\xa0\x80 surrogate",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		got := appendJSONString([]byte{'"'}, s)
		got = append(got, '"')
		var mine string
		if err := json.Unmarshal(got, &mine); err != nil {
			t.Fatalf("%q escaped to invalid JSON %s: %v", s, got, err)
		}
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info(string(s))
		var rec struct{ Msg string }
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
			t.Fatalf("slog's record does not parse: %v", err)
		}
		if mine != rec.Msg {
			t.Fatalf("%q: line writer gives %q, slog %q", s, mine, rec.Msg)
		}
	})
}

func TestLineWriterJSON(t *testing.T) {
	var out bytes.Buffer
	lw := &lineWriter{out: &out, json: true}
	lw.line(procmon.Line{Stream: procmon.Stdout, Pid: 42, Text: []byte(`✅ WhatsApp connected! "x"`)})
	lw.line(procmon.Line{Stream: procmon.Stderr, Pid: 42, Text: []byte("boom\x1b"), Truncated: true})
	if out.Len() != 0 {
		t.Fatalf("wrote before a flush: %q", out.String())
	}
	lw.flush(procmon.Stdout)
	lw.flush(procmon.Stderr)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 records, got %q", out.String())
	}
	type rec struct {
		Time, Level, Msg, Bridge string
		Pid                      int
		Truncated                bool
	}
	want := []rec{
		{Level: "INFO", Msg: `✅ WhatsApp connected! "x"`, Bridge: "stdout", Pid: 42},
		{Level: "INFO", Msg: "boom\x1b", Bridge: "stderr", Pid: 42, Truncated: true},
	}
	for i, l := range lines {
		var r rec
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("record %q is not JSON: %v", l, err)
		}
		if r.Time == "" {
			t.Errorf("record %q has no time", l)
		}
		r.Time = ""
		if r != want[i] {
			t.Errorf("record %d = %+v, want %+v", i, r, want[i])
		}
	}
}

func TestLineWriterText(t *testing.T) {
	var out bytes.Buffer
	lw := &lineWriter{out: &out}
	lw.line(procmon.Line{Stream: procmon.Stdout, Pid: 7, Text: []byte("Waiting for scan...")})
	lw.flush(procmon.Stdout)
	got := out.String()
	if !strings.HasSuffix(got, " INF Waiting for scan... bridge=stdout pid=7\n") {
		t.Fatalf("text record %q", got)
	}
}

// BenchmarkBridgeOutput compares one slog record per line with the line
// writer's batches, on the 100-byte lines of the pass-through benchmark.
func BenchmarkBridgeOutput(b *testing.B) {
	line := procmon.Line{Stream: procmon.Stdout, Pid: 12345, Text: bytes.Repeat([]byte("y"), 99)}
	const batch = 650 // about one 64 KiB read of 100-byte lines
	b.Run("slog", func(b *testing.B) {
		logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
		b.SetBytes(100)
		for i := 0; i < b.N; i++ {
			logger.Info(string(line.Text), "bridge", line.Stream, "pid", line.Pid)
		}
	})
	b.Run("linewriter", func(b *testing.B) {
		lw := &lineWriter{out: io.Discard, json: true}
		b.SetBytes(100)
		for i := 0; i < b.N; i++ {
			lw.line(line)
			if i%batch == batch-1 {
				lw.flush(procmon.Stdout)
			}
		}
		lw.flush(procmon.Stdout)
	})
}

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
	s := newLogSink(bw, 1000, true)
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

func (s *logSink) pendingLen() int {
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
	s := newLogSink(fw, 1<<20, false)
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
	s := newLogSink(w, 1<<20, true)
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
	s := newLogSink(w, 1000, true)
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

// TestLogSinkWriteWaitGivesUpOnAStalledReader checks that a stalled stderr
// holds the bridge's output up for one stall at most, then drops it.
func TestLogSinkWriteWaitGivesUpOnAStalledReader(t *testing.T) {
	bw := &blockingWriter{release: make(chan struct{})}
	s := newLogSink(bw, 1000, true)
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

// TestTerminalLineLeavesOutQRRows: at a terminal the sidecar draws the QR
// code itself, so the bridge's own rows of it are not shown a second time;
// every other line is.
func TestTerminalLineLeavesOutQRRows(t *testing.T) {
	var out bytes.Buffer
	show := terminalLine(&out, true)
	for _, text := range []string{
		"📱 Scan this QR code with WhatsApp on your phone:",
		"█▀▀▀▀▀▀▀██▀▀█▀▀▀█▀█▀▀██▀▀█▀▀▀▀▀▀▀█",
		"█ █▀▀▀█ █▀█▀ █  █▀   ▄ ▀▀▀ █ █▀▀▀█ █",
		"Waiting for scan...",
	} {
		show(procmon.Line{Stream: procmon.Stdout, Pid: 7, Text: []byte(text)})
	}
	got := out.String()
	if strings.Contains(got, "█") {
		t.Fatalf("a QR row was shown:\n%s", got)
	}
	if !strings.Contains(got, "Scan this QR code") || !strings.Contains(got, "Waiting for scan...") {
		t.Fatalf("other lines are missing:\n%s", got)
	}
}
