package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// cliRun runs the wa-sidecar binary as a client command and returns its
// stdout, stderr and exit code.
func cliRun(t *testing.T, bin string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	}
	t.Fatal(err)
	return "", "", 0
}

func TestClientCommandsAgainstARealSidecar(t *testing.T) {
	bin, fake := binaries(t)
	dir := t.TempDir()
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	state := filepath.Join(dir, "state")

	// Nothing runs yet: one clear line and exit 69; healthcheck says 1. The
	// address is one just freed, so a sidecar that happens to run on this
	// machine's default port cannot answer.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	_, stderr, code := cliRun(t, bin, env, "status", "--state-dir", state, "--addr", closed)
	if code != exitNoSidecar || !strings.Contains(stderr, "no sidecar is running") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("status with no sidecar: exit %d, %q", code, stderr)
	}
	if _, _, code := cliRun(t, bin, env, "healthcheck", "--state-dir", state, "--addr", closed); code != 1 {
		t.Fatalf("healthcheck with no sidecar: exit %d", code)
	}

	p := startSidecar(t, bin, "run", "--state-dir", state, "--listen", "127.0.0.1:0", "--", fake, "-hang")
	p.waitLog("bridge started") // after the discovery file is written

	out, _, code := cliRun(t, bin, env, "status", "--state-dir", state)
	var st map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st["state"] != "running" {
		t.Fatalf("status: exit %d, %q", code, out)
	}
	if _, _, code := cliRun(t, bin, env, "healthcheck", "--ready", "--state-dir", state); code != 0 {
		t.Fatalf("healthcheck --ready while running: exit %d", code)
	}
	// healthcheck needs no token, so it never reads one.
	if _, stderr, code := cliRun(t, bin, env, "healthcheck", "--state-dir", state, "--token-file", filepath.Join(dir, "missing")); code != 0 {
		t.Fatalf("healthcheck with an unreadable --token-file: exit %d, %q", code, stderr)
	}

	// Control needs the token; a wrong one is exit 77.
	bad := filepath.Join(dir, "bad-token")
	if err := os.WriteFile(bad, []byte("nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := cliRun(t, bin, env, "stop", "--state-dir", state, "--token-file", bad); code != exitDenied {
		t.Fatalf("stop with a wrong token: exit %d, %q", code, stderr)
	}

	// --token-file beats $WA_SIDECAR_TOKEN, as for run: the flag was
	// typed for this command, the variable may be left from another shell.
	good := filepath.Join(state, "token")
	goodTok, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := cliRun(t, bin, append(env, "WA_SIDECAR_TOKEN=nope"), "status", "--state-dir", state, "--token-file", good); code != 0 {
		t.Fatalf("status with a right --token-file and a wrong $WA_SIDECAR_TOKEN: exit %d, %q", code, stderr)
	}
	// A wrong token is no reason not to read: status says so and reads
	// without it. A control op with it is refused.
	if _, stderr, code := cliRun(t, bin, append(env, "WA_SIDECAR_TOKEN="+strings.TrimSpace(string(goodTok))), "status", "--state-dir", state, "--token-file", bad); code != 0 || !strings.Contains(stderr, "refused the token from "+bad+"; reading without it") {
		t.Fatalf("status with a wrong --token-file and a right $WA_SIDECAR_TOKEN: exit %d, %q", code, stderr)
	}
	if _, stderr, code := cliRun(t, bin, append(env, "WA_SIDECAR_TOKEN="+strings.TrimSpace(string(goodTok))), "restart", "--state-dir", state, "--token-file", bad); code != exitDenied {
		t.Fatalf("restart with a wrong --token-file and a right $WA_SIDECAR_TOKEN: exit %d, %q", code, stderr)
	}

	// watch follows while stop and start act.
	watch := exec.Command(bin, "watch", "--state-dir", state)
	watch.Env = env
	watchOut, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	// Its first line is the hello: from then on it sees every event. On a
	// busy machine it could otherwise still be connecting when the
	// sidecar has gone.
	watchLines := bufio.NewScanner(watchOut)
	watched := make(chan string, 1)
	if !watchLines.Scan() {
		t.Fatalf("watch printed nothing: %v", watchLines.Err())
	}
	go func() {
		var b strings.Builder
		b.WriteString(watchLines.Text() + "\n")
		for watchLines.Scan() {
			b.WriteString(watchLines.Text() + "\n")
		}
		watched <- b.String()
	}()
	out, stderr, code = cliRun(t, bin, env, "stop", "--state-dir", state)
	var res map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res["ok"] != true {
		t.Fatalf("stop: exit %d, %q %q", code, out, stderr)
	}
	p.waitLog("bridge stopped")
	if _, _, code := cliRun(t, bin, env, "healthcheck", "--ready", "--state-dir", state); code != 1 {
		t.Fatalf("healthcheck --ready while stopped: exit %d", code)
	}
	if _, stderr, code := cliRun(t, bin, env, "start", "--state-dir", state); code != 0 {
		t.Fatalf("start: exit %d, %q", code, stderr)
	}
	p.waitLog("bridge started")

	p.stopOK()
	done := make(chan error, 1)
	go func() { text := <-watched; err := watch.Wait(); watched <- text; done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
	case <-time.After(20 * time.Second):
		watch.Process.Kill()
		t.Fatal("watch did not end when the sidecar exited")
	}
	var kinds []string
	for _, line := range strings.Split(strings.TrimSpace(<-watched), "\n") {
		var m struct{ Type, Event string }
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("watch printed %q: %v", line, err)
		}
		kinds = append(kinds, m.Type+":"+m.Event)
	}
	got := strings.Join(kinds, " ")
	for _, want := range []string{"hello:", "event:stopping", "event:stopped", "event:started", "event:exited"} {
		if !strings.Contains(got, want) {
			t.Errorf("watch output lacks %s: %s", want, got)
		}
	}
	if !strings.HasSuffix(got, "event:stopped") {
		t.Errorf("watch did not end with the final stopped event: %s", got)
	}
	// The sidecar took its discovery file with it.
	if _, err := os.Stat(filepath.Join(state, "sidecar.json")); !os.IsNotExist(err) {
		t.Fatalf("sidecar.json left after exit: %v", err)
	}
	if _, _, code := cliRun(t, bin, env, "status", "--state-dir", state, "--addr", closed); code != exitNoSidecar {
		t.Fatalf("status after exit: %d", code)
	}
}

