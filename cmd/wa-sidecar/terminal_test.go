package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
)

// onTerminal is the sidecar running on a real pseudo-terminal, as a person
// starts it: it is the session leader and the terminal's foreground
// process group, so a Ctrl-C typed into the terminal reaches it as SIGINT
// through the kernel's line discipline, not through a signal we send.
type onTerminal struct {
	t    *testing.T
	cmd  *exec.Cmd
	tty  *os.File
	mu   sync.Mutex
	out  bytes.Buffer
	more chan struct{} // signalled after each read
	done chan struct{} // closed when the terminal reads EOF
}

func startOnTerminal(t *testing.T, args ...string) *onTerminal {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "TERM=xterm-256color", "WA_SIDECAR_LISTEN=127.0.0.1:0", "WA_SIDECAR_STATE_DIR="+t.TempDir())
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 50, Cols: 200})
	if err != nil {
		t.Fatal(err)
	}
	p := &onTerminal{t: t, cmd: cmd, tty: tty, more: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, 4096)
		for {
			n, err := tty.Read(buf)
			if n > 0 {
				p.mu.Lock()
				p.out.Write(buf[:n])
				p.mu.Unlock()
				select {
				case p.more <- struct{}{}:
				default:
				}
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		tty.Close()
		<-p.done
	})
	return p
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

func (p *onTerminal) raw() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// plain is the output as a person reads it, colours removed.
func (p *onTerminal) plain() string { return ansi.ReplaceAllString(p.raw(), "") }

// waitFor waits until the output shows substr after offset from, and
// returns the offset just past it.
func (p *onTerminal) waitFor(substr string, from int) int {
	p.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		text := p.plain()
		if from <= len(text) {
			if i := strings.Index(text[from:], substr); i >= 0 {
				return from + i + len(substr)
			}
		}
		select {
		case <-p.more:
		case <-p.done:
			if !strings.Contains(p.plain()[min(from, len(p.plain())):], substr) {
				p.t.Fatalf("terminal closed without %q; it showed:\n%s", substr, p.plain())
			}
		case <-deadline:
			p.t.Fatalf("the terminal never showed %q; it showed:\n%s", substr, p.plain())
		}
	}
}

// ctrlC types Ctrl-C into the terminal.
func (p *onTerminal) ctrlC() {
	p.t.Helper()
	if _, err := p.tty.Write([]byte{3}); err != nil {
		p.t.Fatal(err)
	}
}

func (p *onTerminal) wait() int {
	p.t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- p.cmd.Wait() }()
	select {
	case err := <-errc:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			p.t.Fatal(err)
		}
		return 0
	case <-time.After(30 * time.Second):
		p.t.Fatalf("the sidecar did not exit; the terminal showed:\n%s", p.plain())
		return -1
	}
}

// bridgePid reads the pid from the "bridge started" line.
func bridgePid(t *testing.T, text string) int {
	t.Helper()
	m := regexp.MustCompile(`bridge started pid=(\d+)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no bridge pid in:\n%s", text)
	}
	var pid int
	for _, c := range m[1] {
		pid = pid*10 + int(c-'0')
	}
	return pid
}

// TestCtrlCOnATerminal: the first Ctrl-C stops gracefully and says that a
// second one forces; the second kills a bridge that ignores SIGTERM, and
// the sidecar exits 0 with nothing left behind. On the way, the log is in
// colour and the bridge's own lines are marked as the bridge's.
func TestCtrlCOnATerminal(t *testing.T) {
	bin, fake := binaries(t)
	p := startOnTerminal(t, bin, "run", "--stop-timeout", "1h", "--", fake, "-ignore-term", "-say", "hello from the bridge")
	at := p.waitFor("bridge started", 0)
	// As a message, not inside the command line that "bridge started"
	// shows: only then has the bridge set itself to ignore SIGTERM.
	at = p.waitFor("│ hello from the bridge", at)
	bridge := bridgePid(t, p.plain())

	if !strings.Contains(p.raw(), "\x1b[") {
		t.Errorf("no colour on a terminal:\n%q", p.raw())
	}
	for _, line := range strings.Split(p.plain(), "\n") {
		if strings.Contains(line, "│ hello from the bridge") && !strings.Contains(line, "│out ") {
			t.Errorf("the bridge's line is not marked with its stream: %q", line)
		}
	}

	p.ctrlC()
	at = p.waitFor("stopping", at)
	p.waitFor("Ctrl-C again", at)
	// The bridge ignores SIGTERM and the stop timeout is an hour: only the
	// second Ctrl-C can end this.
	if !proctest.Running(bridge) {
		t.Fatalf("the bridge died at the first Ctrl-C; it should have been asked to stop:\n%s", p.plain())
	}
	p.ctrlC()
	p.waitFor("killing the bridge", at)
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d; the terminal showed:\n%s", code, p.plain())
	}
	if proctest.Running(bridge) {
		t.Fatalf("bridge %d still running", bridge)
	}
}

// TestOneCtrlCIsEnough: with a bridge that stops on SIGTERM, one Ctrl-C
// brings it down and the sidecar exits 0.
func TestOneCtrlCIsEnough(t *testing.T) {
	bin, fake := binaries(t)
	p := startOnTerminal(t, bin, "run", "--", fake, "-hang")
	at := p.waitFor("bridge started", 0)
	bridge := bridgePid(t, p.plain())
	p.ctrlC()
	at = p.waitFor("bridge stopped", at)
	p.waitFor("wa-sidecar exiting", at)
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d; the terminal showed:\n%s", code, p.plain())
	}
	if proctest.Running(bridge) {
		t.Fatalf("bridge %d still running", bridge)
	}
}

// TestNoColourWhenPiped: the same log through a pipe is JSON lines, one
// object per line, for a collector.
func TestNoColourWhenPiped(t *testing.T) {
	bin, fake := binaries(t)
	cmd := exec.Command(bin, "run", "--", fake, "-say", "piped line", "-exit", "0")
	cmd.Env = append(os.Environ(), "WA_SIDECAR_LISTEN=127.0.0.1:0", "WA_SIDECAR_STATE_DIR="+t.TempDir())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	buf := make([]byte, 4096)
	for !strings.Contains(log.String(), "piped line") {
		n, err := stderr.Read(buf)
		log.Write(buf[:n])
		if err != nil {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	io.Copy(&log, stderr)
	cmd.Wait()
	if strings.Contains(log.String(), "\x1b[") {
		t.Errorf("colour codes in piped output:\n%q", log.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		if !strings.HasPrefix(line, "{") {
			t.Errorf("piped log line is not JSON: %q", line)
		}
	}
}
