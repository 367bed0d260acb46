package procmon

import (
	"bufio"
	"bytes"
	"errors"
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

// readLines splits r into lines of at most max bytes and hands each to fn.
// A longer line is cut at max and the rest of it skipped, so a child that
// never prints a newline cannot make the sidecar grow without bound. It
// returns when r ends or fails.
func readLines(r io.Reader, max int, fn func(text []byte, truncated bool)) {
	br := bufio.NewReaderSize(r, max)
	skipping := false
	for {
		chunk, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			if !skipping {
				fn(trimEOL(chunk), false)
			}
			skipping = false
		case errors.Is(err, bufio.ErrBufferFull):
			if !skipping {
				fn(chunk, true)
				skipping = true
			}
		default:
			if len(chunk) > 0 && !skipping {
				fn(trimEOL(chunk), false)
			}
			return
		}
	}
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte{'\n'})
	return bytes.TrimSuffix(b, []byte{'\r'})
}

// tail keeps the last lines of output for exit records.
type tail struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
	max   int // bytes kept of one line
}

const tailLineBytes = 2048

func newTail(n int) *tail { return &tail{lines: make([]string, n), max: tailLineBytes} }

func (t *tail) add(text []byte) {
	if len(t.lines) == 0 {
		return
	}
	if len(text) > t.max {
		text = text[:t.max]
	}
	s := string(text)
	t.mu.Lock()
	t.lines[t.next] = s
	t.next++
	if t.next == len(t.lines) {
		t.next, t.full = 0, true
	}
	t.mu.Unlock()
}

func (t *tail) snapshot() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.full {
		return append([]string{}, t.lines[:t.next]...)
	}
	out := make([]string, 0, len(t.lines))
	out = append(out, t.lines[t.next:]...)
	return append(out, t.lines[:t.next]...)
}
