package echo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/logsink"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// TestEndedStreamLeavesNoLineOpenInTheSink: once a bridge's stream has
// ended (EndOutput), the line it left unended is over; a record the
// sidecar writes then (the exit, the next start) must not wait for the
// next bridge's first newline and come after that bridge's first line,
// glued onto the old one.
func TestEndedStreamLeavesNoLineOpenInTheSink(t *testing.T) {
	for _, terminal := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "out")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		var ss logsink.Sinks
		sink := ss.For(f, true)
		raw := Raw{Stdout: Pass(sink, terminal), Stderr: Pass(sink, terminal)}
		raw.WriteRaw(procmon.Stderr, []byte("prompt> "))
		raw.EndOutput(procmon.Stderr)
		raw.EndOutput(procmon.Stdout)
		sink.Write([]byte(`{"msg":"bridge failed"}` + "\n"))
		sink.Write([]byte(`{"msg":"bridge started"}` + "\n"))
		raw.WriteRaw(procmon.Stderr, []byte("next run\n"))
		sink.Close(5 * time.Second)
		f.Close()
		b, _ := os.ReadFile(path)
		got := string(b)
		if i, j := strings.Index(got, `"bridge started"`), strings.Index(got, "next run"); i < 0 || j < i {
			t.Errorf("terminal %v: the records came after the next run's line:\n%s", terminal, got)
		}
	}
}
