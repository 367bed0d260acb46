package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/internal/unit"
)

func installServiceCommand() *cli.Command {
	return &cli.Command{
		Name:      "install-service",
		Usage:     "write a systemd user unit that runs wa-sidecar, and order the Hermes gateway after it (WSL2, Linux desktops)",
		ArgsUsage: "[-- RUN-FLAGS... [-- COMMAND [ARGS...]]]",
		Description: "Writes $XDG_CONFIG_HOME/systemd/user/NAME.service (default ~/.config/systemd/user/wa-sidecar.service)\n" +
			"and prints the systemctl and loginctl commands that start it and keep it running after logout.\n" +
			"Everything after -- is passed to 'wa-sidecar run' in the unit. PATH (so node is found as in\n" +
			"your shell) and HERMES_HOME are copied from the current environment; --env copies more.\n\n" +
			"It also writes a drop-in for the gateway's own user unit, GATEWAY.service.d/wa-sidecar.conf, so\n" +
			"that the gateway starts after the sidecar and first waits (up to --gateway-wait) until the\n" +
			"bridge is adoptable: the gateway uses a running bridge only if it is connected when the\n" +
			"gateway looks, and otherwise kills it and starts its own. The gateway's unit name is derived\n" +
			"from the Hermes home as 'hermes gateway install' names it (hermes-gateway, or\n" +
			"hermes-gateway-PROFILE); --gateway-unit names it, --no-gateway-dropin skips the drop-in.\n\n" +
			"Examples:\n" +
			"   wa-sidecar install-service --print\n" +
			"   wa-sidecar install-service\n" +
			"   wa-sidecar install-service --stop-timeout 20s --watchdog 60s -- --backoff-max 30s\n" +
			"   wa-sidecar install-service --gateway-wait 2m --gateway-unit hermes-gateway-coder\n" +
			"   wa-sidecar install-service --name wa-sidecar-work --env WHATSAPP_MODE -- \\\n" +
			"       --listen 127.0.0.1:7391 --state-dir ~/.local/state/wa-sidecar-work --hermes-home ~/.hermes/profiles/work",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "print", Usage: "only print the unit and the gateway's drop-in to standard output; write nothing"},
			&cli.BoolFlag{Name: "force", Usage: "replace an existing unit file or drop-in that differs"},
			&cli.StringFlag{Name: "name", Value: "wa-sidecar", Usage: "unit name, so several sidecars (one per gateway profile) can be installed side by side"},
			&cli.DurationFlag{Name: "stop-timeout", Value: 10 * time.Second, Usage: "the sidecar's --stop-timeout; the unit's TimeoutStopSec is set 5 s above it"},
			&cli.DurationFlag{Name: "watchdog", Usage: "WatchdogSec: systemd restarts the sidecar if it stops answering for this long (0 = no watchdog)"},
			&cli.StringSliceFlag{Name: "env", Usage: "NAME copies a variable from this environment into the unit, NAME=VALUE sets one (repeatable)"},
			&cli.StringFlag{Name: "gateway-unit", Usage: "the Hermes gateway's systemd user unit, which gets the drop-in (default: named from the Hermes home as the gateway names it)"},
			&cli.DurationFlag{Name: "gateway-wait", Value: 90 * time.Second, Usage: "how long the gateway waits for the bridge to be adoptable before it starts anyway; its TimeoutStartSec is set 30 s above it"},
			&cli.BoolFlag{Name: "no-gateway-dropin", Usage: "write the sidecar's unit only; leave the gateway's unit alone"},
		},
		OnUsageError: onUsageError,
		Action:       installServiceAction,
	}
}

// serviceUnit is the sidecar's unit: systemd restarts it after every exit
// but a bad command line and no bridge found, which the next try would
// repeat. (75, a port, session or state directory still held, say by an
// old sidecar at boot, is restarted: the next try may well succeed.)
func serviceUnit(exe string, runArgs []string, stop, watchdog time.Duration, env []string) unit.Service {
	return unit.Service{Executable: exe, RunArgs: runArgs, StopTimeout: stop, Watchdog: watchdog, Env: env,
		NoRestart: []int{exitUsage, exitConfig}}
}

