package logsink

import (
	"encoding/binary"
	"unicode"
	"unicode/utf8"
)

// AppendJSONString appends s to b as the inside of a JSON string, escaped
// as slog's JSON handler does: quote, backslash and control characters
// escaped, invalid UTF-8 replaced by U+FFFD, and
// U+2028 and U+2029 escaped for JavaScript. Runs of plain ASCII, which is
// nearly all a bridge prints, are found eight bytes at a time and copied
// whole.
func AppendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		for i+8 <= len(s) && plainASCII8(binary.LittleEndian.Uint64(s[i:])) {
			i += 8
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c >= 0x20 && c < utf8.RuneSelf && c != '"' && c != '\\' {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, "\\ufffd"...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
		start = i
	}
	return append(b, s[start:]...)
}

// AppendText appends s for a text log or a terminal, with what could
// act on a terminal or end the line escaped as Go writes it in a string:
// control characters other than tab (ESC as \x1b, CR as \r), DEL, the C1
// controls (which some terminals take as ESC [) and bytes that are not
// UTF-8 (\xff). Everything else, backslashes included, is copied.
func AppendText(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		for i+8 <= len(s) && printableASCII8(binary.LittleEndian.Uint64(s[i:])) {
			i += 8
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != 0x7f || c == '\t' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\r':
				b = append(b, '\\', 'r')
			case '\n':
				b = append(b, '\\', 'n')
			default:
				b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
		case r >= 0x80 && r < 0xa0:
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xf])
		case r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r):
			// Line and paragraph separators break a record's line on some
			// terminals; bidi controls reorder what follows them.
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', hex[r>>12], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(b, s[start:]...)
}

// printableASCII8 reports whether each of the eight bytes in x is
// printable ASCII: none below 0x20, none of 0x7f (DEL) or above.
func printableASCII8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	control := (x - ones*0x20) &^ x        // a byte below 0x20
	return (control|(x+ones)|x)&highs == 0 // x+ones: a byte of 0x7f or more
}

// plainASCII8 reports whether none of the eight bytes in x needs escaping:
// each is printable ASCII other than '"' and '\\'.
func plainASCII8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote := x ^ (ones * '"')
	slash := x ^ (ones * '\\')
	control := (x - ones*0x20) &^ x       // a byte below 0x20
	special := (quote - ones) &^ quote    // a '"'
	special |= (slash - ones) &^ slash    // a '\\'
	return (control|special|x)&highs == 0 // x&highs: a byte of 0x80 or more
}