func TestStatusLine(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	started := now.Add(-(3*time.Minute + 12*time.Second))
	sig := "SIGTERM"
	exitAt := now.Add(-5 * time.Minute)
	st := procmon.Status{
		State: procmon.StateRunning, Pid: 812, Since: started, StartedAt: &started, Ready: true, Restarts: 4,
		LastExit: &procmon.ExitRecord{Pid: 700, Signal: &sig, ReturnCode: -15, Class: procmon.ClassShutdown, At: exitAt},
	}
	line := statusLine(st, now, false)
	want := "bridge ready (pid 812), up 3m12s, 4 restarts, last exit: SIGTERM (normal shutdown) 5m00s ago"
	if line != want {
		t.Fatalf("statusLine =\n %q\nwant\n %q", line, want)
	}
	if line, want := statusLine(st, now, true), ansiBold+ansiGreen+"bridge ready (pid 812)"+ansiReset+", up 3m12s"; !strings.HasPrefix(line, want) {
		t.Fatalf("coloured: %q, want it to start with %q", line, want)
	}
	// As a client decodes it from the wire.
	st.Ready = false
	st.LastExit = nil
	whatsapp := map[string]any{"bridge_pid": 812.0, "adoption": map[string]any{"adoptable": false,
		"reasons": []any{map[string]any{"code": "not_connected", "message": "the bridge is not connected to WhatsApp"}, map[string]any{"code": "no_creds", "message": "no creds.json"}}}}
	st.Details = map[string]any{"whatsapp": whatsapp}
	want = "bridge running (pid 812), not ready: the gateway would not adopt it: the bridge is not connected to WhatsApp (and 1 more), up 3m12s, 4 restarts"
	if line := statusLine(st, now, false); line != want {
		t.Fatalf("not adoptable:\n %q\nwant\n %q", line, want)
	}
	// An old child's details say nothing of this one.
	whatsapp["bridge_pid"] = 700.0
	if line, want := statusLine(st, now, false), "bridge running (pid 812), not ready yet, up 3m12s, 4 restarts"; line != want {
		t.Fatalf("old child's details:\n %q\nwant\n %q", line, want)
	}
	for d, want := range map[time.Duration]string{
		850 * time.Millisecond: "850ms", 42 * time.Second: "42s", 5*time.Hour + 3*time.Minute: "5h3m", 52 * time.Hour: "2d4h",
	} {
		if got := ago(d); got != want {
			t.Errorf("ago(%v) = %q, want %q", d, got, want)
		}
	}
}

