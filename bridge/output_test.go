package bridge

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/wa-sidecar/wa-sidecar/bridge/qrcode"
)

func TestParseLine(t *testing.T) {
	row := qrcode.Lines("2@x,y,z,w")[1]
	cases := []struct {
		line string
		want Line
	}{
		{"🌉 WhatsApp bridge listening on port 3000 (mode: self-chat)", Line{Kind: LineListening, Port: 3000, Mode: "self-chat"}},
		{"🌉 WhatsApp bridge listening on port 3001 (mode: bot)", Line{Kind: LineListening, Port: 3001, Mode: "bot"}},
		{"📁 Session stored in: /home/a/.hermes/platforms/whatsapp/session", Line{Kind: LineSession, Session: "/home/a/.hermes/platforms/whatsapp/session"}},
		{"📱 Scan this QR code with WhatsApp on your phone:", Line{Kind: LineQRHeader}},
		{row, Line{Kind: LineQRRow, Row: row}},
		{"Waiting for scan...", Line{Kind: LineWaitingForScan}},
		{"✅ WhatsApp connected!", Line{Kind: LineConnected}},
		{"⚠️  Connection closed (reason: 428). Reconnecting in 3s...", Line{Kind: LineDisconnected, Reason: "428"}},
		{"⚠️  Connection closed (reason: connectionLost). Reconnecting in 3s...", Line{Kind: LineDisconnected, Reason: "connectionLost"}},
		{"↻ WhatsApp requested restart (code 515). Reconnecting...", Line{Kind: LineRestartRequested}},
		{"❌ Logged out. Delete session and restart to re-authenticate.", Line{Kind: LineLoggedOut, Reason: "logged out"}},
		{`{"event":"started","session":"/s","ts":1}`, Line{Kind: LineStarted, Session: "/s", JSON: true}},
		{`{"event":"qr","qr":"2@abc,def","ts":1}`, Line{Kind: LineQR, QR: "2@abc,def", JSON: true}},
		{`{"event":"connected","user":{"id":"1@s.whatsapp.net","name":"Ann"},"ts":1}`, Line{Kind: LineConnected, UserID: "1@s.whatsapp.net", UserName: "Ann", JSON: true}},
		{`{"event":"disconnected","reason":408,"ts":1}`, Line{Kind: LineDisconnected, Reason: "408", JSON: true}},
		{`{"event":"error","error":"logged_out","reason":401,"ts":1}`, Line{Kind: LineLoggedOut, Reason: "401", JSON: true}},
		{`{"event":"error","error":"timeout","ts":1}`, Line{Kind: LineError, Reason: "timeout", JSON: true}},
		// Not ours: pino log records, other JSON, broken JSON, plain logs.
		{`{"level":30,"time":1,"msg":"connected to WA"}`, Line{}},
		{`{"event":"qr","qr":""}`, Line{}},
		{`{"event":"qr",`, Line{}},
		{`{"event":"dance"}`, Line{}},
		{"Sending message to 123", Line{}},
		{"", Line{}},
		{"                                        ", Line{}},
		{"██ short", Line{}},
	}
	for _, c := range cases {
		if got := ParseLine([]byte(c.line)); got != c.want {
			t.Errorf("ParseLine(%q)\n got %+v\nwant %+v", c.line, got, c.want)
		}
	}
}

// TestParseLineAfterWhiteSpace checks that the first-byte check lets
// through lines whose marker follows any white space TrimSpace strips.
func TestParseLineAfterWhiteSpace(t *testing.T) {
	lines := []string{
		"🌉 WhatsApp bridge listening on port 3000 (mode: self-chat)",
		"📁 Session stored in: /s",
		"📱 Scan this QR code with WhatsApp on your phone:",
		"Waiting for scan...",
		"✅ WhatsApp connected!",
		"⚠️  Connection closed (reason: 428). Reconnecting in 3s...",
		"↻ WhatsApp requested restart (code 515). Reconnecting...",
		"❌ Logged out. Delete session and restart to re-authenticate.",
		`{"event":"started","session":"/s","ts":1}`,
	}
	for _, l := range lines {
		want := ParseLine([]byte(l))
		if want.Kind == LineOther {
			t.Fatalf("%q is not recognised", l)
		}
		for _, space := range []string{" ", "\t", "\r", "\v", "\f", "\u0085", "\u00a0", "\u1680", "\u2003", "\u2028", "\u202f", "\u205f", "\u3000"} {
			if got := ParseLine([]byte(space + l)); got != want {
				t.Errorf("ParseLine(%q)\n got %+v\nwant %+v", space+l, got, want)
			}
		}
	}
}

// BenchmarkParseLine measures the parser on the line it sees most: an
// ordinary log line that announces nothing.
func BenchmarkParseLine(b *testing.B) {
	for _, c := range []struct{ name, line string }{
		{"plain", strings.Repeat("y", 99)},
		{"pino", `{"level":30,"time":1,"pid":7,"hostname":"h","msg":"connected to WA"}`},
		{"listening", "🌉 WhatsApp bridge listening on port 3000 (mode: self-chat)"},
	} {
		line := []byte(c.line)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ParseLine(line)
			}
		})
	}
}

