package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/bridge/session"
	"github.com/wa-sidecar/wa-sidecar/internal/logsink"
	"github.com/wa-sidecar/wa-sidecar/internal/notify"
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
		Flags:        withFixedNames(append(runFlags(), feedFlags()...)),
		OnUsageError: onUsageError,
		Action:       runAction,
	}
}

// withFixedNames wraps each of flags so that its names are worked out
// once. urfave/cli v2 works a flag's names out afresh (a regular
// expression over each) whenever it looks for a flag, and before a
// command's action it looks for every flag, under each of its names,
// among all of them: for run's sixty flags that took 0.7 ms of CPU
// between the sidecar's exec and the bridge's. A boolean flag that is
// hidden or has no default text is left as it is: the library asks for
// the *cli.BoolFlag itself to leave those out of the help.
func withFixedNames(flags []cli.Flag) []cli.Flag {
	out := make([]cli.Flag, len(flags))
	for i, f := range flags {
		switch f := f.(type) {
		case *cli.BoolFlag:
			out[i] = f
			if !f.Hidden && !f.DisableDefaultText {
				out[i] = boolFlag{f, f.Names()}
			}
		case *cli.StringFlag:
			out[i] = stringFlag{f, f.Names()}
		case *cli.StringSliceFlag:
			out[i] = stringSliceFlag{f, f.Names()}
		case *cli.IntFlag:
			out[i] = intFlag{f, f.Names()}
		case *cli.DurationFlag:
			out[i] = durationFlag{f, f.Names()}
		case *cli.Float64Flag:
			out[i] = float64Flag{f, f.Names()}
		default:
			out[i] = f
		}
	}
	return out
}

// The flags of withFixedNames: each is its urfave/cli flag, with the
// names it had when wrapped.
type (
	boolFlag struct {
		*cli.BoolFlag
		names []string
	}
	stringFlag struct {
		*cli.StringFlag
		names []string
	}
	stringSliceFlag struct {
		*cli.StringSliceFlag
		names []string
	}
	intFlag struct {
		*cli.IntFlag
		names []string
	}
	durationFlag struct {
		*cli.DurationFlag
		names []string
	}
	float64Flag struct {
		*cli.Float64Flag
		names []string
	}
)

func (f boolFlag) Names() []string        { return f.names }
func (f stringFlag) Names() []string      { return f.names }
func (f stringSliceFlag) Names() []string { return f.names }
func (f intFlag) Names() []string         { return f.names }
func (f durationFlag) Names() []string    { return f.names }
func (f float64Flag) Names() []string     { return f.names }

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
	s, err := parseRun(c, logger)
	if err != nil {
		return err
	}
	return runSidecar(s, style, &sinks, sigs, logger, c.App.ErrWriter)
}