// A second run on the same state directory must leave the first sidecar's
// token and discovery file alone, whether it fails to bind or would bind
// elsewhere: it exits 75 and names the holder.
func TestSecondRunOnOneStateDirExits75(t *testing.T) {
	bin, fake := binaries(t)
	dir := t.TempDir()
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	state := filepath.Join(dir, "state")
	p := startSidecar(t, bin, "run", "--state-dir", state, "--listen", "127.0.0.1:0", "--", fake, "-hang")
	// "bridge started" is logged once the token and the discovery file
	// are written, and the status server's "listening" may come either
	// side of it.
	p.waitLog("bridge started")
	addr := listenOf(t, state)
	token, err := os.ReadFile(filepath.Join(state, "token"))
	if err != nil {
		t.Fatal(err)
	}
	disc, err := os.ReadFile(filepath.Join(state, "sidecar.json"))
	if err != nil {
		t.Fatal(err)
	}

	// 192.0.2.1 (TEST-NET-1) is on no interface: a well-formed address
	// that cannot be bound. A malformed one is a usage error, found first.
	for _, listen := range []string{addr, "192.0.2.1:7390", "127.0.0.1:0"} {
		cmd := exec.Command(bin, "run", "--state-dir", state, "--listen", listen, "--", fake, "-hang")
		cmd.Env = env
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// A safety net, not a timing assertion: a second run that starts
		// serving would otherwise never end.
		timer := time.AfterFunc(30*time.Second, func() { cmd.Process.Signal(syscall.SIGTERM) })
		err := cmd.Wait()
		timer.Stop()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitTempFail {
			t.Errorf("second run --listen %s: %v, want exit %d; stderr:\n%s", listen, err, exitTempFail, stderr.String())
		}
		want := fmt.Sprintf("pid %d, wa-sidecar", p.cmd.Process.Pid)
		if !strings.Contains(stderr.String(), want) || !strings.Contains(stderr.String(), "--state-dir") {
			t.Errorf("second run --listen %s: stderr %q does not name the holder (%s) and --state-dir", listen, stderr.String(), want)
		}
		if now, _ := os.ReadFile(filepath.Join(state, "token")); string(now) != string(token) {
			t.Fatalf("second run --listen %s replaced the first one's token", listen)
		}
		if now, _ := os.ReadFile(filepath.Join(state, "sidecar.json")); string(now) != string(disc) {
			t.Fatalf("second run --listen %s replaced sidecar.json:\n%s", listen, now)
		}
	}
	// The first sidecar's clients still have control.
	if _, stderr, code := cliRun(t, bin, env, "stop", "--state-dir", state); code != 0 {
		t.Fatalf("stop after the second runs: exit %d, %q", code, stderr)
	}
	p.stopOK()
	// Its lock went with it: the next sidecar on this state directory starts.
	q := startSidecar(t, bin, "run", "--state-dir", state, "--listen", "127.0.0.1:0", "--", fake, "-hang")
	q.waitLog("bridge started") // its signal handlers are in place
	q.signal(syscall.SIGTERM)
	if code := q.wait(); code != 0 {
		t.Fatalf("third sidecar exit %d", code)
	}
}

