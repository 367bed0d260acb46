package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/bridge/qrcode"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// pairingOutput is what a bridge prints while it waits for a scan: a drawn
// QR code between its header and the waiting line, and the same code as a
// --pair-json line, indented.
func pairingOutput() string {
	lines := append([]string{"📱 Scan this QR code with WhatsApp on your phone:"}, qrcode.Lines("2@pairing-secret,abc")...)
	return strings.Join(append(lines, "Waiting for scan...", `  {"event":"qr","qr":"2@json-secret,abc"}`, "after the code"), "|")
}

// Away from a terminal, in every format, the pairing code stays out of the
// sidecar's log and output: no row of it, no payload. One record says a
// code is waiting and how to see it, and the other lines are all there.
func TestPairingCodesStayOutOfLogs(t *testing.T) {
	out := filepath.Join(t.TempDir(), "output")
	if err := os.WriteFile(out, []byte(strings.ReplaceAll(pairingOutput(), "|", "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A bridge that prints it on both streams; runToFiles adds
	// "-done-file FILE -hang", so $2 is the file to create when done. (Not
	// the fake bridge's -say, which would put the code in the logged
	// command line.)
	bridge := []string{"sh", "-c", `cat "$0"; cat "$0" >&2; : > "$2"; exec sleep 600`, out}
	for _, mode := range [][]string{
		{"--log-format", "json"},
		{"--log-format", "text"},
		{"--log-format", "json", "--bridge-output", "raw"},
		{"--log-format", "text", "--bridge-output", "raw"},
	} {
		t.Run(strings.Join(mode, " "), func(t *testing.T) {
			args := append(append(append([]string{"run", "--bridge-log", "off"}, mode...), "--"), bridge...)
			stdout, stderr := runToFiles(t, args...)
			all := stdout + stderr
			for _, secret := range []string{"█", "▀", "▄", "pairing-secret", "json-secret"} {
				if strings.Contains(all, secret) {
					t.Fatalf("%q reached the output:\nstdout:\n%s\nstderr:\n%s", secret, stdout, stderr)
				}
			}
			if !strings.Contains(stderr, "run 'wa-sidecar pair' or 'wa-sidecar watch' on a terminal") {
				t.Fatalf("no record says how to see the code:\n%s", stderr)
			}
			for _, line := range []string{"Scan this QR code", "Waiting for scan...", "after the code"} {
				if !strings.Contains(all, line) {
					t.Fatalf("%q is missing:\nstdout:\n%s\nstderr:\n%s", line, stdout, stderr)
				}
			}
		})
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

// Escape sequences the bridge prints are shown, not obeyed, on a terminal
// and in a text log: no retitled window, no cleared screen, no \r that
// starts a forged record over the line.
func TestTextModeEscapesControlCharacters(t *testing.T) {
	hostile := "title\x1b]0;pwned\x07 clear\x1b[2J\x1b[H cr\r12:00:00 INF wa-sidecar exiting del\x7f c1\u009b6n bad\xff tab\tok ü\\x rlo\u202eevil ls\u2028next"
	const shown = `title\x1b]0;pwned\x07 clear\x1b[2J\x1b[H cr\r12:00:00 INF wa-sidecar exiting del\x7f c1\u009b6n bad\xff tab` + "\tok ü\\x" + ` rlo\u202eevil ls\u2028next`
	if got := string(appendText(nil, []byte(hostile))); got != shown {
		t.Fatalf("appendText:\n got %q\nwant %q", got, shown)
	}
	var term bytes.Buffer
	terminalLine(&term, true)(procmon.Line{Stream: procmon.Stdout, Pid: 7, Text: []byte(hostile)})
	var text bytes.Buffer
	lw := &lineWriter{out: &text}
	lw.line(procmon.Line{Stream: procmon.Stderr, Pid: 7, Text: []byte(hostile)})
	lw.flush(procmon.Stderr)
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

// A long run of plain ASCII goes through appendText unchanged, whatever
// its alignment to the eight-byte fast path.
func FuzzAppendText(f *testing.F) {
	for _, s := range []string{"", "plain", "esc\x1b[31m", "\xff", "ü\u009b", "\x7f0000000", strings.Repeat("abcdefgh", 5) + "\r"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		got := appendText(nil, s)
		for _, c := range got {
			if c < 0x20 && c != '\t' || c == 0x7f {
				t.Fatalf("%q: control byte %#x left in %q", s, c, got)
			}
		}
		if !bytes.ContainsAny(s, "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f") &&
			bytes.Equal(bytes.ToValidUTF8(s, nil), s) && !bytes.ContainsFunc(s, func(r rune) bool { return r >= 0x80 && r < 0xa0 }) && !bytes.Equal(got, s) {
			t.Fatalf("%q changed to %q", s, got)
		}
	})
}

// Exit records, which /v1/status shows to any reader, keep no line that
// carries a pairing code, indented or not.
func TestStatusTailHasNoPairingCode(t *testing.T) {
	bin, _ := binaries(t)
	state := t.TempDir()
	script := `printf '  {"event":"qr","qr":"2@indented-secret"}\n\t{"event":"qr","qr":"2@tab-secret"}\n{"event":"qr","QR":"2@case-secret"}\nlast words\n'; exit 3`
	cmd := exec.Command(bin, "run", "--bridge-log", "off", "--backoff-initial", "1h", "--backoff-max", "1h", "--", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "WA_SIDECAR_LISTEN=127.0.0.1:0", "WA_SIDECAR_STATE_DIR="+state)
	p := startCmd(t, cmd)
	p.waitLog("bridge failed")
	resp, err := http.Get("http://" + listenOf(t, state) + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "last words") {
		t.Fatalf("no tail in the status: %s", body)
	}
	if strings.Contains(string(body), "secret") {
		t.Fatalf("a pairing code in the status anyone may read: %s", body)
	}
	p.stopOK()
}