// runSidecar builds the sidecar's parts from s, in the order in which each needs
// the one before, and runs them together. The log's style and sinks are
// the ones logger writes through; errw is where --demo's knobs print their
// help.
func runSidecar(s runSettings, style logsink.Style, sinks *logsink.Sinks, sigs <-chan os.Signal, logger *slog.Logger, errw io.Writer) error {
	in := loadInstall(s, logger)
	target, err := bridgeTarget(s, in, errw)
	if err != nil {
		return err
	}
	if target.Cleanup != nil {
		defer target.Cleanup()
	}
	if s.demo {
		if err := demoState(&s, target, logger); err != nil {
			return err
		}
	}
	cfg := s.monitor
	cfg.Name, cfg.StartHint = "bridge", "wa-sidecar start (or SIGHUP)"
	cfg.Command, cfg.Dir = target.Command, cmp.Or(s.workdir, target.Dir)
	cfg.Logger = logger
	cfg.Env = in.BridgeEnv(os.Environ())
	makeCacheDirs(in, logger)
	if !s.demo {
		announceBridge(target, in, logger)
	}
	outputHooks := bridgeOutput(logger, s.bridgeOutput, style, sinks, os.Stdout, os.Stderr)
	if s.bridgeOutput == bridgeOutputRaw {
		defer sinks.Close(os.Stdout, logCloseWait)
	}

	reaper, err := newReaper(s.subreaper, logger)
	if err != nil {
		return err
	}
	defer reaper.Close()
	cfg.Reaper = reaper

	guard, bridgeLog, err := protectSession(s.session, target, logger)
	if err != nil {
		return err
	}
	if bridgeLog != nil {
		defer bridgeLog.Close()
	}
	if guard != nil {
		defer guard.Close()
	}
	hermes, err := bridge.New(s.health.hermesOptions(target, expectation(in, target), logger, qrWriter(style, sinks)))
	if err != nil {
		return usageError("%v", flagError(err))
	}

	files := &stateFiles{}
	cfg.Hooks = hookList(hermes, files, guard, bridgeLog, outputHooks)
	cfg.ExternalReadiness = hermes.ExternalReadiness()
	m, err := procmon.New(cfg)
	if err != nil {
		return usageError("%v", flagError(err))
	}

	// Everything that follows the monitor subscribes here, before it runs,
	// so that none misses its first events.
	srv, release, err := startFeed(s, m, files, logger)
	if err != nil {
		return err
	}
	defer release()
	systemd, err := notify.New(m, logger, statusSummary())
	if err != nil {
		return cli.Exit("wa-sidecar: "+err.Error(), exitError)
	}
	parts := []part{
		{"status server", srv},
		{"state directory", files},
		{"metrics", serveMetrics(srv, m, logger)},
		{"systemd notification", systemd},
		{"bridge watch", hermes.Watch(m)},
		{"page release", &pageRelease{follow: m.Follow(16), wait: 2 * s.health.grace, logger: logger}},
	}
	if guard != nil {
		parts = append(parts, part{"session watch", guard.Watch(m)})
	}
	if systemd.Enabled() {
		logger.Debug("reporting to systemd", "socket", os.Getenv("NOTIFY_SOCKET"), "watchdog", systemd.Watchdog().String())
		files.ready = systemd.Ready
	}
	return supervise(m, parts, sigs, logger, systemd.Stopping)
}

// newReaper makes the one owner of wait for the sidecar's children; as
// PID 1, or with --subreaper, it reaps every orphan that comes to it.
func newReaper(subreaper bool, logger *slog.Logger) (*signals.Reaper, error) {
	reapAll := os.Getpid() == 1
	if subreaper {
		if err := signals.BecomeSubreaper(); err != nil {
			return nil, cli.Exit(fmt.Sprintf("wa-sidecar: --subreaper: %v", err), exitError)
		}
		reapAll = true
	}
	if reapAll {
		logger.Info("reaping orphaned processes", "pid1", os.Getpid() == 1)
		if !signals.ProcIsOurs() {
			logger.Warn("/proc shows another PID namespace, so processes the bridge leaves behind are reaped but not stopped or reported; mount a /proc of this namespace (unshare --mount-proc, or a container's own /proc)")
		}
	}
	return signals.NewReaper(signals.ReaperOptions{
		ReapAll: reapAll,
		Orphan: func(pid int, ws syscall.WaitStatus) {
			logger.Debug("reaped an orphaned process", "pid", pid, "status", describeStatus(ws))
		},
	}), nil
}

// announceBridge says what the sidecar runs when it runs what the gateway
// would, and warns at once when that bridge cannot start for want of its
// dependencies.
func announceBridge(target bridge.Target, in gateway.Install, logger *slog.Logger) {
	if target.Script == "" {
		return
	}
	logger.Info("running the bridge as the gateway would", "script", target.Script, "port", target.Port,
		"session", target.SessionDir, "mode", in.Mode, "read_receipts", in.SendReadReceipts)
	if dir := filepath.Dir(target.Script); !isDir(filepath.Join(dir, "node_modules")) {
		logger.Error("the bridge's dependencies are not installed, so it cannot start: run 'wa-sidecar prepare-bridge "+dir+"' (or 'hermes whatsapp'), then 'wa-sidecar start'",
			"dir", dir)
	}
}

