package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
)

// demoTarget is the simulated bridge of --demo, changed by the simulator
// flags given after -- (the chaos knobs).
func demoTarget(errw io.Writer, knobs []string) (bridge.Target, error) {
	exe, err := os.Executable()
	if err != nil {
		return bridge.Target{}, cli.Exit(fmt.Sprintf("wa-sidecar: --demo: cannot find my own executable: %v", err), exitError)
	}
	t, err := bridge.Demo(exe, knobs, errw)
	var knob *bridge.DemoKnobError
	switch {
	case errors.Is(err, flag.ErrHelp):
		return t, cli.Exit("", 0)
	case errors.As(err, &knob):
		return t, usageError("--demo: %v; the words after -- change the simulated bridge (for example -- --crash-after 20s --flip-every 10s); to run a bridge command of your own, drop --demo", knob.Err)
	case err != nil:
		return t, cli.Exit("wa-sidecar: --demo: "+err.Error(), exitError)
	}
	return t, nil
}

// demoListen is where a demo that keeps to itself listens: any free
// loopback port.
const demoListen = "127.0.0.1:0"

// demoState decides where the demo t keeps its state, unless --state-dir
// says so.
//
// The client commands of the README (status, watch, restart) find a
// sidecar through sidecar.json in the default state directory, so a demo
// announces itself there when no other sidecar holds that directory. Its
// token goes to its temporary directory all the same, so the token file
// of a real sidecar that is not running is never replaced, and both go
// away with the demo. When another sidecar holds the default state
// directory, the demo keeps everything to itself, on a free port unless
// --listen says otherwise, and says how to reach it.
func demoState(s *runSettings, t bridge.Target, logger *slog.Logger) error {
	if s.stateDir != "" {
		return nil
	}
	own := filepath.Join(filepath.Dir(t.SessionDir), "state")
	shared, err := feed.DefaultStateDir()
	if err == nil {
		var held *feed.StateDirHeldError
		if err = stateDirFree(shared); errors.As(err, &held) {
			// That sidecar most likely has the default address too: a
			// free port keeps the demo from exiting 75 beside it, and the
			// clients find the port in the demo's own sidecar.json.
			if !s.listenGiven {
				s.feed.opts.Listen = demoListen
			}
			logger.Info("another sidecar uses the default state directory; this demo keeps its own, so pass --state-dir to the client commands",
				"state_dir", own, "try", "wa-sidecar status --state-dir "+own)
		}
	}
	if err != nil {
		s.stateDir = own
		return nil
	}
	if err := feed.PrepareStateDir(own); err != nil {
		return cli.Exit("wa-sidecar: --demo: "+flagError(err).Error(), exitError)
	}
	s.feed.tokenDir = own
	logger.Info("in another shell, the client commands reach this demo", "try", "wa-sidecar status; wa-sidecar watch; wa-sidecar restart", "state_dir", shared)
	return nil
}

// stateDirFree reports whether no sidecar holds the state directory dir
// now: nil when it is free or does not exist yet.
func stateDirFree(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	lock, err := feed.LockStateDir(dir)
	if err != nil {
		return err
	}
	return lock.Unlock()
}
