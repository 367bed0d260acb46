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
)

func writeLines(t *testing.T, path string, from, to int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := from; i <= to; i++ {
		fmt.Fprintf(f, "line %d\n", i)
	}
}

func TestLogsPrintsTheLastLines(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	session := filepath.Join(dir, "session")
	log := filepath.Join(dir, "bridge.log") // next to the session, as run writes it
	writeLines(t, log, 1, 5000)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bridge-log", log}, "line 4991\nline 4992\nline 4993\nline 4994\nline 4995\nline 4996\nline 4997\nline 4998\nline 4999\nline 5000\n"},
		{[]string{"-n", "3", "--session-dir", session}, "line 4998\nline 4999\nline 5000\n"},
		{[]string{"-n", "0", "--bridge-log", log}, ""},
	} {
		out, stderr, code := cliRun(t, bin, env, append([]string{"logs", "--state-dir", dir}, tc.args...)...)
		if code != 0 || out != tc.want {
			t.Errorf("logs %q: exit %d, %q %q; want %q", tc.args, code, out, stderr, tc.want)
		}
	}
	out, _, _ := cliRun(t, bin, env, "logs", "-n", "100000", "--bridge-log", log, "--state-dir", dir)
	if n := strings.Count(out, "\n"); n != 5000 || !strings.HasPrefix(out, "line 1\n") {
		t.Errorf("logs -n 100000 printed %d lines", n)
	}
	if _, stderr, code := cliRun(t, bin, env, "logs", "-n", "-1", "--bridge-log", log); code != exitUsage {
		t.Errorf("logs -n -1: exit %d %q", code, stderr)
	}
}

// A bridge.log that is a symbolic link is refused, whatever it points to;
// so is one that is not a regular file, which could hang the reader.
func TestLogsFollowsNoSymlink(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("do not print me\n"), 0o600)
	link := filepath.Join(dir, "bridge.log")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	for _, follow := range []string{"--follow=false", "-f"} {
		out, stderr, code := cliRun(t, bin, env, "logs", follow, "--bridge-log", link, "--state-dir", dir)
		if code != exitError || strings.Contains(out, "do not print") || !strings.Contains(stderr, "symbolic link") {
			t.Errorf("logs %s over a symlink: exit %d, %q %q", follow, code, out, stderr)
		}
	}
	fifo := filepath.Join(dir, "fifo.log")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := cliRun(t, bin, env, "logs", "--bridge-log", fifo); code != exitError || !strings.Contains(stderr, "not a regular file") {
		t.Errorf("logs over a FIFO: exit %d, %q", code, stderr)
	}
}

// logs -f prints what is appended, across a rotation (rename and a new
// file, as the sidecar's bridge.log rotates) and a truncation, until
// SIGINT, which ends it with 0.
func TestLogsFollow(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "bridge.log")
	writeLines(t, log, 1, 3)
	cmd := exec.Command(bin, "logs", "-f", "-n", "2", "--bridge-log", log)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expect := func(want ...string) {
		t.Helper()
		for _, w := range want {
			select {
			case got := <-lines:
				if got != w {
					t.Fatalf("logs -f printed %q, want %q", got, w)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("logs -f never printed %q", w)
			}
		}
	}
	expect("line 2", "line 3")
	writeLines(t, log, 4, 5)
	expect("line 4", "line 5")
	// Rotated: the old file gets a last line, then a new one takes its name.
	writeLines(t, log, 6, 6)
	if err := os.Rename(log, log+".1"); err != nil {
		t.Fatal(err)
	}
	writeLines(t, log, 7, 8)
	expect("line 6", "line 7", "line 8")
	// Truncated in place.
	if err := os.Truncate(log, 0); err != nil {
		t.Fatal(err)
	}
	expect() // nothing to see, and nothing printed twice
	writeLines(t, log, 9, 9)
	expect("line 9")
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("logs -f after SIGINT: %v", err)
	}
	if rest, ok := <-lines; ok {
		t.Errorf("logs -f printed %q more", rest)
	}
}

// Without --bridge-log or --session-dir, logs reads the bridge.log of the
// session the running sidecar names in its status.
func TestLogsFindsTheRunningSidecarsSession(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	state, session := filepath.Join(dir, "state"), filepath.Join(dir, "s", "session")
	p := startSidecar(t, append([]string{bin, "run", "--state-dir", state, "--listen", "127.0.0.1:0", "--"}, simBridge(t, bin, session, "0s")...)...)
	p.waitLog("pairing QR code #1")
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	out, stderr, code := cliRun(t, bin, env, "logs", "-n", "1000", "--state-dir", state)
	if code != 0 || !strings.Contains(out, "WhatsApp bridge listening on port") {
		t.Errorf("logs of the running sidecar: exit %d, %q %q", code, out, stderr)
	}
	p.stopOK()
}

func TestLogsOfAMissingFile(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "bridge.log")
	_, stderr, code := cliRun(t, bin, []string{"PATH=/usr/bin:/bin", "HOME=" + dir}, "logs", "--bridge-log", missing)
	if code != exitError || !strings.Contains(stderr, missing+" does not exist") || !strings.Contains(stderr, "-f waits") {
		t.Errorf("logs of a missing file: exit %d, %q", code, stderr)
	}
}

// Another user's bridge.log is not readable, and logs says whose it is.
func TestLogsOfAnotherUsersFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a second uid")
	}
	bin, _ := binaries(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	log := filepath.Join(dir, "bridge.log")
	writeLines(t, log, 1, 1)
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "logs", "--bridge-log", log)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	out, err := cmd.CombinedOutput()
	if exitCodeOf(err) != exitError || !strings.Contains(string(out), "permission denied") || !strings.Contains(string(out), "run logs as that user") {
		t.Errorf("logs of root's bridge.log as nobody: %v, %q", err, out)
	}
}

func exitCodeOf(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
