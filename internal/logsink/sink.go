// Package logsink writes the sidecar's log and the bridge's output without
// ever letting a slow or stalled reader hold the writer up: records are
// queued whole into a bounded buffer that one goroutine writes out, and
// what does not fit is dropped and counted. It also decides once what the
// log looks like on a stream (Style), builds the logger for it, and holds
// the escaping that keeps hand-formatted records byte-identical to slog's
// JSON handler and to tint.
package logsink

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"golang.org/x/sys/unix"
)

// Sink is the sidecar's own stderr, decoupled from whoever reads it.
// A terminal paused with Ctrl-S, a pager, a stalled container log driver or
// a reader that went away must never stop the monitor or, through the
// bridge's output, the bridge itself: writes are whole records copied into
// a bounded buffer that one goroutine writes out, a record that does not
// fit is dropped and counted (and the count reported once the writer is
// moving again), and after a write error such as EPIPE records are
// discarded. Whole records in, whole records out, so the slog handler and
// the bridge's line writer never interleave mid-line.
type Sink struct {
	w     io.Writer
	limit int
	json  bool
	name  string // what the notice of dropped output calls w: "stderr"
	// direct: a batch of the bridge's output (one given with Hand only
	// under directMax) that finds nothing queued ahead of it is written
	// by its caller, without a hand-off to the writer goroutine (which on
	// a busy machine costs more than the write). That is safe where a
	// write cannot stall (a regular file, /dev/null), or where it can be
	// given a deadline: nb is then the pipe or terminal opened again
	// without blocking, and w is nb.
	direct bool
	nb     *os.File
	wmu    sync.Mutex // held across every write of w, in order
	// directOwns: the write under way (see writing) is a caller's direct
	// one; the writer goroutine leaves the queue alone until it is done.
	directOwns bool

	mu      sync.Mutex
	pending []byte
	dropped int64
	// open: the bridge's raw output queued last ends inside a line. A
	// record written meanwhile waits in held until the bridge ends that
	// line, or for holdOpen (holdTimer), so that it never lands inside a
	// line of the bridge's where both share a file, a pipe or a terminal.
	open      bool
	held      []byte
	holdTimer *time.Timer
	holds     uint64 // counts the holds, so that a late timer knows its own
	broken    bool   // a write failed (EPIPE, …): discard from now on
	closing   bool   // Close was called: write out what is queued, then stop
	stopped   bool   // the writer goroutine has returned
	// writing is when the write under way began (zero between writes), and
	// freed is closed, and replaced, each time the writer takes what is
	// pending: WriteWait tells a slow reader from a stalled one by them.
	writing time.Time
	freed   chan struct{}
	stall   time.Duration // stallAfter; shorter in tests

	kick chan struct{}
	done chan struct{}
}

// sinkLimit bounds what waits for a slow stderr: a few seconds of a
// chatty bridge.
const sinkLimit = 4 << 20

// Sinks hands out one Sink per thing written to, and keeps them so that
// they can be closed. Its zero value is ready to use; the program's wiring
// owns one for its stdout and stderr.
type Sinks struct {
	mu sync.Mutex
	m  map[sinkKey]*Sink
}

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

