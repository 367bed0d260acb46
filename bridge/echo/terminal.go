package echo

import (
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/logsink"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// The colours of a terminal line's time and gutter.
const (
	ansiReset  = "\x1b[0m"
	ansiDim    = "\x1b[2m"
	ansiCyan   = "\x1b[36m" // the bridge's stdout
	ansiYellow = "\x1b[33m" // the bridge's stderr
)

// Terminal shows the bridge's lines to a person: the time, then a coloured
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
// Control characters are escaped (see logsink.AppendText), so that the
// bridge can neither retitle nor clear the terminal, nor start a line of
// its own that looks like the sidecar's.
type Terminal struct {
	out    io.Writer
	colour bool
	mu     sync.Mutex
	b      []byte
}

// NewTerminal shows the bridge's lines on out, coloured or not.
func NewTerminal(out io.Writer, colour bool) *Terminal {
	return &Terminal{out: out, colour: colour}
}

func (t *Terminal) paint(b []byte, c string) []byte {
	if t.colour {
		return append(b, c...)
	}
	return b
}

// WriteLine shows one line.
func (t *Terminal) WriteLine(l procmon.Line) {
	if pairingLine(l.Text) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.paint(t.b[:0], ansiDim)
	b = time.Now().AppendFormat(b, time.TimeOnly)
	b = t.paint(b, ansiReset)
	b = append(b, ' ')
	if l.Stream == procmon.Stderr {
		b = append(t.paint(b, ansiYellow), "│err "...)
	} else {
		b = append(t.paint(b, ansiCyan), "│out "...)
	}
	b = strconv.AppendInt(b, int64(l.Pid), 10)
	b = append(t.paint(append(b, "│"...), ansiReset), ' ')
	b = logsink.AppendText(b, l.Text)
	if l.Truncated {
		b = t.paint(append(t.paint(b, ansiDim), " (line cut)"...), ansiReset)
	}
	b = append(b, '\n')
	t.out.Write(b)
	t.b = b
}
