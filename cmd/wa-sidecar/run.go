package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/internal/logsink"
	"github.com/wa-sidecar/wa-sidecar/procmon"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

func envs(name string) []string { return []string{"WA_SIDECAR_" + name} }

// argsKey holds the command line as typed in the app's Metadata.
const argsKey = "args"

// commandLine splits the words run was given into those before a "--"
// that ends the flags and the command after it. known is false when the
// words are not at hand (an app run without Metadata).
func commandLine(c *cli.Context) (flags []string, afterDashes bool, known bool) {
	raw, ok := c.App.Metadata[argsKey].([]string)
	if !ok {
		return nil, false, false
	}
	// Flag parsing stops at "--" or at the first word that is not a flag,
	// so the command's arguments are the last words typed.
	k := c.Args().Len()
	if k > len(raw) {
		return nil, false, false
	}
	flags = raw[:len(raw)-k]
	if k > 0 && len(flags) > 0 && flags[len(flags)-1] == "--" {
		return flags[:len(flags)-1], true, true
	}
	return flags, false, true
}

// onCommandLine reports whether the flag name was typed on the command
// line, rather than set by its variable.
func onCommandLine(c *cli.Context, name string) bool {
	flags, _, _ := commandLine(c)
	for _, a := range flags {
		if n := strings.TrimLeft(a, "-"); n != a && (n == name || strings.HasPrefix(n, name+"=")) {
			return true
		}
	}
	return false
}

// checkCommandWords refuses words after run that are not flags unless a
// "--" comes before them: a stray word, such as a glob that the shell
// expanded into file names, would otherwise be run as the bridge.
func checkCommandWords(c *cli.Context) error {
	if c.Args().Len() == 0 {
		return nil
	}
	if _, dashes, known := commandLine(c); dashes || !known {
		return nil
	}
	return usageError("%q is not a flag of run; to supervise a command, put it after --, as in: wa-sidecar run [FLAGS] -- %s",
		c.Args().First(), strings.Join(c.Args().Slice(), " "))
}

// nonTerminating are the signals whose default action does not end a
// process (it stops, continues or ignores), so no bridge dies of them.
var nonTerminating = map[syscall.Signal]bool{
	syscall.SIGSTOP: true, syscall.SIGTSTP: true, syscall.SIGTTIN: true, syscall.SIGTTOU: true,
	syscall.SIGCONT: true, syscall.SIGCHLD: true, syscall.SIGURG: true, syscall.SIGWINCH: true,
}

