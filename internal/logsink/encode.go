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
// nearly all a bridge prints, are found 32 bytes at a time (see plainRun)
// and copied whole.
func AppendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		i += plainRun(s[i:])
		for i < len(s) && s[i] >= 0x20 && s[i] < utf8.RuneSelf && s[i] != '"' && s[i] != '\\' {
			i++
		}
		if i >= len(s) {
			break
		}
		c := s[i]
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
// controls (which some terminals take as ESC [), the line and paragraph
// separators U+2028 and U+2029, the bidi controls (\u202e, which would
// reorder the rest of the line) and bytes that are not UTF-8 (\xff).
// Everything else, backslashes included, is copied.
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
	control := (x - ones*0x20) &^ x        // a byte below 0x20
	return (control|(x+ones)|x)&highs == 0 // x+ones: a byte of 0x7f or more
}

// plainRun returns how many of the bytes at the start of s need no
// escaping in a JSON string, counted a multiple of eight at a time: it
// may stop before the first byte that needs escaping, never after it.
// Four words are tested together, so that a plain line costs one branch
// for every 32 bytes.
func plainRun(s []byte) int {
	i := 0
	for ; i+32 <= len(s); i += 32 {
		b := s[i : i+32 : i+32]
		w0 := binary.LittleEndian.Uint64(b[0:])
		w1 := binary.LittleEndian.Uint64(b[8:])
		w2 := binary.LittleEndian.Uint64(b[16:])
		w3 := binary.LittleEndian.Uint64(b[24:])
		if (escapeBits(w0)|escapeBits(w1)|escapeBits(w2)|escapeBits(w3))&highs != 0 {
			break
		}
	}
	for ; i+8 <= len(s); i += 8 {
		if !plainASCII8(binary.LittleEndian.Uint64(s[i:])) {
			break
		}
	}
	return i
}

const ones, highs = 0x0101010101010101, 0x8080808080808080

// escapeBits has a high bit of some byte set when, and only when, a byte
// of x needs escaping: a control byte, '"', '\\' or a byte of 0x80 or more
// (not ASCII). Which high bits are set says no more than that.
func escapeBits(x uint64) uint64 {
	quote := x ^ (ones * '"')
	slash := x ^ (ones * '\\')
	control := (x - ones*0x20) &^ x    // a byte below 0x20
	special := (quote - ones) &^ quote // a '"'
	special |= (slash - ones) &^ slash // a '\\'
	return control | special | x       // x: a byte of 0x80 or more
}

// plainASCII8 reports whether none of the eight bytes in x needs escaping:
// each is printable ASCII other than '"' and '\\'.
func plainASCII8(x uint64) bool { return escapeBits(x)&highs == 0 }
