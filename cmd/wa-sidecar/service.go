package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
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
	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
	"github.com/wa-sidecar/wa-sidecar/procmon"
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

// unitSpec is what goes into the unit file.
type unitSpec struct {
	Executable  string
	RunArgs     []string // after "run"
	StopTimeout time.Duration
	Watchdog    time.Duration
	Env         []string // NAME=VALUE, in order
	// EnvFile, if set, is the EnvironmentFile= with the secret variables,
	// which a unit file (mode 0644, and shown by systemctl show) must not
	// hold.
	EnvFile string
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
// restarted every 5 s forever; 75 (a --listen port, session or state
// directory still held, say by an old sidecar at boot) is, since the next
// try may well succeed.
func (u unitSpec) render() (string, error) {
	if !filepath.IsAbs(u.Executable) {
		return "", fmt.Errorf("the unit needs an absolute path to wa-sidecar, not %q", u.Executable)
	}
	exec, err := execLine(append([]string{u.Executable, "run", "--stop-timeout", u.StopTimeout.String()}, u.RunArgs...))
	if err != nil {
		return "", err
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
	b.WriteString("ExecStart=" + exec + "\n")
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
	if u.EnvFile != "" {
		// A path, taken as it is but for specifiers.
		if strings.ContainsAny(u.EnvFile, "\n\r\x00") {
			return "", fmt.Errorf("the environment file's path %q has a line break or NUL, which a unit file cannot carry", u.EnvFile)
		}
		b.WriteString("EnvironmentFile=" + strings.ReplaceAll(u.EnvFile, "%", "%%") + "\n")
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

// dropinSpec is what goes into the drop-in for the gateway's unit.
type dropinSpec struct {
	Executable string
	Sidecar    string        // the sidecar's unit name, without .service
	Wait       time.Duration // how long the gateway waits for an adoptable bridge
	CheckArgs  []string      // healthcheck flags that reach this sidecar (--state-dir, --addr)
}

// gatewayStartMargin is how much longer systemd lets the gateway start
// than the check waits: enough for the check's last request and exit, so
// systemd never kills the check and fails the start instead of letting
// the gateway start without WhatsApp.
const gatewayStartMargin = 30 * time.Second

// dropinName is the drop-in's file name. One for every sidecar: a gateway
// has one WhatsApp bridge, so a second sidecar's drop-in replaces the
// first rather than making the gateway wait for both.
const dropinName = "wa-sidecar.conf"

// render writes the drop-in. The gateway adopts a running bridge only if
// it is connected when the gateway looks, and otherwise kills it and
// starts its own; so the gateway starts after the sidecar and waits for
// the bridge to be adoptable. The '-' before the check starts the
// gateway anyway when the wait ends (or at once when waiting cannot help,
// such as an unpaired phone), so WhatsApp never keeps the gateway's other
// platforms down. Wants= starts the sidecar along with the gateway, but
// its restarts and stops leave the gateway alone.
func (d dropinSpec) render() (string, error) {
	if !filepath.IsAbs(d.Executable) {
		return "", fmt.Errorf("the drop-in needs an absolute path to wa-sidecar, not %q", d.Executable)
	}
	check, err := execLine(append([]string{d.Executable, "healthcheck", "--ready", "--wait", d.Wait.String()}, d.CheckArgs...))
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("# Written by 'wa-sidecar install-service' for " + d.Sidecar + ".service. Run it again (with\n")
	b.WriteString("# --force) to change this drop-in, or delete it to start the gateway as before.\n")
	b.WriteString("# The gateway uses the sidecar's bridge only if it is connected when the gateway\n")
	b.WriteString("# looks; otherwise it kills it and starts its own. So it starts after the sidecar\n")
	b.WriteString("# and waits for the bridge, but starts anyway after the wait ('-'), so WhatsApp\n")
	b.WriteString("# never keeps its other platforms down.\n")
	b.WriteString("[Unit]\n")
	b.WriteString("After=" + d.Sidecar + ".service\n")
	b.WriteString("Wants=" + d.Sidecar + ".service\n\n")
	b.WriteString("[Service]\n")
	b.WriteString("ExecStartPre=-" + check + "\n")
	b.WriteString("TimeoutStartSec=" + seconds(d.Wait+gatewayStartMargin) + "\n")
	return b.String(), nil
}

// execLine quotes a command line for ExecStart= and its kin.
func execLine(args []string) (string, error) {
	words := make([]string, len(args))
	for i, a := range args {
		q, err := quoteExecArg(a)
		if err != nil {
			return "", err
		}
		words[i] = q
	}
	return strings.Join(words, " "), nil
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

var unitName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9:_.\\-]+$`) })

func installServiceAction(c *cli.Context) error {
	name := strings.TrimSuffix(c.String("name"), ".service")
	if !unitName().MatchString(name) {
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
	dir, dirErr := userUnitDir()
	if dirErr != nil && c.Bool("print") {
		dir, dirErr = filepath.Join("$XDG_CONFIG_HOME", "systemd", "user"), nil
	}
	if dirErr != nil {
		return cli.Exit("wa-sidecar: "+dirErr.Error(), exitError)
	}
	public, secret := splitSecretEnv(env)
	spec := unitSpec{Executable: exe, RunArgs: runArgs, StopTimeout: stop, Watchdog: wd, Env: public}
	var envFile *unitFile
	if len(secret) > 0 {
		spec.EnvFile = filepath.Join(dir, name+".env")
		text, err := envFileText(secret)
		if err != nil {
			return usageError("%v", err)
		}
		envFile = &unitFile{Path: spec.EnvFile, Text: text, Secret: true}
	}
	unit, err := spec.render()
	if err != nil {
		return usageError("%v", err)
	}
	files := []unitFile{{Path: filepath.Join(dir, name+".service"), Text: unit}}
	if dropin {
		home, _ := os.UserHomeDir()
		check, err := checkArgs(set, env, home)
		if err != nil {
			return err
		}
		text, err := dropinSpec{Executable: exe, Sidecar: name, Wait: gwWait, CheckArgs: check}.render()
		if err != nil {
			return usageError("%v", err)
		}
		files = append(files, unitFile{Path: filepath.Join(dir, gateway+".service.d", dropinName), Text: text})
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
				text = redactEnvFile(text)
			}
			fmt.Fprintf(out, "# %s\n%s", f.Path, text)
		}
		return nil
	}
	if strings.HasPrefix(exe, os.TempDir()+string(filepath.Separator)) {
		fmt.Fprintf(c.App.ErrWriter, "wa-sidecar: warning: %s is a temporary build (go run?); install the binary and run install-service from there\n", exe)
	}
	changed, err := writeUnitFiles(files, c.Bool("force"))
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
	if dropin && !gatewayInstalled(dir, gateway) {
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
		if !unitName().MatchString(n) {
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
	n := gatewayUnit(hermesHome, home, cwd)
	if !unitName().MatchString(n) {
		return "", usageError("the Hermes home %q gives the gateway's unit the name %q, which systemd cannot take; pass --gateway-unit NAME", hermesHome, n)
	}
	return n, nil
}

// gatewayUnitBase starts every unit name the gateway gives itself.
const gatewayUnitBase = "hermes-gateway"

// profileName is what the gateway accepts as a profile's directory name.
var profileName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`) })

// gatewayUnit is the unit name 'hermes gateway install' gives the gateway
// when HERMES_HOME is hermesHome (empty: unset), the user's home is home
// and relative paths start at cwd. The gateway compares its Hermes home
// with a root: ~/.hermes when HERMES_HOME is unset or inside it, else the
// directory above a profiles folder HERMES_HOME is in, else HERMES_HOME
// itself. The root itself is plain hermes-gateway; <root>/profiles/NAME
// is hermes-gateway-NAME; any other home is named by the first 8 hex
// digits of the SHA-256 of its resolved path. Both sides are resolved as
// Python's Path.resolve does: symlinks followed, missing parts kept. The
// gateway trims blanks around HERMES_HOME for its home, but not when it
// finds the root, and this does the same.
func gatewayUnit(hermesHome, home, cwd string) string {
	native := filepath.Join(home, ".hermes")
	gwHome := strings.TrimSpace(hermesHome)
	if gwHome == "" {
		gwHome = native
	}
	root := native
	if hermesHome != "" {
		if _, inside := relParts(resolvePath(hermesHome, cwd), resolvePath(native, cwd)); !inside {
			root = hermesHome
			if abs, parts := pathParts(hermesHome); len(parts) >= 2 && parts[len(parts)-2] == "profiles" {
				root = joinParts(abs, parts[:len(parts)-2])
			}
		}
	}
	h, r := resolvePath(gwHome, cwd), resolvePath(root, cwd)
	if h == r {
		return gatewayUnitBase
	}
	if rel, ok := relParts(h, resolvePath(filepath.Join(r, "profiles"), cwd)); ok && len(rel) == 1 && profileName().MatchString(rel[0]) {
		return gatewayUnitBase + "-" + rel[0]
	}
	sum := sha256.Sum256([]byte(h))
	return gatewayUnitBase + "-" + hex.EncodeToString(sum[:4])
}

// pathParts splits p into its names as Python's pathlib sees them: empty
// and "." names dropped, ".." kept.
func pathParts(p string) (abs bool, parts []string) {
	for _, n := range strings.Split(p, "/") {
		if n != "" && n != "." {
			parts = append(parts, n)
		}
	}
	return strings.HasPrefix(p, "/"), parts
}

func joinParts(abs bool, parts []string) string {
	p := strings.Join(parts, "/")
	switch {
	case abs:
		return "/" + p
	case p == "":
		return "."
	}
	return p
}

// relParts is path's names below base, when path is base or inside it,
// compared name by name.
func relParts(path, base string) ([]string, bool) {
	_, pp := pathParts(path)
	_, bp := pathParts(base)
	if len(pp) < len(bp) {
		return nil, false
	}
	for i := range bp {
		if pp[i] != bp[i] {
			return nil, false
		}
	}
	return pp[len(bp):], true
}

// maxLinks bounds the symbolic links resolvePath follows, so a loop ends.
const maxLinks = 255

// resolvePath makes p absolute (from cwd) and follows every symbolic link
// in it, name by name; a name that does not exist is kept as it is, and
// ".." removes the name before it. Unlike filepath.EvalSymlinks it never
// fails, which the gateway's naming relies on: a Hermes home may not
// exist yet.
func resolvePath(p, cwd string) string {
	if !filepath.IsAbs(p) {
		p = cwd + "/" + p
	}
	_, todo := pathParts(p)
	done := "/"
	links := 0
	for len(todo) > 0 {
		n := todo[0]
		todo = todo[1:]
		if n == ".." {
			done = filepath.Dir(done)
			continue
		}
		next := filepath.Join(done, n)
		fi, err := os.Lstat(next)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 || links >= maxLinks {
			done = next
			continue
		}
		target, err := os.Readlink(next)
		if err != nil {
			done = next
			continue
		}
		links++
		if filepath.IsAbs(target) {
			done = "/"
		}
		_, tp := pathParts(target)
		todo = append(tp, todo...)
	}
	return done
}

// gatewayInstalled reports whether the gateway's unit file is where
// 'hermes gateway install' writes it (always ~/.config, whatever
// XDG_CONFIG_HOME says) or in dir.
func gatewayInstalled(dir, gateway string) bool {
	dirs := []string{dir}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, ".config", "systemd", "user"))
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, gateway+".service")); err == nil {
			return true
		}
	}
	return false
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

