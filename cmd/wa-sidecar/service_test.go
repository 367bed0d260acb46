package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/internal/unit/unitcheck"
)

// printedFiles splits the output of install-service --print into the
// files it shows, by the comment line naming each one's path.
func printedFiles(t *testing.T, out string) (paths, texts []string) {
	t.Helper()
	for _, part := range strings.SplitAfter(out, "\n") {
		if p, ok := strings.CutPrefix(part, "# /"); ok && !strings.Contains(p, " ") {
			paths = append(paths, "/"+strings.TrimSuffix(p, "\n"))
			texts = append(texts, "")
			continue
		}
		if len(texts) == 0 {
			t.Fatalf("--print output does not start with a path comment:\n%s", out)
		}
		texts[len(texts)-1] += part
	}
	// A blank line separates the files.
	for i := range len(texts) - 1 {
		texts[i] = strings.TrimSuffix(texts[i], "\n")
	}
	return paths, texts
}

// TestInstallServiceCommand runs the real binary: it writes the unit where
// systemd --user looks, prints the commands to run next, leaves an equal
// file alone, refuses to overwrite a different one without --force, and
// refuses bad input with exit 64.
func TestInstallServiceCommand(t *testing.T) {
	bin, _ := binaries(t)
	cfg := t.TempDir()
	home := t.TempDir()
	run := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"install-service"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+cfg, "HERMES_HOME=/srv/hermes home")
		return runOutput(t, cmd)
	}
	unitFile := filepath.Join(cfg, "systemd", "user", "wa-sidecar.service")
	// HERMES_HOME outside ~/.hermes is a root of its own to the gateway,
	// so its unit has the plain name.
	dropinFile := filepath.Join(cfg, "systemd", "user", "hermes-gateway.service.d", "wa-sidecar.conf")

	out, code := run("--print", "--", "--backoff-max", "30s")
	if code != 0 {
		t.Fatalf("--print exit %d:\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(cfg, "systemd")); !os.IsNotExist(err) {
		t.Fatalf("--print wrote a file: %v", err)
	}
	paths, texts := printedFiles(t, out)
	if len(paths) != 2 || paths[0] != unitFile || paths[1] != dropinFile {
		t.Fatalf("--print shows %q; want the unit, then the drop-in:\n%s", paths, out)
	}
	printed, printedDropin := texts[0], texts[1]
	u := unitcheck.Parse(t, printed)
	if got := unitcheck.One(t, u, "Service", "ExecStart"); got != bin+" run --stop-timeout 10s --backoff-max 30s" {
		t.Errorf("ExecStart = %q", got)
	}
	if env := u["Service"]["Environment"]; len(env) != 2 || env[1] != `"HERMES_HOME=/srv/hermes home"` {
		t.Errorf("Environment = %q; want PATH and HERMES_HOME", env)
	}

	d := unitcheck.Parse(t, printedDropin)
	if got := unitcheck.One(t, d, "Service", "ExecStartPre"); got != "-"+bin+" healthcheck --ready --wait 1m30s" {
		t.Errorf("drop-in ExecStartPre = %q", got)
	}

	out, code = run("--", "--backoff-max", "30s")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for path, want := range map[string]string{unitFile: printed, dropinFile: printedDropin} {
		written, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(written) != want {
			t.Errorf("written %s differs from --print:\n%s\nvs\n%s", path, written, want)
		}
	}
	// The commands to run next, in an order that works: the sidecar is
	// running before the gateway restarts into its wait for the bridge.
	last := -1
	for _, want := range []string{
		"Wrote " + unitFile,
		"Wrote " + dropinFile,
		"systemctl --user daemon-reload",
		"systemctl --user enable --now wa-sidecar.service",
		"loginctl enable-linger ",
		"systemctl --user restart hermes-gateway.service",
	} {
		i := strings.Index(out, want)
		if i < 0 || i < last {
			t.Errorf("output lacks %q, or has it out of order:\n%s", want, out)
		}
		last = i
	}
	// No gateway unit is installed in this test's home: said, since the
	// drop-in would then wait for a unit that never starts.
	if !strings.Contains(out, "warning: no hermes-gateway.service found") {
		t.Errorf("no warning about the missing gateway unit:\n%s", out)
	}
	if err := os.MkdirAll(filepath.Join(home, ".config", "systemd", "user"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".config", "systemd", "user", "hermes-gateway.service"), []byte("[Service]\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	if out, code = run("--", "--backoff-max", "30s"); code != 0 || strings.Count(out, "Unchanged") != 2 || strings.Contains(out, "found") {
		t.Errorf("same unit again, with the gateway's unit in ~/.config: exit %d:\n%s", code, out)
	}
	// A drop-in that differs is not replaced without --force either, and
	// then neither file is written.
	if out, code = run("--gateway-wait", "2m", "--", "--backoff-max", "30s"); code != 1 || !strings.Contains(out, dropinFile+" exists and differs") {
		t.Errorf("different drop-in without --force: exit %d, want 1 and a hint:\n%s", code, out)
	}
	if out, code = run("--stop-timeout", "30s"); code != 1 || !strings.Contains(out, "--force") {
		t.Errorf("different unit without --force: exit %d, want 1 and a hint:\n%s", code, out)
	}
	if out, code = run("--stop-timeout", "30s", "--force"); code != 0 {
		t.Errorf("--force: exit %d:\n%s", code, out)
	}
	if b, _ := os.ReadFile(unitFile); !strings.Contains(string(b), "TimeoutStopSec=35\n") {
		t.Errorf("--force did not replace the unit:\n%s", b)
	}

	// A second sidecar for the same gateway would replace the first one's
	// drop-in: this one serves another gateway.
	if out, code = run("--name", "wa-sidecar-work", "--env", "WHATSAPP_MODE=bot"); code != 1 || !strings.Contains(out, dropinFile+" exists and differs") {
		t.Errorf("a second sidecar for the same gateway: exit %d, want 1 and a hint:\n%s", code, out)
	}
	named, code := run("--name", "wa-sidecar-work.service", "--gateway-unit", "hermes-gateway-work", "--env", "WHATSAPP_MODE=bot")
	if code != 0 || !strings.Contains(named, "enable --now wa-sidecar-work.service") {
		t.Errorf("--name: exit %d:\n%s", code, named)
	}
	// A second unit on the first one's status address and state directory
	// would exit 75 while the first runs: said at once.
	if !strings.Contains(named, "warning: wa-sidecar-work does not set both --listen and --state-dir") {
		t.Errorf("--name without its own --listen and --state-dir: no warning:\n%s", named)
	}
	if b, _ := os.ReadFile(filepath.Join(cfg, "systemd", "user", "wa-sidecar-work.service")); !strings.Contains(string(b), `Environment="WHATSAPP_MODE=bot"`) {
		t.Errorf("--env not in the unit:\n%s", b)
	}
	own, code := run("--name", "wa-sidecar-work", "--gateway-unit", "hermes-gateway-work", "--force", "--env", "WA_SIDECAR_STATE_DIR=/srv/work", "--", "--listen", "127.0.0.1:7391")
	if code != 0 || strings.Contains(own, "does not set both") {
		t.Errorf("--name with its own --listen and state dir: exit %d:\n%s", code, own)
	}

	// The gateway's unit can be named, or left alone.
	if out, code = run("--force", "--gateway-unit", "hermes-gateway-coder.service", "--gateway-wait", "2m"); code != 0 || !strings.Contains(out, "restart hermes-gateway-coder.service") {
		t.Errorf("--gateway-unit: exit %d:\n%s", code, out)
	}
	b, _ := os.ReadFile(filepath.Join(cfg, "systemd", "user", "hermes-gateway-coder.service.d", "wa-sidecar.conf"))
	if d := unitcheck.Parse(t, string(b)); unitcheck.One(t, d, "Service", "TimeoutStartSec") != "150" || unitcheck.One(t, d, "Unit", "After") != "wa-sidecar.service" {
		t.Errorf("--gateway-unit, --gateway-wait 2m: drop-in\n%s", b)
	}
	if out, code = run("--print", "--no-gateway-dropin"); code != 0 || strings.Contains(out, "wa-sidecar.conf") || strings.Count(out, "[Service]") != 1 {
		t.Errorf("--print --no-gateway-dropin: exit %d, want the unit alone:\n%s", code, out)
	}
	if out, code = run("--no-gateway-dropin", "--force"); code != 0 || strings.Contains(out, "restart hermes-gateway") || strings.Contains(out, "wa-sidecar.conf") {
		t.Errorf("--no-gateway-dropin: exit %d, want nothing about the gateway:\n%s", code, out)
	}
	// The check in the drop-in reaches the sidecar where its unit puts it.
	out, code = run("--print", "--name", "wa-sidecar-work", "--", "--listen", "127.0.0.1:7391", "--state-dir", "state dir/work", "--hermes-home", "/nonexistent-wa-sidecar-test/data/profiles/work")
	if code != 0 {
		t.Fatalf("--print with --listen, --state-dir and a profile's home: exit %d:\n%s", code, out)
	}
	paths, texts = printedFiles(t, out)
	if len(paths) != 2 || paths[1] != filepath.Join(cfg, "systemd", "user", "hermes-gateway-work.service.d", "wa-sidecar.conf") {
		t.Fatalf("profile work: files %q", paths)
	}
	d = unitcheck.Parse(t, texts[1])
	if got, want := unitcheck.One(t, d, "Service", "ExecStartPre"), "-"+bin+` healthcheck --ready --wait 1m30s --state-dir "`+home+`/state dir/work" --addr 127.0.0.1:7391`; got != want {
		t.Errorf("ExecStartPre = %q; want %q", got, want)
	}
	if got := unitcheck.One(t, d, "Unit", "Wants"); got != "wa-sidecar-work.service" {
		t.Errorf("Wants = %q", got)
	}

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--", "--stop-timeout", "5s"}, "install-service itself"},
		{[]string{"--", "--stop-timeout=5s"}, "install-service itself"},
		{[]string{"--", "--no-such-flag"}, "no-such-flag"},
		{[]string{"--", "--backoff-max", "30s", "Justfile"}, `"Justfile" after -- is not a flag of run`},
		{[]string{"--", "--backoff-max", "soon"}, "backoff-max"},
		{[]string{"--name", "my unit"}, "--name"},
		{[]string{"--watchdog", "1s"}, "--watchdog"},
		{[]string{"--stop-timeout", "0s"}, "--stop-timeout"},
		{[]string{"--env", "WA_SIDECAR_TEST_SURELY_UNSET"}, "not set"},
		{[]string{"--env", "=x"}, "--env"},
		{[]string{"--gateway-wait", "0s"}, "--gateway-wait"},
		{[]string{"--gateway-wait", "-1m"}, "--gateway-wait"},
		{[]string{"--gateway-unit", "my gateway"}, "--gateway-unit"},
		{[]string{"--gateway-unit", "wa-sidecar"}, "--gateway-unit"},
	} {
		out, code := run(bad.args...)
		if code != exitUsage || !strings.Contains(out, bad.want) {
			t.Errorf("install-service %q: exit %d, want %d and a message naming %q:\n%s", bad.args, code, exitUsage, bad.want, out)
		}
	}
}