// hookList is the one list of hooks, in the order the monitor asks them:
// the Hermes layer sees each line and each exit first; the session guard
// (if any) has its say before each spawn and records the bridge right
// after it, before anything else, since that record is what lets the next
// sidecar stop a bridge this one leaves behind; the state directory's
// files are written after the first spawn, behind the record and their
// fsyncs off its way; then bridge.log (if any) and the sidecar's own log
// take the output.
func hookList(hermes *bridge.Hermes, files *stateFiles, guard *session.Guard, bridgeLog *session.BridgeLog, output []procmon.Hook) []procmon.Hook {
	hooks := []procmon.Hook{hermes.Hook()}
	if guard != nil {
		hooks = append(hooks, guard)
	}
	hooks = append(hooks, files)
	if bridgeLog != nil {
		hooks = append(hooks, bridgeLog)
	}
	return append(hooks, output...)
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
func loadInstall(s runSettings, logger *slog.Logger) gateway.Install {
	if s.demo {
		return gateway.Install{}
	}
	in := gateway.Load(gateway.Options{HermesHome: s.hermesHome, HomeFrom: "--hermes-home"})
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

// A part is one of the things that follow the monitor and run beside it.
type part struct {
	name string
	r    interface{ Run(context.Context) error }
}

// supervise runs the monitor and the parts together, and turns the
// sidecar's own signals into commands: the first TERM, INT or QUIT stops
// gracefully (and tells stopping), a second INT forces, HUP restarts the
// bridge, USR1 and USR2 are passed on. The parts end by themselves once
// the monitor has finished and they have taken its last event; a part
// that fails stops the bridge and the rest (and tells stopping).
// supervise returns when all have ended.
func supervise(m *procmon.Monitor, parts []part, sigs <-chan os.Signal, logger *slog.Logger, stopping func()) error {
	g, ctx := errgroup.WithContext(context.Background())
	monCtx, stop := context.WithCancel(ctx)
	defer stop()
	// The signals that came while the sidecar was setting up (stopping a
	// leftover bridge alone can take seconds) are taken first. After a
	// stop signal among them the monitor is told to stop before it runs,
	// so that no bridge is spawned only to be stopped at once.
	early := pendingSignals(sigs)
	if slices.ContainsFunc(early, isStopSignal) {
		stop()
	}
	g.Go(func() error {
		if err := m.Run(monCtx); err != nil {
			return fmt.Errorf("monitor: %w", err)
		}
		return nil
	})
	for _, p := range parts {
		g.Go(func() error {
			if err := p.r.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		// A part that failed stops the bridge through ctx: systemd hears
		// of that stop too.
		select {
		case <-ctx.Done():
			stopping()
		case <-m.Done():
		}
		return nil
	})
	g.Go(func() error {
		// The monitor first: telling systemd can take a write's timeout
		// when nobody reads its socket, and the bridge's stop must not
		// wait for that.
		forwardSignals(m, early, sigs, logger, func() { stop(); stopping() })
		return nil
	})
	if err := g.Wait(); err != nil {
		logger.Error("wa-sidecar exiting", "error", err)
		return cli.Exit("wa-sidecar: "+err.Error(), exitError)
	}
	logger.Info("wa-sidecar exiting")
	return nil
}

// pendingSignals takes the signals already waiting in sigs.
func pendingSignals(sigs <-chan os.Signal) []os.Signal {
	var got []os.Signal
	for {
		select {
		case s := <-sigs:
			got = append(got, s)
		default:
			return got
		}
	}
}

// isStopSignal reports whether s asks the sidecar to stop.
func isStopSignal(s os.Signal) bool {
	return s == syscall.SIGTERM || s == syscall.SIGINT || s == syscall.SIGQUIT
}

// forwardSignals turns signals into commands to m until m has finished,
// the early ones first; the first TERM, INT or QUIT calls stop.
func forwardSignals(m *procmon.Monitor, early []os.Signal, sigs <-chan os.Signal, logger *slog.Logger, stop func()) {
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
	handle := func(s os.Signal) {
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
				stop()
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
	for _, s := range early {
		handle(s)
	}
	for {
		select {
		case <-m.Done():
			return
		case s := <-sigs:
			handle(s)
		}
	}
}

// logIfErr warns of a command that failed. One that came after the
// monitor finished (a second Ctrl-C as it ends) is moot, and says nothing.
func logIfErr(logger *slog.Logger, what string, err error) {
	if err != nil && !errors.Is(err, procmon.ErrNotRunning) {
		logger.Warn(what+" failed", "error", err)
	}
}

func describeStatus(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + signals.Name(ws.Signal())
	}
	return fmt.Sprintf("exit %d", ws.ExitStatus())
}