func runFlags() []cli.Flag {
	d := procmon.DefaultBackoff
	return append(append(targetFlags(), sessionFlags()...),
		&cli.StringFlag{Name: "workdir", Usage: "working directory of the bridge", EnvVars: envs("WORKDIR")},
		&cli.StringFlag{Name: "normal-signals", Value: "TERM,INT,KILL", Usage: "signals whose deaths are a normal shutdown, not a crash (exit codes 128+n count too)", EnvVars: envs("NORMAL_SIGNALS")},
		&cli.DurationFlag{Name: "backoff-initial", Value: d.Initial, Usage: "delay before the first respawn after a failure", EnvVars: envs("BACKOFF_INITIAL")},
		&cli.DurationFlag{Name: "backoff-max", Value: d.Max, Usage: "longest delay between respawns", EnvVars: envs("BACKOFF_MAX")},
		&cli.DurationFlag{Name: "backoff-reset", Value: d.Reset, Usage: "uptime after which earlier failures are forgiven", EnvVars: envs("BACKOFF_RESET")},
		&cli.Float64Flag{Name: "backoff-jitter", Value: d.Jitter, Usage: "random spread of each delay, as a fraction (0.2 = ±20 %)", EnvVars: envs("BACKOFF_JITTER")},
		&cli.IntFlag{Name: "max-restarts", Value: 0, Usage: "after this many consecutive failed runs, park the bridge (given_up) until a start command; 0 = never", EnvVars: envs("MAX_RESTARTS")},
		&cli.StringFlag{Name: "stop-signal", Value: "TERM", Usage: "signal that asks the bridge to stop", EnvVars: envs("STOP_SIGNAL")},
		&cli.DurationFlag{Name: "stop-timeout", Value: 10 * time.Second, Usage: "how long to wait after the stop signal before SIGKILL to the bridge's process group", EnvVars: envs("STOP_TIMEOUT")},
		&cli.BoolFlag{Name: "signal-group", Usage: "send the stop signal and forwarded signals to the bridge's whole process group (for wrappers like npm or sh that do not pass them on)", EnvVars: envs("SIGNAL_GROUP")},
		&cli.BoolFlag{Name: "subreaper", Usage: "become a child subreaper and reap orphaned descendants (implied when running as PID 1)", EnvVars: envs("SUBREAPER")},
		&cli.IntFlag{Name: "tail-lines", Value: 20, Usage: "lines of the bridge's output kept for each exit record", EnvVars: envs("TAIL_LINES")},
		&cli.IntFlag{Name: "max-line-bytes", Value: 64 << 10, Usage: "longer output lines are cut to this many bytes (at most 1 MiB)", EnvVars: envs("MAX_LINE_BYTES")},
		&cli.StringFlag{Name: "log-format", Value: "auto", Usage: "auto (coloured text on a terminal, plain with $NO_COLOR; text with syslog priorities under journald; JSON lines otherwise), text or json", EnvVars: envs("LOG_FORMAT")},
		&cli.StringFlag{Name: "bridge-output", Value: bridgeOutputLog, Usage: "where the bridge's output goes: log (a record per line in the sidecar's log, marked with stream and pid), raw (the lines unchanged, the bridge's stdout on stdout and its stderr on stderr) or off", EnvVars: envs("BRIDGE_OUTPUT")},
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: envs("LOG_LEVEL")},
	)
}

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "start the bridge and keep it running",
		ArgsUsage: "[-- COMMAND [ARGS...]]",
		Description: "With no command, runs the Hermes bridge found under $HERMES_HOME (default ~/.hermes);\n" +
			"--demo runs a simulated bridge instead, whose flags after -- change its story.\n\n" +
			"Examples:\n" +
			"   wa-sidecar run --demo\n" +
			"   wa-sidecar run --demo -- --crash-after 20s --flip-every 10s\n" +
			"   wa-sidecar run\n" +
			"   wa-sidecar run -- node ~/.hermes/scripts/whatsapp-bridge/bridge.js --port 3000 --session ~/.hermes/platforms/whatsapp/session\n" +
			"   wa-sidecar run --backoff-max 30s --stop-timeout 20s -- ./my-bridge\n\n" +
			"SIGTERM, SIGINT or SIGQUIT stop the bridge and then the sidecar (a second SIGINT skips the wait);\n" +
			"SIGHUP restarts the bridge; SIGUSR1 and SIGUSR2 are passed on to it.",
		Flags:        append(runFlags(), feedFlags()...),
		OnUsageError: onUsageError,
		Action:       runAction,
	}
}

// runConfig turns the flags into a monitor configuration, or a usage error
// that names the flag to fix.
func runConfig(c *cli.Context, target bridge.Target) (procmon.Config, error) {
	var cfg procmon.Config
	cfg.Command = target.Command
	cfg.Dir = target.Dir
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
	if dir := c.String("workdir"); dir != "" {
		st, err := os.Stat(dir)
		if err != nil || !st.IsDir() {
			return cfg, usageError("--workdir %q is not a directory", dir)
		}
		cfg.Dir = dir
	}
	return cfg, nil
}

