package echo

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/qrcode"
	"github.com/wa-sidecar/wa-sidecar/internal/logsink"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

func TestLogJSON(t *testing.T) {
	var out bytes.Buffer
	lw := NewLog(&out, logsink.Style{Format: logsink.JSON})
	lw.WriteLine(procmon.Line{Stream: procmon.Stdout, Pid: 42, Text: []byte(`✅ WhatsApp connected! "x"`)})
	lw.WriteLine(procmon.Line{Stream: procmon.Stderr, Pid: 42, Text: []byte("boom\x1b"), Truncated: true})
	if out.Len() != 0 {
		t.Fatalf("wrote before a flush: %q", out.String())
	}
	lw.FlushLines(procmon.Stdout)
	lw.FlushLines(procmon.Stderr)
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

func TestLogText(t *testing.T) {
	var out bytes.Buffer
	lw := NewLog(&out, logsink.Style{Format: logsink.Text})
	lw.WriteLine(procmon.Line{Stream: procmon.Stdout, Pid: 7, Text: []byte("Waiting for scan...")})
	lw.FlushLines(procmon.Stdout)
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
		lw := NewLog(io.Discard, logsink.Style{Format: logsink.JSON})
		b.SetBytes(100)
		for i := 0; i < b.N; i++ {
			lw.WriteLine(line)
			if i%batch == batch-1 {
				lw.FlushLines(procmon.Stdout)
			}
		}
		lw.FlushLines(procmon.Stdout)
	})
}

