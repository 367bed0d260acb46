package main

import (
	"io"
	"log/slog"
	"path/filepath"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/procmon"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

// runSettings is everything run's flags say, read and checked once by
// parseRun, before anything is looked for on disk: a typo is then the
// usage error it is (64, naming the flag), not a missing bridge (78), and
// not found after a discovery whose result it would have changed. The
// rest of run builds its parts from it and reads no flag by name. The
// log's flags (--log-format, --log-level) are not in it: runAction makes
// the logger from them first, for parseRun's own warnings.
type runSettings struct {
	demo       bool
	hermesHome string
	// args are the words after --: the command to run, or with --demo the
	// simulated bridge's knobs.
	args  []string
	where whereSettings

	// monitor has the supervision flags; the command, its directory, its
	// environment and the hooks come from the bridge found.
	monitor procmon.Config
	workdir string // --workdir, checked to be a directory; empty: the bridge's own
	health  healthSettings
	session sessionSettings
	feed    feedSettings
	// stateDir is --state-dir, absolute, or empty for the default.
	stateDir    string
	listenGiven bool // --listen (or its variables) was set, so a demo keeps it

	bridgeOutput string // log, raw or off
	subreaper    bool
}

// whereSettings are the flags that say where the bridge is, over what the
// gateway would run. The *Given fields say the flag was set at all, since
// a command after -- keeps its own port, session and script otherwise.
type whereSettings struct {
	script, node, sessionDir, mode       string
	port                                 int
	portGiven, sessionGiven, scriptGiven bool
}

type healthSettings struct {
	period, timeout, grace time.Duration
	failures               int
}

type sessionSettings struct {
	bridgeLog    string // a path, "off", or empty for <session dir>/../bridge.log
	logMaxMB     int
	logBackups   int
	restoreCreds bool
}

// parseRun reads and checks run's flags. Warnings about secrets left
// readable by others go to logger.
func parseRun(c *cli.Context, logger *slog.Logger) (runSettings, error) {
	s := runSettings{
		demo:       c.Bool("demo"),
		hermesHome: c.String("hermes-home"),
		args:       c.Args().Slice(),
		where: whereSettings{
			script: c.String("bridge-script"), node: c.String("node"),
			sessionDir: c.String("session-dir"), mode: c.String("mode"), port: c.Int("port"),
			portGiven: c.IsSet("port"), sessionGiven: c.IsSet("session-dir"), scriptGiven: c.IsSet("bridge-script"),
		},
		workdir:      c.String("workdir"),
		listenGiven:  c.IsSet("listen"),
		bridgeOutput: c.String("bridge-output"),
		subreaper:    c.Bool("subreaper"),
	}
	if err := gateway.CheckPort(s.where.port); err != nil {
		return s, usageError("%v", flagError(err))
	}
	if m := s.where.mode; m != "" {
		if err := bridge.CheckMode(m); err != nil {
			return s, usageError("%v", flagError(err))
		}
	}
	var err error
	if s.health, err = parseHealth(c); err != nil {
		return s, err
	}
	if s.session, err = parseSession(c); err != nil {
		return s, err
	}
	if err := checkCommandWords(c); err != nil {
		return s, err
	}
	if s.monitor, err = parseMonitor(c); err != nil {
		return s, err
	}
	if s.workdir != "" {
		if !isDir(s.workdir) {
			return s, usageError("--workdir %q is not a directory", s.workdir)
		}
	}
	if d := c.String("state-dir"); d != "" {
		if s.stateDir, err = filepath.Abs(d); err != nil {
			return s, usageError("--state-dir: %v", err)
		}
	}
	if s.feed, err = checkFeedFlags(c, logger); err != nil {
		return s, err
	}
	if s.bridgeOutput, err = checkBridgeOutput(s.bridgeOutput); err != nil {
		return s, usageError("%v", err)
	}
	return s, nil
}

func parseHealth(c *cli.Context) (healthSettings, error) {
	h := healthSettings{
		period:   c.Duration("health-period"),
		timeout:  c.Duration("health-timeout"),
		failures: c.Int("health-failures"),
		grace:    c.Duration("connect-grace"),
	}
	if !c.IsSet("health-timeout") && h.timeout > h.period {
		// A short --health-period alone: the default timeout follows it
		// down rather than making the user set both.
		h.timeout = h.period
	}
	if h.period <= 0 || h.timeout <= 0 || h.grace <= 0 {
		return h, usageError("--health-period, --health-timeout and --connect-grace must be positive")
	}
	// 0 failures must not silently mean the default.
	if err := bridge.CheckProbes(h.period, h.timeout, h.failures); err != nil {
		return h, usageError("%v", flagError(err))
	}
	return h, nil
}

// maxBridgeLogMB is session.OpenBridgeLog's own limit (1 TiB).
const maxBridgeLogMB = 1 << 20

func parseSession(c *cli.Context) (sessionSettings, error) {
	s := sessionSettings{
		bridgeLog:    c.String("bridge-log"),
		logMaxMB:     c.Int("bridge-log-max-size"),
		logBackups:   c.Int("bridge-log-max-backups"),
		restoreCreds: c.Bool("restore-creds"),
	}
	if n := s.logMaxMB; n < 1 || n > maxBridgeLogMB {
		return s, usageError("--bridge-log-max-size must be between 1 and %d megabytes (got %d)", maxBridgeLogMB, n)
	}
	if n := s.logBackups; n < 1 {
		return s, usageError("--bridge-log-max-backups must be at least 1 (got %d)", n)
	}
	return s, nil
}

// nonTerminating are the signals whose default action does not end a
// process (it stops, continues or ignores), so no bridge dies of them.
var nonTerminating = map[syscall.Signal]bool{
	syscall.SIGSTOP: true, syscall.SIGTSTP: true, syscall.SIGTTIN: true, syscall.SIGTTOU: true,
	syscall.SIGCONT: true, syscall.SIGCHLD: true, syscall.SIGURG: true, syscall.SIGWINCH: true,
}

// parseMonitor reads the supervision flags into a monitor configuration,
// or a usage error that names the flag to fix.
func parseMonitor(c *cli.Context) (procmon.Config, error) {
	var cfg procmon.Config
	normal, err := signals.ParseSet(c.String("normal-signals"))
	if err != nil {
		return cfg, usageError("--normal-signals: %v", err)
	}
	if len(normal) == 0 {
		return cfg, usageError("--normal-signals is empty; name the signals whose deaths are a normal shutdown, e.g. TERM,INT,KILL (the default)")
	}
	for sig := range normal {
		if nonTerminating[sig] {
			return cfg, usageError("--normal-signals: %s does not end a process (it stops, continues or is ignored), so no bridge dies of it; use signals such as TERM,INT,KILL", signals.Name(sig))
		}
	}
	cfg.NormalSignals = normal
	stop, err := signals.Parse(c.String("stop-signal"))
	if err != nil {
		return cfg, usageError("--stop-signal: %v", err)
	}
	if nonTerminating[stop] {
		return cfg, usageError("--stop-signal %s does not end a process (it stops, continues or is ignored), so the bridge would only be killed at --stop-timeout; use TERM (the default) or INT", signals.Name(stop))
	}
	if stop == syscall.SIGKILL {
		return cfg, usageError("--stop-signal KILL leaves the bridge no chance to stop cleanly; use TERM (the default) and a short --stop-timeout instead")
	}
	cfg.StopSignal = stop
	cfg.SignalGroup = c.Bool("signal-group")
	cfg.StopTimeout = c.Duration("stop-timeout")
	if cfg.StopTimeout <= 0 {
		return cfg, usageError("--stop-timeout must be positive (got %s)", cfg.StopTimeout)
	}
	cfg.Backoff = procmon.Backoff{
		Initial:    c.Duration("backoff-initial"),
		Max:        c.Duration("backoff-max"),
		Multiplier: procmon.DefaultBackoff.Multiplier,
		Jitter:     c.Float64("backoff-jitter"),
		Reset:      c.Duration("backoff-reset"),
	}
	if err := cfg.Backoff.Validate(); err != nil {
		return cfg, usageError("%v", flagError(err))
	}
	cfg.MaxRestarts = c.Int("max-restarts")
	if cfg.MaxRestarts < 0 {
		return cfg, usageError("--max-restarts must not be negative (got %d); 0 means never give up", cfg.MaxRestarts)
	}
	cfg.TailLines = c.Int("tail-lines")
	// Each exit record travels in its event and in the snapshot; 1000
	// lines of at most 2 KiB keep an event well inside a client's limit.
	if cfg.TailLines < 1 || cfg.TailLines > 1000 {
		return cfg, usageError("--tail-lines must be between 1 and 1000 (got %d)", cfg.TailLines)
	}
	cfg.MaxLineBytes = c.Int("max-line-bytes")
	// A line becomes one log record, whose escaping may make it six times
	// longer: 16 MiB lines made 100 MB records, and as much memory.
	if cfg.MaxLineBytes < 80 || cfg.MaxLineBytes > 1<<20 {
		return cfg, usageError("--max-line-bytes must be between 80 and 1048576 (got %d)", cfg.MaxLineBytes)
	}
	return cfg, nil
}

// hermesOptions are the Hermes layer's options for the bridge t, with the
// health flags s.
func (h healthSettings) hermesOptions(t bridge.Target, expect *bridge.Expect, logger *slog.Logger, qr io.Writer) bridge.Options {
	opts := bridge.Options{
		Port:           t.Port,
		SessionDir:     t.SessionDir,
		Expect:         expect,
		HealthPeriod:   h.period,
		HealthTimeout:  h.timeout,
		HealthFailures: h.failures,
		ConnectGrace:   h.grace,
		Logger:         logger,
		QRWriter:       qr,
	}
	return opts
}
