package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// runToFiles runs the sidecar with its stdout and stderr in files (regular
// files: the sink's direct path), waits for the bridge's done file, stops
// the sidecar with SIGTERM and returns what each file holds.
func runToFiles(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	bin, _ := binaries(t)
	dir := t.TempDir()
	outF, errF := createIn(t, dir, "stdout"), createIn(t, dir, "stderr")
	done := filepath.Join(dir, "done")
	cmd := startOn(t, outF, errF, append(append([]string{bin}, args...), "-done-file", done, "-hang")...)
	waitFile(t, done)
	// Stopping must not lose what the bridge wrote: the readers drain its
	// pipes to the end, and the sinks are written out, before the exit.
	cmd.Process.Signal(syscall.SIGTERM)
	if code := exitCode(t, cmd); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	o, _ := os.ReadFile(outF.Name())
	e, _ := os.ReadFile(errF.Name())
	return string(o), string(e)
}

// createIn creates the file name in dir, closed when the test ends.
func createIn(t *testing.T, dir, name string) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestBridgeOutputRaw: with --bridge-output raw the bridge's stdout comes
// out of the sidecar's stdout byte for byte (a line far over
// --max-line-bytes included), its stderr on the sidecar's stderr beside
// the sidecar's own JSON records, and no line is wrapped.
func TestBridgeOutputRaw(t *testing.T) {
	_, fake := binaries(t)
	stdout, stderr := runToFiles(t, "run", "--bridge-output", "raw", "--max-line-bytes", "1000", "--",
		fake, "-long-line", "70000", "-say", `hello|{"not":"a record"}|wörld`, "-say-err", "oops|again")
	want := strings.Repeat("x", 70000) + "\nafter-long-line\nhello\n" + `{"not":"a record"}` + "\nwörld\n"
	if stdout != want {
		t.Fatalf("stdout is not the bridge's output unchanged: %d bytes, want %d; starts %.80q", len(stdout), len(want), stdout)
	}
	var raw []string
	for _, l := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil {
			if rec["bridge"] != nil {
				t.Errorf("a bridge line was logged as a record in raw mode: %s", l)
			}
			continue
		}
		raw = append(raw, l)
	}
	if strings.Join(raw, "|") != "oops|again" {
		t.Fatalf("stderr's raw lines = %q, want the bridge's two stderr lines; stderr:\n%s", raw, stderr)
	}
	if !strings.Contains(stderr, `"msg":"bridge stopped"`) {
		t.Fatalf("the sidecar's own records are missing from stderr:\n%s", stderr)
	}
}

// TestBridgeOutputOff: the bridge's lines appear on neither stream.
func TestBridgeOutputOff(t *testing.T) {
	_, fake := binaries(t)
	stdout, stderr := runToFiles(t, "run", "--bridge-output", "off", "--", fake, "-say", "hello-out", "-say-err", "hello-err")
	if stdout != "" {
		t.Fatalf("stdout = %q, want nothing", stdout)
	}
	for _, l := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) != nil || rec["bridge"] != nil {
			t.Fatalf("a bridge line reached stderr: %s", l)
		}
	}
	if !strings.Contains(stderr, `"msg":"bridge stopped"`) {
		t.Fatalf("the sidecar's own records are missing from stderr:\n%s", stderr)
	}
}

// TestBridgeOutputLogToFile: the default mode, with stderr in a file (the
// direct path), still makes every line a record that says its stream.
func TestBridgeOutputLogToFile(t *testing.T) {
	_, fake := binaries(t)
	stdout, stderr := runToFiles(t, "run", "--", fake, "-say", "hello-out", "-say-err", "hello-err")
	if stdout != "" {
		t.Fatalf("stdout = %q, want nothing", stdout)
	}
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("stderr line is not JSON: %q", l)
		}
		if s, ok := rec["bridge"].(string); ok {
			got[rec["msg"].(string)] = s
		}
	}
	if got["hello-out"] != "stdout" || got["hello-err"] != "stderr" {
		t.Fatalf("bridge records = %v, want hello-out on stdout and hello-err on stderr", got)
	}
}