// A state directory without sidecar.json names no sidecar, so its token
// (left from an old run) must not be sent to whatever answers on the
// default address. Reads may still try there, and say so.
func TestClientSendsNoTokenToTheDefaultAddress(t *testing.T) {
	bin, _ := binaries(t)
	ln, err := net.Listen("tcp", feed.DefaultListen)
	if err != nil {
		t.Skipf("the default address is taken, so this test cannot stand in for a sidecar there: %v", err)
	}
	var mu sync.Mutex
	var auth []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		switch r.URL.Path {
		case "/healthz":
			w.Write([]byte(`{"ok":true,"pid":1}`))
		case "/v1/status":
			w.Write([]byte(`{"state":"running","pid":2,"since":"2026-01-01T00:00:00Z","ready":true,"restarts":0,"consecutive_failures":0,"crashloop":false,"last_exit":null,"next_start_at":null}`))
		default:
			http.NotFound(w, r)
		}
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	stopSrv := sync.OnceFunc(func() { srv.Close(); <-served })
	defer stopSrv()

	dir := t.TempDir()
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "token"), []byte("stale-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := cliRun(t, bin, env, "status", "--state-dir", state)
	if code != 0 || !strings.Contains(out, `"running"`) {
		t.Fatalf("status: exit %d, %q %q", code, out, stderr)
	}
	if !strings.Contains(stderr, feed.DefaultListen) || !strings.Contains(stderr, "sidecar.json") {
		t.Errorf("status does not say it tried the default address for want of sidecar.json: %q", stderr)
	}
	if _, stderr, code := cliRun(t, bin, env, "stop", "--state-dir", state); code != exitDenied || !strings.Contains(stderr, feed.DefaultListen) {
		t.Errorf("stop: exit %d, %q; want %d naming the default address", code, stderr, exitDenied)
	}
	if _, stderr, code := cliRun(t, bin, env, "healthcheck", "--state-dir", state); code != 0 {
		t.Errorf("healthcheck: exit %d, %q", code, stderr)
	}
	mu.Lock()
	for _, a := range auth {
		if a != "" {
			t.Errorf("a client sent Authorization %q to the default address", a)
		}
	}
	n := len(auth)
	mu.Unlock()
	if n == 0 {
		t.Fatal("no request reached the default address")
	}

	// With nothing there, a control op says no sidecar runs: 69.
	stopSrv()
	if _, stderr, code := cliRun(t, bin, env, "stop", "--state-dir", state); code != exitNoSidecar || !strings.Contains(stderr, feed.DefaultListen) {
		t.Errorf("stop with nothing at the default address: exit %d, %q; want %d", code, stderr, exitNoSidecar)
	}
}

// watch says in one line that it lost the sidecar, and exits 69, when the
// sidecar dies without the closing handshake.
func TestWatchLosesTheSidecar(t *testing.T) {
	bin, fake := binaries(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	p := startSidecar(t, bin, "run", "--state-dir", state, "--listen", "127.0.0.1:0", "--", fake, "-hang")
	// "bridge started" is logged once the token and the discovery file
	// are written, and the status server's "listening" may come either
	// side of it.
	p.waitLog("bridge started")
	addr := listenOf(t, state)

	watch := exec.Command(bin, "watch", "--state-dir", state)
	watch.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	var stderr strings.Builder
	watch.Stderr = &stderr
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer watch.Process.Kill()
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	if !sc.Scan() || !strings.Contains(sc.Text(), `"hello"`) {
		t.Fatalf("watch printed no hello: %q", sc.Text())
	}
	p.cmd.Process.Kill()
	p.wait()
	io.Copy(io.Discard, stdout)
	err = watch.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitNoSidecar {
		t.Fatalf("watch after the sidecar died: %v, want exit %d; stderr %q", err, exitNoSidecar, stderr.String())
	}
	want := "wa-sidecar: lost the connection to the sidecar at " + addr + "\n"
	if stderr.String() != want {
		t.Fatalf("watch stderr %q, want %q", stderr.String(), want)
	}
}

// listenOf is the address in a running sidecar's discovery file.
func listenOf(t *testing.T, state string) string {
	t.Helper()
	d, err := feed.ReadDiscovery(state)
	if err != nil || d.Listen == "" {
		t.Fatalf("discovery file: %+v, %v", d, err)
	}
	return d.Listen
}

// In watch, the state an event led to stays on the event's line; the
// bridge's last output line comes below it, alone.
func TestEventLineKeepsTheTailApart(t *testing.T) {
	m, err := feed.DecodeMessage([]byte(`{"type":"event","seq":3,"at":"2026-01-02T03:04:05Z","event":"exited","pid":9,"code":1,"signal":null,"returncode":1,"class":"failure","requested":false,"uptime_ms":5,"tail":["boom"],"status":{"state":"backoff","pid":0}}`))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(eventLine(m, false), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], "→ backoff") || lines[1] != "    │ boom" {
		t.Fatalf("eventLine = %q", lines)
	}
}