func installServiceAction(c *cli.Context) error {
	name := strings.TrimSuffix(c.String("name"), ".service")
	if !unit.ValidName(name) {
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
	dropin := !c.Bool("no-gateway-dropin")
	gwWait := c.Duration("gateway-wait")
	if dropin && gwWait <= 0 {
		return usageError("--gateway-wait must be positive (got %s); --no-gateway-dropin leaves the gateway's unit alone", gwWait)
	}
	runArgs := c.Args().Slice()
	set, err := checkRunArgs(runArgs)
	if err != nil {
		return err
	}
	if u, ok := set["gateway-url"]; ok && urlHasCredentials(u) {
		return usageError("the --gateway-url after -- holds credentials, which the unit would show to every user (and ps too); " +
			"give it as --env " + gatewayURLEnv + "=URL, which goes to a file only you can read")
	}
	env, err := unitEnv(c.StringSlice("env"))
	if err != nil {
		return err
	}
	if name != "wa-sidecar" {
		warnShared(c.App.ErrWriter, name, set, env)
	}
	var gateway string
	if dropin {
		if gateway, err = gatewayUnitFor(c, set, env); err != nil {
			return err
		}
		if gateway == name {
			return usageError("--gateway-unit %s is the sidecar's own unit (--name); name the gateway's unit", gateway)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return cli.Exit(fmt.Sprintf("wa-sidecar: cannot find its own binary for ExecStart: %v", err), exitError)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return cli.Exit(fmt.Sprintf("wa-sidecar: cannot resolve its own binary for ExecStart: %v", err), exitError)
	}
	dir, dirErr := unit.UserDir()
	if dirErr != nil && c.Bool("print") {
		dir, dirErr = filepath.Join("$XDG_CONFIG_HOME", "systemd", "user"), nil
	}
	if dirErr != nil {
		return cli.Exit("wa-sidecar: "+dirErr.Error()+"; set XDG_CONFIG_HOME or use --print", exitError)
	}
	public, secret := splitSecretEnv(env)
	spec := serviceUnit(exe, runArgs, stop, wd, public)
	var envFile *unit.File
	if len(secret) > 0 {
		spec.EnvFile = filepath.Join(dir, name+".env")
		text, err := unit.EnvFile(secret)
		if err != nil {
			return usageError("%v", err)
		}
		envFile = &unit.File{Path: spec.EnvFile, Text: text, Secret: true}
	}
	text, err := spec.Render()
	if err != nil {
		return usageError("%v", err)
	}
	files := []unit.File{{Path: filepath.Join(dir, name+".service"), Text: text}}
	if dropin {
		home, _ := os.UserHomeDir()
		check, err := checkArgs(set, env, home)
		if err != nil {
			return err
		}
		text, err := unit.Dropin{Executable: exe, Sidecar: name, Wait: gwWait, CheckArgs: check}.Render()
		if err != nil {
			return usageError("%v", err)
		}
		files = append(files, unit.File{Path: filepath.Join(dir, gateway+".service.d", unit.DropinName), Text: text})
	}
	if envFile != nil {
		files = append(files, *envFile)
	}
	out := c.App.Writer
	if c.Bool("print") {
		for i, f := range files {
			if i > 0 {
				fmt.Fprintln(out)
			}
			text := f.Text
			if f.Secret {
				text = unit.RedactEnvFile(text)
			}
			fmt.Fprintf(out, "# %s\n%s", f.Path, text)
		}
		return nil
	}
	if strings.HasPrefix(exe, os.TempDir()+string(filepath.Separator)) {
		fmt.Fprintf(c.App.ErrWriter, "wa-sidecar: warning: %s is a temporary build (go run?); install the binary and run install-service from there\n", exe)
	}
	changed, err := unit.WriteFiles(files, c.Bool("force"))
	var differ *unit.DiffersError
	if errors.As(err, &differ) {
		return cli.Exit("wa-sidecar: "+err.Error()+"; pass --force to replace it (--print shows the new files; "+
			"a gateway has one drop-in, so for another gateway pass its --gateway-unit)", exitError)
	}
	if err != nil {
		return cli.Exit("wa-sidecar: "+err.Error(), exitError)
	}
	for i, f := range files {
		verb := "Wrote"
		if !changed[i] {
			verb = "Unchanged:"
		}
		note := ""
		if f.Secret {
			note = " (mode 0600, for the secret variables)"
		}
		fmt.Fprintf(out, "%s %s%s\n", verb, f.Path, note)
	}
	if dropin && !unit.GatewayInstalled(dir, gateway) {
		fmt.Fprintf(c.App.ErrWriter, "wa-sidecar: warning: no %s.service found in %s; if the gateway runs under another unit name, "+
			"run install-service again with --gateway-unit NAME (and delete %s)\n", gateway, dir, filepath.Dir(files[1].Path))
	}
	fmt.Fprintf(out, "\nNext, run:\n")
	fmt.Fprintf(out, "  systemctl --user daemon-reload\n")
	fmt.Fprintf(out, "  systemctl --user enable --now %s.service\n", name)
	fmt.Fprintf(out, "  loginctl enable-linger %s   # keep it running while you are logged out\n", currentUser())
	if dropin {
		fmt.Fprintf(out, "  systemctl --user restart %s.service   # now it starts after the sidecar and uses its bridge\n", gateway)
	}
	fmt.Fprintf(out, "\nThen 'systemctl --user status %s' shows the bridge's state and\n", name)
	fmt.Fprintf(out, "'journalctl --user -u %s -f' follows its log.\n", name)
	if dropin {
		fmt.Fprintf(out, "Pair the phone first (see docs/deployment.md): the gateway waits up to %s for the bridge to connect.\n", gwWait)
	}
	return nil
}

// warnShared tells the user when a second unit (another gateway profile)
// would share the first one's status address and state directory: its
// sidecar would find the state directory locked and exit 75, again every
// 5 s. Nothing is derived from the name behind the user's back, since the
// address is also what the gateway and the client commands are told.
func warnShared(w io.Writer, name string, set map[string]string, env []string) {
	_, listen := runSetting(set, env, "listen")
	_, state := runSetting(set, env, "state-dir")
	if listen && state {
		return
	}
	fmt.Fprintf(w, "wa-sidecar: warning: %s does not set both --listen and --state-dir, so it shares %s and the state directory "+
		"with any other sidecar of this user and exits 75 while one runs. For another gateway profile give it its own, e.g.\n"+
		"  wa-sidecar install-service --name %s -- --listen 127.0.0.1:7391 --state-dir \"$HOME/.local/state/%s\" --hermes-home \"$HOME/.hermes/profiles/work\"\n"+
		"(the bridge's port then comes from that profile's config.yaml, bridge_port, as for its gateway)\n",
		name, feed.DefaultListen, name, name)
}

// runSetting is the value a flag of 'run' gets in the unit: the flag after
// --, else its WA_SIDECAR_ variable among the unit's Environment= (a flag
// beats the variable, as for run itself).
func runSetting(set map[string]string, env []string, flag string) (string, bool) {
	if v, ok := set[flag]; ok {
		return v, true
	}
	prefix := "WA_SIDECAR_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_")) + "="
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, prefix); ok {
			return v, true
		}
	}
	return "", false
}

