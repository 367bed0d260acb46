package qrcode

import (
	"strings"
	"testing"

	"rsc.io/qr"
)

// TestLinesDrawTheCodesModules reads the drawing back, two modules per
// character, and compares it with rsc.io/qr's own module matrix: what a
// phone scans is exactly the code, with its quiet zone light.
func TestLinesDrawTheCodesModules(t *testing.T) {
	for _, payload := range []string{"2@abc,def,ghi,jkl", "2@" + strings.Repeat("x", 200) + ",k1,k2,k3", "a"} {
		code, err := qr.Encode(payload, qr.L)
		if err != nil {
			t.Fatal(err)
		}
		lines := Lines(payload)
		size := code.Size + 2 // one module of quiet zone on each side
		if len(lines) != (size+1)/2 {
			t.Fatalf("%q: %d lines for %d module rows", payload, len(lines), size)
		}
		dark := func(x, y int) bool { // in drawing coordinates
			x, y = x-1, y-1
			return x >= 0 && y >= 0 && x < code.Size && y < code.Size && code.Black(x, y)
		}
		for row, line := range lines {
			cells := []rune(line)
			if len(cells) != size {
				t.Fatalf("%q: line %d has %d cells, want %d", payload, row, len(cells), size)
			}
			for x, c := range cells {
				// Light is drawn, dark left blank: the code scans on a dark terminal.
				top, bottom := c == '█' || c == '▀', c == '█' || c == '▄'
				if c != '█' && c != '▀' && c != '▄' && c != ' ' {
					t.Fatalf("%q: unexpected character %q", payload, c)
				}
				if top == dark(x, 2*row) || bottom == dark(x, 2*row+1) {
					t.Fatalf("%q: cell %d,%d (%q) does not match modules %v,%v", payload, x, row, c, dark(x, 2*row), dark(x, 2*row+1))
				}
			}
		}
	}
}

func TestLinesOfATooLongPayload(t *testing.T) {
	if got := Lines(strings.Repeat("x", 5000)); got != nil {
		t.Fatalf("a payload too long for a QR code drew %d lines", len(got))
	}
}