// The Python example client answers a missing sidecar as the CLI does:
// one line and exit 69, not a traceback.
func TestPythonExampleWithoutASidecar(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(py, filepath.Join("..", "..", "docs", "examples", "client.py"), "--addr", closed)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitNoSidecar || strings.Count(stderr.String(), "\n") != 1 || !strings.Contains(stderr.String(), closed) {
		t.Fatalf("client.py with no sidecar: %v, stderr %q", err, stderr.String())
	}
}

// run warns when the token file it is given can be read by other users.
func TestRunWarnsOfAReadableTokenFile(t *testing.T) {
	bin, fake := binaries(t)
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("shared-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tok, 0o644); err != nil {
		t.Fatal(err)
	}
	p := startSidecar(t, bin, "run", "--state-dir", filepath.Join(dir, "state"), "--token-file", tok, "--", fake, "-hang")
	rec := p.waitLog("other users can read the control token")
	if rec["file"] != tok || rec["mode"] != "0644" {
		t.Errorf("warning %v", rec)
	}
	p.waitLog("bridge started")
	if strings.Contains(p.logText(), "shared-token") {
		t.Error("the log holds the token")
	}
	p.stopOK()
}

// TestHealthcheckWhileTheBridgeIsDown: a container's HEALTHCHECK (plain
// healthcheck) must stay healthy while the bridge waits in backoff, since
// restarting the sidecar would not help the bridge; --ready tells the truth
// about the bridge.
func TestHealthcheckWhileTheBridgeIsDown(t *testing.T) {
	bin, fake := binaries(t)
	state := t.TempDir()
	p := startSidecar(t, bin, "run", "--state-dir", state, "--backoff-initial", "1h", "--backoff-max", "1h", "--", fake, "-exit", "1")
	p.waitLog("restarting the bridge after a delay")
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	if _, stderr, code := cliRun(t, bin, env, "healthcheck", "--state-dir", state); code != 0 {
		t.Fatalf("healthcheck during backoff: exit %d, %s", code, stderr)
	}
	if _, _, code := cliRun(t, bin, env, "healthcheck", "--ready", "--state-dir", state); code != 1 {
		t.Fatalf("healthcheck --ready during backoff: exit %d", code)
	}
	p.stopOK()
}

// status exits as systemctl is-active does: 0 while the bridge runs, 3
// while it does not (here: given up), with or without --json, whose
// output stays the snapshot.
func TestStatusExitsNonZeroWhenTheBridgeIsNotUp(t *testing.T) {
	bin, fake := binaries(t)
	dir := t.TempDir()
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	state := filepath.Join(dir, "state")
	p := startSidecar(t, bin, "run", "--state-dir", state, "--max-restarts", "1", "--backoff-initial", "10ms", "--", fake, "-exit", "1")
	p.waitLog("giving up on the bridge")
	out, stderr, code := cliRun(t, bin, env, "status", "--state-dir", state)
	var st map[string]any
	if code != exitNotRunning || json.Unmarshal([]byte(out), &st) != nil || st["state"] != "given_up" || stderr != "" {
		t.Errorf("status while given_up: exit %d, %q %q; want %d and the snapshot", code, out, stderr, exitNotRunning)
	}
	if _, _, code := cliRun(t, bin, env, "status", "--json", "--state-dir", state); code != exitNotRunning {
		t.Errorf("status --json while given_up: exit %d", code)
	}
	if _, stderr, code := cliRun(t, bin, env, "start", "--state-dir", state); code != 0 {
		t.Fatalf("start: exit %d %q", code, stderr)
	}
	p.stopOK()

	q := startSidecar(t, bin, "run", "--state-dir", state, "--", fake, "-hang")
	q.waitLog("bridge started")
	if _, stderr, code := cliRun(t, bin, env, "status", "--state-dir", state); code != 0 {
		t.Errorf("status while running: exit %d %q", code, stderr)
	}
	q.stopOK()
}