// For returns the one sink of f, starting it on first use. json says how
// to word the notice about dropped output.
func (ss *Sinks) For(f *os.File, json bool) *Sink {
	key := keyOf(f)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if s, ok := ss.m[key]; ok {
		return s
	}
	s := &Sink{w: f, limit: sinkLimit, json: json, direct: cannotStall(f), name: strings.TrimPrefix(f.Name(), "/dev/")}
	if !s.direct {
		if nb := reopenNonblocking(f); nb != nil {
			s.w, s.nb, s.direct = nb, nb, true
		}
	}
	start(s)
	if ss.m == nil {
		ss.m = map[sinkKey]*Sink{}
	}
	ss.m[key] = s
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

// Close writes out what the sink of f, if it has one, still holds,
// waiting at most timeout for a stalled reader, and stops it.
func (ss *Sinks) Close(f *os.File, timeout time.Duration) {
	ss.mu.Lock()
	s := ss.m[keyOf(f)]
	ss.mu.Unlock()
	if s != nil {
		s.Close(timeout)
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

// newSink starts a sink that writes to w, holding at most limit bytes for
// it; json says how to word the notice about dropped output. Sinks.For
// makes the sink of a file, which also knows which writes cannot stall.
func newSink(w io.Writer, limit int, json bool) *Sink {
	return start(&Sink{w: w, limit: limit, json: json})
}

func start(s *Sink) *Sink {
	s.kick, s.done, s.freed, s.stall = make(chan struct{}, 1), make(chan struct{}), make(chan struct{}), stallAfter
	if s.name == "" {
		s.name = "stderr"
	}
	go s.run()
	return s
}

// stallAfter is how long a write of stderr may take before WriteWait
// counts its reader as stalled and drops bridge output instead of waiting.
const stallAfter = time.Second

// directMax is the largest batch handed over with Hand that its caller
// writes itself when nothing is queued (see Sink.direct). A larger one,
// such as a chatty bridge's, goes to the writer goroutine even then, so
// that the caller reads and formats the next batch while this one is
// written: on two cores the pass-through then takes as long as the slower
// of the two instead of their sum. WriteWait has no such bound: its batch
// would have to be copied for the writer goroutine, and a raw read, which
// needs no formatting, gains less from the overlap than the copy costs.
const directMax = 32 << 10

// holdOpen is how long a record waits for the bridge to end a line it left
// open (a prompt, a line cut between two reads); after that the record is
// written on a line of its own, after a newline that ends the bridge's.
const holdOpen = 250 * time.Millisecond

// waitLimit is how much of the bridge's output WriteWait and Hand let
// queue before they wait for the writer: two of the line writer's batches,
// enough to keep the writer busy, and far less memory than sinkLimit.
const waitLimit = 512 << 10

// WriteWait queues a batch of the bridge's output. Once waitLimit is
// queued it waits for the writer to make room, as a pipe would, so a
// reader that is slower than the bridge (a log file, a busy collector)
// gets every line. Only when a single write of stderr has taken longer
// than stallAfter (a paused terminal, a reader gone quiet) does it stop
// waiting: the batch is queued if it fits in the sink's bound, as Write
// queues a record, and is otherwise dropped and counted, so that the
// bridge is never held up by a stalled stderr for long. The sink keeps no
// reference to p.
func (s *Sink) WriteWait(p []byte) { s.queue(p, false) }

// Hand is WriteWait for a batch the caller gives away: where nothing is
// queued ahead of it, the sink takes p itself rather than a copy, and
// hands back a buffer of its own, emptied, for the caller's next batch.
// What Hand returns (p[:0] when p was copied or written at once) is the
// caller's to fill; p is not, once Hand has returned.
func (s *Sink) Hand(p []byte) []byte { return s.queue(p, true) }

// queue carries out WriteWait and Hand; own says that p may be kept.
func (s *Sink) queue(p []byte, own bool) []byte {
	for {
		s.mu.Lock()
		if len(s.held) > 0 && !s.broken && !s.stopped {
			if i := bytes.IndexByte(p, '\n'); i >= 0 {
				// p ends the line the records waited for: its head, then
				// the records, then the rest as any batch.
				s.pending = append(s.pending, p[:i+1]...)
				s.releaseHeld(false)
				s.mu.Unlock()
				s.kickWriter()
				if i+1 < len(p) {
					s.queue(p[i+1:], false)
				}
				return p[:0]
			}
		}
		switch {
		case s.broken || s.stopped:
			s.mu.Unlock()
			return p[:0]
		case s.direct && (!own || len(p) < directMax) && len(s.pending) == 0 && s.dropped == 0 && s.writing.IsZero() && !s.closing:
			s.noteEnd(p)
			s.writeDirect(p)
			return p[:0]
		case own && len(s.pending) == 0 && len(p) <= s.limit:
			// A swap instead of a copy: the writer goroutine no longer
			// holds the buffer left in pending once it has taken what was
			// in it (see run).
			back := s.pending[:0]
			s.pending = p
			s.noteEnd(p)
			s.mu.Unlock()
			s.kickWriter()
			return back
		case len(s.pending)+len(p) <= min(s.limit, waitLimit) || len(s.pending) == 0:
			s.pending = append(s.pending, p...)
			s.noteEnd(p)
			s.mu.Unlock()
			s.kickWriter()
			return p[:0]
		case !s.writing.IsZero() && time.Since(s.writing) >= s.stall:
			// A stalled reader: there is no point waiting, but what fits
			// in the sink's bound is kept, as Write keeps a record;
			// waitLimit only paces a reader that is moving.
			if len(s.pending)+len(p) <= s.limit {
				s.pending = append(s.pending, p...)
				s.noteEnd(p)
				s.mu.Unlock()
				s.kickWriter()
				return p[:0]
			}
			s.dropped++ // p never reaches the output, nor opens a line there
			s.mu.Unlock()
			s.kickWriter()
			return p[:0]
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

// EndLine says that the bridge's output written with WriteWait or Hand
// has ended for now (its stream closed, the bridge exited): a line it left
// open is ended with a newline, and the records held for it go out after
// that, rather than wait for the next bridge's first line and come after
// it.
func (s *Sink) EndLine() {
	s.mu.Lock()
	if s.stopped || s.broken || !s.open {
		s.mu.Unlock()
		return
	}
	if len(s.held) > 0 {
		s.releaseHeld(true)
	} else {
		s.pending = append(s.pending, '\n')
		s.open = false
	}
	s.mu.Unlock()
	s.kickWriter()
}

// noteEnd notes whether p, a batch of the bridge's just queued or being
// written, leaves a line open; the caller holds s.mu.
func (s *Sink) noteEnd(p []byte) {
	if len(p) > 0 {
		s.open = p[len(p)-1] != '\n'
	}
}

// releaseHeld queues the records held while the bridge's line was open,
// after a newline if that line is still open; the caller holds s.mu.
func (s *Sink) releaseHeld(newline bool) {
	if s.holdTimer != nil {
		s.holdTimer.Stop()
		s.holdTimer = nil
	}
	if len(s.held) == 0 {
		return
	}
	if newline && s.open {
		s.pending = append(s.pending, '\n')
	}
	s.pending = append(s.pending, s.held...)
	s.held = s.held[:0]
	s.open = false
}

// armHold starts the wait of holdOpen for the records just held, unless
// one is under way; the caller holds s.mu.
func (s *Sink) armHold() {
	if s.holdTimer != nil {
		return
	}
	s.holds++
	hold := s.holds
	s.holdTimer = time.AfterFunc(holdOpen, func() { s.holdTimedOut(hold) })
}

// holdTimedOut releases the held records once the bridge has left its
// line open for holdOpen. hold is the hold whose timer fired: one stopped
// too late, as the line it waited for ended, leaves a later hold alone.
func (s *Sink) holdTimedOut(hold uint64) {
	s.mu.Lock()
	if s.stopped || s.broken || s.holdTimer == nil || s.holds != hold {
		s.mu.Unlock()
		return
	}
	s.releaseHeld(true)
	s.mu.Unlock()
	s.kickWriter()
}

// writeDirect writes p itself; the caller holds s.mu, which it releases.
// Marking the write under way keeps later batches and records queued
// behind it, so order is kept. On a pipe or terminal the write has a
// deadline of one stall: what a slow or stalled reader has not taken by
// then goes, whole, to the head of the queue for the writer goroutine,
// and later batches are held up or dropped as with any stalled reader.
func (s *Sink) writeDirect(p []byte) {
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

func (s *Sink) kickWriter() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Write queues one record. It never blocks on the underlying writer.
func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	switch {
	case s.broken || s.stopped:
	case len(s.pending)+len(s.held)+len(p) > s.limit:
		s.dropped++
	case s.open:
		s.held = append(s.held, p...)
		s.armHold()
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

func (s *Sink) run() {
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
			if dropped > 0 && s.open {
				// The notice is a record: it must not land inside the
				// bridge's open line either (see Write).
				if s.closing {
					out = append(out, '\n')
					s.open = false
				} else {
					s.held = append(s.held, s.dropNotice(dropped)...)
					s.armHold()
					s.dropped, dropped = 0, 0
				}
			}
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

func (s *Sink) dropNotice(n int64) []byte {
	now := time.Now()
	if s.json {
		return fmt.Appendf(nil, `{"time":%q,"level":"WARN","msg":"output dropped while %s was not being read","dropped":%d}`+"\n", now.Format(time.RFC3339Nano), s.name, n)
	}
	return fmt.Appendf(nil, "%s WRN output dropped while %s was not being read dropped=%d\n", now.Format(time.TimeOnly), s.name, n)
}

// Close writes out what is queued, waiting at most timeout for a stalled
// reader, and stops the sink. A record written while Close drains the
// queue still goes out with it; once the sink has stopped, records are
// discarded.
func (s *Sink) Close(timeout time.Duration) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.releaseHeld(true)
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
