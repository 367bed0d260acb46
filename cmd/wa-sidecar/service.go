package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/bridge/notify"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

func installServiceCommand() *cli.Command {
	return &cli.Command{
		Name:      "install-service",
		Usage:     "write a systemd user unit that runs wa-sidecar (WSL2, Linux desktops)",
		ArgsUsage: "[-- RUN-FLAGS... [-- COMMAND [ARGS...]]]",
		Description: "Writes $XDG_CONFIG_HOME/systemd/user/NAME.service (default ~/.config/systemd/user/wa-sidecar.service)\n" +
			"and prints the systemctl and loginctl commands that start it and keep it running after logout.\n" +
			"Everything after -- is passed to 'wa-sidecar run' in the unit. PATH (so node is found as in\n" +
			"your shell) and HERMES_HOME are copied from the current environment; --env copies more.\n\n" +
			"Examples:\n" +
			"   wa-sidecar install-service --print\n" +
			"   wa-sidecar install-service\n" +
			"   wa-sidecar install-service --stop-timeout 20s --watchdog 60s -- --backoff-max 30s\n" +
			"   wa-sidecar install-service --name wa-sidecar-work --env WHATSAPP_MODE -- --port 3001 \\\n" +
			"       --listen 127.0.0.1:7391 --state-dir ~/.local/state/wa-sidecar-work --hermes-home ~/.hermes-work",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "print", Usage: "only print the unit to standard output; write nothing"},
			&cli.BoolFlag{Name: "force", Usage: "replace an existing unit file that differs"},
			&cli.StringFlag{Name: "name", Value: "wa-sidecar", Usage: "unit name, so several sidecars (one per gateway profile) can be installed side by side"},
			&cli.DurationFlag{Name: "stop-timeout", Value: 10 * time.Second, Usage: "the sidecar's --stop-timeout; the unit's TimeoutStopSec is set 5 s above it"},
			&cli.DurationFlag{Name: "watchdog", Usage: "WatchdogSec: systemd restarts the sidecar if it stops answering for this long (0 = no watchdog)"},
			&cli.StringSliceFlag{Name: "env", Usage: "NAME copies a variable from this environment into the unit, NAME=VALUE sets one (repeatable)"},
		},
		OnUsageError: onUsageError,
		Action:       installServiceAction,
	}
}

// unitSpec is what goes into the unit file.
type unitSpec struct {
	Executable  string
	RunArgs     []string // after "run"
	StopTimeout time.Duration
	Watchdog    time.Duration
	Env         []string // NAME=VALUE, in order
}

// stopMargin is how much longer systemd waits than the sidecar's own stop
// timeout: enough to SIGKILL the bridge's group, reap it and exit, so
// systemd's SIGKILL to the cgroup never cuts the sidecar's stop short.
const stopMargin = 5 * time.Second

// render writes the unit. Type=notify because the sidecar reports READY=1
// and its state (bridge/notify). KillMode=mixed sends SIGTERM to the
// sidecar alone, which stops the bridge in order; only if that overruns
// does systemd kill everything left. Exit 64 (a bad command line) and 78
// (no bridge found) are mistakes a restart cannot fix, so they are not
// restarted every 5 s forever.
func (u unitSpec) render() (string, error) {
	if !filepath.IsAbs(u.Executable) {
		return "", fmt.Errorf("the unit needs an absolute path to wa-sidecar, not %q", u.Executable)
	}
	args := append([]string{u.Executable, "run", "--stop-timeout", u.StopTimeout.String()}, u.RunArgs...)
	exec := make([]string, len(args))
	for i, a := range args {
		q, err := quoteExecArg(a)
		if err != nil {
			return "", err
		}
		exec[i] = q
	}
	var b strings.Builder
	b.WriteString("# Written by 'wa-sidecar install-service'. Run it again (with --force) to change\n")
	b.WriteString("# this unit rather than editing it, or use 'systemctl --user edit' for overrides.\n")
	b.WriteString("[Unit]\n")
	b.WriteString("Description=Hermes WhatsApp bridge, supervised by wa-sidecar\n")
	// Never give up: a sidecar that is down helps nobody (the gateway's own
	// unit does the same).
	b.WriteString("StartLimitIntervalSec=0\n\n")
	b.WriteString("[Service]\n")
	b.WriteString("Type=notify\n")
	b.WriteString("ExecStart=" + strings.Join(exec, " ") + "\n")
	// SIGHUP makes the sidecar restart the bridge, which is what a
	// reload means here.
	b.WriteString("ExecReload=/bin/kill -HUP $MAINPID\n")
	for _, kv := range u.Env {
		q, err := quoteEnv(kv)
		if err != nil {
			return "", err
		}
		b.WriteString("Environment=" + q + "\n")
	}
	b.WriteString("Restart=always\n")
	b.WriteString("RestartSec=5\n")
	b.WriteString("RestartPreventExitStatus=" + strconv.Itoa(exitUsage) + " " + strconv.Itoa(exitConfig) + "\n")
	b.WriteString("KillMode=mixed\n")
	b.WriteString("TimeoutStopSec=" + seconds(u.StopTimeout+stopMargin) + "\n")
	if u.Watchdog > 0 {
		b.WriteString("WatchdogSec=" + seconds(u.Watchdog) + "\n")
	}
	b.WriteString("\n[Install]\nWantedBy=default.target\n")
	return b.String(), nil
}

