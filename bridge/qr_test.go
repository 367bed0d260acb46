package bridge

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/bridge/qrcode"
)

func TestQRCollector(t *testing.T) {
	header := Line{Kind: LineQRHeader}
	row := func(s string) Line { return Line{Kind: LineQRRow, Row: s} }
	waiting := Line{Kind: LineWaitingForScan}
	connected := Line{Kind: LineConnected}
	many := make([]Line, maxQRRows+5)
	var first []string
	for i := range many {
		many[i] = row(fmt.Sprint(i))
		if i < maxQRRows {
			first = append(first, fmt.Sprint(i))
		}
	}
	cases := []struct {
		name  string
		lines []Line
		want  [][]string // the codes ended, in order
	}{
		{"a header, rows, and the line after them", []Line{header, row("a"), row("b"), waiting}, [][]string{{"a", "b"}}},
		{"rows without a header", []Line{row("a"), row("b"), connected}, [][]string{{"a", "b"}}},
		{"a code not yet ended", []Line{header, row("a"), row("b")}, nil},
		{"a header with no rows", []Line{header, waiting}, nil},
		{"a new header drops the rows it cut off", []Line{header, row("a"), header, row("b"), waiting}, [][]string{{"b"}}},
		{"two codes", []Line{header, row("a"), waiting, header, row("b"), row("c"), connected}, [][]string{{"a"}, {"b", "c"}}},
		{"other lines alone", []Line{waiting, connected, waiting}, nil},
		{"at most maxQRRows rows", append(many, waiting), [][]string{first}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c qrCollector
			var got [][]string
			for _, l := range tc.lines {
				if rows := c.feed(l); rows != nil {
					got = append(got, rows)
				}
			}
			if !slices.EqualFunc(got, tc.want, slices.Equal) {
				t.Fatalf("codes %q, want %q", got, tc.want)
			}
		})
	}
}

func TestQRText(t *testing.T) {
	if got := QRText("", nil); got != "" {
		t.Errorf("nothing to draw: %q", got)
	}
	const intro = "\nScan this QR code: WhatsApp on your phone → Settings → Linked devices → Link a device\n\n"
	if got, want := QRText("", []string{"▀▄", "▄▀"}), intro+"▀▄\n▄▀\n\n"; got != want {
		t.Errorf("rows drawn as %q, want %q", got, want)
	}
	// A payload is drawn anew, whatever rows came with it.
	want := intro + strings.Join(qrcode.Lines("2@x,y,z,w"), "\n") + "\n\n"
	if got := QRText("2@x,y,z,w", []string{"stale"}); got != want {
		t.Errorf("payload drawn as %q, want %q", got, want)
	}
}
