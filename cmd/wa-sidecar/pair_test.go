package main

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
)

// simBridge is the command of a simulated bridge that shows a QR code
// every 300 ms and is scanned after pairAfter ("0s": never).
func simBridge(t *testing.T, bin, session, pairAfter string) []string {
	t.Helper()
	port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	if _, err := strconv.Atoi(port); err != nil {
		t.Fatal(port)
	}
	return []string{bin, "simulate-bridge", "--port", port, "--session", session,
		"--qr-every", "300ms", "--pair-after", pairAfter, "--connect-after", "100ms"}
}

// pair against a running sidecar draws the QR codes it is sent as a
// token holder, and exits 0 once the bridge is connected; watch on a
// terminal draws them too, while a piped watch, sending no token, is
// never sent them.
func TestPairDrawsTheQRCodeUntilConnected(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	state, session := filepath.Join(dir, "state"), filepath.Join(dir, "session")
	p := startSidecar(t, append([]string{bin, "run", "--state-dir", state, "--listen", "127.0.0.1:0", "--"}, simBridge(t, bin, session, "4s")...)...)
	p.waitLog("bridge started")

	piped := exec.Command(bin, "watch", "--state-dir", state)
	piped.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	stdout, err := piped.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := piped.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { piped.Process.Kill(); piped.Wait() }()

	watch := startOnTerminal(t, bin, "watch", "--state-dir", state)
	pair := startOnTerminal(t, bin, "pair", "--state-dir", state)
	at := pair.waitFor("Scan this QR code: WhatsApp on your phone", 0)
	pair.waitFor("█", at)
	pair.waitFor("paired: the bridge is connected to WhatsApp", at)
	if code := pair.wait(); code != 0 {
		t.Fatalf("pair: exit %d; it showed:\n%s", code, pair.plain())
	}
	watch.waitFor("Scan this QR code", 0)
	watch.ctrlC()
	if code := watch.wait(); code != 0 {
		t.Errorf("watch: exit %d", code)
	}

	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m, err := feed.DecodeMessage(sc.Bytes())
		if err != nil {
			t.Fatalf("piped watch printed %q: %v", sc.Text(), err)
		}
		if m.Type == feed.TypeHello && m.Control {
			t.Error("piped watch sent the token unasked")
		}
		if m.Event == "qr" {
			if _, ok := m.Fields["qr_rows"]; ok {
				t.Errorf("piped watch was sent the QR code: %s", sc.Text())
			}
			break
		}
	}

	// Paired already: pair says so and exits 0 at once.
	again := startOnTerminal(t, bin, "pair", "--state-dir", state)
	again.waitFor("already paired", 0)
	if code := again.wait(); code != 0 {
		t.Errorf("pair when paired: exit %d", code)
	}
	p.stopOK()
}

// With no sidecar running, pair runs the bridge as run would until it is
// paired, then stops it and leaves nothing running; not paired within
// --wait, it exits 75.
func TestPairRunsTheBridgeWhenNoSidecarRuns(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	state, session := filepath.Join(dir, "state"), filepath.Join(dir, "session")

	never := startOnTerminal(t, append([]string{bin, "pair", "--state-dir", state, "--wait", "3s", "--"}, simBridge(t, bin, session, "0s")...)...)
	never.waitFor("did not connect within --wait", never.waitFor("Scan this QR code", 0))
	if code := never.wait(); code != exitPairTimeout {
		t.Fatalf("pair that is never scanned: exit %d, want %d; it showed:\n%s", code, exitPairTimeout, never.plain())
	}

	pair := startOnTerminal(t, append([]string{bin, "pair", "--state-dir", state, "--"}, simBridge(t, bin, session, "1s")...)...)
	at := pair.waitFor("Scan this QR code", 0)
	pair.waitFor("paired: the bridge is connected to WhatsApp", at)
	if code := pair.wait(); code != 0 {
		t.Fatalf("pair: exit %d; it showed:\n%s", code, pair.plain())
	}
	if _, err := os.Stat(filepath.Join(session, "creds.json")); err != nil {
		t.Errorf("no creds.json after pairing: %v", err)
	}
	// The sidecar it ran is gone with its discovery file and lock.
	if _, err := os.Stat(filepath.Join(state, feed.DiscoveryFileName)); !os.IsNotExist(err) {
		t.Errorf("sidecar.json left behind: %v", err)
	}
	q := startSidecar(t, bin, "run", "--state-dir", state, "--listen", "127.0.0.1:0", "--", bin, "simulate-bridge", "--session", session)
	q.waitLog("bridge started")
	q.stopOK()
}