func runAction(c *cli.Context) error {
	// First of all: a SIGTERM during the set-up (a quick systemctl stop)
	// then waits for supervise instead of killing the sidecar outright.
	sigs := make(chan os.Signal, 8)
	// SIGQUIT too: Go's default for it (a goroutine dump and exit 2) left
	// the bridge running and a stale sidecar.json behind.
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	var sinks logsink.Sinks
	logger, style, err := newLogger(&sinks, c.String("log-format"), c.String("log-level"), os.Stderr)
	if err != nil {
		return usageError("%v", err)
	}
	// Libraries that write through the standard log package (the metrics
	// library reports its rare errors so) then land in the same log, in
	// the same format, instead of as stray text lines.
	slog.SetDefault(logger)
	// Last deferred, first run: what the sidecar said reaches stderr
	// before its exit status, unless nobody has read stderr for a while.
	defer sinks.Close(os.Stderr, logCloseWait)
	if err := checkFlags(c); err != nil {
		return err
	}
	feedSet, err := checkFeedFlags(c, logger)
	if err != nil {
		return err
	}
	mode, err := checkBridgeOutput(c.String("bridge-output"))
	if err != nil {
		return usageError("%v", err)
	}
	in := loadInstall(c, logger)
	target, err := bridgeTarget(c, in)
	if err != nil {
		return err
	}
	if target.Cleanup != nil {
		defer target.Cleanup()
	}
	if c.Bool("demo") {
		if err := demoState(c, target, &feedSet, logger); err != nil {
			return err
		}
	}
	cfg, err := runConfig(c, target)
	if err != nil {
		return err
	}
	cfg.Logger = logger
	cfg.Env = in.BridgeEnv(os.Environ())
	makeCacheDirs(in, logger)
	if target.Script != "" && !c.Bool("demo") {
		logger.Info("running the bridge as the gateway would", "script", target.Script, "port", target.Port,
			"session", target.SessionDir, "mode", in.Mode, "read_receipts", in.SendReadReceipts)
		if dir := filepath.Dir(target.Script); !isDir(filepath.Join(dir, "node_modules")) {
			logger.Error("the bridge's dependencies are not installed, so it cannot start: run 'wa-sidecar prepare-bridge "+dir+"' (or 'hermes whatsapp'), then 'wa-sidecar start'",
				"dir", dir)
		}
	}
	outputHooks := bridgeOutput(logger, mode, style, &sinks, os.Stdout, os.Stderr)
	if mode == bridgeOutputRaw {
		defer sinks.Close(os.Stdout, logCloseWait)
	}

	reapAll := os.Getpid() == 1
	if c.Bool("subreaper") {
		if err := signals.BecomeSubreaper(); err != nil {
			return cli.Exit(fmt.Sprintf("wa-sidecar: --subreaper: %v", err), exitError)
		}
		reapAll = true
	}
	reaper := signals.NewReaper(signals.ReaperOptions{
		ReapAll: reapAll,
		Orphan: func(pid int, ws syscall.WaitStatus) {
			logger.Debug("reaped an orphaned process", "pid", pid, "status", describeStatus(ws))
		},
	})
	defer reaper.Close()
	cfg.Reaper = reaper

	guard, bridgeLog, err := protectSession(c, target, logger)
	if err != nil {
		return err
	}
	if bridgeLog != nil {
		defer bridgeLog.Close()
	}
	if guard != nil {
		defer guard.Close()
	}

	hermes, err := newHermes(c, target, expectation(in, target), logger, qrWriter(style, &sinks))
	if err != nil {
		return err
	}
	// The one list of hooks, in the order the monitor asks them: the
	// Hermes layer sees each line and each exit first, then the session
	// guard has its say before each spawn, then bridge.log and the
	// sidecar's own log take the output.
	cfg.Hooks = append(cfg.Hooks, hermes.Hook())
	if guard != nil {
		cfg.Hooks = append(cfg.Hooks, guard)
	}
	if bridgeLog != nil {
		cfg.Hooks = append(cfg.Hooks, bridgeLog)
	}
	cfg.Hooks = append(cfg.Hooks, outputHooks...)
	cfg.ExternalReadiness = hermes.ExternalReadiness()

	m, err := procmon.New(cfg)
	if err != nil {
		return usageError("%v", flagError(err))
	}
	srv, waitFeed, err := startFeed(c, feedSet, m, logger)
	if err != nil {
		return err
	}
	defer waitFeed()
	defer serveMetrics(srv, m, logger)()
	// Before any goroutine that waits for the monitor: a failure here must
	// return without the monitor ever running.
	stopSystemd, err := followSystemd(m, logger)
	if err != nil {
		return err
	}
	defer stopSystemd()
	hermesDone := make(chan struct{})
	watchHermes := hermes.Watch(m)
	go func() { defer close(hermesDone); watchHermes.Run(context.Background()) }()
	defer func() { <-hermesDone }()
	if guard != nil {
		guardCtx, stopGuard := context.WithCancel(context.Background())
		defer stopGuard()
		watchGuard := guard.Watch(m)
		go watchGuard.Run(guardCtx)
	}
	if reapAll {
		logger.Info("reaping orphaned processes", "pid1", os.Getpid() == 1)
		if !signals.ProcIsOurs() {
			logger.Warn("/proc shows another PID namespace, so processes the bridge leaves behind are reaped but not stopped or reported; mount a /proc of this namespace (unshare --mount-proc, or a container's own /proc)")
		}
	}
	return supervise(m, sigs, logger)
}