// envFileText writes NAME=VALUE pairs as systemd reads an
// EnvironmentFile=: each value in double quotes, with backslash and quote
// escaped (systemd.exec(5)); no specifiers or variables are expanded there.
func envFileText(env []string) (string, error) {
	var b strings.Builder
	b.WriteString("# Written by 'wa-sidecar install-service': the unit's secret variables, kept out of\n")
	b.WriteString("# the unit file, which every user can read. Keep this file mode 0600.\n")
	for _, kv := range env {
		if strings.ContainsAny(kv, "\n\r\x00") {
			return "", fmt.Errorf("environment variable %s has a line break or NUL, which an environment file cannot carry", strings.SplitN(kv, "=", 2)[0])
		}
		name, value, _ := strings.Cut(kv, "=")
		b.WriteString(name + `="` + cEscape(value) + "\"\n")
	}
	return b.String(), nil
}

// redactEnvFile is the environment file as --print shows it: the names,
// not the values.
func redactEnvFile(text string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(text, "\n") {
		if name, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			line = name + "=(secret, not shown)\n"
		}
		b.WriteString(line)
	}
	return b.String()
}

// userUnitDir is where systemd --user looks for the user's own units.
func userUnitDir() (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("cannot find the home directory for the unit: %w; set XDG_CONFIG_HOME or use --print", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "systemd", "user"), nil
}

