package bridge

import (
	"fmt"
	"strings"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/bridge/qrcode"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// TestExitTailKeepsNoPairingLineWithTheSieves: with the hook's TailStarts
// the monitor asks it only of lines that may start a pairing line; every
// pairing line, however it starts or ends, and cut or not at
// MaxLineBytes, is still kept out of the exit record's tail.
func TestExitTailKeepsNoPairingLineWithTheSieves(t *testing.T) {
	rows := qrcode.Lines("2@review-secret,abcdefghijklmnopqrstuvwxyz0123456789")
	json := `{"event":"qr","qr":"2@review-secret"}`
	secret := []string{json}
	say := []string{"plain before", ""}
	for _, r := range rows {
		say = append(say, r, r+"\r")
		secret = append(secret, r)
	}
	for _, ws := range []string{" ", "\t", "\r", "\u00a0", "\u2003", "\v"} {
		say = append(say, ws+json, ws+json+"\r")
	}
	say = append(say, "plain after", "\r")
	for _, max := range []int{0, 80} { // 80: the least --max-line-bytes allows; rows are cut mid-rune
		t.Run(fmt.Sprint("max-line-bytes=", max), func(t *testing.T) { tailCheck(t, say, secret, max) })
	}
}

func tailCheck(t *testing.T, say, secret []string, max int) {
	h := startConfig(t, procmon.Config{
		Command:      []string{fakeBridge, "-say", strings.Join(say, "|"), "-exit", "3"},
		MaxLineBytes: max,
		TailLines:    len(say) + 4,
	}, Options{})
	ex := h.next(procmon.EventExited)
	var kept []string
	for _, line := range ex.Exit.Tail {
		for _, s := range secret {
			if line != "" && strings.Contains(s, strings.TrimLeft(line, " \t\r\v\u00a0\u2003")) && strings.TrimSpace(line) != "" {
				t.Errorf("a pairing line (or its cut start) is in the exit tail: %q", line)
				break
			}
		}
		kept = append(kept, line)
	}
	if !strings.Contains(strings.Join(kept, "|"), "plain before||") || !strings.Contains(strings.Join(kept, "|"), "plain after|") {
		t.Errorf("tail %q lost the plain lines", kept)
	}
}