func TestEveryDrawnRowIsARow(t *testing.T) {
	for _, payload := range []string{"x", strings.Repeat("2@AbC+/=,", 30)} {
		for _, r := range qrcode.Lines(payload) {
			if ParseLine([]byte(r)).Kind != LineQRRow {
				t.Fatalf("row not recognised: %q", r)
			}
		}
	}
}

// FuzzParseLine feeds the parser what a broken or hostile bridge could
// print. It must never panic, and what it returns must be consistent.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"🌉 WhatsApp bridge listening on port 3000 (mode: self-chat)",
		"⚠️  Connection closed (reason: 428). Reconnecting in 3s...",
		`{"event":"qr","qr":"2@a,b,c,d"}`,
		`{"event":"connected","user":{"id":1}}`,
		`{"event":"error","error":"logged_out","reason":{"x":1}}`,
		"█▀▀▀▀▀█ ▄▄▄▄ █▀▀▀▀▀█ ▀▀▀ █",
		"🌉 listening on port 99999999999999999999 (mode: ",
		"\xe2\x96",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		l := ParseLine(b)
		if l.Kind < LineOther || l.Kind > LineStarted {
			t.Fatalf("kind %d out of range", l.Kind)
		}
		// A row is the line, less a CR that ends it or the part of a
		// character it was cut in.
		if l.Kind == LineQRRow && (!utf8.ValidString(l.Row) || !strings.HasPrefix(string(b), l.Row) || len(b)-len(l.Row) >= utf8.UTFMax) {
			t.Fatalf("row %q from %q", l.Row, b)
		}
		if l.Kind == LineQR && (l.QR == "" || len(l.QR) > maxQRPayload) {
			t.Fatalf("qr payload of %d bytes", len(l.QR))
		}
		if (l.Kind == LineQRRow || l.Kind == LineQR) && !CarriesPairingCode(b) {
			t.Fatalf("a line the parser takes for a QR code is not kept from exit records: %q", b)
		}
		if l.Kind == LineOther && l != (Line{}) {
			t.Fatalf("fields set on an unknown line: %+v", l)
		}
		// The layer's hook skips a line by its first byte; it must
		// never skip one that matters.
		if CarriesPairingCode(b) && !pairingStart[b[0]] {
			t.Fatalf("a pairing line starts with %q, missing from pairingStart", b[0])
		}
		if l.Kind != LineOther && !startBytes[b[0]] {
			t.Fatalf("a %d line starts with %q, missing from startBytes", l.Kind, b[0])
		}
	})
}

func TestParseHealth(t *testing.T) {
	h, err := parseHealth([]byte(`{"status":"connected","queueLength":2,"uptime":12.5,"scriptHash":"0123456789abcdef","sendReadReceipts":true}`))
	if err != nil || h.Status != "connected" || h.QueueLength != 2 || h.ScriptHash != "0123456789abcdef" || !h.SendReadReceipts {
		t.Fatalf("%+v, %v", h, err)
	}
	for _, bad := range []string{`<html>`, `{"status":"ok"}`, `{}`, `[]`} {
		if _, err := parseHealth([]byte(bad)); err == nil || !strings.Contains(err.Error(), "another program") {
			t.Errorf("parseHealth(%s): %v, want an error naming the likely cause", bad, err)
		}
	}
}

// FuzzParseHealth feeds /health answers from whatever holds the port.
func FuzzParseHealth(f *testing.F) {
	f.Add([]byte(`{"status":"connected","queueLength":2,"uptime":1,"scriptHash":"0123456789abcdef","sendReadReceipts":true}`))
	f.Add([]byte(`{"status":"disconnected","scriptHash":` + `"` + strings.Repeat("f", 100) + `"}`))
	f.Add([]byte(`{"status":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHealth(b)
		if err != nil {
			return
		}
		if h.Status != "connected" && h.Status != "disconnected" || len(h.ScriptHash) > 64 {
			t.Fatalf("accepted %+v", h)
		}
	})
}

func TestCarriesPairingCode(t *testing.T) {
	for _, r := range qrcode.Lines("2@secret,payload") {
		if !CarriesPairingCode([]byte(r)) {
			t.Fatalf("drawn row not caught: %q", r)
		}
	}
	yes := []string{`{"event":"qr","qr":"2@a,b,c,d","ts":1}`,
		// White space before the JSON, in any form, and other spellings
		// of the key that encoding/json reads as "qr".
		` {"event":"qr","qr":"2@a,b,c,d"}`, "\t{\"event\":\"qr\",\"qr\":\"2@a\"}", "\u00a0{\"event\":\"qr\",\"qr\":\"2@a\"}",
		"\u2003 {\"qr\":\"2@a\"}", `{"event":"qr","QR":"2@a"}`, `{"event":"qr","q\u0072":"2@a"}`,
		// A drawn row ended by CRLF.
		qrcode.Lines("2@secret,payload")[1] + "\r"}
	no := []string{"", "Waiting for scan...", "📱 Scan this QR code with WhatsApp on your phone:",
		`{"event":"connected","user":{"id":"1"}}`, "plain log line", "█ short"}
	for _, s := range yes {
		if !CarriesPairingCode([]byte(s)) {
			t.Errorf("not caught: %q", s)
		}
		if !pairingStart[s[0]] {
			t.Errorf("the tail's hook skips it by its first byte: %q", s)
		}
	}
	for _, s := range no {
		if CarriesPairingCode([]byte(s)) {
			t.Errorf("wrongly caught: %q", s)
		}
	}
}
