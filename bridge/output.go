package bridge

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// LineKind says what a line of the bridge's output announces.
type LineKind int

// The lines the sidecar understands. Everything else is LineOther.
const (
	LineOther            LineKind = iota
	LineListening                 // 🌉 WhatsApp bridge listening on port N (mode: M)
	LineSession                   // 📁 Session stored in: DIR
	LineQRHeader                  // 📱 Scan this QR code with WhatsApp on your phone:
	LineQRRow                     // one row of a QR code drawn in block characters
	LineWaitingForScan            // Waiting for scan...
	LineQR                        // --pair-json {"event":"qr","qr":…}
	LineConnected                 // ✅ WhatsApp connected!, or {"event":"connected"}
	LineDisconnected              // ⚠️ Connection closed (reason: X)…, or {"event":"disconnected"}
	LineRestartRequested          // ↻ WhatsApp requested restart (code 515)
	LineLoggedOut                 // ❌ Logged out…, or {"event":"error","error":"logged_out"}
	LineError                     // {"event":"error"} for anything but logged_out
	LineStarted                   // {"event":"started"}
)

// Line is what one line of output says. Only the fields of its kind are
// set.
type Line struct {
	Kind     LineKind
	Port     int    // LineListening
	Mode     string // LineListening
	Session  string // LineSession, LineStarted
	Reason   string // LineDisconnected, LineLoggedOut, LineError
	QR       string // LineQR: the pairing payload
	Row      string // LineQRRow
	UserID   string // LineConnected from JSON
	UserName string // LineConnected from JSON
	JSON     bool   // the line was a --pair-json event
}

// maxQRPayload bounds a QR payload taken from a JSON line; WhatsApp's are
// a few hundred bytes, and a QR code cannot hold more than 2953.
const maxQRPayload = 4096

// ParseLine reads one line of the bridge's output (without its newline).
// It never fails: a line it does not know, or cannot read, is LineOther.
// It is cheap for the common case, a log line that is none of these: its
// first byte rules it out, without an allocation.
func ParseLine(b []byte) Line {
	if len(b) == 0 || !startBytes[b[0]] {
		return Line{}
	}
	if row, ok := qrRow(b); ok {
		return Line{Kind: LineQRRow, Row: string(row)}
	}
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return Line{}
	}
	if t[0] == '{' {
		return parseJSONLine(t)
	}
	s := string(t)
	switch {
	case strings.HasPrefix(s, "🌉"):
		l := Line{Kind: LineListening}
		if rest, ok := after(s, "listening on port "); ok {
			n := 0
			for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
				n++
			}
			l.Port, _ = strconv.Atoi(rest[:n])
		}
		if rest, ok := after(s, "(mode: "); ok {
			l.Mode, _, _ = strings.Cut(rest, ")")
		}
		return l
	case strings.HasPrefix(s, "📁"):
		rest, _ := after(s, "Session stored in:")
		return Line{Kind: LineSession, Session: strings.TrimSpace(rest)}
	case strings.HasPrefix(s, "📱"):
		return Line{Kind: LineQRHeader}
	case strings.HasPrefix(s, "Waiting for scan"):
		return Line{Kind: LineWaitingForScan}
	case strings.HasPrefix(s, "✅") && strings.Contains(s, "connected"):
		return Line{Kind: LineConnected}
	case strings.HasPrefix(s, "⚠") && strings.Contains(s, "Connection closed"):
		l := Line{Kind: LineDisconnected}
		if rest, ok := after(s, "(reason: "); ok {
			l.Reason, _, _ = strings.Cut(rest, ")")
		}
		return l
	case strings.HasPrefix(s, "↻"):
		return Line{Kind: LineRestartRequested}
	case strings.HasPrefix(s, "❌") && strings.Contains(s, "Logged out"):
		return Line{Kind: LineLoggedOut, Reason: "logged out"}
	}
	return Line{}
}

// startBytes holds every byte a line ParseLine knows can start with: the
// first byte of each marker below and of the QR blocks, and, since markers
// are looked for after bytes.TrimSpace, the first byte of every white
// space character it strips. Every other line is LineOther.
var startBytes = func() (t [256]bool) {
	for _, m := range []string{"{", "🌉", "📁", "📱", "Waiting for scan", "✅", "⚠", "↻", "❌", " ", "█", "▀", "▄"} {
		t[m[0]] = true
	}
	for _, r := range unicode.White_Space.R16 {
		for c := rune(r.Lo); c <= rune(r.Hi); c += rune(r.Stride) {
			t[utf8.AppendRune(nil, c)[0]] = true
		}
	}
	for _, r := range unicode.White_Space.R32 {
		for c := rune(r.Lo); c <= rune(r.Hi); c += rune(r.Stride) {
			t[utf8.AppendRune(nil, c)[0]] = true
		}
	}
	return t
}()