// unitFile is one file install-service writes.
type unitFile struct {
	Path, Text string
	Secret     bool // mode 0600, not 0644
}

// writeUnitFiles writes files, unless one of them is there with other
// contents and force is off: then it writes none, so the sidecar's unit
// and the gateway's drop-in never disagree. It reports which files
// changed.
func writeUnitFiles(files []unitFile, force bool) ([]bool, error) {
	changed := make([]bool, len(files))
	var differ []string
	for i, f := range files {
		old, err := os.ReadFile(f.Path)
		switch {
		case err == nil && bytes.Equal(old, []byte(f.Text)):
		case err == nil:
			changed[i] = true
			differ = append(differ, f.Path)
		case errors.Is(err, os.ErrNotExist):
			changed[i] = true
		default:
			return nil, fmt.Errorf("reading %s: %w", f.Path, err)
		}
	}
	if len(differ) > 0 && !force {
		return nil, fmt.Errorf("%s exists and differs; pass --force to replace it (--print shows the new files; "+
			"a gateway has one drop-in, so for another gateway pass its --gateway-unit)", strings.Join(differ, " and "))
	}
	for i, f := range files {
		if fi, err := os.Lstat(f.Path); f.Secret && !changed[i] && (err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600) {
			changed[i] = true // the same secrets, but others could read them
		}
		if changed[i] {
			if err := writeUnitFile(f.Path, f.Text, f.Secret); err != nil {
				return nil, err
			}
		}
	}
	return changed, nil
}

// writeUnitFile replaces a unit file atomically, so systemd never reads
// half a file. privdir.WriteFile creates its temporary file afresh, mode
// 0600 and never through a link planted there, so a secret one is private
// from its first byte.
func writeUnitFile(path, text string, secret bool) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	mode := os.FileMode(0o644)
	if secret {
		mode = 0o600
	}
	if err := privdir.WriteFile(path, []byte(text), mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
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
// STOPPING=1 at the first SIGTERM, SIGINT or SIGQUIT. Call it once the status
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
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
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
