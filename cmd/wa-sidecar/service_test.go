package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// parseUnit reads a unit file into section → key → values, the way
// systemd's own parser sees repeated keys.
func parseUnit(t *testing.T, unit string) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	section := ""
	for i, line := range strings.Split(unit, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("line %d is not key=value in a section: %q", i+1, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

func one(t *testing.T, u map[string]map[string][]string, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) != 1 {
		t.Fatalf("[%s] %s appears %d times; want once (unit %v)", section, key, len(vs), u)
	}
	return vs[0]
}

func TestUnitContents(t *testing.T) {
	for _, tc := range []struct {
		stop, watchdog time.Duration
		wantStopSec    string
		wantWatchdog   string
	}{
		{10 * time.Second, 0, "15", ""},
		{1500 * time.Millisecond, 0, "7", ""},
		{2 * time.Minute, 30 * time.Second, "125", "30"},
		{time.Second, 2500 * time.Millisecond, "6", "3"},
	} {
		t.Run(tc.stop.String(), func(t *testing.T) {
			spec := unitSpec{Executable: "/opt/wa-sidecar", StopTimeout: tc.stop, Watchdog: tc.watchdog,
				RunArgs: []string{"--backoff-max", "30s"}, Env: []string{"PATH=/usr/bin:/bin"}}
			text, err := spec.render()
			if err != nil {
				t.Fatal(err)
			}
			u := parseUnit(t, text)
			checks := map[[2]string]string{
				{"Unit", "StartLimitIntervalSec"}:       "0",
				{"Service", "Type"}:                     "notify",
				{"Service", "Restart"}:                  "always",
				{"Service", "KillMode"}:                 "mixed",
				{"Service", "TimeoutStopSec"}:           tc.wantStopSec,
				{"Service", "RestartPreventExitStatus"}: "64 78",
				{"Service", "ExecStart"}:                "/opt/wa-sidecar run --stop-timeout " + tc.stop.String() + " --backoff-max 30s",
				{"Service", "Environment"}:              `"PATH=/usr/bin:/bin"`,
				{"Install", "WantedBy"}:                 "default.target",
			}
			for k, want := range checks {
				if got := one(t, u, k[0], k[1]); got != want {
					t.Errorf("[%s] %s = %q; want %q", k[0], k[1], got, want)
				}
			}
			stopSec, _ := strconv.Atoi(one(t, u, "Service", "TimeoutStopSec"))
			if time.Duration(stopSec)*time.Second <= tc.stop {
				t.Errorf("TimeoutStopSec %ds is not above the stop timeout %s", stopSec, tc.stop)
			}
			switch {
			case tc.wantWatchdog == "" && len(u["Service"]["WatchdogSec"]) > 0:
				t.Errorf("WatchdogSec set without --watchdog: %v", u["Service"]["WatchdogSec"])
			case tc.wantWatchdog != "":
				if got := one(t, u, "Service", "WatchdogSec"); got != tc.wantWatchdog {
					t.Errorf("WatchdogSec = %q; want %q", got, tc.wantWatchdog)
				}
			}
		})
	}
}

func TestQuoteExecArg(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"--port=3000", "--port=3000"},
		{"/home/a b/bridge.js", `"/home/a b/bridge.js"`},
		{"100%", "100%%"},
		{"$HOME", "$$HOME"},
		{`say "hi"`, `"say \"hi\""`},
		{`C:\path`, `"C:\\path"`},
		{"it's", `"it's"`},
		{";", `";"`},
		{"", `""`},
	} {
		got, err := quoteExecArg(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("quoteExecArg(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := quoteExecArg("two\nlines"); err == nil {
		t.Error("a line break in an argument must be refused")
	}
}

// TestUnitVerifiesWithSystemd has systemd's own parser check a unit with
// awkward arguments: any warning (a bad key, unbalanced quotes, a unknown
// escape) fails the test.
func TestUnitVerifiesWithSystemd(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian: apt-get install systemd)")
	}
	bin, _ := binaries(t)
	dir := t.TempDir()
	spec := unitSpec{
		Executable: bin, StopTimeout: 20 * time.Second, Watchdog: time.Minute,
		RunArgs: []string{"--backoff-max", "30s", "--", "node", "/home/a b/bridge.js", "--reply-prefix", `"100%" $X it's \ ;`},
		Env:     []string{"PATH=/usr/bin:/opt/my node/bin", `WHATSAPP_REPLY_PREFIX=[bot] "50%" \o/`},
	}
	text, err := spec.render()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "wa-sidecar.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	// The user manager's verify needs a runtime directory of its own.
	runtime, err := os.MkdirTemp("", "rt")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(runtime)
	cmd := exec.Command(analyze, "--user", "verify", path)
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+runtime, "SYSTEMD_LOG_LEVEL=notice")
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s\nunit:\n%s", err, out, text)
	}
}

