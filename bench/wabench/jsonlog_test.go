package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/internal/logsink"
)

// TestJSONLogFloor: the C child's -jsonlog, the default log mode's work
// done in C, writes the sidecar's record for each line of ASCII it reads:
// the line escaped byte for byte as the sidecar escapes it, without its
// "\r", cut at 4096 bytes (the head of a line longer than its buffer, not
// its tail), and an unended last line too; on one thread, on two
// (-threads), and with every byte read also copied to a file (-copy, the
// Hermes default's bridge.log). -rawcopy, the raw mode's floor, passes
// the bytes on unchanged.
func TestJSONLogFloor(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler (cc)")
	}
	_, here, _, _ := runtime.Caller(0)
	bin := filepath.Join(t.TempDir(), "child")
	if out, err := exec.Command(cc, "-O2", "-pthread", "-o", bin, filepath.Join(filepath.Dir(here), "..", "cchild", "child.c")).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	var in bytes.Buffer
	var want [][]byte
	for i := 0; i < 3000; i++ {
		n := []int{0, 1, 7, 8, 9, 31, 32, 33, 99, 4095, 4096, 4097}[rnd.IntN(12)]
		if i == 1000 || i == 2000 {
			n = 300 << 10 // longer than the child's buffer
		}
		line := make([]byte, n)
		for j := range line {
			line[j] = byte(1 + rnd.IntN(126)) // ASCII, no NUL
			if line[j] == '\n' {
				line[j] = '"'
			}
		}
		if i%5 == 0 {
			line = append(line, '\r')
		}
		in.Write(line)
		if i < 2999 {
			in.WriteByte('\n')
		}
		line = bytes.TrimSuffix(line, []byte("\r")) // as the sidecar splits lines
		want = append(want, logsink.AppendJSONString(nil, line[:min(len(line), 4096)]))
	}
	copyFile := filepath.Join(t.TempDir(), "bridge.log")
	for _, mode := range [][]string{{"-jsonlog"}, {"-jsonlog", "-threads"}, {"-jsonlog", "-copy", copyFile}} {
		cmd := exec.Command(bin, mode...)
		cmd.Stdin = bytes.NewReader(in.Bytes())
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v: %v", mode, err)
		}
		recs := bytes.Split(bytes.TrimSuffix(out, []byte("\n")), []byte("\n"))
		if len(recs) != len(want) {
			t.Fatalf("%v: %d records for %d lines", mode, len(recs), len(want))
		}
		head, tail := []byte(`,"msg":"`), []byte(`","bridge":"stdout","pid":`)
		for i, r := range recs {
			a, b := bytes.Index(r, head), bytes.LastIndex(r, tail)
			if a < 0 || b < a {
				t.Fatalf("%v: record %d is not the sidecar's: %.200s", mode, i, r)
			}
			if msg := r[a+len(head) : b]; !bytes.Equal(msg, want[i]) {
				t.Fatalf("%v: record %d: msg %.200q, want %.200q", mode, i, msg, want[i])
			}
		}
	}
	if got, err := os.ReadFile(copyFile); err != nil || !bytes.Equal(got, in.Bytes()) {
		t.Fatalf("-copy wrote %d bytes (%v) that are not the %d read", len(got), err, in.Len())
	}
	cmd := exec.Command(bin, "-rawcopy")
	cmd.Stdin = bytes.NewReader(in.Bytes())
	if out, err := cmd.Output(); err != nil || !bytes.Equal(out, in.Bytes()) {
		t.Fatalf("-rawcopy passed %d bytes (%v) that are not the %d read", len(out), err, in.Len())
	}
}
