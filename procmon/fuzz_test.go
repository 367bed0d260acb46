package procmon

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/signals"
)

// FuzzClassify feeds Classify and the exit record arbitrary wait statuses
// and normal-signal sets. A wait status comes from the kernel, but the set
// comes from the user and the status may be anything a child can produce,
// so no input may panic, and the rules the docs promise must hold.
func FuzzClassify(f *testing.F) {
	term := uint64(1) << (syscall.SIGTERM - 1)
	usual := term | 1<<(syscall.SIGINT-1) | 1<<(syscall.SIGKILL-1)
	for _, seed := range []struct {
		status uint32
		normal uint64
		req    bool
	}{
		{0x0000, usual, false},            // exit 0
		{0x0100, usual, false},            // exit 1 (logged out, or a crash)
		{0x000f, usual, false},            // SIGTERM
		{0x0009, usual, true},             // SIGKILL while stopping
		{0x0086, usual, false},            // SIGABRT with a core dump
		{143 << 8, term, false},           // a shell's 128+SIGTERM
		{192 << 8, 1 << 63, false},        // 128+64, the last signal number
		{193 << 8, ^uint64(0), false},     // 128+65 is not a signal
		{0x137f, usual, false},            // stopped by SIGSTOP: not an exit at all
		{0xffffffff, ^uint64(0), false},   // garbage
		{0x007e, ^uint64(0), false},       // a signal number no kernel sends
		{0x0002, 0, false},                // SIGINT with an empty normal set
		{0x8200, usual &^ term, false},    // 130 = 128+SIGINT
		{0x0000, 0, true},                 // requested exit 0
		{0x000b, usual, false},            // SIGSEGV
		{0x0f00, usual | 1<<14, false},    // exit 15, which is not 128+15
		{0x8f00 | 0x80, usual, false},     // exit 143 with a stray core bit
		{0x0080 | 0x0f, usual, true},      // SIGTERM with core, requested
		{uint32(0x7f), usual, false},      // status 0x7f: neither exited nor signalled
		{0x00ff << 8, usual, false},       // exit 255
		{uint32(255<<8 | 0x7f), 0, false}, // stopped with a wild signal
	} {
		f.Add(seed.status, seed.normal, seed.req)
	}
	f.Fuzz(func(t *testing.T, status uint32, normalBits uint64, requested bool) {
		ws := syscall.WaitStatus(status)
		normal := signals.Set{}
		for i := 0; i < 64; i++ {
			if normalBits&(1<<i) != 0 {
				normal[syscall.Signal(i+1)] = true
			}
		}
		class := Classify(ws, normal, requested)

		switch {
		case requested:
			if class != ClassRequested {
				t.Fatalf("requested exit %#x classified %s", status, class)
			}
		case class == ClassRequested:
			t.Fatalf("unrequested exit %#x classified requested", status)
		case class != ClassShutdown && class != ClassFailure:
			t.Fatalf("exit %#x: unknown class %q", status, class)
		}

		if !requested {
			// A death by signal n and the exit code 128+n that a shell or
			// npm wrapper turns it into must mean the same thing.
			if ws.Signaled() && ws.Signal() <= 64 {
				wrapped := syscall.WaitStatus((128 + uint32(ws.Signal())) << 8)
				if c := Classify(wrapped, normal, false); c != class {
					t.Fatalf("signal %d is %s but exit %d is %s", ws.Signal(), class, 128+ws.Signal(), c)
				}
			}
			// Only a listed signal makes a shutdown: with an empty set
			// everything is a failure, and with every signal listed, every
			// signal death is a shutdown.
			if c := Classify(ws, signals.Set{}, false); c != ClassFailure {
				t.Fatalf("exit %#x with no normal signals classified %s", status, c)
			}
			all := signals.Set{}
			for s := syscall.Signal(1); s <= 127; s++ {
				all[s] = true
			}
			if ws.Signaled() {
				if c := Classify(ws, all, false); c != ClassShutdown {
					t.Fatalf("signal death %#x with every signal normal classified %s", status, c)
				}
			}
			if ws.Exited() && ws.ExitStatus() <= 128 && class != ClassFailure {
				t.Fatalf("exit code %d classified %s; only 129-192 stand for signals", ws.ExitStatus(), class)
			}
		}

		rec := newExitRecord(1234, ws, class)
		if (rec.Code == nil) == (rec.Signal == nil) {
			t.Fatalf("exit %#x: record must have exactly one of code and signal: %+v", status, rec)
		}
		if rec.Signal != nil && rec.ReturnCode != -int(ws.Signal()) {
			t.Fatalf("signal %d gave returncode %d", ws.Signal(), rec.ReturnCode)
		}
		if rec.Code != nil && rec.ReturnCode != *rec.Code {
			t.Fatalf("code %d gave returncode %d", *rec.Code, rec.ReturnCode)
		}
		if rec.Requested != (class == ClassRequested) || rec.Class != class {
			t.Fatalf("record disagrees with class %s: %+v", class, rec)
		}
		if d := rec.Describe(); d == "" || strings.HasPrefix(d, " ") {
			t.Fatalf("exit %#x: poor description %q", status, d)
		}
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatalf("exit %#x: record does not marshal: %v", status, err)
		}
		var back ExitRecord
		if err := json.Unmarshal(b, &back); err != nil || back.ReturnCode != rec.ReturnCode || back.Class != rec.Class {
			t.Fatalf("exit %#x: record does not round-trip: %s (%v)", status, b, err)
		}
	})
}