// The human status reads like supervisorctl's: a field a line.
func TestStatusTable(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	started := now.Add(-(3*time.Minute + 12*time.Second))
	sig := "SIGTERM"
	st := procmon.Status{
		State: procmon.StateRunning, Pid: 812, Since: started, StartedAt: &started, Ready: true, Restarts: 4, ConsecutiveFailures: 1,
		LastExit: &procmon.ExitRecord{Pid: 700, Signal: &sig, ReturnCode: -15, Class: procmon.ClassShutdown, At: now.Add(-5 * time.Minute)},
		Details: map[string]any{"whatsapp": map[string]any{"connection": "connected", "bridge_pid": 812.0,
			"user":     map[string]any{"id": "491701234567@s.whatsapp.net", "name": "Ada"},
			"adoption": map[string]any{"adoptable": true, "reasons": []any{}}}},
	}
	want := "State:     running\n" +
		"PID:       812\n" +
		"Uptime:    3m12s\n" +
		"Restarts:  4 (1 failure in a row)\n" +
		"WhatsApp:  connected as Ada (491701234567@s.whatsapp.net)\n" +
		"Adoptable: yes\n" +
		"Last exit: SIGTERM (normal shutdown), 5m00s ago\n"
	if got := statusTable(st, now, false); got != want {
		t.Errorf("statusTable =\n%s\nwant\n%s", got, want)
	}

	// Parked, with a reason code from the snapshot and a message that a
	// bridge could have filled with escape sequences.
	parked := procmon.Status{State: "needs_pairing", Since: now.Add(-time.Minute), Message: "logged out\x1b]0;owned\x07", Reason: "logged_out",
		Details: map[string]any{"whatsapp": map[string]any{"connection": "down", "bridge_pid": 0.0}}}
	got := statusTable(parked, now, false)
	for _, line := range []string{"PID:       -", "Uptime:    - (needs_pairing for 1m00s)", "WhatsApp:  down",
		"Adoptable: unknown (the gateway's checks are not known)", "Last exit: -", `Reason:    logged_out: logged out\x1b]0;owned\a`} {
		if !strings.Contains(got, line+"\n") {
			t.Errorf("statusTable lacks %q:\n%s", line, got)
		}
	}
	// A snapshot from before the layer heard of the new child.
	st.Details["whatsapp"].(map[string]any)["bridge_pid"] = 700.0
	if got := statusTable(st, now, false); !strings.Contains(got, "WhatsApp:  unknown\n") {
		t.Errorf("an old child's connection was shown as the new one's:\n%s", got)
	}
	// The process a state waits on.
	busy := procmon.Status{State: procmon.StateBackoff, Reason: "port_busy", Holder: &procmon.Holder{Pid: 812, Name: "python3"}, Message: "port 3000 is in use"}
	if got := statusTable(busy, now, false); !strings.Contains(got, "Reason:    port_busy (held by pid 812 (python3)): port 3000 is in use\n") {
		t.Errorf("the holder is missing:\n%s", got)
	}
	// The flag that set the limit, and how to start again, are cmd's to add.
	gaveUp := procmon.Status{State: procmon.StateGivenUp, Reason: procmon.ReasonMaxRestarts, Message: "it failed 5 times in a row, the most allowed; a start command tries again"}
	if got, want := reasonText(gaveUp), "max_restarts: it failed 5 times in a row, the most allowed; a start command tries again ('wa-sidecar start' or a SIGHUP is one; --max-restarts sets the most)"; got != want {
		t.Errorf("given up: %q; want %q", got, want)
	}
}

// On a terminal, restart, stop and start say done once the bridge is up
// again or down, as systemctl does, not as soon as the command was taken
// (with the bridge still stopping).
func TestControlOpsOnATerminalAreDoneWhenTheBridgeIs(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	state, session := filepath.Join(dir, "state"), filepath.Join(dir, "session")
	p := startSidecar(t, append([]string{bin, "run", "--state-dir", state, "--listen", "127.0.0.1:0", "--"}, simBridge(t, bin, session, "1s")...)...)
	first := fmt.Sprintf("(pid %v)", p.waitLog("bridge started")["pid"])
	for _, tc := range []struct{ op, want string }{
		{"restart", "restart: done; bridge running (pid "},
		{"stop", "stop: done; bridge stopped on request"},
		{"start", "start: done; bridge running (pid "},
	} {
		o := startOnTerminal(t, bin, tc.op, "--state-dir", state)
		code := o.wait()
		<-o.done
		if out := o.plain(); code != 0 || !strings.Contains(out, tc.want) || strings.Contains(out, first) {
			t.Fatalf("%s on a terminal: exit %d, %q; want a line starting %q, of a bridge other than %s", tc.op, code, out, tc.want, first)
		}
	}
	p.stopOK()
}
