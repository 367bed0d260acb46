package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"
	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// logStyle is what the sidecar's log looks like.
type logStyle int

const (
	styleJSON    logStyle = iota // JSON lines, for a log collector
	styleText                    // plain text with the time and level
	styleColour                  // the same, coloured, for a person at a terminal
	styleJournal                 // plain text behind syslog priorities, for journald
)

// styleOf is the style of the sidecar's log on w for --log-format format:
// auto is text at a terminal (coloured, unless $NO_COLOR is set), plain
// text with priorities when w is journald's stream (systemd sets
// $JOURNAL_STREAM to it), and JSON lines anywhere else.
func styleOf(format string, w *os.File) (logStyle, error) {
	tty := isTerminal(w)
	text := styleText
	if tty && os.Getenv("NO_COLOR") == "" {
		text = styleColour
	}
	switch strings.ToLower(format) {
	case "auto":
		switch {
		case tty:
			return text, nil
		case isJournal(w):
			return styleJournal, nil
		}
		return styleJSON, nil
	case "text":
		return text, nil
	case "json":
		return styleJSON, nil
	}
	return styleJSON, fmt.Errorf("--log-format %q: use auto, text or json", format)
}

// isJournal reports whether w is the stream systemd connected to journald
// for this service: $JOURNAL_STREAM names its device and inode. A child
// that inherited the variable but writes elsewhere (a pipe, a file) gets
// no match.
func isJournal(w *os.File) bool {
	devText, inoText, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	dev, err1 := strconv.ParseUint(devText, 10, 64)
	ino, err2 := strconv.ParseUint(inoText, 10, 64)
	var st unix.Stat_t
	if err1 != nil || err2 != nil || unix.Fstat(int(w.Fd()), &st) != nil {
		return false
	}
	return uint64(st.Dev) == dev && st.Ino == ino
}

// newLogger builds the sidecar's own log, in the style styleOf gives.
func newLogger(format, level string, w *os.File) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	style, err := styleOf(format, w)
	if err != nil {
		return nil, err
	}
	out := sinkFor(w, style == styleJSON)
	switch style {
	case styleText, styleColour:
		return slog.New(textHandler(out, lv, style == styleColour)), nil
	case styleJournal:
		return slog.New(newJournalHandler(out, lv)), nil
	}
	return slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: lv})), nil
}

// jsonLog reports whether the sidecar's log on w is JSON lines.
func jsonLog(format string, w *os.File) bool {
	style, _ := styleOf(format, w)
	return style == styleJSON
}

func textHandler(w io.Writer, lv slog.Level, colour bool) slog.Handler {
	return tint.NewTextHandler(w, &tint.Options{Level: lv, TimeFormat: time.TimeOnly, NoColor: !colour})
}

// journalHandler writes records for journald: each line starts with its
// syslog priority (<3> error, <4> warning, <6> info, <7> debug), which
// journald takes as the record's priority and strips, then the message and
// attributes as plain text. No time: journald stamps every line itself.
type journalHandler struct {
	inner slog.Handler // writes into *buf
	buf   *bytes.Buffer
	mu    *sync.Mutex // guards buf, shared by the handlers WithAttrs makes
	out   io.Writer
}

func newJournalHandler(out io.Writer, lv slog.Level) *journalHandler {
	buf := new(bytes.Buffer)
	inner := tint.NewTextHandler(buf, &tint.Options{Level: lv, NoColor: true,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
				return slog.Attr{}
			}
			return a
		}})
	return &journalHandler{inner: inner, buf: buf, mu: new(sync.Mutex), out: out}
}

// journalPriority is the syslog priority of a level.
func journalPriority(lv slog.Level) string {
	switch {
	case lv >= slog.LevelError:
		return "<3>"
	case lv >= slog.LevelWarn:
		return "<4>"
	case lv >= slog.LevelInfo:
		return "<6>"
	}
	return "<7>"
}