// TestTerminalLeavesOutQRRows: at a terminal the sidecar draws the QR
// code itself, so the bridge's own rows of it are not shown a second time;
// every other line is.
func TestTerminalLeavesOutQRRows(t *testing.T) {
	var out bytes.Buffer
	show := NewTerminal(&out, true).WriteLine
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

// The raw filter leaves out a pairing line however the reads cut it, and
// passes everything else on byte for byte, partial lines included.
func TestQRFilterAcrossReads(t *testing.T) {
	rows := qrcode.Lines("2@secret")
	in := "plain\r\n" + rows[0] + "\n" + rows[1] + "\r\n" + `	{"event":"qr","qr":"2@secret"}` + "\n" +
		`{"level":30,"msg":"pino"}` + "\n" + "  indented line\n" + "no newline at the end"
	want := "plain\r\n" + `{"level":30,"msg":"pino"}` + "\n" + "  indented line\n" + "no newline at the end"
	for _, size := range []int{1, 2, 3, 7, 64, len(in)} {
		var got bytes.Buffer
		f := &qrFilter{out: func(b []byte) { got.Write(b) }}
		for i := 0; i < len(in); i += size {
			f.write([]byte(in[i:min(i+size, len(in))]))
		}
		if got.String() != want {
			t.Fatalf("reads of %d bytes:\n got %q\nwant %q", size, got.String(), want)
		}
	}
}

// FuzzQRFilter: however the reads cut the output, the raw filter passes on
// exactly the lines that carry no pairing code, byte for byte, and leaves
// the others out whole (lines here are shorter than qrFilterHold); an
// unended last line that may carry one is held back, waiting for its end.
// When the stream ends, that line goes out unless it carries a code, and
// what comes next (the next bridge's output) is read from a line's start.
func FuzzQRFilter(f *testing.F) {
	rows := qrcode.Lines("2@secret")
	f.Add([]byte("plain\r\n"+rows[0]+"\n"+`{"event":"qr","qr":"2@x"}`+"\nend"), uint8(3))
	f.Add([]byte("{\"level\":30}\n\n"+rows[1]+"\r\nno newline"), uint8(1))
	f.Add([]byte("plain\n  {\"level\":30} unended"), uint8(5))
	f.Add([]byte("plain\n"+rows[0]), uint8(4))
	f.Fuzz(func(t *testing.T, in []byte, size uint8) {
		if len(in) > 4096 || size == 0 {
			t.Skip()
		}
		var want, ended []byte
		for rest := in; len(rest) > 0; {
			line := rest
			if i := bytes.IndexByte(rest, '\n'); i >= 0 {
				line = rest[:i+1]
			}
			rest = rest[len(line):]
			switch {
			case !bytes.HasSuffix(line, []byte("\n")):
				// An unended last line that may carry a code waits for its end.
				if !bridge.MayStartPairingCode(line[0]) {
					want = append(want, line...)
				} else if !bridge.CarriesPairingCode(line) {
					ended = line
				}
			case !bridge.CarriesPairingCode(bytes.TrimSuffix(line, []byte("\n"))):
				want = append(want, line...)
			}
		}
		var got []byte
		qf := &qrFilter{out: func(b []byte) { got = append(got, b...) }}
		read := make([]byte, size)
		for i := 0; i < len(in); i += int(size) {
			n := copy(read, in[i:])
			qf.write(read[:n])
			clear(read) // the caller reuses its buffer once write returns
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("reads of %d bytes of %q:\n got %q\nwant %q", size, in, got, want)
		}
		// The next bridge starts with a code: left out, whatever the
		// last line of the stream before it was.
		qf.end()
		qf.write([]byte(rows[0] + "\nnext\n"))
		if want = append(append(want, ended...), "next\n"...); !bytes.Equal(got, want) {
			t.Fatalf("reads of %d bytes of %q, then the end and a line:\n got %q\nwant %q", size, in, got, want)
		}
	})
}

// Escape sequences the bridge prints are shown, not obeyed, on a terminal
// and in a text log: no retitled window, no cleared screen, no \r that
// starts a forged record over the line.
func TestTextModeEscapesControlCharacters(t *testing.T) {
	hostile := "title\x1b]0;pwned\x07 clear\x1b[2J\x1b[H cr\r12:00:00 INF wa-sidecar exiting del\x7f c1\u009b6n bad\xff tab\tok ü\\x rlo\u202eevil ls\u2028next"
	const shown = `title\x1b]0;pwned\x07 clear\x1b[2J\x1b[H cr\r12:00:00 INF wa-sidecar exiting del\x7f c1\u009b6n bad\xff tab` + "\tok ü\\x" + ` rlo\u202eevil ls\u2028next`
	if got := string(logsink.AppendText(nil, []byte(hostile))); got != shown {
		t.Fatalf("AppendText:\n got %q\nwant %q", got, shown)
	}
	var term bytes.Buffer
	NewTerminal(&term, true).WriteLine(procmon.Line{Stream: procmon.Stdout, Pid: 7, Text: []byte(hostile)})
	var text bytes.Buffer
	lw := NewLog(&text, logsink.Style{Format: logsink.Text})
	lw.WriteLine(procmon.Line{Stream: procmon.Stderr, Pid: 7, Text: []byte(hostile)})
	lw.FlushLines(procmon.Stderr)
	for name, out := range map[string]string{"terminal": term.String(), "text log": text.String()} {
		if !strings.Contains(out, shown) {
			t.Errorf("%s: the line is not shown escaped: %q", name, out)
		}
		// The only ESC left is the gutter's own colour; the only newline
		// ends the record.
		if strings.Count(out, "\n") != 1 || strings.Contains(out, "\r") || strings.Contains(out, "\x07") ||
			strings.Contains(strings.ReplaceAll(strings.ReplaceAll(out, ansiDim, ""), ansiReset, ""), "\x1b]") {
			t.Errorf("%s: a control character went out raw: %q", name, out)
		}
	}
}

// The writers are the monitor's hooks as they are.
var (
	_ procmon.LineWriter  = (*Log)(nil)
	_ procmon.LineFlusher = (*Log)(nil)
	_ procmon.LineWriter  = (*Terminal)(nil)
	_ procmon.RawWriter   = Raw{}
	_ procmon.OutputEnder = Raw{}
)