// checkArgs are the healthcheck flags that reach the sidecar the unit
// runs: its state directory and its address, as the unit sets them. The
// check runs in the gateway's unit, whose working directory is not the
// sidecar's (the user's home, systemd's default for user units), so
// relative paths are made absolute against home.
func checkArgs(set map[string]string, env []string, home string) ([]string, error) {
	abs := func(p string) (string, error) {
		if filepath.IsAbs(p) {
			return p, nil
		}
		if home == "" {
			return "", usageError("%q is relative, and without a home directory the gateway's check cannot find it; give an absolute path", p)
		}
		return filepath.Join(home, p), nil
	}
	var args []string
	if d, ok := runSetting(set, env, "state-dir"); ok && d != "" {
		d, err := abs(d)
		if err != nil {
			return nil, err
		}
		args = append(args, "--state-dir", d)
	}
	if a, ok := runSetting(set, env, "listen"); ok && a != "" {
		if p, unix := strings.CutPrefix(a, "unix:"); unix {
			p, err := abs(p)
			if err != nil {
				return nil, err
			}
			args = append(args, "--addr", "unix:"+p)
		} else if _, port, err := net.SplitHostPort(a); err == nil && port != "0" {
			// Port 0 is chosen at start; only sidecar.json in the state
			// directory knows it.
			args = append(args, "--addr", a)
		}
	}
	return args, nil
}