// FuzzReadLines splits arbitrary child output, delivered in arbitrary read
// sizes, and checks it against a plain reading of the rules: split at "\n",
// drop one "\r" before it, cut lines longer than the limit and flag them.
// It also checks the batching promise: whenever readLines is about to read
// again, every complete line it was given has already been handed over,
// and the batch's lines are still intact.
func FuzzReadLines(f *testing.F) {
	f.Add([]byte("one\r\ntwo\n"+strings.Repeat("x", 300)+"\nthree\nno newline"), uint8(100), []byte{7, 200, 1})
	f.Add([]byte(strings.Repeat("a", 80)+"\n"), uint8(80), []byte{0})
	f.Add([]byte(strings.Repeat("a", 79)+"\r\n"+strings.Repeat("b", 81)+"\r\n"), uint8(80), []byte{40})
	f.Add([]byte(strings.Repeat("c", 81)+"\r"), uint8(80), []byte{255})
	f.Add([]byte("\n\n\r\n\r\r\n"), uint8(1), []byte{0, 1, 2})
	f.Add([]byte("📱 Scan this QR code\n█▀▀▀▀▀█ ▄ █\n"), uint8(20), []byte{3})
	f.Add([]byte{}, uint8(5), []byte{})
	f.Fuzz(func(t *testing.T, data []byte, limitByte uint8, chunks []byte) {
		limit := int(limitByte)%200 + 1
		want := plainLines(data, limit)

		src := &chunkReader{data: data, sizes: chunks}
		var got []fuzzLine
		var held [][]byte // the current batch's lines, as handed over
		flushes := 0
		batch := func() {
			flushes++
			delivered := data[:src.pos]
			complete := bytes.Count(delivered, []byte{'\n'})
			// A line cut for length is handed over before its newline
			// arrives, so it may be one ahead.
			if len(got) != complete && len(got) != complete+1 {
				t.Fatalf("about to read again holding lines back: %d complete lines delivered, %d handed over", complete, len(got))
			}
			// The batch's lines are still intact.
			for i, l := range held {
				if string(l) != got[len(got)-len(held)+i].Text {
					t.Fatalf("line %q changed to %q before its batch ended", got[len(got)-len(held)+i].Text, l)
				}
			}
			held = held[:0]
		}
		var raws []byte // what raw was given, in order
		raw := func(b []byte, ends []int) {
			// Each newline of b, and no other index; and before the lines
			// in b were handed over (a cut line may be one ahead).
			var want []int
			for i, c := range b {
				if c == '\n' {
					want = append(want, i)
				}
			}
			if !slices.Equal(ends, want) {
				t.Fatalf("raw %q: ends %v, want %v", b, ends, want)
			}
			if before := bytes.Count(raws, []byte{'\n'}); len(got) > before+1 {
				t.Fatalf("raw %q came after its lines: %d lines handed over, %d newlines before it", b, len(got), before)
			}
			raws = append(raws, b...)
		}
		readLines(src, limit, func(text []byte, truncated bool) {
			if len(text) > limit {
				t.Fatalf("line of %d bytes exceeds the limit %d", len(text), limit)
			}
			if bytes.IndexByte(text, '\n') >= 0 {
				t.Fatalf("line %q holds a newline", text)
			}
			got = append(got, fuzzLine{string(text), truncated})
			held = append(held, text)
		}, batch, raw)
		if !bytes.Equal(raws, data) {
			t.Fatalf("raw was given %q, want every byte read, %q", raws, data)
		}
		if flushes == 0 {
			t.Fatal("the reader was never asked for data")
		}
		if len(got) != len(want) {
			t.Fatalf("limit %d, input %q: got %d lines %+v, want %d %+v", limit, data, len(got), got, len(want), want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("limit %d, input %q: line %d = %+v, want %+v", limit, data, i, got[i], want[i])
			}
		}
	})
}

type fuzzLine struct {
	Text      string
	Truncated bool
}

// plainLines is the rule readLines implements, written the slow and
// obvious way over the whole input at once.
func plainLines(data []byte, limit int) []fuzzLine {
	parts := bytes.Split(data, []byte{'\n'})
	if len(parts[len(parts)-1]) == 0 {
		parts = parts[:len(parts)-1]
	}
	out := []fuzzLine{}
	for _, p := range parts {
		p = bytes.TrimSuffix(p, []byte{'\r'})
		if len(p) > limit {
			out = append(out, fuzzLine{string(p[:limit]), true})
		} else {
			out = append(out, fuzzLine{string(p), false})
		}
	}
	return out
}

// chunkReader returns data in reads of the sizes listed, like a pipe
// that a child writes to in bursts.
type chunkReader struct {
	data  []byte
	sizes []byte
	pos   int
	n     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.pos == len(c.data) {
		return 0, io.EOF
	}
	size := len(p)
	if len(c.sizes) > 0 {
		size = min(size, int(c.sizes[c.n%len(c.sizes)])+1)
		c.n++
	}
	k := copy(p[:size], c.data[c.pos:])
	c.pos += k
	return k, nil
}
