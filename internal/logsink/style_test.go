package logsink

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// Away from a terminal, auto is JSON lines, or journald's text on the
// stream $JOURNAL_STREAM names; text and json are what they say; anything
// else is a *FormatError.
func TestStyleOf(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(w.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		format, journal string
		want            Format
	}{
		{"auto", "", JSON},
		{"AUTO", "", JSON},
		{"auto", fmt.Sprintf("%d:%d", st.Dev, st.Ino), Journal},
		{"auto", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), JSON},
		{"text", fmt.Sprintf("%d:%d", st.Dev, st.Ino), Text},
		{"json", "", JSON},
	} {
		t.Setenv("JOURNAL_STREAM", tc.journal)
		got, err := StyleOf(tc.format, w)
		if err != nil || got != (Style{Format: tc.want}) {
			t.Errorf("StyleOf(%q) with JOURNAL_STREAM=%q = %+v, %v; want format %d, no terminal", tc.format, tc.journal, got, err, tc.want)
		}
	}
	var fe *FormatError
	if _, err := StyleOf("yaml", w); !errors.As(err, &fe) || fe.Format != "yaml" {
		t.Errorf("StyleOf(yaml): %v; want a *FormatError", err)
	}
}