// pair --state-dir DIR, with no sidecar running for DIR, runs the bridge
// itself (here, with no Hermes install, it finds none: 78) even when
// another sidecar answers at the default address: that one is not DIR's,
// and no token may go to it, so asking it could only end in 77.
func TestPairForAStateDirWithoutSidecarLeavesTheDefaultAddressAlone(t *testing.T) {
	bin, _ := binaries(t)
	ln, err := net.Listen("tcp", feed.DefaultListen)
	if err != nil {
		t.Skipf("the default address is taken, so this test cannot stand in for a sidecar there: %v", err)
	}
	var asked atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		w.Write([]byte(`{"ok":true,"pid":1}`))
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() { srv.Close(); <-served }()

	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "HERMES_HOME=" + filepath.Join(dir, "hermes")}
	_, stderr, code := cliRun(t, bin, env, "pair", "--state-dir", state, "--wait", "10s")
	if code != exitConfig || !strings.Contains(stderr, "no sidecar runs with --state-dir "+state) {
		t.Errorf("pair --state-dir with another sidecar at the default address: exit %d, %q; want %d, running the bridge itself", code, stderr, exitConfig)
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("pair asked the sidecar at the default address %d times", n)
	}
}

// A bridge that cannot show a QR code until a person acts (here it was
// stopped) makes pair say what to do and exit 1, not wait.
func TestPairCannotPairAStoppedBridge(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	state, session := filepath.Join(dir, "state"), filepath.Join(dir, "session")
	p := startSidecar(t, append([]string{bin, "run", "--state-dir", state, "--listen", "127.0.0.1:0", "--"}, simBridge(t, bin, session, "0s")...)...)
	p.waitLog("bridge started")
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	if _, stderr, code := cliRun(t, bin, env, "stop", "--state-dir", state); code != 0 {
		t.Fatalf("stop: %d %q", code, stderr)
	}
	out, stderr, code := cliRun(t, bin, env, "pair", "--state-dir", state)
	if code != exitError || !strings.Contains(stderr, "wa-sidecar start") {
		t.Errorf("pair of a stopped bridge: exit %d, %q", code, stderr)
	}
	// Piped, pair prints the messages as JSON lines, the hello first.
	if line, _, _ := strings.Cut(out, "\n"); !json.Valid([]byte(line)) || !strings.Contains(line, `"hello"`) {
		t.Errorf("pair's stdout: %q", out)
	}
	p.stopOK()
}

// A pair that joins after the bridge showed its QR code draws that code
// at once, from its hello, instead of waiting for the next one (here an
// hour away).
func TestPairDrawsTheCurrentQRCodeAtOnce(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	state, session := filepath.Join(dir, "state"), filepath.Join(dir, "session")
	port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	p := startSidecar(t, bin, "run", "--state-dir", state, "--listen", "127.0.0.1:0", "--",
		bin, "simulate-bridge", "--port", port, "--session", session, "--qr-every", "1h", "--pair-after", "0s")
	p.waitLog("pairing QR code #1")
	pair := startOnTerminal(t, bin, "pair", "--state-dir", state, "--wait", "2s")
	at := pair.waitFor("Scan this QR code", 0)
	pair.waitFor("█", at)
	if code := pair.wait(); code != exitPairTimeout {
		t.Errorf("pair: exit %d, want %d", code, exitPairTimeout)
	}
	if n := strings.Count(pair.plain(), "Scan this QR code"); n != 1 {
		t.Errorf("pair drew %d codes, want the current one once:\n%s", n, pair.plain())
	}
	p.stopOK()
}

// After WhatsApp logged the device out, the sidecar parks the bridge in
// needs_pairing, and pair says what to do instead of waiting.
func TestPairAfterALogout(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	state, session := filepath.Join(dir, "state"), filepath.Join(dir, "session")
	port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	p := startSidecar(t, bin, "run", "--state-dir", state, "--listen", "127.0.0.1:0", "--",
		bin, "simulate-bridge", "--port", port, "--session", session, "--qr-every", "1h", "--crash", "logout", "--crash-after", "300ms")
	p.waitLog("bridge parked")
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	_, stderr, code := cliRun(t, bin, env, "pair", "--state-dir", state)
	if code != exitError || !strings.Contains(stderr, "logged this device out") || !strings.Contains(stderr, "run 'wa-sidecar pair' again") {
		t.Errorf("pair after a logout: exit %d, %q", code, stderr)
	}
	p.stopOK()
}

// What a sidecar sends for a QR code reaches the terminal; whatever it
// holds, nothing that could steer the terminal does.
func FuzzQRRows(f *testing.F) {
	f.Add([]byte(`{"qr":"2@abc,def"}`))
	f.Add([]byte(`{"qr_rows":["█ ▀▄","\u001b]0;x\u0007"]}`))
	f.Add([]byte(`{"qr":{"qr_rows":["a"]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var fields map[string]json.RawMessage
		if json.Unmarshal(b, &fields) != nil {
			return
		}
		rows := append(qrRows(fields), helloQR(feed.Message{Fields: fields})...)
		for _, r := range rows {
			if strings.ContainsFunc(r, func(c rune) bool { return (c < 0x20 && c != '\t') || (c >= 0x7f && c < 0xa0) }) {
				t.Fatalf("row %q keeps a control character", r)
			}
		}
	})
}
