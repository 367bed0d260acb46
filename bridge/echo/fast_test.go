package echo

import (
	"bytes"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/qrcode"
	"github.com/wa-sidecar/wa-sidecar/internal/logsink"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// slowWriteLines is writeLines as it was before its fast path (clean):
// the segment-by-segment walk alone, the reference the fast path must
// match in what it passes and in the state it leaves.
func (f *qrFilter) slowWriteLines(p []byte, ends []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	same := true
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

func newlines(p []byte) (ends []int) {
	for i, c := range p {
		if c == '\n' {
			ends = append(ends, i)
		}
	}
	return ends
}

// FuzzQRFilterFastPath: writeLines, fast path and all, passes exactly
// what the walk alone passes, call by call, and leaves the same state
// (pass, drop, held), over reads cut anywhere (empty ones too), ends of
// the stream between them, and lines longer than qrFilterHold.
func FuzzQRFilterFastPath(f *testing.F) {
	rows := qrcode.Lines("2@secret")
	f.Add([]byte("plain\r\n"+rows[0]+"\n"+`{"event":"qr","qr":"2@x"}`+"\nend"), []byte{3, 0, 1, 255, 7})
	f.Add([]byte("{\"level\":30}\n\n"+rows[1]+"\r\nno newline"), []byte{1})
	f.Add([]byte("plain\n  {\"level\":30} unended\n{"), []byte{5, 255, 0, 2})
	f.Add([]byte("x\n{\n"), []byte{200, 1, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte, cuts []byte) {
		if len(in) > 4096 || len(cuts) == 0 || len(cuts) > 64 {
			t.Skip()
		}
		// Blow a byte up into a line longer than any pairing line.
		if i := bytes.IndexByte(in, '~'); i >= 0 {
			in = append(append(append([]byte{}, in[:i]...), bytes.Repeat([]byte("x"), qrFilterHold+10)...), in[i:]...)
		}
		var fast, slow []byte
		a := &qrFilter{out: func(b []byte) { fast = append(fast, b...) }}
		b := &qrFilter{out: func(b []byte) { slow = append(slow, b...) }}
		for off, k := 0, 0; off < len(in) && k < 1<<14; k++ {
			c := cuts[k%len(cuts)]
			if c == 255 {
				a.end()
				b.end()
			} else {
				n := min(int(c)*int(c), len(in)-off)
				if n == 0 && k >= len(cuts) {
					n = min(1, len(in)-off) // the first round may read nothing, the others make headway
				}
				p := bytes.Clone(in[off : off+n])
				off += n
				a.writeLines(p, newlines(p))
				q := bytes.Clone(p)
				b.slowWriteLines(q, newlines(q))
			}
			if !bytes.Equal(fast, slow) || a.pass != b.pass || a.drop != b.drop || !bytes.Equal(a.held, b.held) {
				t.Fatalf("after %d bytes: fast %q pass %v drop %v held %q\nslow %q pass %v drop %v held %q",
					off, fast, a.pass, a.drop, a.held, slow, b.pass, b.drop, b.held)
			}
		}
	})
}

// A QR row cut at --max-line-bytes (80 at least, a WhatsApp code's row is
// some 150 bytes) mid-rune is still part of a pairing code: it must not
// reach the sidecar's log.
func TestLogLeavesOutACutQRRow(t *testing.T) {
	rows := qrcode.Lines("2@review-secret,abcdefghijklmnopqrstuvwxyz0123456789")
	var out bytes.Buffer
	lw := NewLog(&out, logsink.Style{Format: logsink.JSON})
	for _, r := range rows {
		if len(r) > 80 {
			lw.WriteLine(procmon.Line{Stream: procmon.Stdout, Pid: 1, Text: []byte(r[:80]), Truncated: true})
		}
	}
	lw.FlushLines(procmon.Stdout)
	if out.Len() != 0 {
		t.Fatalf("cut QR rows reached the log:\n%s", out.String())
	}
}
