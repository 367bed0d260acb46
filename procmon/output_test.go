package procmon

import (
	"bytes"
	"fmt"
	"io"
	"slices"
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
	readLines(strings.NewReader(in), 100, func(b []byte, tr bool) { lines = append(lines, got{string(b), tr}) }, nil, nil)
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

func TestTailFromBatches(t *testing.T) {
	tl := newTail(3)
	out, errs := tl.recent(), tl.recent()
	for _, l := range []string{"o1", "o2", "o3", "o4"} {
		out.note([]byte(l))
	}
	out.commit()
	errs.note([]byte("e1"))
	errs.commit()
	if got := strings.Join(tl.snapshot(), ","); got != "o3,o4,e1" {
		t.Fatalf("tail = %s", got)
	}
	out.commit() // an empty batch keeps what there is
	if got := strings.Join(tl.snapshot(), ","); got != "o3,o4,e1" {
		t.Fatalf("tail after an empty batch = %s", got)
	}
}

// BenchmarkReadLines measures the reader's part of the pass-through
// benchmark: 100-byte lines split out of 64 KiB reads, each noted for the
// tail, the tail filled once per batch.
func BenchmarkReadLines(b *testing.B) {
	data := bytes.Repeat(append(bytes.Repeat([]byte("y"), 99), '\n'), 64<<10)
	tl := newTail(20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		recent := tl.recent()
		readLines(bytes.NewReader(data), 64<<10, func(text []byte, _ bool) { recent.note(text) }, recent.commit, nil)
		recent.commit()
	}
}

// TestReadLinesGrowsItsBuffer feeds more than a first buffer's worth at
// once, so the buffer grows with a part of a line in it, and checks every
// line against the plain rule.
func TestReadLinesGrowsItsBuffer(t *testing.T) {
	var data []byte
	for i := 0; len(data) < 3*readBytes; i++ {
		data = append(data, bytes.Repeat([]byte{'a' + byte(i%26)}, i%300)...)
		data = append(data, '\n')
	}
	want := plainLines(data, 100)
	var got []fuzzLine
	readLines(bytes.NewReader(data), 100, func(text []byte, truncated bool) {
		got = append(got, fuzzLine{string(text), truncated})
	}, nil, nil)
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("line %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// A thousand long lines would make every event that carries the exit
// record megabytes long: the tail keeps only the newest that fit in
// tailBytes.
func TestTailBoundedInBytes(t *testing.T) {
	tl := newTail(1000)
	for i := range 1000 {
		tl.add([]byte(fmt.Sprintf("%04d %s", i, strings.Repeat("x", 3000))))
	}
	got := tl.snapshot()
	size := 0
	for _, l := range got {
		size += len(l)
	}
	if size > tailBytes {
		t.Fatalf("tail holds %d bytes in %d lines, want at most %d", size, len(got), tailBytes)
	}
	if want := tailBytes / tailLineBytes; len(got) != want {
		t.Fatalf("tail kept %d lines of %d bytes, want %d", len(got), tailLineBytes, want)
	}
	if last := got[len(got)-1]; !strings.HasPrefix(last, "0999 ") {
		t.Fatalf("the newest line is not last: %.10q", last)
	}
	if first := got[0]; !strings.HasPrefix(first, fmt.Sprintf("%04d ", 1000-len(got))) {
		t.Fatalf("the lines kept are not the newest: first %.10q", first)
	}
}

// A read of more than maxEnds lines reaches raw in pieces, each with its
// own newlines and before its lines, and all the bytes in order.
func TestReadLinesRawInPieces(t *testing.T) {
	// Two-byte lines: a read of 256 KiB holds twice maxEnds of them.
	data := append(bytes.Repeat([]byte("x\n"), 3*maxEnds+10), "unended"...)
	var raws []byte
	calls, lines, full := 0, 0, 0
	readLines(&onePieceReader{data: data}, 100, func(text []byte, _ bool) {
		lines++
	}, nil, func(b []byte, ends []int) {
		calls++
		if len(ends) > maxEnds {
			t.Fatalf("%d ends in one call", len(ends))
		}
		if len(ends) == maxEnds {
			full++
		}
		var want []int
		for i, c := range b {
			if c == '\n' {
				want = append(want, i)
			}
		}
		if !slices.Equal(ends, want) {
			t.Fatalf("ends %v, want the newlines at %v", ends, want)
		}
		if before := bytes.Count(raws, []byte{'\n'}); lines != before {
			t.Fatalf("raw after its lines: %d lines, %d newlines before it", lines, before)
		}
		raws = append(raws, b...)
	})
	if !bytes.Equal(raws, data) {
		t.Fatalf("raw got %d bytes, want %d", len(raws), len(data))
	}
	if lines != 3*maxEnds+11 || full == 0 {
		t.Fatalf("%d lines in %d raw calls, %d of them of %d lines", lines, calls, full, maxEnds)
	}
}

// onePieceReader hands all of data over in a single Read.
type onePieceReader struct{ data []byte }

func (r *onePieceReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// A read of 64 KiB of four-byte lines (16 384 of them, under maxEnds)
// reaches raw in one call, and so a raw writer's sink in one write.
func TestReadLinesRawOncePerRead(t *testing.T) {
	data := bytes.Repeat([]byte("abc\n"), (64<<10)/4)
	calls := 0
	readLines(&onePieceReader{data}, 100, func([]byte, bool) {}, nil, func([]byte, []int) { calls++ })
	if calls != 1 {
		t.Fatalf("one read of %d lines reached raw in %d calls, want 1", len(data)/4, calls)
	}
}
