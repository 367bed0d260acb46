package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
)

// These tests run the real wa-sidecar binary over the fake bridge from
// testdata, with real signals, and read its JSON log.

var (
	buildOnce     sync.Once
	buildErr      error
	sidecarBin    string
	fakeBridgeBin string
)

func binaries(t *testing.T) (sidecar, fake string) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wa-sidecar-bin")
		if err != nil {
			buildErr = err
			return
		}
		sidecarBin = filepath.Join(dir, "wa-sidecar")
		if out, err := exec.Command("go", "build", "-o", sidecarBin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build .: %v\n%s", err, out)
			return
		}
		fakeBridgeBin, buildErr = proctest.BuildFakeBridge(dir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return sidecarBin, fakeBridgeBin
}

// sidecarProc is a running wa-sidecar whose log records are collected.
type sidecarProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	recs chan map[string]any
	done chan struct{}
	mu   sync.Mutex
	log  []string
}

func startSidecar(t *testing.T, args ...string) *sidecarProc {
	t.Helper()
	return startCmd(t, exec.Command(args[0], args[1:]...))
}

func startCmd(t *testing.T, cmd *exec.Cmd) *sidecarProc {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Hermetic: a free port and a private state directory, so tests never
	// meet another sidecar on the default port or write to the machine's.
	// A caller that sets cmd.Env makes it hermetic itself.
	if cmd.Env == nil {
		cmd.Env = append(os.Environ(), "WA_SIDECAR_LISTEN=127.0.0.1:0", "WA_SIDECAR_STATE_DIR="+t.TempDir())
	}
	cmd.Env = append(cmd.Env, "WA_SIDECAR_LOG_FORMAT=json")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &sidecarProc{t: t, cmd: cmd, recs: make(chan map[string]any, 10000), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.log = append(p.log, sc.Text())
			p.mu.Unlock()
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil {
				p.recs <- rec
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return p
}

// stopOK sends SIGTERM and expects the sidecar to exit 0.
func (p *sidecarProc) stopOK() {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 0 {
		p.t.Fatalf("sidecar exit code %d after SIGTERM", code)
	}
}

// stopOK sends cmd SIGTERM and expects it to exit 0 with its bridge gone.
func stopOK(t *testing.T, cmd *exec.Cmd, bridge int) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	if code := exitCode(t, cmd); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if proctest.Running(bridge) {
		t.Fatal("bridge still running")
	}
}

// waitLog waits for a record whose msg contains substr and returns it.
func (p *sidecarProc) waitLog(substr string) map[string]any {
	p.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case rec := <-p.recs:
			if msg, _ := rec["msg"].(string); strings.Contains(msg, substr) {
				return rec
			}
		case <-deadline:
			p.t.Fatalf("no log record containing %q; log so far:\n%s", substr, p.logText())
		}
	}
}

// waitDiscoveryOf waits for the sidecar.json that p writes in state once
// its first start is over, and returns it.
func (p *sidecarProc) waitDiscoveryOf(state string) feed.Discovery {
	p.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if d, err := feed.ReadDiscovery(state); err == nil && d.Pid == p.cmd.Process.Pid {
			return d
		}
	}
	p.t.Fatalf("no sidecar.json of pid %d in %s; log so far:\n%s", p.cmd.Process.Pid, state, p.logText())
	return feed.Discovery{}
}

// waitLogs waits for a record containing each of substrs, in any order,
// and returns them in the order of substrs: for records that different
// parts of the sidecar log at about the same time.
func (p *sidecarProc) waitLogs(substrs ...string) []map[string]any {
	p.t.Helper()
	got := make([]map[string]any, len(substrs))
	left := len(substrs)
	deadline := time.After(20 * time.Second)
	for left > 0 {
		select {
		case rec := <-p.recs:
			msg, _ := rec["msg"].(string)
			for i, s := range substrs {
				if got[i] == nil && strings.Contains(msg, s) {
					got[i] = rec
					left--
					break
				}
			}
		case <-deadline:
			p.t.Fatalf("no log records containing all of %q; log so far:\n%s", substrs, p.logText())
		}
	}
	return got
}

func (p *sidecarProc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.log, "\n")
}

// wait waits for the sidecar to exit and returns its exit code.
func (p *sidecarProc) wait() int {
	p.t.Helper()
	errc := make(chan error, 1)
	go func() { <-p.done; errc <- p.cmd.Wait() }()
	select {
	case err := <-errc:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			p.t.Fatal(err)
		}
		return 0
	case <-time.After(30 * time.Second):
		p.t.Fatalf("sidecar did not exit; log:\n%s", p.logText())
		return -1
	}
}