// seconds renders d as a systemd time span, rounded up to whole seconds
// since a shorter limit than asked for would be the dangerous direction.
func seconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// quoteExecArg quotes one ExecStart= word (systemd.service(5), "Command
// lines"): % starts a specifier and $ a variable, so both are doubled;
// words with blanks, quotes or backslashes go in double quotes with C
// escapes.
func quoteExecArg(s string) (string, error) {
	if strings.ContainsAny(s, "\n\r\x00") {
		return "", fmt.Errorf("argument %q has a line break or NUL, which a unit file cannot carry", s)
	}
	s = strings.ReplaceAll(s, "%", "%%")
	s = strings.ReplaceAll(s, "$", "$$")
	if s != "" && !strings.ContainsAny(s, " \t\"'\\;") {
		return s, nil
	}
	return `"` + cEscape(s) + `"`, nil
}

// quoteEnv quotes one Environment= assignment. Variables are not expanded
// there, but specifiers are.
func quoteEnv(kv string) (string, error) {
	if strings.ContainsAny(kv, "\n\r\x00") {
		return "", fmt.Errorf("environment %q has a line break or NUL, which a unit file cannot carry", kv)
	}
	return `"` + cEscape(strings.ReplaceAll(kv, "%", "%%")) + `"`, nil
}

func cEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return strings.ReplaceAll(s, `"`, `\"`)
}

var unitName = regexp.MustCompile(`^[A-Za-z0-9:_.\\-]+$`)

func installServiceAction(c *cli.Context) error {
	name := strings.TrimSuffix(c.String("name"), ".service")
	if !unitName.MatchString(name) {
		return usageError("--name %q: use letters, digits and : _ . - only", c.String("name"))
	}
	stop := c.Duration("stop-timeout")
	if stop <= 0 {
		return usageError("--stop-timeout must be positive (got %s)", stop)
	}
	wd := c.Duration("watchdog")
	if wd < 0 || (wd > 0 && wd < 2*time.Second) {
		return usageError("--watchdog must be 0 (off) or at least 2s (got %s)", wd)
	}
	runArgs := c.Args().Slice()
	set, err := checkRunArgs(runArgs)
	if err != nil {
		return err
	}
	env, err := unitEnv(c.StringSlice("env"))
	if err != nil {
		return err
	}
	if name != "wa-sidecar" {
		warnShared(c.App.ErrWriter, name, set, env)
	}
	exe, err := os.Executable()
	if err != nil {
		return cli.Exit(fmt.Sprintf("wa-sidecar: cannot find its own binary for ExecStart: %v", err), exitError)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return cli.Exit(fmt.Sprintf("wa-sidecar: cannot resolve its own binary for ExecStart: %v", err), exitError)
	}
	spec := unitSpec{Executable: exe, RunArgs: runArgs, StopTimeout: stop, Watchdog: wd, Env: env}
	unit, err := spec.render()
	if err != nil {
		return usageError("%v", err)
	}
	out := c.App.Writer
	if c.Bool("print") {
		_, err := io.WriteString(out, unit)
		return err
	}
	if strings.HasPrefix(exe, os.TempDir()+string(filepath.Separator)) {
		fmt.Fprintf(c.App.ErrWriter, "wa-sidecar: warning: %s is a temporary build (go run?); install the binary and run install-service from there\n", exe)
	}
	path, err := unitPath(name)
	if err != nil {
		return cli.Exit("wa-sidecar: "+err.Error(), exitError)
	}
	changed, err := writeUnit(path, unit, c.Bool("force"))
	if err != nil {
		return cli.Exit("wa-sidecar: "+err.Error(), exitError)
	}
	verb := "Wrote"
	if !changed {
		verb = "Unchanged:"
	}
	fmt.Fprintf(out, "%s %s\n\nNext, run:\n", verb, path)
	fmt.Fprintf(out, "  systemctl --user daemon-reload\n")
	fmt.Fprintf(out, "  systemctl --user enable --now %s.service\n", name)
	fmt.Fprintf(out, "  loginctl enable-linger %s   # keep it running while you are logged out\n", currentUser())
	fmt.Fprintf(out, "\nThen 'systemctl --user status %s' shows the bridge's state and\n", name)
	fmt.Fprintf(out, "'journalctl --user -u %s -f' follows its log.\n", name)
	return nil
}