// gatewayUnitFor is the gateway's unit name: --gateway-unit, else the one
// the gateway gives itself for the Hermes home the sidecar uses.
func gatewayUnitFor(c *cli.Context, set map[string]string, env []string) (string, error) {
	if n := c.String("gateway-unit"); n != "" {
		n = strings.TrimSuffix(n, ".service")
		if !unit.ValidName(n) {
			return "", usageError("--gateway-unit %q: use letters, digits and : _ . - only", c.String("gateway-unit"))
		}
		return n, nil
	}
	hermesHome, ok := runSetting(set, env, "hermes-home")
	if !ok {
		for _, kv := range env {
			if v, found := strings.CutPrefix(kv, "HERMES_HOME="); found {
				hermesHome = v
				break
			}
		}
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", usageError("cannot name the gateway's unit: %v; pass --gateway-unit NAME (or --no-gateway-dropin)", err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		return "", usageError("cannot name the gateway's unit: %v; pass --gateway-unit NAME (or --no-gateway-dropin)", err)
	}
	n := unit.GatewayName(hermesHome, home, cwd)
	if !unit.ValidName(n) {
		return "", usageError("the Hermes home %q gives the gateway's unit the name %q, which systemd cannot take; pass --gateway-unit NAME", hermesHome, n)
	}
	return n, nil
}

// checkRunArgs catches mistakes in the flags meant for 'run' now, rather
// than when systemd starts the unit and it exits 64. The stop timeout must
// come through install-service, which sets TimeoutStopSec from it. It
// returns the flags that are set, by name, with their values.
func checkRunArgs(args []string) (map[string]string, error) {
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
	if fs.NArg() > 0 {
		// run refuses them too, and would exit 64 at every start.
		return nil, usageError("%q after -- is not a flag of run; a command for run to supervise goes after a second --: install-service -- [RUN-FLAGS] -- COMMAND", fs.Arg(0))
	}
	set := map[string]string{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = f.Value.String() })
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

// secretEnv reports whether a variable holds a secret: the control token,
// the push URL (which may carry the gateway's credentials), or a name that
// marks a credential.
func secretEnv(name string) bool {
	switch name {
	case tokenEnv, gatewayURLEnv:
		return true
	}
	n := "_" + strings.ToUpper(name)
	for _, suffix := range []string{"_TOKEN", "_KEY", "_SECRET", "_PASSWORD", "_PASS", "_PASSWD", "_CREDENTIALS"} {
		if strings.HasSuffix(n, suffix) {
			return true
		}
	}
	return false
}

// splitSecretEnv parts NAME=VALUE pairs into those for Environment= and
// the secret ones, for the EnvironmentFile=.
func splitSecretEnv(env []string) (public, secret []string) {
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if secretEnv(name) {
			secret = append(secret, kv)
		} else {
			public = append(public, kv)
		}
	}
	return public, secret
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