func (h *journalHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return h.inner.Enabled(ctx, lv)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Reset()
	h.buf.WriteString(journalPriority(r.Level))
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	_, err := h.out.Write(h.buf.Bytes())
	return err
}

func (h *journalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &journalHandler{inner: h.inner.WithAttrs(attrs), buf: h.buf, mu: h.mu, out: h.out}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: h.inner.WithGroup(name), buf: h.buf, mu: h.mu, out: h.out}
}

// Where the bridge's output goes (--bridge-output).
const (
	bridgeOutputLog = "log" // one record per line in the sidecar's own log
	bridgeOutputRaw = "raw" // the lines as the bridge wrote them, on the same stream
	bridgeOutputOff = "off" // nowhere on the sidecar's stdout or stderr
)

// checkBridgeOutput validates --bridge-output.
func checkBridgeOutput(mode string) (string, error) {
	switch m := strings.ToLower(mode); m {
	case bridgeOutputLog, bridgeOutputRaw, bridgeOutputOff:
		return m, nil
	}
	return "", fmt.Errorf("--bridge-output %q: use log (a record per line in the sidecar's log), raw (the bridge's lines unchanged, its stdout on stdout and its stderr on stderr) or off", mode)
}

// bridgeOutput returns the monitor hooks that send the bridge's output to
// the sidecar's own stdout and stderr (none with --bridge-output off).
//
// In log mode a person at a terminal gets one coloured record per line from
// the logger itself. Otherwise, where a chatty bridge can print millions of
// lines, a line writer formats each line as the handler would (a JSON
// object, or plain tint text) into a per-stream buffer and writes a batch
// with one write, at each flush. Every line stays marked with its stream
// and pid.
//
// In raw mode the bytes go out as the bridge wrote them, its stdout to
// stdout and its stderr to stderr, a whole read at a time, as if the
// sidecar were not there.
func bridgeOutput(logger *slog.Logger, mode, format string, stdout, stderr *os.File) []procmon.Hook {
	switch mode {
	case bridgeOutputOff:
		return nil
	case bridgeOutputRaw:
		// The notice of dropped output, the one line the sidecar adds,
		// is worded in the log's format.
		json := jsonLog(format, stderr)
		out, errOut := rawOut(stdout, json), rawOut(stderr, json)
		return []procmon.Hook{procmon.RawFunc(func(s procmon.Stream, b []byte) {
			if s == procmon.Stderr {
				errOut(b)
				return
			}
			out(b)
		})}
	}
	if !logger.Enabled(context.Background(), slog.LevelInfo) {
		return nil
	}
	style, _ := styleOf(format, stderr)
	if isTerminal(stderr) && style != styleJSON {
		return []procmon.Hook{procmon.LineFunc(terminalLine(sinkFor(stderr, false), style == styleColour))}
	}
	lw := &lineWriter{out: sinkFor(stderr, style == styleJSON), json: style == styleJSON, journal: style == styleJournal}
	return []procmon.Hook{procmon.LineFunc(lw.line), procmon.FlushFunc(lw.flush)}
}

// pairingLine reports whether a line of the bridge's output carries a
// pairing code, which must stay out of every log: whoever reads the
// journal or 'docker logs' could link their phone to the account. The
// hermes layer logs one record for each code instead, saying how to see
// it.
func pairingLine(text []byte) bool {
	return len(text) > 0 && bridge.MayStartPairingCode(text[0]) && bridge.CarriesPairingCode(text)
}

// rawOut writes the bridge's raw output to f. On a terminal a person sees
// it as the bridge drew it, QR code and all; anywhere else the lines
// carrying a pairing code are left out.
func rawOut(f *os.File, json bool) func([]byte) {
	sink := sinkFor(f, json)
	if isTerminal(f) {
		return sink.WriteWait
	}
	qf := &qrFilter{out: sink.WriteWait}
	return qf.write
}

