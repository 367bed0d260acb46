// Package unit renders the systemd user units that run wa-sidecar: the
// sidecar's own service, the drop-in that orders the Hermes gateway after
// it, and the environment file for the secret variables; and it writes
// them where systemd --user looks, so that systemd never reads half a
// file.
package unit

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Service is what goes into the sidecar's unit file.
type Service struct {
	Executable  string
	RunArgs     []string // after "run"
	StopTimeout time.Duration
	Watchdog    time.Duration
	Env         []string // NAME=VALUE, in order
	// EnvFile, if set, is the EnvironmentFile= with the secret variables,
	// which a unit file (mode 0644, and shown by systemctl show) must not
	// hold.
	EnvFile string
	// NoRestart are the exit statuses that mean a mistake a restart
	// cannot fix, so systemd does not restart the sidecar after them.
	NoRestart []int
}

// StopMargin is how much longer systemd waits than the sidecar's own stop
// timeout: enough to SIGKILL the bridge's group, reap it and exit, so
// systemd's SIGKILL to the cgroup never cuts the sidecar's stop short.
const StopMargin = 5 * time.Second

// Render writes the unit. Type=notify because the sidecar reports READY=1
// and its state (internal/notify). KillMode=mixed sends SIGTERM to the
// sidecar alone, which stops the bridge in order; only if that overruns
// does systemd kill everything left. The statuses in NoRestart (for the
// sidecar, a bad command line and no bridge found) are not restarted every
// 5 s forever; others (a port, session or state directory still held, say
// by an old sidecar at boot) are, since the next try may well succeed.
func (u Service) Render() (string, error) {
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
	if len(u.NoRestart) > 0 {
		codes := make([]string, len(u.NoRestart))
		for i, c := range u.NoRestart {
			codes[i] = strconv.Itoa(c)
		}
		b.WriteString("RestartPreventExitStatus=" + strings.Join(codes, " ") + "\n")
	}
	b.WriteString("KillMode=mixed\n")
	b.WriteString("TimeoutStopSec=" + seconds(u.StopTimeout+StopMargin) + "\n")
	if u.Watchdog > 0 {
		b.WriteString("WatchdogSec=" + seconds(u.Watchdog) + "\n")
	}
	b.WriteString("\n[Install]\nWantedBy=default.target\n")
	return b.String(), nil
}

// Dropin is what goes into the drop-in for the gateway's unit.
type Dropin struct {
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

// DropinName is the drop-in's file name. One for every sidecar: a gateway
// has one WhatsApp bridge, so a second sidecar's drop-in replaces the
// first rather than making the gateway wait for both.
const DropinName = "wa-sidecar.conf"

// Render writes the drop-in. The gateway adopts a running bridge only if
// it is connected when the gateway looks, and otherwise kills it and
// starts its own; so the gateway starts after the sidecar and waits for
// the bridge to be adoptable. The '-' before the check starts the
// gateway anyway when the wait ends (or at once when waiting cannot help,
// such as an unpaired phone), so WhatsApp never keeps the gateway's other
// platforms down. Wants= starts the sidecar along with the gateway, but
// its restarts and stops leave the gateway alone.
func (d Dropin) Render() (string, error) {
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

var validName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9:_.\\-]+$`) })

// ValidName reports whether systemd takes name (without .service) as a
// unit's name: letters, digits and : _ . - only.
func ValidName(name string) bool {
	return validName().MatchString(name)
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

// EnvFile writes NAME=VALUE pairs as systemd reads an EnvironmentFile=:
// each value in double quotes, with backslash and quote escaped
// (systemd.exec(5)); no specifiers or variables are expanded there.
func EnvFile(env []string) (string, error) {
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

// RedactEnvFile is an environment file as it may be shown: the names,
// not the values.
func RedactEnvFile(text string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(text, "\n") {
		if name, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			line = name + "=(secret, not shown)\n"
		}
		b.WriteString(line)
	}
	return b.String()
}
