package bridge

import (
	"strings"

	"github.com/wa-sidecar/wa-sidecar/bridge/qrcode"
)

// maxQRRows bounds the rows kept of one code the bridge draws; a real one
// has about 30, so more is output that only looks like a code.
const maxQRRows = 200

// qrCollector puts back together a pairing QR code the bridge drew on its
// output, one line per row, between a header line (optional) and the first
// line that is not a row.
type qrCollector struct {
	rows       []string
	collecting bool
}

// feed takes one parsed line of the bridge's output. It returns the rows
// of the code that this line ended, or nil. The rows are returned before
// the line itself counts, so a code followed by "connected" is shown first.
func (c *qrCollector) feed(l Line) []string {
	var done []string
	if c.collecting && l.Kind != LineQRRow && l.Kind != LineQRHeader {
		done = c.rows
		c.collecting, c.rows = false, nil
	}
	switch l.Kind {
	case LineQRHeader:
		// A header starts a new code, dropping any rows of one it cut off.
		c.collecting, c.rows = true, nil
	case LineQRRow:
		if len(c.rows) < maxQRRows {
			c.collecting = true
			c.rows = append(c.rows, l.Row)
		}
	}
	if len(done) == 0 {
		return nil
	}
	return done
}

// QRText is the block that shows a pairing code to a person, with the
// words that say what to do with it, written at once so nothing splits
// it: a payload (the bridge's JSON line) is drawn anew, rows the bridge
// drew are shown as they are. It is empty when there is nothing to draw.
func QRText(payload string, rows []string) string {
	if payload != "" {
		rows = qrcode.Lines(payload)
	}
	if len(rows) == 0 {
		return ""
	}
	var sb strings.Builder
	sb.WriteString("\nScan this QR code: WhatsApp on your phone → Settings → Linked devices → Link a device\n\n")
	for _, r := range rows {
		sb.WriteString(r)
		sb.WriteByte('\n')
	}
	sb.WriteByte('\n')
	return sb.String()
}