// qrFilter passes raw output on unchanged, a read at a time, except the
// lines that carry a pairing code, which it leaves out whole. A line that
// may be one (by its first byte) is held back until its end shows what it
// is, or until it is longer than any pairing line.
type qrFilter struct {
	out  func([]byte)
	mu   sync.Mutex // each stream has one filter; a new child's reader may start before an old one's ends
	held []byte     // the start of a line that may carry a code
	pass bool       // the current line is being passed on as it comes
	drop bool       // the current line carries a code: left out up to its end
	buf  []byte
}

// qrFilterHold is longer than any pairing line: a drawn row is some
// hundred bytes, a JSON event with its payload a few kilobytes.
const qrFilterHold = 16 << 10

func (f *qrFilter) write(p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.buf[:0]
	for len(p) > 0 {
		seg, end := p, false
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			seg, end = p[:i+1], true
		}
		p = p[len(seg):]
		switch {
		case f.pass:
			out = append(out, seg...)
		case f.drop:
		case len(f.held) == 0 && !bridge.MayStartPairingCode(seg[0]):
			out = append(out, seg...)
			f.pass = !end
		default:
			f.held = append(f.held, seg...)
			if !end && len(f.held) < qrFilterHold {
				break
			}
			if !bridge.CarriesPairingCode(bytes.TrimSuffix(f.held, []byte("\n"))) {
				out = append(out, f.held...)
				f.pass = !end
			} else {
				f.drop = !end
			}
			f.held = f.held[:0]
		}
		if end {
			f.pass, f.drop = false, false
		}
	}
	if len(out) > 0 {
		f.out(out)
	}
	f.buf = out
}

// ansiCyan marks the bridge's stdout; the other colours are in clientfmt.go.
const ansiCyan = "\x1b[36m"

// terminalLine shows a bridge line to a person: the time, then a coloured
// gutter with the bridge's pid and stream (cyan "out", yellow "err") where
// the sidecar's own records have their level, so the bridge's lines stand
// apart from the sidecar's at a glance and the QR code it draws stays in
// one column.
//
// The rows of a QR code the bridge draws are left out: at a terminal the
// sidecar draws the code itself, in one block under a line that says what
// to do with it (bridge.Options.QRWriter), and the bridge's copy, each row
// behind a gutter, only made the person scroll past it twice. So is a
// --pair-json line with the code's payload.
//
// Control characters are escaped (see appendText), so that the bridge can
// neither retitle nor clear the terminal, nor start a line of its own
// that looks like the sidecar's.
func terminalLine(w io.Writer, colour bool) func(procmon.Line) {
	var mu sync.Mutex
	var b []byte
	paint := func(b []byte, c string) []byte {
		if colour {
			return append(b, c...)
		}
		return b
	}
	return func(l procmon.Line) {
		if pairingLine(l.Text) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		b = paint(b[:0], ansiDim)
		b = time.Now().AppendFormat(b, time.TimeOnly)
		b = paint(b, ansiReset)
		b = append(b, ' ')
		if l.Stream == procmon.Stderr {
			b = append(paint(b, ansiYellow), "│err "...)
		} else {
			b = append(paint(b, ansiCyan), "│out "...)
		}
		b = strconv.AppendInt(b, int64(l.Pid), 10)
		b = append(paint(append(b, "│"...), ansiReset), ' ')
		b = appendText(b, l.Text)
		if l.Truncated {
			b = paint(append(paint(b, ansiDim), " (line cut)"...), ansiReset)
		}
		b = append(b, '\n')
		w.Write(b)
	}
}

