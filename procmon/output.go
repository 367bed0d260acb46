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

// readLines splits r into lines of at most limit bytes and hands each to fn,
// without its "\n" or "\r\n". A longer line is cut at limit, flagged as
// truncated, and the rest of it skipped, so a child that never prints a
// newline cannot make the sidecar grow without bound. It returns when r
// ends or fails; an unterminated last line is still handed over.
//
// Lines are split out of large reads rather than read one by one, since a
// chatty child can print millions of lines. readLines calls r.Read only
// once every complete line it already holds has gone to fn, so a reader
// about to block marks the end of a batch of lines (see batchReader).
func readLines(r io.Reader, limit int, fn func(text []byte, truncated bool)) {
	emit := func(line []byte) {
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) > limit {
			fn(line[:limit], true)
			return
		}
		fn(line, false)
	}
	// The buffer holds a whole line of limit bytes plus "\r\n", so a line
	// that fits is never mistaken for one that does not.
	buf := make([]byte, max(64<<10, limit+3))
	start, end := 0, 0 // buf[start:end] is read but not yet handed over
	skipping := false  // the current line was cut; drop it up to its newline
	for {
		n, err := r.Read(buf[end:])
		end += n
		for {
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
		end = copy(buf, buf[start:end])
		start = 0
	}
}

// batchReader calls flush before each read that might block, which is
// where readLines has handed over every complete line it holds: an output
// writer can then buffer lines and write them out together, once per batch
// instead of once per line, without holding any line back.
type batchReader struct {
	r     io.Reader
	flush func()
}

func (b batchReader) Read(p []byte) (int, error) {
	b.flush()
	return b.r.Read(p)
}

// tail keeps the last lines of output for exit records. It is fed every
// line, so it reuses its slots instead of allocating a string per line.
type tail struct {
	mu    sync.Mutex
	lines [][]byte
	next  int
	full  bool
	max   int // bytes kept of one line
}

const tailLineBytes = 2048

func newTail(n int) *tail { return &tail{lines: make([][]byte, n), max: tailLineBytes} }

func (t *tail) add(text []byte) {
	if len(t.lines) == 0 {
		return
	}
	if len(text) > t.max {
		text = text[:t.max]
	}
	t.mu.Lock()
	t.lines[t.next] = append(t.lines[t.next][:0], text...)
	t.next++
	if t.next == len(t.lines) {
		t.next, t.full = 0, true
	}
	t.mu.Unlock()
}

func (t *tail) snapshot() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.lines))
	if t.full {
		for _, l := range t.lines[t.next:] {
			out = append(out, string(l))
		}
	}
	for _, l := range t.lines[:t.next] {
		out = append(out, string(l))
	}
	return out
}
