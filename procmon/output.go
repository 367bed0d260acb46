package procmon

import (
	"bytes"
	"io"
	"sync"
)

// Stream says which of the child's outputs a line came from.
type Stream string

// The child's two output streams.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// Line is one line of the child's output, without its newline. Text is only
// valid during the call to the Output callback; copy it to keep it.
type Line struct {
	Stream    Stream
	Pid       int
	Text      []byte
	Truncated bool // the line was longer than the limit and was cut
}

// readBytes is the size of each read of a chatty child's output: a
// quarter of its pipe, so it can go on writing while its lines are
// handled. A child starts with 64 KiB, and only one whose output fills a
// read gets the larger buffer, which keeps a quiet sidecar small.
const (
	readBytes      = 256 << 10
	firstReadBytes = 64 << 10
)

// maxEnds bounds the newlines readLines notes at a time, and so the
// memory a read of very short lines takes (512 KiB): a read of 256 KiB
// comes to raw whole unless its lines average under four bytes.
const maxEnds = 64 << 10

// readLines splits r into lines of at most limit bytes and hands each to fn,
// without its "\n" or "\r\n". A longer line is cut at limit, flagged as
// truncated, and the rest of it skipped, so a child that never prints a
// newline cannot make the sidecar grow without bound. It returns when r
// ends or fails; an unterminated last line is still handed over.
//
// Lines are split out of large reads rather than read one by one, since a
// chatty child can print millions of lines. Before each read, once every
// complete line it holds has gone to fn, readLines calls batch (if not
// nil): that marks the end of a batch of lines, where an output writer can
// write out what it buffered, holding no line back. The text handed to fn
// stays valid until batch returns, so batch may still look at the lines
// of its batch.
//
// If raw is not nil, it is given every byte read, unchanged, before the
// lines in them go to fn, with the index of each newline in them (ends),
// found by the same search that splits the lines; both are valid only
// during the call.
func readLines(r io.Reader, limit int, fn func(text []byte, truncated bool), batch func(), raw func(b []byte, ends []int)) {
	emit := func(line []byte) {
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) > limit {
			fn(line[:limit], true)
			return
		}
		fn(line, false)
	}
	// The buffer holds a whole line of limit bytes plus "\r\n", so a line
	// that fits is never mistaken for one that does not.
	buf := make([]byte, max(firstReadBytes, limit+3))
	start, end := 0, 0 // buf[start:end] is read but not yet handed over
	skipping := false  // the current line was cut; drop it up to its newline
	full := false      // the last read filled the buffer
	var ends []int     // the newlines of the bytes just read
	for {
		if batch != nil {
			batch()
		}
		if full && len(buf) < readBytes {
			buf = append(make([]byte, 0, readBytes), buf[start:end]...)[:readBytes]
		} else {
			copy(buf, buf[start:end])
		}
		end -= start
		start = 0
		n, err := r.Read(buf[end:])
		full = end+n == len(buf)
		fresh := end // buf[fresh:end] was just read
		end += n
		for raw == nil {
			// With no one to tell them to, the newlines are found and
			// handed over in one pass.
			i := bytes.IndexByte(buf[start:end], '\n')
			if i < 0 {
				break
			}
			if !skipping {
				emit(buf[start : start+i])
			}
			skipping = false
			start += i + 1
		}
		for raw != nil && fresh < end {
			// The newlines of the fresh bytes, at most maxEnds at a time.
			ends = ends[:0]
			next, stop := fresh, end
			for len(ends) < maxEnds {
				i := bytes.IndexByte(buf[next:end], '\n')
				if i < 0 {
					break
				}
				next += i + 1
				ends = append(ends, next-1-fresh)
			}
			if len(ends) == maxEnds {
				stop = next
			}
			raw(buf[fresh:stop], ends)
			for _, e := range ends {
				if !skipping {
					emit(buf[start : fresh+e])
				}
				skipping = false
				start = fresh + e + 1
			}
			fresh = stop
		}
		// What is left is the start of a line. Cut it as soon as it is
		// certain not to fit, so the buffer never needs to grow.
		if part := buf[start:end]; !skipping && (len(part) > limit+1 || len(part) == limit+1 && part[limit] != '\r') {
			fn(part[:limit], true)
			skipping = true
		}
		if skipping {
			start = end
		}
		if err != nil {
			if start < end {
				emit(buf[start:end])
			}
			return
		}
	}
}

// tail keeps the last lines of output for exit records. A chatty child
// prints millions of lines, so each stream's reader only notes where its
// latest lines are (recent) and the tail copies them once per batch.
//
// An exit record travels in every event's snapshot until the next exit,
// so besides the number of lines (Config.TailLines) and the bytes of one
// line, the tail is bounded in bytes as a whole: snapshot keeps the newest
// lines that fit in tailBytes.
type tail struct {
	mu    sync.Mutex
	lines [][]byte
	next  int
	full  bool
	max   int // bytes kept of one line
}

const (
	tailLineBytes = 2048
	tailBytes     = 64 << 10
)

func newTail(n int) *tail { return &tail{lines: make([][]byte, n), max: tailLineBytes} }

// add keeps a copy of text; the caller holds mu.
func (t *tail) add(text []byte) {
	if len(t.lines) == 0 {
		return
	}
	if len(text) > t.max {
		text = text[:t.max]
	}
	t.lines[t.next] = append(t.lines[t.next][:0], text...)
	t.next++
	if t.next == len(t.lines) {
		t.next, t.full = 0, true
	}
}

// recent notes the last lines of one stream's current batch, without
// copying them; they stay valid until the batch ends (see readLines).
type recent struct {
	t     *tail
	lines [][]byte // a ring as long as the tail
	next  int
	n     int // lines noted in this batch
}

func (t *tail) recent() *recent { return &recent{t: t, lines: make([][]byte, len(t.lines))} }

func (r *recent) note(text []byte) {
	if len(r.lines) == 0 {
		return
	}
	r.lines[r.next] = text
	r.next++
	if r.next == len(r.lines) {
		r.next = 0
	}
	r.n++
}

// commit copies the batch's last lines into the tail, oldest first.
func (r *recent) commit() {
	if r.n == 0 {
		return
	}
	k := min(r.n, len(r.lines))
	first := r.next - k
	if first < 0 {
		first += len(r.lines)
	}
	r.t.mu.Lock()
	for i := 0; i < k; i++ {
		j := (first + i) % len(r.lines)
		r.t.add(r.lines[j])
		r.lines[j] = nil
	}
	r.t.mu.Unlock()
	r.n = 0
}

// snapshot returns the kept lines, oldest first: the newest ones whose
// text fits in tailBytes together.
func (t *tail) snapshot() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.next
	if t.full {
		n = len(t.lines)
	}
	// Walk back from the newest line to find the oldest one that fits.
	k, size := 0, 0
	for ; k < n; k++ {
		i := (t.next - 1 - k + len(t.lines)) % len(t.lines)
		if size += len(t.lines[i]); size > tailBytes {
			break
		}
	}
	out := make([]string, 0, k)
	for j := k - 1; j >= 0; j-- {
		out = append(out, string(t.lines[(t.next-1-j+len(t.lines))%len(t.lines)]))
	}
	return out
}