func after(s, marker string) (string, bool) {
	i := strings.Index(s, marker)
	if i < 0 {
		return "", false
	}
	return s[i+len(marker):], true
}

// CarriesPairingCode reports whether a line of the bridge's output holds a
// pairing QR code, as a drawn row or a --pair-json "qr" event, with or
// without white space around it. Such lines must not reach readers
// without the token, such as exit records' tails, nor logs. It is cheap
// enough to run on every line.
//
// Only a line starting with a byte in pairingStart can.
func CarriesPairingCode(b []byte) bool {
	if isQRRow(b) {
		return true
	}
	t := bytes.TrimLeftFunc(b, unicode.IsSpace)
	if len(t) == 0 || t[0] != '{' {
		return false
	}
	// Any "qr" key, in any case (encoding/json matches keys so), or any
	// line the parser reads as a QR event, such as one with the key
	// spelt in escapes.
	return containsFold(t, `"qr"`) || parseJSONLine(bytes.TrimSpace(t)).Kind == LineQR
}

// MayStartPairingCode reports whether a line starting with the byte c may
// carry a pairing code (see CarriesPairingCode); no other line can.
func MayStartPairingCode(c byte) bool { return pairingStart[c] }

// containsFold reports whether s holds the ASCII word sub in any case.
func containsFold(s []byte, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if bytes.EqualFold(s[i:i+len(sub)], []byte(sub)) {
			return true
		}
	}
	return false
}

// pairingStart: '{' for a JSON line, the first bytes of the rows isQRRow
// accepts, and the first byte of every white space character that may
// come before a JSON line.
var pairingStart = func() (t [256]bool) {
	t['{'], t[' '], t[0xe2] = true, true, true
	for c, ok := range startBytes {
		if ok && c >= 0x80 || c < 0x80 && unicode.IsSpace(rune(c)) {
			t[c] = true
		}
	}
	return t
}()

// isQRRow reports whether b is a row of a QR code as qrcode-terminal draws
// it in small mode: only half and full blocks and spaces, with at least one
// block, and long enough to be a QR row (the smallest code is 21 modules).
func isQRRow(b []byte) bool {
	_, ok := qrRow(b)
	return ok
}

// qrRow is isQRRow, and the row as it was judged: without a CR that ends
// it, and without the part of a block character it was cut in.
func qrRow(b []byte) ([]byte, bool) {
	b = bytes.TrimSuffix(b, []byte("\r")) // a line ended by CRLF
	// A row cut at the line limit may end inside a block character: what
	// is left of it is judged without that part.
	for j := len(b) - 1; j >= 0 && j >= len(b)-utf8.UTFMax; j-- {
		if utf8.RuneStart(b[j]) {
			if !utf8.FullRune(b[j:]) {
				b = b[:j]
			}
			break
		}
	}
	if len(b) < 21 || (b[0] != ' ' && b[0] != 0xe2) {
		return nil, false
	}
	blocks, cells := 0, 0
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		switch r {
		case ' ':
		case '█', '▀', '▄':
			blocks++
		default:
			return nil, false
		}
		cells++
		i += size
	}
	return b, blocks > 0 && cells >= 21
}

type jsonLine struct {
	Event   string          `json:"event"`
	QR      string          `json:"qr"`
	Session string          `json:"session"`
	Error   string          `json:"error"`
	Reason  json.RawMessage `json:"reason"`
	User    *struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"user"`
}

// parseJSONLine reads a --pair-json event. Other JSON on stdout, such as
// Baileys' pino log records, has no "event" and is LineOther.
func parseJSONLine(t []byte) Line {
	if !bytes.Contains(t, []byte(`"event"`)) {
		return Line{}
	}
	var j jsonLine
	if json.Unmarshal(t, &j) != nil {
		return Line{}
	}
	l := Line{JSON: true, Reason: reasonText(j.Reason)}
	switch j.Event {
	case "started":
		l.Kind, l.Session = LineStarted, j.Session
	case "qr":
		if j.QR == "" || len(j.QR) > maxQRPayload {
			return Line{}
		}
		l.Kind, l.QR = LineQR, j.QR
	case "connected":
		l.Kind = LineConnected
		if j.User != nil {
			l.UserID, l.UserName = j.User.ID, j.User.Name
		}
	case "disconnected":
		l.Kind = LineDisconnected
	case "error":
		l.Kind = LineError
		if j.Error == "logged_out" {
			l.Kind = LineLoggedOut
		}
		if l.Reason == "" {
			l.Reason = j.Error
		}
	default:
		return Line{}
	}
	return l
}

// reasonText renders a close reason, which Baileys gives as a status code
// (a number) or the bridge as a word.
func reasonText(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}