func (p *sidecarProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// runOutput runs a one-shot command of the binary and returns what it
// printed and its exit code; a panic's stack in the output fails the test.
func runOutput(t *testing.T, cmd *exec.Cmd) (string, int) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "goroutine ") {
		t.Fatalf("panic:\n%s", out)
	}
	return string(out), code
}

func pidOf(t *testing.T, rec map[string]any) int {
	t.Helper()
	f, ok := rec["pid"].(float64)
	if !ok || f <= 0 {
		t.Fatalf("record without pid: %v", rec)
	}
	return int(f)
}

func waitNotRunning(t *testing.T, pid int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if !proctest.Running(pid) {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("pid %d still running after %s", pid, within)
	return 0
}

func TestBadFlagsExit64(t *testing.T) {
	bin, fake := binaries(t)
	cases := []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"run", "--backoff-initial", "5s", "--backoff-max", "1s", "--", fake}, "", "--backoff-max"},
		{[]string{"run", "--stop-signal", "BOGUS", "--", fake}, "", "--stop-signal"},
		{[]string{"run", "--stop-signal", "KILL", "--", fake}, "", "--stop-timeout"},
		{[]string{"run", "--normal-signals", "TERM,NOPE", "--", fake}, "", "--normal-signals"},
		{[]string{"run", "--max-restarts", "-1", "--", fake}, "", "--max-restarts"},
		{[]string{"run", "--no-such-flag", "--", fake}, "", "no-such-flag"},
		{[]string{"run", "--stop-timeout", "soon", "--", fake}, "", "stop-timeout"},
		{[]string{"run", "--", fake}, "WA_SIDECAR_BACKOFF_MAX=banana", "BACKOFF_MAX"},
		{[]string{"run", "--log-format", "xml", "--", fake}, "", "--log-format"},
		{[]string{"run", "--bridge-output", "verbatim", "--", fake}, "", "--bridge-output"},
		{[]string{"run", "--backoff-jitter", "1.5", "--", fake}, "", "--backoff-jitter"},
		{[]string{"run", "--tail-lines", "5000", "--", fake}, "", "--tail-lines"},
		{[]string{"run", "--workdir", "/nonexistent/dir", "--", fake}, "", "--workdir"},
		{[]string{"frobnicate"}, "", "frobnicate"},
		// Checked before the bridge is looked for: no Hermes install
		// here must not turn them into exit 78.
		{[]string{"run", "--hermes-home", "/nonexistent", "--port", "70000"}, "", "--port"},
		{[]string{"run", "--hermes-home", "/nonexistent", "--port", "-5"}, "", "--port"},
		{[]string{"run", "--hermes-home", "/nonexistent", "--mode", "foo"}, "", "--mode"},
		{[]string{"run", "--hermes-home", "/nonexistent", "--normal-signals", "FOO"}, "", "--normal-signals"},
		{[]string{"run", "--hermes-home", "/nonexistent", "--health-failures", "0"}, "", "--health-failures"},
		// Both given, and overlapping: the one case left to report (a short
		// --health-period alone takes the timeout down with it).
		{[]string{"run", "--hermes-home", "/nonexistent", "--health-period", "1s", "--health-timeout", "2s"}, "", "--health-timeout"},
		{[]string{"run", "--hermes-home", "/nonexistent", "--bridge-log-max-size", "99999999"}, "", "--bridge-log-max-size"},
		{[]string{"run", "--bridge-log-max-size", "99999999", "--", fake}, "", "--bridge-log-max-size"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			cmd := exec.Command(bin, c.args...)
			if c.env != "" {
				cmd.Env = append(os.Environ(), c.env)
			}
			out, err := cmd.CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != exitUsage {
				t.Fatalf("exit %v, want %d; output:\n%s", err, exitUsage, out)
			}
			if !strings.Contains(string(out), c.want) {
				t.Fatalf("message does not name %q:\n%s", c.want, out)
			}
			if strings.Contains(string(out), "goroutine ") {
				t.Fatalf("panic:\n%s", out)
			}
		})
	}
}

func TestSIGTERMStopsBridgeThenExitsZero(t *testing.T) {
	bin, fake := binaries(t)
	pids := filepath.Join(t.TempDir(), "pids")
	p := startSidecar(t, bin, "run", "--", fake, "-grandchild", "-pidfile", pids)
	bridge := pidOf(t, p.waitLog("bridge started"))
	grand := proctest.WaitPids(t, pids, 2)[1]
	p.signal(syscall.SIGTERM)
	rec := p.waitLog("bridge stopped")
	if !strings.Contains(fmt.Sprint(rec["exit"]), "SIGTERM") {
		t.Fatalf("stop record: %v", rec)
	}
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d; log:\n%s", code, p.logText())
	}
	if proctest.Running(bridge) || proctest.Running(grand) {
		t.Fatalf("left behind: bridge %v grandchild %v", proctest.Running(bridge), proctest.Running(grand))
	}
}