// logSink is the sidecar's own stderr, decoupled from whoever reads it.
// A terminal paused with Ctrl-S, a pager, a stalled container log driver or
// a reader that went away must never stop the monitor or, through the
// bridge's output, the bridge itself: writes are whole records copied into
// a bounded buffer that one goroutine writes out, a record that does not
// fit is dropped and counted (and the count reported once the writer is
// moving again), and after a write error such as EPIPE records are
// discarded. Whole records in, whole records out, so the slog handler and
// the bridge's line writer never interleave mid-line.
type logSink struct {
	w     io.Writer
	limit int
	json  bool
	name  string // what the notice of dropped output calls w: "stderr"
	// direct: a batch of the bridge's output that finds nothing queued
	// ahead of it is written by its caller, without a hand-off to the
	// writer goroutine (which on a busy machine costs more than the
	// write). That is safe where a write cannot stall (a regular file,
	// /dev/null), or where it can be given a deadline: nb is then the
	// pipe or terminal opened again without blocking, and w is nb.
	direct bool
	nb     *os.File
	wmu    sync.Mutex // held across every write of w, in order
	// directOwns: the write under way (see writing) is a caller's direct
	// one; the writer goroutine leaves the queue alone until it is done.
	directOwns bool

	mu      sync.Mutex
	pending []byte
	dropped int64
	broken  bool // a write failed (EPIPE, …): discard from now on
	closing bool // Close was called: write out what is queued, then stop
	stopped bool // the writer goroutine has returned
	// writing is when the write under way began (zero between writes), and
	// freed is closed, and replaced, each time the writer takes what is
	// pending: WriteWait tells a slow reader from a stalled one by them.
	writing time.Time
	freed   chan struct{}
	stall   time.Duration // logSinkStall; shorter in tests

	kick chan struct{}
	done chan struct{}
}

// logSinkLimit bounds what waits for a slow stderr: a few seconds of a
// chatty bridge.
const logSinkLimit = 4 << 20

var sinks sync.Map // sinkKey → *logSink

// sinkKey names what a file writes to: stdout and stderr on the same pipe,
// terminal or file (2>&1) share one sink, so that their batches, written
// by one writer at a time, never land inside one another.
type sinkKey struct {
	dev, ino, rdev uint64
	f              *os.File // when fstat fails
}

func keyOf(f *os.File) sinkKey {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return sinkKey{f: f}
	}
	return sinkKey{dev: st.Dev, ino: st.Ino, rdev: st.Rdev}
}

// sinkFor returns the one sink of f, starting it on first use. json says how
// to word the notice about dropped output.
func sinkFor(f *os.File, json bool) *logSink {
	key := keyOf(f)
	if s, ok := sinks.Load(key); ok {
		return s.(*logSink)
	}
	s := &logSink{w: f, limit: logSinkLimit, json: json, direct: cannotStall(f), name: strings.TrimPrefix(f.Name(), "/dev/")}
	if !s.direct {
		if nb := reopenNonblocking(f); nb != nil {
			s.w, s.nb, s.direct = nb, nb, true
		}
	}
	startLogSink(s)
	if prev, loaded := sinks.LoadOrStore(key, s); loaded {
		s.Close(0)
		if s.nb != nil {
			s.nb.Close()
		}
		return prev.(*logSink)
	}
	return s
}

// reopenNonblocking opens f, a pipe or a terminal, again: a new open file
// description of the same pipe or terminal, non-blocking, which the
// runtime's poller can wait on and a write can have a deadline on. f's own
// description stays as it is; others may share it, such as the shell that
// owns the terminal. It returns nil for anything else, or when f cannot be
// opened so (a socket, a pipe with no reader left).
func reopenNonblocking(f *os.File) *os.File {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
	case unix.S_IFCHR:
		if !isatty.IsTerminal(f.Fd()) {
			return nil
		}
	default:
		return nil
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil
	}
	var again unix.Stat_t
	if unix.Fstat(fd, &again) != nil || again.Dev != st.Dev || again.Ino != st.Ino || again.Rdev != st.Rdev {
		unix.Close(fd)
		return nil
	}
	nb := os.NewFile(uintptr(fd), f.Name())
	if nb.SetWriteDeadline(time.Time{}) != nil { // not pollable after all
		nb.Close()
		return nil
	}
	return nb
}

