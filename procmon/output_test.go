package procmon

import (
	"strings"
	"testing"
)

func TestReadLines(t *testing.T) {
	in := "one\r\ntwo\n" + strings.Repeat("x", 300) + "\nthree\nno newline"
	type got struct {
		text  string
		trunc bool
	}
	var lines []got
	readLines(strings.NewReader(in), 100, func(b []byte, tr bool) { lines = append(lines, got{string(b), tr}) })
	want := []got{{"one", false}, {"two", false}, {strings.Repeat("x", 100), true}, {"three", false}, {"no newline", false}}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines %+v, want %d", len(lines), lines, len(want))
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("line %d = %+v, want %+v", i, lines[i], want[i])
		}
	}
}

func TestTailKeepsLast(t *testing.T) {
	tl := newTail(3)
	for _, s := range []string{"a", "b", "c", "d", "e"} {
		tl.add([]byte(s))
	}
	if got := strings.Join(tl.snapshot(), ","); got != "c,d,e" {
		t.Fatalf("tail = %s", got)
	}
	tl = newTail(3)
	tl.add([]byte("only"))
	if got := strings.Join(tl.snapshot(), ","); got != "only" {
		t.Fatalf("tail = %s", got)
	}
}