func TestSidecarKilledTakesBridgeDown(t *testing.T) {
	bin, fake := binaries(t)
	p := startSidecar(t, bin, "run", "--", fake, "-hang")
	bridge := pidOf(t, p.waitLog("bridge started"))
	p.signal(syscall.SIGKILL)
	p.wait()
	took := waitNotRunning(t, bridge, 5*time.Second)
	t.Logf("bridge gone %s after the sidecar was SIGKILLed", took)
}

func TestSecondInterruptSkipsTheWait(t *testing.T) {
	bin, fake := binaries(t)
	p := startSidecar(t, bin, "run", "--stop-timeout", "1h", "--", fake, "-ignore-term", "-say", "armed")
	bridge := pidOf(t, p.waitLog("bridge started"))
	p.waitLog("armed") // SIGTERM is ignored from here on
	p.signal(syscall.SIGINT)
	p.waitLog("stopping the bridge")
	p.signal(syscall.SIGINT)
	p.waitLog("killing the bridge's process group")
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if proctest.Running(bridge) {
		t.Fatal("bridge still running")
	}
}

func TestHangupRestartsAndUserSignalsAreForwarded(t *testing.T) {
	bin, fake := binaries(t)
	p := startSidecar(t, bin, "run", "--", fake, "-report-signals", "-say", "armed")
	first := pidOf(t, p.waitLog("bridge started"))
	p.waitLog("armed")
	p.signal(syscall.SIGUSR1)
	p.waitLog("got SIGUSR1")
	p.signal(syscall.SIGUSR2)
	p.waitLog("got SIGUSR2")
	p.signal(syscall.SIGHUP)
	second := pidOf(t, p.waitLog("bridge started"))
	if second == first {
		t.Fatal("SIGHUP did not start a new bridge")
	}
	if proctest.Running(first) {
		t.Fatal("old bridge still running after SIGHUP")
	}
	p.stopOK()
}

func TestBridgeFailureNeverEndsTheSidecar(t *testing.T) {
	bin, fake := binaries(t)
	p := startSidecar(t, bin, "run", "--backoff-initial", "10ms", "--backoff-max", "20ms", "--max-restarts", "3", "--", fake, "-exit", "1")
	p.waitLog("giving up on the bridge")
	// Parked, not exited: it still answers signals and restarts on SIGHUP.
	p.signal(syscall.SIGHUP)
	p.waitLog("bridge started")
	p.stopOK()
}

func TestSubreaperReapsOrphans(t *testing.T) {
	bin, fake := binaries(t)
	p := startSidecar(t, bin, "run", "--subreaper", "--log-level", "debug", "--backoff-initial", "1h", "--backoff-max", "1h", "--",
		fake, "-orphan", "300ms", "-after", "50ms", "-exit", "5")
	p.waitLog("reaping orphaned processes")
	failed := p.waitLog("bridge failed")
	if failed["exit"] != "exit 5 (failure)" {
		t.Fatalf("the bridge's own status was lost: %v", failed)
	}
	p.waitLog("reaped an orphaned process")
	if z := proctest.ZombieChildren(p.cmd.Process.Pid); len(z) > 0 {
		t.Fatalf("zombies under the sidecar: %v", z)
	}
	p.stopOK()
}

// startWithStderr starts the sidecar with its stderr on a pipe whose read
// end the caller holds.
func startWithStderr(t *testing.T, args ...string) (*exec.Cmd, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	cmd := startOn(t, nil, w, args...)
	w.Close()
	return cmd, r
}

