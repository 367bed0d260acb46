package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// runOnStream runs the sidecar with --log-format auto (the default) and
// its stderr on a pipe, with JOURNAL_STREAM set by stream (given the
// pipe's "dev:ino"), until the bridge's line "hello" shows; then stops it
// and returns its stderr lines.
func runOnStream(t *testing.T, stream func(devIno string) string) []string {
	t.Helper()
	bin, fake := binaries(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(w.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--bridge-log", "off", "--gateway-url", "ws://user:pw@127.0.0.1:1/x", "--", fake, "-say", "hello", "-hang")
	cmd.Env = append(hermeticEnv(t.TempDir()), "WA_SIDECAR_LISTEN=127.0.0.1:0", "WA_SIDECAR_STATE_DIR="+filepath.Join(t.TempDir(), "state"),
		"JOURNAL_STREAM="+stream(fmt.Sprintf("%d:%d", st.Dev, st.Ino)))
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var got []string
	deadline := time.After(20 * time.Second)
	for stopped := false; ; {
		select {
		case l, ok := <-lines:
			if !ok {
				if code := exitCode(t, cmd); code != 0 {
					t.Fatalf("exit %d; stderr:\n%s", code, strings.Join(got, "\n"))
				}
				return got
			}
			got = append(got, l)
			// The bridge's line, not the command line that shows it.
			if !stopped && (strings.HasPrefix(l, "<6>hello") || strings.Contains(l, `"msg":"hello"`)) {
				stopped = true
				cmd.Process.Signal(syscall.SIGTERM)
			}
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("no end; stderr so far:\n%s", strings.Join(got, "\n"))
		}
	}
}

// Under journald (JOURNAL_STREAM names our stderr), the default log is
// plain text with syslog priorities, which journald reads as each
// record's priority, and no time, which journald adds.
func TestJournaldGetsPrioritiesNotJSON(t *testing.T) {
	lines := runOnStream(t, func(devIno string) string { return devIno })
	var warn, bridge bool
	for _, l := range lines {
		if len(l) < 3 || l[0] != '<' || !strings.Contains("3467", l[1:2]) || l[2] != '>' || strings.Contains(l, `{"time"`) {
			t.Fatalf("not a journal line: %q; stderr:\n%s", l, strings.Join(lines, "\n"))
		}
		if strings.HasPrefix(l, "<4>the --gateway-url on the command line holds credentials") {
			warn = true
		}
		if strings.HasPrefix(l, "<6>hello bridge=stdout pid=") {
			bridge = true
		}
	}
	if !warn || !bridge || !strings.HasPrefix(lines[len(lines)-1], "<6>") {
		t.Fatalf("want a <4> warning and the bridge's line at <6>; stderr:\n%s", strings.Join(lines, "\n"))
	}
}

// A JOURNAL_STREAM inherited by a process whose stderr went elsewhere (a
// pipe here) does not count: JSON lines as before.
func TestJournalStreamOfAnotherFileIsIgnored(t *testing.T) {
	lines := runOnStream(t, func(string) string { return "1:1" })
	for _, l := range lines {
		if !strings.HasPrefix(l, `{"time":`) {
			t.Fatalf("not JSON: %q", l)
		}
	}
}

// $NO_COLOR turns the colours off on a terminal; the layout stays.
func TestNoColorOnATerminal(t *testing.T) {
	bin, fake := binaries(t)
	t.Setenv("NO_COLOR", "1")
	p := startOnTerminal(t, bin, "run", "--bridge-log", "off", "--", fake, "-say", "hello from the bridge", "-hang")
	p.waitFor("│ hello from the bridge", 0)
	p.ctrlC()
	if code := p.wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	out := p.raw()
	if strings.Contains(out, "\x1b[") {
		t.Fatalf("colour with NO_COLOR set: %q", out)
	}
	if !strings.Contains(out, "│out ") || !strings.Contains(out, " INF bridge started") {
		t.Fatalf("the layout changed: %q", out)
	}
}
