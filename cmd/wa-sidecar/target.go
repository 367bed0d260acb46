package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/internal/logsink"
)

// exitConfig is EX_CONFIG: the Hermes systemd unit never restarts it, which
// is right when there is no bridge to run.
const exitConfig = 78

func targetFlags() []cli.Flag {
	return append(append([]cli.Flag{
		&cli.BoolFlag{Name: "demo", Usage: "supervise a built-in simulated bridge in a temporary session (no Node.js or phone needed)", EnvVars: envs("DEMO")},
	}, discoveryFlags()...), healthFlags()...)
}

// discoveryFlags say where the bridge is, when it is not what the
// gateway would run; run and doctor share them.
func discoveryFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "hermes-home", Usage: "Hermes home to find the bridge, config.yaml and .env in (default $HERMES_HOME, else ~/.hermes)", EnvVars: envs("HERMES_HOME")},
		&cli.StringFlag{Name: "bridge-script", Usage: "the bridge's bridge.js (default: what the gateway runs: config.yaml's bridge_script, else <hermes home>/hermes-agent/scripts/whatsapp-bridge/bridge.js, /usr/local/lib/hermes-agent/…, or the mirror <hermes home>/scripts/whatsapp-bridge/); with a command after --, the file whose hash the gateway compares", EnvVars: envs("BRIDGE_SCRIPT")},
		&cli.StringFlag{Name: "node", Usage: "the Node.js binary (default node in PATH)", EnvVars: envs("NODE")},
		&cli.IntFlag{Name: "port", Value: bridge.DefaultPort, Usage: "the bridge's HTTP port, passed to it and probed on 127.0.0.1 (default: config.yaml's bridge_port, else 3000)", EnvVars: envs("PORT")},
		&cli.StringFlag{Name: "session-dir", Usage: "the bridge's session directory (default: config.yaml's session_path, else <hermes home>/platforms/whatsapp/session, or the legacy whatsapp/session when it has content)", EnvVars: envs("SESSION_DIR")},
		&cli.StringFlag{Name: "mode", Usage: "the bridge's mode: self-chat or bot (default $WHATSAPP_MODE, from the environment or the Hermes .env, else self-chat)", EnvVars: envs("MODE")},
	}
}

func healthFlags() []cli.Flag {
	return []cli.Flag{
		&cli.DurationFlag{Name: "health-period", Value: 10 * time.Second, Usage: "how often GET /health is asked", EnvVars: envs("HEALTH_PERIOD")},
		&cli.DurationFlag{Name: "health-timeout", Value: 2 * time.Second, Usage: "how long one GET /health may take", EnvVars: envs("HEALTH_TIMEOUT")},
		&cli.IntFlag{Name: "health-failures", Value: 3, Usage: "failed GET /health in a row after which a live bridge is unresponsive and restarted", EnvVars: envs("HEALTH_FAILURES")},
		&cli.DurationFlag{Name: "connect-grace", Value: 30 * time.Second, Usage: "time the bridge has to connect to WhatsApp before connect_timeout is reported (it is not restarted)", EnvVars: envs("CONNECT_GRACE")},
	}
}

// qrWriter is where pairing QR codes are drawn: the sidecar's terminal,
// when its log is on one, through the log's sink, in order with the log
// and never blocking; else nowhere.
func qrWriter(style logsink.Style, sinks *logsink.Sinks) io.Writer {
	if !style.Terminal {
		return nil
	}
	return sinks.For(os.Stderr, false)
}

// bridgeTarget decides what to run: the simulated bridge with --demo
// (changed by the simulator flags after --), the command after --, or the
// bridge the gateway would run from the Hermes install found on this
// machine. in is what the gateway would do.
func bridgeTarget(s runSettings, in gateway.Install, errw io.Writer) (bridge.Target, error) {
	args, w := s.args, s.where
	switch {
	case s.demo:
		return demoTarget(errw, args)
	case len(args) > 0:
		// At the first start, a command that is not there is a missing
		// bridge, as with a missing bridge.js: 78, not respawned forever.
		// (Later, a bridge that went missing is respawned with backoff.)
		if _, err := exec.LookPath(args[0]); err != nil && !errors.Is(err, exec.ErrDot) {
			return bridge.Target{}, cli.Exit(fmt.Sprintf("wa-sidecar: cannot start %q: %v; install it, or give its full path after --", args[0], rootErr(err)), exitConfig)
		}
		t := bridge.CommandTarget(args)
		if w.portGiven {
			t.Port = w.port
		}
		if w.sessionGiven {
			t.SessionDir = w.sessionDir
		}
		if w.scriptGiven {
			t.Script = w.script
		}
		return t, nil
	}
	where := bridge.Where{Install: in, Script: w.script, Node: w.node, SessionDir: w.sessionDir, Mode: w.mode}
	if w.portGiven {
		where.Port = w.port
	}
	t, err := bridge.Discover(where)
	if err != nil {
		return t, cli.Exit("wa-sidecar: "+flagError(err).Error(), exitConfig)
	}
	return t, nil
}

// rootErr is the innermost error of a chain: exec.LookPath's errors repeat
// the name that was looked up.
func rootErr(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}