// startOn starts the sidecar, hermetic (a free port, a private state
// directory) and logging JSON, with the given stdout and stderr (nil: none).
func startOn(t *testing.T, stdout, stderr *os.File, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if stderr != nil {
		cmd.Stderr = stderr
	}
	cmd.Env = append(os.Environ(), "WA_SIDECAR_LOG_FORMAT=json",
		"WA_SIDECAR_LISTEN=127.0.0.1:0", "WA_SIDECAR_STATE_DIR="+t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	for i := 0; i < 3000; i++ {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never appeared", path)
}

func exitCode(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		if ee, ok := err.(*exec.ExitError); ok {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				t.Fatalf("sidecar killed by %v", ws.Signal())
			}
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(30 * time.Second):
		t.Fatal("sidecar did not exit")
		return -1
	}
}

// TestUnreadStderrBlocksNothing: nobody reads the sidecar's stderr (a
// paused terminal, a stalled log driver), yet a bridge printing far more
// than any pipe holds is not held up, and SIGTERM still stops everything.
func TestUnreadStderrBlocksNothing(t *testing.T) {
	unreadPipeBlocksNothing(t, "stderr")
}

// unreadPipeBlocksNothing runs a chatty bridge with the sidecar's stdout or
// stderr on a pipe nobody reads, and checks that the sidecar still stops
// it and exits 0. For stdout the bridge's output goes there raw.
func unreadPipeBlocksNothing(t *testing.T, stream string) {
	bin, fake := binaries(t)
	dir := t.TempDir()
	done, pids := filepath.Join(dir, "done"), filepath.Join(dir, "pids")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	args := []string{bin, "run", "--", fake, "-pidfile", pids, "-spew", "20000000", "-done-file", done, "-hang"}
	var cmd *exec.Cmd
	if stream == "stdout" {
		cmd = startOn(t, w, nil, append([]string{bin, "run", "--bridge-output", "raw"}, args[2:]...)...)
	} else {
		cmd = startOn(t, nil, w, args...)
	}
	w.Close()
	waitFile(t, done)
	bridge := proctest.WaitPids(t, pids, 1)[0]
	stopOK(t, cmd, bridge)
}

// TestClosedStderrIsNotFatal: the reader of the sidecar's stderr went away
// (`| tee` stopped by Ctrl-C). SIGPIPE must not kill the sidecar before it
// has stopped the bridge.
func TestClosedStderrIsNotFatal(t *testing.T) {
	bin, fake := binaries(t)
	pids := filepath.Join(t.TempDir(), "pids")
	cmd, r := startWithStderr(t, bin, "run", "--", fake, "-pidfile", pids, "-hang")
	bridge := proctest.WaitPids(t, pids, 1)[0]
	r.Close()
	stopOK(t, cmd, bridge)
}

// TestHermesHomeFromEnvironment: like every flag, --hermes-home can come
// from WA_SIDECAR_HERMES_HOME; with nothing there the error names the
// paths it looked at and exits 78, which the gateway's unit never restarts.
func TestHermesHomeFromEnvironment(t *testing.T) {
	bin, _ := binaries(t)
	home := filepath.Join(t.TempDir(), "no-hermes-here")
	cmd := exec.Command(bin, "run")
	cmd.Env = append(os.Environ(), "WA_SIDECAR_HERMES_HOME="+home, "WA_SIDECAR_LISTEN=127.0.0.1:0", "WA_SIDECAR_STATE_DIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 78 {
		t.Fatalf("exit %v, want 78; output:\n%s", err, out)
	}
	if !strings.Contains(string(out), home) {
		t.Fatalf("error does not name the home it searched:\n%s", out)
	}
}

// TestStartPagesAreReleased checks that once the bridge's start has
// settled (it connected, or the sidecar stopped waiting for it to, or the
// connect grace passed while it kept failing) the
// sidecar keeps no more of its binary's code and read-only data resident
// than it has used again since.
func TestStartPagesAreReleased(t *testing.T) {
	bin, fake := binaries(t)
	for _, tc := range []struct {
		name    string
		args    []string
		settles string // the record that must come before the release's
	}{
		{"connected", []string{"--", fake, "-say", "✅ WhatsApp connected!", "-hang"}, "WhatsApp connected"},
		{"not connected within the grace", []string{"--connect-grace", "1s", "--", fake, "-hang"}, "has not connected to WhatsApp within 1s"},
		{"failing before it could connect", []string{"--connect-grace", "1s", "--backoff-initial", "100ms", "--", fake, "-after", "200ms", "-exit", "1"}, "bridge failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startSidecar(t, append([]string{bin, "run", "--log-level", "debug"}, tc.args...)...)
			p.waitLog("bridge started")
			p.waitLog(tc.settles)
			released, _ := p.waitLog("released the start's pages")["KiB"].(float64)
			resident := residentFileKiB(t, p.cmd.Process.Pid, bin)
			t.Logf("released %.0f KiB; %d KiB resident after", released, resident)
			if released <= 0 || float64(resident) >= released {
				t.Errorf("released %.0f KiB of the binary; %d KiB resident after", released, resident)
			}
			p.stopOK()
		})
	}
}

// residentFileKiB sums the resident KiB of pid's read-only mappings of
// file, told by its inode (a path in smaps may be cut at a space, or carry
// " (deleted)").
func residentFileKiB(t *testing.T, pid int, file string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(file, &st); err != nil {
		t.Fatal(err)
	}
	ino := strconv.FormatUint(st.Ino, 10)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	mine := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && !strings.HasSuffix(f[0], ":"):
			mine = f[4] == ino && !strings.Contains(f[1], "w")
		case mine && len(f) >= 2 && f[0] == "Rss:":
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatalf("smaps: %q", line)
			}
			sum += n
		}
	}
	return sum
}