// TestSystemdNotifyFromTheBinary runs the real sidecar as systemd would
// run a Type=notify unit, with NOTIFY_SOCKET and WATCHDOG_USEC pointing at
// a socket of the test's: it must send READY=1, a STATUS= saying the
// bridge is ready, WATCHDOG=1 pings, and STOPPING=1 at SIGTERM, then exit 0.
func TestSystemdNotifyFromTheBinary(t *testing.T) {
	bin, fake := binaries(t)
	sock, conn := notifySocket(t)
	state := t.TempDir()
	msgs := make(chan string, 1024)
	// What sidecar.json said when READY=1 came: the units started after
	// the sidecar's READY=1 (the gateway's) find it through its state
	// directory, so it must be there already. Read here, as the message
	// arrives, not after the test has waited for something else.
	atReady := make(chan error, 1)
	go func() {
		defer close(msgs)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if m := string(buf[:n]); m == "READY=1" {
				_, err := feed.ReadDiscovery(state)
				select {
				case atReady <- err:
				default:
				}
			}
			msgs <- string(buf[:n])
		}
	}()
	var seen []string
	await := func(what string, ok func(string) bool) {
		t.Helper()
		for _, m := range seen {
			if ok(m) {
				return
			}
		}
		deadline := time.After(20 * time.Second)
		for {
			select {
			case m := <-msgs:
				seen = append(seen, m)
				if ok(m) {
					return
				}
			case <-deadline:
				t.Fatalf("no %s from the sidecar; got %q", what, seen)
			}
		}
	}

	// startCmd passes this process's environment on.
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000")
	p := startSidecar(t, bin, "run", "--state-dir", state, "--", fake, "-hang")
	ready := fmt.Sprintf("STATUS=bridge ready (pid %v), up <1m", p.waitLog("bridge started")["pid"])
	// READY=1 comes once the state directory's files are written, right
	// after the first spawn: the bridge's first STATUS= may come before it.
	await("READY=1", func(m string) bool { return m == "READY=1" })
	if err := <-atReady; err != nil {
		t.Fatalf("sidecar.json when READY=1 came: %v", err)
	}
	await("a ready STATUS=", func(m string) bool { return m == ready })
	await("WATCHDOG=1", func(m string) bool { return m == "WATCHDOG=1" })
	p.signal(syscall.SIGTERM)
	await("STOPPING=1", func(m string) bool { return strings.HasPrefix(m, "STOPPING=1") })
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d; log:\n%s", code, p.logText())
	}
	readies := 0
	for _, m := range seen {
		if m == "READY=1" {
			readies++
		}
	}
	if readies != 1 {
		t.Errorf("READY=1 sent %d times; want once (messages %q)", readies, seen)
	}
}