// TestUnreadStdoutBlocksNothingInRawMode: raw output to a pipe nobody reads
// must not hold the bridge up or keep the sidecar from stopping it.
func TestUnreadStdoutBlocksNothingInRawMode(t *testing.T) {
	unreadPipeBlocksNothing(t, "stdout")
}

// TestRawLineKeepsTheSidecarsRecordsOut: with stdout and stderr on one
// file (2>&1), a record the sidecar logs while the bridge's raw line is
// still open ("stopping: …", here) waits for the bridge to end that line,
// and comes on a line of its own.
func TestRawLineKeepsTheSidecarsRecordsOut(t *testing.T) {
	script := `trap 'printf " and its end\n"; exit 0' TERM; printf 'a line left open'; : > "$1"; sleep 30 & wait`
	got := runRawShell(t, nil, script)
	if !strings.Contains(got, "a line left open and its end\n") {
		t.Fatalf("the bridge's line was broken into:\n%s", got)
	}
	for _, l := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		if l != "a line left open and its end" && !json.Valid([]byte(l)) {
			t.Errorf("a line that is neither the bridge's nor a record: %q", l)
		}
	}
	if !strings.Contains(got, `"msg":"stopping`) {
		t.Fatalf("no stopping record:\n%s", got)
	}
}

// TestRawLineLeftOpenByAnExitedBridgeHoldsNoRecordsPastTheNextRun: a
// bridge that exits with its last line unended (a prompt) must not make
// the sidecar's records about that exit and the next start wait for the
// next bridge's first newline: its stream has ended, so its line is
// over. Otherwise the next bridge's first line is glued onto the old
// prompt and comes out before the record of its own start.
func TestRawLineLeftOpenByAnExitedBridgeHoldsNoRecordsPastTheNextRun(t *testing.T) {
	script := `if [ ! -e "$2" ]; then : > "$2"; printf 'prompt> '; exit 1; fi
trap 'exit 0' TERM; echo "second run $$"; : > "$1"; sleep 30 & wait`
	got := runRawShell(t, []string{"--backoff-initial", "10ms", "--backoff-jitter", "0"}, script, "marker")
	// At a line's start: the script in the start records says it too.
	second := strings.Index(got, "\nsecond run ")
	if second < 0 {
		t.Fatalf("no line of the second run:\n%s", got)
	}
	// The second run's start is logged before its output is read.
	starts := strings.Count(got[:second], `"msg":"bridge started"`)
	if starts != 2 {
		t.Fatalf("%d start records before the second run's first line, want 2:\n%s", starts, got)
	}
	if strings.Contains(got, "prompt> second run") {
		t.Fatalf("the second run's line was glued onto the first run's prompt:\n%s", got)
	}
}

// runRawShell runs a sidecar in raw mode, with stdout and stderr on one
// file, over a shell script as its bridge, and returns that file once the
// script has created its first argument (a file, "started") and the
// sidecar, told to stop, has exited 0. The script's other arguments are
// files of the same directory, named by more.
func runRawShell(t *testing.T, flags []string, script string, more ...string) string {
	t.Helper()
	bin, _ := binaries(t)
	dir := t.TempDir()
	out := createIn(t, dir, "out")
	started := filepath.Join(dir, "started")
	args := append(append([]string{"run", "--bridge-output", "raw"}, flags...), "--", "/bin/sh", "-c", script, "sh", started)
	for _, m := range more {
		args = append(args, filepath.Join(dir, m))
	}
	cmd := startOn(t, out, out, append([]string{bin}, args...)...)
	waitFile(t, started)
	cmd.Process.Signal(syscall.SIGTERM)
	if code := exitCode(t, cmd); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	b, _ := os.ReadFile(out.Name())
	return string(b)
}