// closeLog writes out what the sink of f still holds, waiting up to two
// seconds for a stalled reader.
func closeLog(f *os.File) {
	if s, ok := sinks.Load(keyOf(f)); ok {
		s.(*logSink).Close(2 * time.Second)
	}
}

// cannotStall reports whether writes to f finish without waiting on a
// reader: a regular file or /dev/null, not a pipe, socket or terminal.
func cannotStall(f *os.File) bool {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return true
	case unix.S_IFCHR:
		return unix.Major(st.Rdev) == 1 && unix.Minor(st.Rdev) == 3 // /dev/null
	}
	return false
}

func newLogSink(w io.Writer, limit int, json bool) *logSink {
	return startLogSink(&logSink{w: w, limit: limit, json: json})
}

func startLogSink(s *logSink) *logSink {
	s.kick, s.done, s.freed, s.stall = make(chan struct{}, 1), make(chan struct{}), make(chan struct{}), logSinkStall
	if s.name == "" {
		s.name = "stderr"
	}
	go s.run()
	return s
}

// logSinkStall is how long a write of stderr may take before WriteWait
// counts its reader as stalled and drops bridge output instead of waiting.
const logSinkStall = time.Second

// WriteWait queues a batch of the bridge's output. Where Write would drop
// it for want of room, WriteWait waits for the writer to make room, as a
// pipe would, so a reader that is slower than the bridge (a log file, a
// busy collector) gets every line. Only when a single write of stderr has
// taken longer than logSinkStall (a paused terminal, a reader gone
// quiet) is the batch dropped and counted, so that the bridge is never
// held up by a stalled stderr for long.
func (s *logSink) WriteWait(p []byte) {
	for {
		s.mu.Lock()
		switch {
		case s.broken || s.stopped:
			s.mu.Unlock()
			return
		case s.direct && len(s.pending) == 0 && s.dropped == 0 && s.writing.IsZero() && !s.closing:
			s.writeDirect(p)
			return
		case len(s.pending)+len(p) <= s.limit || len(s.pending) == 0:
			s.pending = append(s.pending, p...)
			s.mu.Unlock()
			s.kickWriter()
			return
		case !s.writing.IsZero() && time.Since(s.writing) >= s.stall:
			s.dropped++
			s.mu.Unlock()
			s.kickWriter()
			return
		}
		freed := s.freed
		s.mu.Unlock()
		t := time.NewTimer(s.stall)
		select {
		case <-freed:
		case <-t.C:
		}
		t.Stop()
	}
}

// writeDirect writes p itself; the caller holds s.mu, which it releases.
// Marking the write under way keeps later batches and records queued
// behind it, so order is kept. On a pipe or terminal the write has a
// deadline of one stall: what a slow or stalled reader has not taken by
// then goes, whole, to the head of the queue for the writer goroutine,
// and later batches are held up or dropped as with any stalled reader.
func (s *logSink) writeDirect(p []byte) {
	s.writing, s.directOwns = time.Now(), true
	s.wmu.Lock()
	s.mu.Unlock()
	if s.nb != nil {
		s.nb.SetWriteDeadline(time.Now().Add(s.stall))
	}
	n, err := s.w.Write(p)
	if s.nb != nil {
		s.nb.SetWriteDeadline(time.Time{})
	}
	s.wmu.Unlock()
	s.mu.Lock()
	s.writing, s.directOwns = time.Time{}, false
	// Callers waiting for room behind this write may go on.
	close(s.freed)
	s.freed = make(chan struct{})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		rest := make([]byte, 0, len(p)-n+len(s.pending))
		s.pending = append(append(rest, p[n:]...), s.pending...)
	case err != nil:
		s.broken = true
		s.pending = nil
	}
	more := len(s.pending) > 0 || s.dropped > 0 || s.closing
	s.mu.Unlock()
	if more {
		s.kickWriter()
	}
}

