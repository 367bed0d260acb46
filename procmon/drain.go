package procmon

import (
	"errors"
	"io"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// pipeReader reads one of the child's output pipes. By the time the child
// is reaped, everything it wrote is in the pipe; but a process it left
// behind outside its group (a daemon that called setsid) may hold the
// pipe's write end for ever, so the end of file may never come. Once
// finish is called, the reader stops as soon as the pipe is empty instead:
// the child's exit is reported without waiting for its leftovers.
type pipeReader struct {
	f        *os.File
	finished atomic.Bool
}

func (p *pipeReader) Read(b []byte) (int, error) {
	for {
		if p.finished.Load() && pending(p.f) == 0 {
			return 0, io.EOF
		}
		n, err := p.f.Read(b)
		if errors.Is(err, os.ErrDeadlineExceeded) && p.finished.Load() {
			// finish woke a read that was waiting; read on what is left.
			p.f.SetReadDeadline(time.Time{})
			continue
		}
		return n, err
	}
}

// finish makes Read end at the first empty pipe, waking a read that
// waits for more.
func (p *pipeReader) finish() {
	p.finished.Store(true)
	p.f.SetReadDeadline(time.Now())
}

// pending is how many bytes wait in the pipe of f, 0 once it is closed.
func pending(f *os.File) int {
	c, err := f.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	if cerr := c.Control(func(fd uintptr) {
		// TIOCINQ is FIONREAD, which works on pipes too.
		n, err = unix.IoctlGetInt(int(fd), unix.TIOCINQ)
	}); cerr != nil || err != nil {
		return 0
	}
	return n
}
