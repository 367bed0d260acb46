package echo

import (
	"bytes"
	"sync"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/internal/logsink"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// A Passer is how the bridge's raw output reaches one of the sidecar's
// own streams, through its sink, a whole read at a time. On a terminal a
// person sees it as the bridge drew it, QR code and all; anywhere else the
// lines carrying a pairing code are left out.
type Passer struct {
	sink   *logsink.Sink
	write  func([]byte)
	filter *qrFilter // nil on a terminal
}

// Pass returns the Passer of sink.
func Pass(sink *logsink.Sink, terminal bool) *Passer {
	if terminal {
		return &Passer{sink: sink, write: sink.WriteWait}
	}
	qf := &qrFilter{out: sink.WriteWait}
	return &Passer{sink: sink, write: qf.write, filter: qf}
}

// Write passes one read on.
func (p *Passer) Write(b []byte) { p.write(b) }

// WriteLines passes one read on, whose newlines are at ends (see
// procmon.RawLineWriter), so that the filter need not look for them.
func (p *Passer) WriteLines(b []byte, ends []int) {
	if p.filter == nil {
		p.write(b)
		return
	}
	p.filter.writeLines(b, ends)
}

// End says that the bridge's stream has ended: the start of a line it
// left unended, held back in case it carried a pairing code, goes out
// unless it does, and the filter reads the next bridge's output as the
// start of a new line. A line left open in the sink is ended there (see
// logsink.Sink.EndLine), so that the sidecar's records about the exit
// and the next start come before the next bridge's output, not glued to
// the old line after it.
func (p *Passer) End() {
	if p.filter != nil {
		p.filter.end()
	}
	p.sink.EndLine()
}

// Raw sends the bridge's output on as it wrote it, as if the sidecar were
// not there: its stdout to Stdout and its stderr to Stderr (see Pass).
type Raw struct {
	Stdout, Stderr *Passer
}

func (r Raw) passer(s procmon.Stream) *Passer {
	if s == procmon.Stderr {
		return r.Stderr
	}
	return r.Stdout
}

// WriteRaw passes one read of stream s on.
func (r Raw) WriteRaw(s procmon.Stream, b []byte) { r.passer(s).Write(b) }

// WriteRawLines passes one read of stream s on, knowing its lines.
func (r Raw) WriteRawLines(s procmon.Stream, b []byte, ends []int) { r.passer(s).WriteLines(b, ends) }

// EndOutput ends stream s (see Passer.End).
func (r Raw) EndOutput(s procmon.Stream) { r.passer(s).End() }

// qrFilter passes raw output on unchanged, a read at a time, except the
// lines that carry a pairing code, which it leaves out whole. A line that
// may be one (by its first byte) is held back until its end shows what it
// is, or until it is longer than any pairing line.
type qrFilter struct {
	out  func([]byte)
	mu   sync.Mutex // each stream has one filter, called by each child's reader of that stream in turn
	held []byte     // the start of a line that may carry a code
	pass bool       // the current line is being passed on as it comes
	drop bool       // the current line carries a code: left out up to its end
	buf  []byte
}

// qrFilterHold is longer than any pairing line: a drawn row is some
// hundred bytes, a JSON event with its payload a few kilobytes.
const qrFilterHold = 16 << 10

// write passes p on, finding its lines itself.
func (f *qrFilter) write(p []byte) {
	var ends []int
	for i := 0; ; {
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			break
		}
		i += j + 1
		ends = append(ends, i-1)
	}
	f.writeLines(p, ends)
}

// writeLines passes p on; ends holds the index of each '\n' in p, in
// order, as the monitor found them while splitting the lines.
func (f *qrFilter) writeLines(p []byte, ends []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.clean(p, ends) {
		// Nearly every read of a chatty bridge: no line in it starts as a
		// pairing line may, so it passes whole, and only the state of its
		// last line is kept.
		if len(p) > 0 {
			f.out(p)
			f.pass = len(ends) == 0 || ends[len(ends)-1] != len(p)-1
		}
		return
	}
	// Until a line is held back or left out, what passes is p itself, and
	// it is handed on without a copy: nearly every read of a bridge's
	// output is so.
	same := true // out would be p[:off]
	out := f.buf[:0]
	for off, k := 0, 0; off < len(p); {
		segEnd, end := len(p), false
		if k < len(ends) {
			segEnd, end = ends[k]+1, true
			k++
		}
		seg := p[off:segEnd]
		passes := f.pass || !f.drop && len(f.held) == 0 && !bridge.MayStartPairingCode(seg[0])
		if same && !passes {
			out = append(out, p[:off]...)
			same = false
		}
		off = segEnd
		switch {
		case passes:
			if !same {
				out = append(out, seg...)
			}
			if !f.pass {
				f.pass = !end
			}
		case f.drop:
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
	if same {
		if len(p) > 0 {
			f.out(p)
		}
		return
	}
	if len(out) > 0 {
		f.out(out)
	}
	f.buf = out
}

// clean reports whether p passes whole: nothing is held or being left out,
// and no line that starts in p (the first, unless it goes on a line that
// passes, and each after a newline) may start a pairing line.
func (f *qrFilter) clean(p []byte, ends []int) bool {
	if len(f.held) > 0 || f.drop {
		return false
	}
	if !f.pass && len(p) > 0 && bridge.MayStartPairingCode(p[0]) {
		return false
	}
	for _, e := range ends {
		if e+1 < len(p) && bridge.MayStartPairingCode(p[e+1]) {
			return false
		}
	}
	return true
}

// end finishes the stream's last line, which its bridge left unended: what
// was held of it goes out unless it carries a pairing code.
func (f *qrFilter) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.held) > 0 && !bridge.CarriesPairingCode(f.held) {
		f.out(f.held)
	}
	f.held = f.held[:0]
	f.pass, f.drop = false, false
}