func (s *logSink) kickWriter() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Write queues one record. It never blocks on the underlying writer.
func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	switch {
	case s.broken || s.stopped:
	case len(s.pending)+len(p) > s.limit:
		s.dropped++
	default:
		s.pending = append(s.pending, p...)
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (s *logSink) run() {
	defer close(s.done)
	var spare []byte
	for range s.kick {
		for {
			s.mu.Lock()
			if s.directOwns {
				// A caller is writing; it kicks again when it is done.
				s.mu.Unlock()
				break
			}
			out, dropped := s.pending, s.dropped
			if len(out) == 0 && dropped == 0 {
				// Nothing to swap: pending and spare must stay two buffers,
				// or the next records would be appended to the one being
				// written.
				closing := s.closing
				if closing {
					s.stopped = true
				}
				s.mu.Unlock()
				if closing {
					return
				}
				break
			}
			s.pending, s.dropped = spare[:0], 0
			s.writing = time.Now()
			close(s.freed)
			s.freed = make(chan struct{})
			s.mu.Unlock()
			if dropped > 0 {
				out = append(out, s.dropNotice(dropped)...)
			}
			s.wmu.Lock()
			_, err := s.w.Write(out)
			s.wmu.Unlock()
			s.mu.Lock()
			s.writing = time.Time{}
			if err != nil {
				s.broken = true
				s.pending = nil
			}
			s.mu.Unlock()
			spare = out
		}
	}
}

func (s *logSink) dropNotice(n int64) []byte {
	now := time.Now()
	if s.json {
		return fmt.Appendf(nil, `{"time":%q,"level":"WARN","msg":"output dropped while %s was not being read","dropped":%d}`+"\n", now.Format(time.RFC3339Nano), s.name, n)
	}
	return fmt.Appendf(nil, "%s WRN output dropped while %s was not being read dropped=%d\n", now.Format(time.TimeOnly), s.name, n)
}

// Close writes out what is queued, waiting at most timeout for a stalled
// reader, and stops the sink. Records written after Close are discarded.
func (s *logSink) Close(timeout time.Duration) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
	}
}

// lineWriter formats bridge lines into one buffer per stream.
type lineWriter struct {
	out     io.Writer
	json    bool
	journal bool // text for journald: a priority instead of the time and level
	bufs    [2]lineBuf
}

// write hands a batch on; to a log sink, waiting for room rather than
// dropping it (see WriteWait).
func (w *lineWriter) write(b []byte) {
	if s, ok := w.out.(*logSink); ok {
		s.WriteWait(b)
		return
	}
	w.out.Write(b)
}

type lineBuf struct {
	mu sync.Mutex
	b  []byte
	// What comes before and after each line's text: the batch's time,
	// formatted once per batch, and the stream and pid, formatted once per
	// child.
	prefix []byte
	suffix []byte
	pid    int
}

// maxBatch bounds a buffer when a batch is very large; it is written out
// early rather than grown.
const maxBatch = 256 << 10

func (w *lineWriter) buf(s procmon.Stream) *lineBuf {
	if s == procmon.Stderr {
		return &w.bufs[1]
	}
	return &w.bufs[0]
}