// expectation is what the gateway checks before it adopts the bridge:
// its own bridge files, port and session when a Hermes install was found,
// else those of the bridge the sidecar runs.
func expectation(in gateway.Install, t bridge.Target) *bridge.Expect {
	ex := &bridge.Expect{Script: t.Script, SendReadReceipts: in.SendReadReceipts}
	if in.Home == "" {
		return ex // --demo, or no Hermes home
	}
	if in.Script != "" {
		ex.Script = in.Script
	}
	ex.Port, ex.SessionDir = in.Port, in.SessionDir
	return ex
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// loadInstall reads what the gateway would do from the Hermes home
// (config.yaml, .env, the install tree), except for --demo, which runs
// in a world of its own; it writes nothing. What cannot be read is logged
// with its file and line, and the defaults apply: supervising goes on.
func loadInstall(c *cli.Context, logger *slog.Logger) gateway.Install {
	if c.Bool("demo") {
		return gateway.Install{}
	}
	in := gateway.Load(gateway.Options{HermesHome: c.String("hermes-home")})
	for _, p := range in.Problems {
		logger.Warn("Hermes configuration: "+p.Error()+"; the gateway's default is used instead", "file", p.File, "line", p.Line)
	}
	return in
}

// makeCacheDirs creates the gateway's media cache directories, once there
// is a bridge to run that needs them.
func makeCacheDirs(in gateway.Install, logger *slog.Logger) {
	if err := in.MakeCacheDirs(); err != nil {
		logger.Warn("could not create the gateway's media cache directories; the bridge may fail to save media", "error", err)
	}
}

// supervise runs the monitor and turns the sidecar's own signals into
// commands: the first TERM, INT or QUIT stops gracefully, a second INT forces,
// HUP restarts the bridge, USR1 and USR2 are passed on.
func supervise(m *procmon.Monitor, sigs <-chan os.Signal, logger *slog.Logger) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- m.Run(ctx) }()

	// The commands go to the monitor from one goroutine, in the order their
	// signals came: a goroutine each let USR2 overtake USR1. The loop below
	// never waits for them, so a stop still gets through at once.
	cmds := make(chan func(), 64)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for f := range cmds {
			f()
		}
	}()
	defer func() { close(cmds); <-sent }()
	queue := func(sig syscall.Signal, f func()) {
		select {
		case cmds <- f:
		default:
			logger.Warn("too many signals waiting to be passed on; this one is dropped", "signal", signals.Name(sig))
		}
	}

	stopping := false
	for {
		select {
		case err := <-errc:
			if err != nil {
				return cli.Exit("wa-sidecar: "+err.Error(), exitError)
			}
			logger.Info("wa-sidecar exiting")
			return nil
		case s := <-sigs:
			sig := s.(syscall.Signal)
			switch sig {
			case syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT:
				if !stopping {
					stopping = true
					attrs := []any{"signal", signals.Name(sig)}
					if sig == syscall.SIGINT {
						attrs = append(attrs, "hint", "press Ctrl-C again to kill it now")
					}
					logger.Info("stopping: bringing the bridge down first", attrs...)
					cancel()
				} else if sig == syscall.SIGINT {
					logger.Warn("second interrupt: killing the bridge now")
					queue(sig, func() { logIfErr(logger, "kill", m.Kill(context.Background())) })
				} else {
					logger.Info("already stopping", "signal", signals.Name(sig))
				}
			case syscall.SIGHUP:
				logger.Info("SIGHUP: restarting the bridge")
				queue(sig, func() { logIfErr(logger, "restart", m.Restart(context.Background())) })
			default:
				queue(sig, func() { logIfErr(logger, "forward "+signals.Name(sig), m.Signal(context.Background(), sig)) })
			}
		}
	}
}

func logIfErr(logger *slog.Logger, what string, err error) {
	if err != nil {
		logger.Warn(what+" failed", "error", err)
	}
}

func describeStatus(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + signals.Name(ws.Signal())
	}
	return fmt.Sprintf("exit %d", ws.ExitStatus())
}
