// Command wa-sidecar supervises the Hermes WhatsApp bridge: it keeps the
// bridge running, tells crashes from normal shutdowns, and stops it without
// leaving orphans or zombies.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

// Exit codes. 64 is EX_USAGE from sysexits.h.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 64
)

// usageError marks a mistake in the command line, which exits with 64.
func usageError(format string, args ...any) error {
	return cli.Exit("wa-sidecar: "+fmt.Sprintf(format, args...), exitUsage)
}

func onUsageError(_ *cli.Context, err error, _ bool) error {
	return usageError("%v (see --help)", err)
}

func newApp() *cli.App {
	return &cli.App{
		Name:    "wa-sidecar",
		Usage:   "keep the Hermes WhatsApp bridge running, and tell the gateway how it is",
		Version: sidecarVersion(),
		Description: "wa-sidecar spawns the bridge, tells normal shutdowns (SIGTERM, SIGINT, SIGKILL) from\n" +
			"crashes, respawns it with capped, jittered backoff, and never exits because the bridge failed.",
		OnUsageError:         onUsageError,
		EnableBashCompletion: true, // completion bash|zsh|fish asks the binary itself
		HideHelpCommand:      true,
		Commands:             commands(),
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(c.App.ErrWriter, "wa-sidecar: unknown command %q; run 'wa-sidecar --help' for the list\n", name)
			cli.OsExiter(exitUsage)
		},
	}
}

func commands() []*cli.Command {
	cmds := append([]*cli.Command{
		runCommand(),
		simulateBridgeCommand(),
		installServiceCommand(),
		doctorCommand(),
		prepareBridgeCommand(),
		installHermesPluginCommand(),
		pairCommand(),
		logsCommand(),
		completionCommand(),
	}, clientCommands()...)
	if man := manCommand(); man != nil {
		cmds = append(cmds, man)
	}
	return cmds
}

func main() {
	// With SIGPIPE handled, a write to a stderr whose reader has gone (a
	// closed pager, `| tee` stopped by Ctrl-C) fails with EPIPE instead of
	// killing the sidecar before it has stopped the bridge. Handled, not
	// ignored: an ignored signal would be inherited by the bridge.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	os.Exit(run(os.Args))
}

// run executes the app and turns its error into an exit code. Errors the
// app did not classify are usage errors when they come from parsing (urfave
// returns those before any action runs) and general errors otherwise.
func run(args []string) int {
	app := newApp()
	// The words as typed: only they tell a command after -- from a stray
	// word (urfave gives both as arguments), and a flag from its variable.
	app.Metadata = map[string]any{argsKey: args}
	err := app.Run(args)
	if err == nil {
		return exitOK
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(os.Stderr, msg)
		}
		return ec.ExitCode()
	}
	fmt.Fprintln(os.Stderr, "wa-sidecar:", err)
	return exitUsage
}