func (w *lineWriter) line(l procmon.Line) {
	if pairingLine(l.Text) {
		return
	}
	lb := w.buf(l.Stream)
	lb.mu.Lock()
	if len(lb.b) == 0 {
		lb.prefix = lb.prefix[:0]
		switch {
		case w.json:
			lb.prefix = append(lb.prefix, `{"time":"`...)
			lb.prefix = time.Now().AppendFormat(lb.prefix, time.RFC3339Nano)
			lb.prefix = append(lb.prefix, `","level":"INFO","msg":"`...)
		case w.journal:
			lb.prefix = append(lb.prefix, "<6>"...)
		default:
			lb.prefix = time.Now().AppendFormat(lb.prefix, time.TimeOnly)
			lb.prefix = append(lb.prefix, " INF "...)
		}
	}
	if lb.pid != l.Pid || len(lb.suffix) == 0 {
		lb.pid = l.Pid
		if w.json {
			lb.suffix = append(lb.suffix[:0], `","bridge":"`...)
			lb.suffix = append(lb.suffix, l.Stream...)
			lb.suffix = append(lb.suffix, `","pid":`...)
			lb.suffix = strconv.AppendInt(lb.suffix, int64(l.Pid), 10)
		} else {
			lb.suffix = append(lb.suffix[:0], " bridge="...)
			lb.suffix = append(lb.suffix, l.Stream...)
			lb.suffix = append(lb.suffix, " pid="...)
			lb.suffix = strconv.AppendInt(lb.suffix, int64(l.Pid), 10)
		}
	}
	lb.b = append(lb.b, lb.prefix...)
	if w.json {
		lb.b = appendJSONString(lb.b, l.Text)
	} else {
		lb.b = appendText(lb.b, l.Text)
	}
	lb.b = append(lb.b, lb.suffix...)
	switch {
	case l.Truncated && w.json:
		lb.b = append(lb.b, `,"truncated":true}`+"\n"...)
	case l.Truncated:
		lb.b = append(lb.b, " truncated=true\n"...)
	case w.json:
		lb.b = append(lb.b, "}\n"...)
	default:
		lb.b = append(lb.b, '\n')
	}
	if len(lb.b) >= maxBatch {
		w.write(lb.b)
		lb.b = lb.b[:0]
	}
	lb.mu.Unlock()
}

func (w *lineWriter) flush(s procmon.Stream) {
	lb := w.buf(s)
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if len(lb.b) > 0 {
		w.write(lb.b)
		lb.b = lb.b[:0]
	}
}

// appendJSONString escapes s as slog's JSON handler does: quote, backslash
// and control characters escaped, invalid UTF-8 replaced by U+FFFD, and
// U+2028 and U+2029 escaped for JavaScript. Runs of plain ASCII, which is
// nearly all a bridge prints, are found eight bytes at a time and copied
// whole.
func appendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		for i+8 <= len(s) && plainASCII8(binary.LittleEndian.Uint64(s[i:])) {
			i += 8
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c >= 0x20 && c < utf8.RuneSelf && c != '"' && c != '\\' {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, "\\ufffd"...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
		start = i
	}
	return append(b, s[start:]...)
}

// appendText appends s for a text log or a terminal, with what could
// act on a terminal or end the line escaped as Go writes it in a string:
// control characters other than tab (ESC as \x1b, CR as \r), DEL, the C1
// controls (which some terminals take as ESC [) and bytes that are not
// UTF-8 (\xff). Everything else, backslashes included, is copied.
func appendText(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		for i+8 <= len(s) && printableASCII8(binary.LittleEndian.Uint64(s[i:])) {
			i += 8
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != 0x7f || c == '\t' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\r':
				b = append(b, '\\', 'r')
			case '\n':
				b = append(b, '\\', 'n')
			default:
				b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
		case r >= 0x80 && r < 0xa0:
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xf])
		case r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r):
			// Line and paragraph separators break a record's line on some
			// terminals; bidi controls reorder what follows them.
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', hex[r>>12], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(b, s[start:]...)
}

// printableASCII8 reports whether each of the eight bytes in x is
// printable ASCII: none below 0x20, none of 0x7f (DEL) or above.
func printableASCII8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	control := (x - ones*0x20) &^ x        // a byte below 0x20
	return (control|(x+ones)|x)&highs == 0 // x+ones: a byte of 0x7f or more
}

// plainASCII8 reports whether none of the eight bytes in x needs escaping:
// each is printable ASCII other than '"' and '\\'.
func plainASCII8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote := x ^ (ones * '"')
	slash := x ^ (ones * '\\')
	control := (x - ones*0x20) &^ x       // a byte below 0x20
	special := (quote - ones) &^ quote    // a '"'
	special |= (slash - ones) &^ slash    // a '\\'
	return (control|special|x)&highs == 0 // x&highs: a byte of 0x80 or more
}