// TestDeployUnitIsCurrent keeps deploy/wa-sidecar.service, the example for
// readers who install by hand, equal to what install-service writes,
// PATH included (install-service copies the caller's; the example has the
// usual places of node, for the reader to extend).
func TestDeployUnitIsCurrent(t *testing.T) {
	want, err := serviceUnit("/usr/local/bin/wa-sidecar", nil, 10*time.Second, 0, []string{"PATH=/usr/local/bin:/usr/bin:/bin"}).Render()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "deploy", "wa-sidecar.service")
	if os.Getenv("WA_SIDECAR_UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s is out of date; regenerate it with WA_SIDECAR_UPDATE_GOLDEN=1 go test -run TestDeployUnitIsCurrent ./cmd/wa-sidecar\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestUnitCheckArgs: the gateway's check reaches the sidecar the unit
// runs, whichever way the unit sets its state directory and address.
func TestUnitCheckArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  map[string]string
		env  []string
		want []string
	}{
		{"defaults", nil, []string{"PATH=/bin"}, nil},
		{"flags", map[string]string{"listen": "127.0.0.1:7391", "state-dir": "/srv/state"}, nil,
			[]string{"--state-dir", "/srv/state", "--addr", "127.0.0.1:7391"}},
		{"variables", nil, []string{"WA_SIDECAR_LISTEN=127.0.0.1:7392", "WA_SIDECAR_STATE_DIR=/srv/s"},
			[]string{"--state-dir", "/srv/s", "--addr", "127.0.0.1:7392"}},
		{"a flag beats its variable", map[string]string{"listen": "127.0.0.1:7391"}, []string{"WA_SIDECAR_LISTEN=127.0.0.1:7392"},
			[]string{"--addr", "127.0.0.1:7391"}},
		{"relative to the home, as systemd runs user units", map[string]string{"state-dir": "state/wa", "listen": "unix:run/wa.sock"}, nil,
			[]string{"--state-dir", "/home/ann/state/wa", "--addr", "unix:/home/ann/run/wa.sock"}},
		{"port 0 is only in sidecar.json", map[string]string{"listen": "127.0.0.1:0", "state-dir": "/srv/s"}, nil,
			[]string{"--state-dir", "/srv/s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := checkArgs(tc.set, tc.env, "/home/ann")
			if err != nil || strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("checkArgs = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestInstallServiceGatewayName runs the binary with a custom HERMES_HOME
// and --hermes-home, and checks where the drop-in goes.
func TestInstallServiceGatewayName(t *testing.T) {
	bin, _ := binaries(t)
	cfg := t.TempDir()
	const home = "/nonexistent-wa-sidecar-test/ann"
	for _, tc := range []struct {
		env  string
		args []string
		want string
	}{
		{"HERMES_HOME=" + home + "/.hermes/profiles/coder", nil, "hermes-gateway-coder"},
		{"HERMES_HOME=" + home + "/.hermes/work", nil, "hermes-gateway-8fc3d733"},
		// The sidecar's own --hermes-home beats the copied HERMES_HOME.
		{"HERMES_HOME=" + home + "/.hermes/work", []string{"--", "--hermes-home", home + "/.hermes"}, "hermes-gateway"},
		{"WA_SIDECAR_UNSET=1", []string{"--env", "HERMES_HOME=/nonexistent-wa-sidecar-test/data/profiles/Bad"}, "hermes-gateway-0e12d492"},
	} {
		cmd := exec.Command(bin, append([]string{"install-service", "--print"}, tc.args...)...)
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + home, "XDG_CONFIG_HOME=" + cfg, tc.env}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %q: %v\n%s", tc.env, tc.args, err, out)
		}
		paths, _ := printedFiles(t, string(out))
		if want := filepath.Join(cfg, "systemd", "user", tc.want+".service.d", "wa-sidecar.conf"); len(paths) != 2 || paths[1] != want {
			t.Errorf("%s %q: files %q; want the drop-in at %s", tc.env, tc.args, paths, want)
		}
	}
}

// notifySocket is a NOTIFY_SOCKET of the test's: a datagram socket at a
// short path (a socket's path is limited to 108 bytes, which t.TempDir can
// exceed), closed and removed when the test ends.
func notifySocket(t *testing.T) (path string, conn *net.UnixConn) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path = filepath.Join(dir, "notify")
	conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return path, conn
}