// TestInstallServiceCommand runs the real binary: it writes the unit where
// systemd --user looks, prints the commands to run next, leaves an equal
// file alone, refuses to overwrite a different one without --force, and
// refuses bad input with exit 64.
func TestInstallServiceCommand(t *testing.T) {
	bin, _ := binaries(t)
	cfg := t.TempDir()
	run := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"install-service"}, args...)...)
		cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+cfg, "HERMES_HOME=/srv/hermes home")
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
	unitFile := filepath.Join(cfg, "systemd", "user", "wa-sidecar.service")

	printed, code := run("--print", "--", "--backoff-max", "30s")
	if code != 0 {
		t.Fatalf("--print exit %d:\n%s", code, printed)
	}
	if _, err := os.Stat(unitFile); !os.IsNotExist(err) {
		t.Fatalf("--print wrote a file: %v", err)
	}
	u := parseUnit(t, printed)
	if got := one(t, u, "Service", "ExecStart"); got != bin+" run --stop-timeout 10s --backoff-max 30s" {
		t.Errorf("ExecStart = %q", got)
	}
	if env := u["Service"]["Environment"]; len(env) != 2 || env[1] != `"HERMES_HOME=/srv/hermes home"` {
		t.Errorf("Environment = %q; want PATH and HERMES_HOME", env)
	}

	out, code := run("--", "--backoff-max", "30s")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	written, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(written) != printed {
		t.Errorf("written unit differs from --print:\n%s\nvs\n%s", written, printed)
	}
	for _, want := range []string{
		"Wrote " + unitFile,
		"systemctl --user daemon-reload",
		"systemctl --user enable --now wa-sidecar.service",
		"loginctl enable-linger ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	if out, code = run("--", "--backoff-max", "30s"); code != 0 || !strings.Contains(out, "Unchanged") {
		t.Errorf("same unit again: exit %d:\n%s", code, out)
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

	named, code := run("--name", "wa-sidecar-work.service", "--env", "WHATSAPP_MODE=bot")
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
	own, code := run("--name", "wa-sidecar-work", "--force", "--env", "WA_SIDECAR_STATE_DIR=/srv/work", "--", "--listen", "127.0.0.1:7391")
	if code != 0 || strings.Contains(own, "does not set both") {
		t.Errorf("--name with its own --listen and state dir: exit %d:\n%s", code, own)
	}

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--", "--stop-timeout", "5s"}, "install-service itself"},
		{[]string{"--", "--stop-timeout=5s"}, "install-service itself"},
		{[]string{"--", "--no-such-flag"}, "no-such-flag"},
		{[]string{"--", "--backoff-max", "soon"}, "backoff-max"},
		{[]string{"--name", "my unit"}, "--name"},
		{[]string{"--watchdog", "1s"}, "--watchdog"},
		{[]string{"--stop-timeout", "0s"}, "--stop-timeout"},
		{[]string{"--env", "WA_SIDECAR_TEST_SURELY_UNSET"}, "not set"},
		{[]string{"--env", "=x"}, "--env"},
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
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 1024)
	go func() {
		defer close(msgs)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	var seen []string
	await := func(what string, ok func(string) bool) {
		t.Helper()
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
	p := startSidecar(t, bin, "run", "--", fake, "-hang")
	await("READY=1", func(m string) bool { return m == "READY=1" })
	await("a ready STATUS=", func(m string) bool { return strings.HasPrefix(m, "STATUS=bridge ready, up ") })
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
// readers who install by hand, equal to what install-service writes.
func TestDeployUnitIsCurrent(t *testing.T) {
	want, err := unitSpec{Executable: "/usr/local/bin/wa-sidecar", StopTimeout: 10 * time.Second}.render()
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
