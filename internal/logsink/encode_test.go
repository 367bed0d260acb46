package logsink

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"unicode"
)

// FuzzAppendJSONString checks the hand-written escaping against slog's
// own JSON handler: for any bridge output, both must give the same bytes,
// and valid JSON. Comparing the decoded strings would not do: decoding
// turns a raw invalid byte into U+FFFD and takes a raw U+2028 as it is, so
// an escaping that let either through unescaped would pass.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{
		"", "plain ascii line of the bridge", `quote " and \ backslash`,
		"tab\tcr\rnul\x00esc\x1b[31mred", "📱 Scan this QR code", "█▀▀▀▀▀█ ▄ █",
		"bad \xff\xfe utf-8", "sep \u2028 \u2029", "\x7f del", "trailing\\",
		strings.Repeat("12345678", 9) + "\"", "\xe2\x80", "\xed\xa0\x80 surrogate",
		"<html> & </html>",
	} {
		f.Add([]byte(s))
	}
	// Only the message: slog's record is then {"msg":"…"} and a newline.
	bare := &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
			return slog.Attr{}
		}
		return a
	}}
	f.Fuzz(func(t *testing.T, s []byte) {
		got := AppendJSONString([]byte{'"'}, s)
		got = append(got, '"')
		var mine string
		if err := json.Unmarshal(got, &mine); err != nil {
			t.Fatalf("%q escaped to invalid JSON %s: %v", s, got, err)
		}
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, bare)).Info(string(s))
		rec := buf.Bytes()
		const head, tail = `{"msg":`, "}\n"
		if !bytes.HasPrefix(rec, []byte(head)) || !bytes.HasSuffix(rec, []byte(tail)) {
			t.Fatalf("slog's record is not a bare message: %s", rec)
		}
		if want := rec[len(head) : len(rec)-len(tail)]; !bytes.Equal(got, want) {
			t.Fatalf("%q: AppendJSONString gives %s, slog %s", s, got, want)
		}
	})
}

// AppendText leaves no control, separator or bidi control in its output,
// and a line with none of them (and valid UTF-8) goes through unchanged,
// whatever its alignment to the eight-byte fast path.
func FuzzAppendText(f *testing.F) {
	for _, s := range []string{"", "plain", "esc\x1b[31m", "\xff", "ü\u009b", "\x7f0000000", strings.Repeat("abcdefgh", 5) + "\r",
		"°\u061c", "a\u202eb", "line\u2028sep"} {
		f.Add([]byte(s))
	}
	// What AppendText must escape besides the ASCII controls and DEL: the
	// C1 controls, the line and paragraph separators and the bidi controls.
	escaped := func(r rune) bool {
		return r >= 0x80 && r < 0xa0 || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r)
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		got := AppendText(nil, s)
		for _, c := range got {
			if c < 0x20 && c != '\t' || c == 0x7f {
				t.Fatalf("%q: control byte %#x left in %q", s, c, got)
			}
		}
		if i := bytes.IndexFunc(got, escaped); i >= 0 {
			t.Fatalf("%q: %q left at byte %d of %q", s, got[i:], i, got)
		}
		if !bytes.ContainsAny(s, "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f") &&
			bytes.Equal(bytes.ToValidUTF8(s, nil), s) && !bytes.ContainsFunc(s, escaped) && !bytes.Equal(got, s) {
			t.Fatalf("%q changed to %q", s, got)
		}
	})
}

// BenchmarkAppendJSONString escapes the 99-byte plain lines of the
// pass-through benchmark.
func BenchmarkAppendJSONString(b *testing.B) {
	line := bytes.Repeat([]byte("y"), 99)
	buf := make([]byte, 0, 256)
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		buf = AppendJSONString(buf[:0], line)
	}
}