// warnShared tells the user when a second unit (another gateway profile)
// would share the first one's status address and state directory: its
// sidecar would find the state directory locked and exit 75, again every
// 5 s. Nothing is derived from the name behind the user's back, since the
// address is also what the gateway and the client commands are told.
func warnShared(w io.Writer, name string, set map[string]bool, env []string) {
	for _, kv := range env { // --env WA_SIDECAR_LISTEN=… sets it too
		n, _, _ := strings.Cut(kv, "=")
		if f, ok := strings.CutPrefix(n, "WA_SIDECAR_"); ok {
			set[strings.ToLower(strings.ReplaceAll(f, "_", "-"))] = true
		}
	}
	if set["listen"] && set["state-dir"] {
		return
	}
	fmt.Fprintf(w, "wa-sidecar: warning: %s does not set both --listen and --state-dir, so it shares %s and the state directory "+
		"with any other sidecar of this user and exits 75 while one runs. For another gateway profile give it its own, e.g.\n"+
		"  wa-sidecar install-service --name %s -- --listen 127.0.0.1:7391 --state-dir \"$HOME/.local/state/%s\" --hermes-home \"$HOME/.hermes-work\" --port 3001\n",
		name, feed.DefaultListen, name, name)
}

// checkRunArgs catches mistakes in the flags meant for 'run' now, rather
// than when systemd starts the unit and it exits 64. The stop timeout must
// come through install-service, which sets TimeoutStopSec from it. It
// returns the names of the flags that are set.
func checkRunArgs(args []string) (map[string]bool, error) {
	flags := args
	for i, a := range args {
		if a == "--" {
			flags = args[:i]
			break
		}
	}
	for _, a := range flags {
		if n := strings.TrimLeft(a, "-"); n != a && (n == "stop-timeout" || strings.HasPrefix(n, "stop-timeout=")) {
			return nil, usageError("pass --stop-timeout to install-service itself (before --), so that TimeoutStopSec follows it")
		}
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, f := range runCommand().Flags {
		if err := f.Apply(fs); err != nil {
			return nil, usageError("checking the flags for run: %v", err)
		}
	}
	if err := fs.Parse(flags); err != nil {
		return nil, usageError("the flags after -- are for 'wa-sidecar run': %v (see wa-sidecar run --help)", err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set, nil
}

// unitEnv gathers the unit's Environment= lines. The user manager starts
// services with a minimal PATH, so without a copy of the caller's a node
// from nvm or ~/.local would not be found.
func unitEnv(extra []string) ([]string, error) {
	var env []string
	seen := map[string]bool{}
	add := func(name, value string) {
		if !seen[name] {
			seen[name] = true
			env = append(env, name+"="+value)
		}
	}
	for _, e := range extra {
		name, value, set := strings.Cut(e, "=")
		if name == "" || strings.ContainsAny(name, " \t") {
			return nil, usageError("--env %q: give NAME or NAME=VALUE", e)
		}
		if !set {
			v, ok := os.LookupEnv(name)
			if !ok {
				return nil, usageError("--env %s: it is not set in this environment; set it, or give --env %s=VALUE", name, name)
			}
			value = v
		}
		add(name, value)
	}
	if v, ok := os.LookupEnv("PATH"); ok {
		add("PATH", v)
	}
	if v, ok := os.LookupEnv("HERMES_HOME"); ok {
		add("HERMES_HOME", v)
	}
	return env, nil
}

func unitPath(name string) (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("cannot find the home directory for the unit: %w; set XDG_CONFIG_HOME or use --print", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "systemd", "user", name+".service"), nil
}

// writeUnit writes unit to path unless an unequal file is there and force
// is off. It reports whether the file changed.
func writeUnit(path, unit string, force bool) (bool, error) {
	old, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(old, []byte(unit)):
		return false, nil
	case err == nil && !force:
		return false, fmt.Errorf("%s exists and differs; pass --force to replace it (--print shows the new unit)", path)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	// Write then rename, so systemd never reads half a unit.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(unit), 0o644); err != nil {
		return false, fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("writing %s: %w", path, err)
	}
	return true, nil
}

func currentUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "$USER"
}

// followSystemd tells systemd, when it runs the sidecar as a Type=notify
// unit, that the sidecar is up and how the bridge is doing, and says
// STOPPING=1 at the first SIGTERM or SIGINT. Call it once the status
// server listens: READY=1 promises that it does. Outside systemd it does
// nothing. Call stop once supervising is over.
func followSystemd(m *procmon.Monitor, logger *slog.Logger) (stop func(), err error) {
	n, err := notify.New(logger)
	if err != nil {
		return nil, cli.Exit("wa-sidecar: "+err.Error(), exitError)
	}
	if !n.Enabled() {
		return func() {}, nil
	}
	logger.Debug("reporting to systemd", "socket", os.Getenv("NOTIFY_SOCKET"), "watchdog", n.Watchdog().String())
	// A channel of our own: os/signal gives every registered channel its
	// copy, so supervise still sees the same signals.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		select {
		case <-sigs:
			n.Stopping()
		case <-ctx.Done():
		}
	}()
	go func() {
		defer wg.Done()
		n.Run(ctx, m)
	}()
	n.Ready()
	return func() {
		signal.Stop(sigs)
		cancel()
		wg.Wait()
	}, nil
}
