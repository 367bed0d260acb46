// Package qrcode draws QR codes with the half-block characters a terminal
// shows, two modules per character cell, as the bridge's qrcode-terminal
// does: the simulated bridge prints its pairing codes this way, and the
// sidecar redraws a bridge's JSON pairing code for a person to scan.
package qrcode

import (
	"strings"

	"rsc.io/qr"
)

// Lines draws payload as a QR code in half-block characters, with a quiet
// zone of one module around it. Dark modules are
// drawn as spaces on a light frame so the code scans on dark terminals, the
// common case. It returns nil if payload is too long for a QR code.
func Lines(payload string) []string {
	code, err := qr.Encode(payload, qr.L)
	if err != nil {
		return nil
	}
	const quiet = 1
	light := func(x, y int) bool {
		if x < 0 || y < 0 || x >= code.Size || y >= code.Size {
			return true
		}
		return !code.Black(x, y)
	}
	var lines []string
	for y := -quiet; y < code.Size+quiet; y += 2 {
		var sb strings.Builder
		for x := -quiet; x < code.Size+quiet; x++ {
			top, bottom := light(x, y), light(x, y+1)
			switch {
			case top && bottom:
				sb.WriteString("█")
			case top:
				sb.WriteString("▀")
			case bottom:
				sb.WriteString("▄")
			default:
				sb.WriteString(" ")
			}
		}
		lines = append(lines, sb.String())
	}
	return lines
}
