package main

import (
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
)

// hermeticEnv is an environment with nothing of the sidecar's own and
// every default location under root, which the test then checks.
func hermeticEnv(root string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WA_SIDECAR_") && !strings.HasPrefix(kv, "HERMES_") && !strings.HasPrefix(kv, "XDG_") &&
			!strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, "JOURNAL_STREAM=") {
			env = append(env, kv)
		}
	}
	return append(env, "HOME="+root, "HERMES_HOME="+filepath.Join(root, "hermes"), "XDG_STATE_HOME="+filepath.Join(root, "state"))
}

// contents lists what is under root.
func contents(t *testing.T, root string) []string {
	t.Helper()
	var got []string
	filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if p != root {
			got = append(got, p)
		}
		return err
	})
	return got
}

// Every flag is checked before anything is looked for or written: a
// mistake exits 64 naming the flag, whether or not a bridge is installed,
// and leaves no state directory, session or bridge.log behind. A command
// that is not there exits 78, as a missing bridge.js does.
func TestFlagsAreCheckedBeforeTheDisk(t *testing.T) {
	bin, fake := binaries(t)
	// A file a glob in this directory would expand to, executable, as the
	// Justfile was when the stray word ran it.
	elsewhere := t.TempDir()
	justfile := filepath.Join(elsewhere, "Justfile")
	if err := os.WriteFile(justfile, []byte("#!/bin/sh\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A FIFO named by mistake blocked the open before SIGTERM could be
	// acted on; /dev/zero was read without end.
	fifo := filepath.Join(elsewhere, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string // "ROOT" is replaced by the test's empty directory
		code int
		want string
	}{
		{"listen", []string{"run", "--listen", "nonsense"}, exitUsage, "--listen"},
		{"listen port", []string{"run", "--listen", "127.0.0.1:http-ish"}, exitUsage, "--listen"},
		{"listen unix", []string{"run", "--listen", "unix:"}, exitUsage, "--listen unix:"},
		{"gateway url", []string{"run", "--gateway-url", "ftp://x"}, exitUsage, "--gateway-url"},
		{"gateway url file", []string{"run", "--gateway-url-file", "/nonexistent"}, exitUsage, "--gateway-url-file"},
		{"both gateway urls", []string{"run", "--gateway-url", "ws://x/", "--gateway-url-file", justfile}, exitUsage, "--gateway-url-file"},
		{"allow origin", []string{"run", "--allow-origin", "*"}, exitUsage, "--allow-origin"},
		{"token file", []string{"run", "--token-file", "/nonexistent"}, exitUsage, "--token-file"},
		{"token file fifo", []string{"run", "--token-file", fifo}, exitUsage, "is not a regular file"},
		{"token file device", []string{"run", "--token-file", "/dev/zero"}, exitUsage, "is not a regular file"},
		{"gateway url file fifo", []string{"run", "--gateway-url-file", fifo}, exitUsage, "is not a regular file"},
		{"token file with a session", []string{"run", "--token-file", "/nonexistent", "--session-dir", "ROOT/session", "--", fake, "-hang"}, exitUsage, "--token-file"},
		{"bridge output", []string{"run", "--bridge-output", "loud", "--session-dir", "ROOT/session", "--", fake}, exitUsage, "--bridge-output"},
		{"jitter NaN", []string{"run", "--backoff-jitter", "NaN"}, exitUsage, "--backoff-jitter"},
		{"jitter Inf", []string{"run", "--backoff-jitter", "Inf"}, exitUsage, "--backoff-jitter"},
		{"jitter negative", []string{"run", "--backoff-jitter", "-0.1"}, exitUsage, "--backoff-jitter"},
		{"normal signals empty", []string{"run", "--normal-signals", ""}, exitUsage, "--normal-signals is empty"},
		{"normal signals commas", []string{"run", "--normal-signals", ", ,"}, exitUsage, "--normal-signals is empty"},
		{"normal signals STOP", []string{"run", "--normal-signals", "TERM,STOP"}, exitUsage, "SIGSTOP does not end a process"},
		{"stop signal STOP", []string{"run", "--stop-signal", "STOP"}, exitUsage, "--stop-signal SIGSTOP does not end a process"},
		{"normal signals CONT", []string{"run", "--normal-signals", "CONT"}, exitUsage, "SIGCONT does not end"},
		{"normal signals TSTP", []string{"run", "--normal-signals", "TSTP"}, exitUsage, "SIGTSTP does not end"},
		{"normal signals TTIN", []string{"run", "--normal-signals", "TTIN"}, exitUsage, "SIGTTIN does not end"},
		{"normal signals TTOU", []string{"run", "--normal-signals", "TTOU"}, exitUsage, "SIGTTOU does not end"},
		{"max line bytes", []string{"run", "--max-line-bytes", "16777216"}, exitUsage, "--max-line-bytes must be between 80 and 1048576"},
		{"stray word", []string{"run", justfile}, exitUsage, "put it after --"},
		{"stray words after flags", []string{"run", "--session-dir", "ROOT/session", justfile, "README.md"}, exitUsage, "is not a flag of run"},
		{"command not found", []string{"run", "--session-dir", "ROOT/session", "--", "no-such-bridge-command"}, exitConfig, `cannot start "no-such-bridge-command"`},
		{"command path not found", []string{"run", "--session-dir", "ROOT/session", "--", "ROOT/missing/bridge"}, exitConfig, "cannot start"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			args := make([]string, len(c.args))
			for i, a := range c.args {
				args[i] = strings.ReplaceAll(a, "ROOT", root)
			}
			cmd := exec.Command(bin, args...)
			cmd.Dir, cmd.Env = root, hermeticEnv(root)
			out, code := runOutput(t, cmd)
			if code != c.code {
				t.Fatalf("exit %d, want %d; output:\n%s", code, c.code, out)
			}
			if !strings.Contains(out, c.want) {
				t.Fatalf("message does not say %q:\n%s", c.want, out)
			}
			if got := contents(t, root); len(got) > 0 {
				t.Fatalf("left on disk: %v; output:\n%s", got, out)
			}
		})
	}
}

// A word after -- is the command, even when it looks like one of ours.
func TestCommandAfterDashesRuns(t *testing.T) {
	bin, fake := binaries(t)
	p := startSidecar(t, bin, "run", "--bridge-log", "off", "--", fake, "-say", "ran", "-hang")
	p.waitLog("ran")
	p.stopOK()
}

// A busy --listen port is a temporary state, not a usage error: exit 75,
// which the unit restarts (64 it would leave down for good), with the
// holder's pid and name.
func TestBusyListenPortExits75NamingTheHolder(t *testing.T) {
	bin, fake := binaries(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	root := t.TempDir()
	cmd := exec.Command(bin, "run", "--listen", ln.Addr().String(), "--state-dir", filepath.Join(root, "state"), "--bridge-log", "off", "--", fake, "-hang")
	cmd.Env = hermeticEnv(root)
	out, code := runOutput(t, cmd)
	if code != exitTempFail {
		t.Fatalf("exit %d, want %d; output:\n%s", code, exitTempFail, out)
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	want := "already in use by pid " + strconv.Itoa(os.Getpid()) + " (" + strings.TrimSpace(string(comm)) + ")"
	if !strings.Contains(out, want) {
		t.Fatalf("message does not name the holder (%q):\n%s", want, out)
	}
}

// A gateway URL with credentials typed on the command line is visible to
// every user in ps: the sidecar warns, and takes it without a warning from
// $WA_SIDECAR_GATEWAY_URL or from --gateway-url-file.
func TestGatewayURLWithCredentials(t *testing.T) {
	bin, fake := binaries(t)
	const secretURL = "ws://user:s3cret@127.0.0.1:1/whatsapp/sidecar"
	const warning = "holds credentials"
	file := filepath.Join(t.TempDir(), "gateway-url")
	if err := os.WriteFile(file, []byte(secretURL+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		env  string
		warn bool
	}{
		{"flag", []string{"--gateway-url", secretURL}, "", true},
		{"flag with =", []string{"--gateway-url=" + secretURL}, "", true},
		{"variable", nil, "WA_SIDECAR_GATEWAY_URL=" + secretURL, false},
		{"file", []string{"--gateway-url-file", file}, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append(append([]string{bin, "run", "--bridge-log", "off"}, c.args...), "--", fake, "-hang")
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Env = append(os.Environ(), "WA_SIDECAR_LISTEN=127.0.0.1:0", "WA_SIDECAR_STATE_DIR="+t.TempDir())
			if c.env != "" {
				cmd.Env = append(cmd.Env, c.env)
			}
			p := startCmd(t, cmd)
			// The push loop dials the URL it was given, and says so
			// without its secret.
			rec := p.waitLog("could not connect to the gateway")
			if u, _ := rec["url"].(string); !strings.Contains(u, "127.0.0.1:1") || strings.Contains(u, "s3cret") {
				t.Fatalf("push dialled %q", u)
			}
			p.stopOK()
			if got := strings.Contains(p.logText(), warning); got != c.warn {
				t.Fatalf("warning given: %v, want %v; log:\n%s", got, c.warn, p.logText())
			}
			if strings.Contains(p.logText(), "s3cret") {
				t.Fatalf("the secret reached the log:\n%s", p.logText())
			}
		})
	}
}

// The sidecar's secrets stay with the sidecar: neither the control token
// nor the push URL, nor the files that hold them, reach the bridge's
// environment.
func TestSecretsStayOutOfTheBridgesEnvironment(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	show := `echo "T=${WA_SIDECAR_TOKEN:-none} F=${WA_SIDECAR_TOKEN_FILE:-none} G=${WA_SIDECAR_GATEWAY_URL:-none} U=${WA_SIDECAR_GATEWAY_URL_FILE:-none}"; exec sleep 60`
	for _, env := range [][]string{
		{"WA_SIDECAR_TOKEN=0123456789abcdef0123456789abcdef", "WA_SIDECAR_GATEWAY_URL=ws://u:s3cret@127.0.0.1:1/"},
		{"WA_SIDECAR_TOKEN_FILE=" + tokenFile, "WA_SIDECAR_GATEWAY_URL_FILE=" + tokenFile + ".url"},
	} {
		if err := os.WriteFile(tokenFile+".url", []byte("ws://u:s3cret@127.0.0.1:1/\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "run", "--bridge-log", "off", "--", "sh", "-c", show)
		cmd.Env = append(append(hermeticEnv(dir), "WA_SIDECAR_LISTEN=127.0.0.1:0", "WA_SIDECAR_STATE_DIR="+t.TempDir()), env...)
		p := startCmd(t, cmd)
		rec := p.waitLog("T=")
		if line, _ := rec["msg"].(string); line != "T=none F=none G=none U=none" {
			t.Fatalf("the bridge's environment with %v: %s", env, line)
		}
		p.stopOK()
	}
}

// SIGQUIT is a stop like SIGTERM: the bridge is stopped, the discovery
// file removed, and the sidecar exits 0, without Go's goroutine dump.
func TestSIGQUITStopsCleanly(t *testing.T) {
	bin, fake := binaries(t)
	state := t.TempDir()
	cmd := exec.Command(bin, "run", "--bridge-log", "off", "--", fake, "-hang")
	cmd.Env = append(os.Environ(), "WA_SIDECAR_LISTEN=127.0.0.1:0", "WA_SIDECAR_STATE_DIR="+state)
	p := startCmd(t, cmd)
	bridge := pidOf(t, p.waitLog("bridge started"))
	if _, err := os.Stat(filepath.Join(state, "sidecar.json")); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGQUIT)
	if code := p.wait(); code != 0 {
		t.Fatalf("exit %d after SIGQUIT; log:\n%s", code, p.logText())
	}
	if strings.Contains(p.logText(), "goroutine ") {
		t.Fatalf("goroutine dump:\n%s", p.logText())
	}
	if proctest.Running(bridge) {
		t.Fatal("the bridge outlived the sidecar")
	}
	if _, err := os.Stat(filepath.Join(state, "sidecar.json")); !os.IsNotExist(err) {
		t.Fatalf("sidecar.json left behind: %v", err)
	}
}

// run's flags, wrapped so that urfave/cli does not work their names out
// at every look-up, are the same flags to the library: the same names,
// help line and kinds (the interfaces it asks of a flag for help,
// completion, categories and required flags), and the values they parse.
func TestRunFlagsWithFixedNamesAreTheSameFlags(t *testing.T) {
	raw := append(runFlags(), feedFlags()...)
	fixed := runCommand().Flags
	if len(fixed) != len(raw) {
		t.Fatalf("%d flags, want %d", len(fixed), len(raw))
	}
	wrapped := 0
	for i, f := range fixed {
		r := raw[i]
		if !slices.Equal(f.Names(), r.Names()) || f.String() != r.String() {
			t.Errorf("flag %d: names %q, help %q; want %q, %q", i, f.Names(), f.String(), r.Names(), r.String())
		}
		if reflect.TypeOf(f) != reflect.TypeOf(r) {
			wrapped++
		}
		for _, kind := range []reflect.Type{
			reflect.TypeFor[cli.DocGenerationFlag](), reflect.TypeFor[cli.VisibleFlag](), reflect.TypeFor[cli.CategorizableFlag](),
			reflect.TypeFor[cli.RequiredFlag](), reflect.TypeFor[cli.ActionableFlag](),
		} {
			if reflect.TypeOf(f).Implements(kind) != reflect.TypeOf(r).Implements(kind) {
				t.Errorf("flag %v: implements %v %v, want %v", r.Names(), kind, !reflect.TypeOf(r).Implements(kind), reflect.TypeOf(r).Implements(kind))
			}
		}
	}
	if wrapped == 0 {
		t.Fatal("no flag of run was wrapped")
	}

	var got runSettings
	app := newApp()
	for _, c := range app.Commands {
		if c.Name == "run" {
			c.Action = func(c *cli.Context) error {
				var err error
				got, err = parseRun(c, slog.New(slog.DiscardHandler))
				return err
			}
		}
	}
	args := []string{"wa-sidecar", "run", "--backoff-max", "7s", "--tail-lines", "9", "--backoff-jitter", "0.5",
		"--signal-group", "--addr", "127.0.0.1:7391", "--allow-origin", "a.example", "--allow-origin", "b.example", "--", "/bin/true"}
	app.Metadata = map[string]any{argsKey: args}
	if err := app.Run(args); err != nil {
		t.Fatal(err)
	}
	m := got.monitor
	if m.Backoff.Max != 7*time.Second || m.TailLines != 9 || m.Backoff.Jitter != 0.5 || !m.SignalGroup ||
		got.feed.opts.Listen != "127.0.0.1:7391" || !slices.Equal(got.feed.opts.AllowOrigins, []string{"a.example", "b.example"}) {
		t.Fatalf("parsed %+v, feed %+v", m, got.feed.opts)
	}
}
