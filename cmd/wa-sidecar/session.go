package main

import (
	"errors"
	"log/slog"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/session"
)

// exitTempFail is EX_TEMPFAIL: the session is held by another sidecar,
// which may well be gone by the next try (an old one still stopping).
const exitTempFail = 75

func sessionFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "bridge-log", Usage: "append the bridge's output to this file, or 'off' (default <session dir>/../bridge.log, where Hermes keeps it)", EnvVars: envs("BRIDGE_LOG")},
		&cli.IntFlag{Name: "bridge-log-max-size", Value: 10, Usage: "rotate bridge.log when it would pass this many megabytes", EnvVars: envs("BRIDGE_LOG_MAX_SIZE")},
		&cli.IntFlag{Name: "bridge-log-max-backups", Value: 5, Usage: "rotated bridge.log files to keep", EnvVars: envs("BRIDGE_LOG_MAX_BACKUPS")},
		&cli.BoolFlag{Name: "restore-creds", Value: true, Usage: "put the last good creds.json back when it is found empty or corrupt before a spawn (--restore-creds=false only reports it)", EnvVars: envs("RESTORE_CREDS")},
	}
}

// protectSession locks the bridge's session, stops a bridge an earlier
// sidecar left running on it, and opens bridge.log; both are monitor
// hooks, which run.go puts in the list. Either result may be nil: without
// a known session directory there is nothing to lock, and bridge.log can
// be turned off.
func protectSession(s sessionSettings, target bridge.Target, logger *slog.Logger) (*session.Guard, *session.BridgeLog, error) {
	logPath := s.bridgeLog
	if target.SessionDir == "" {
		logger.Info("no session directory known: the session lock, the creds.json backup and the port check are off; pass --session-dir to have them")
		if logPath == "" {
			logPath = "off"
		}
	} else if logPath == "" {
		logPath = session.BridgeLogPath(target.SessionDir)
	}

	var g *session.Guard
	if target.SessionDir != "" {
		var err error
		g, err = session.Open(session.Config{
			SessionDir:   target.SessionDir,
			Port:         target.Port,
			RestoreCreds: s.restoreCreds,
			Logger:       logger,
		})
		var held *session.HeldError
		if errors.As(err, &held) {
			return nil, nil, cli.Exit("wa-sidecar: "+flagError(err).Error(), exitTempFail)
		}
		if err != nil {
			return nil, nil, cli.Exit("wa-sidecar: "+flagError(err).Error(), fileExitCode(err))
		}
		// Before the monitor runs: it may wait for the leftover to stop,
		// which no hook may.
		g.StopLeftover()
	}

	if strings.EqualFold(logPath, "off") {
		return g, nil, nil
	}
	bl, err := session.OpenBridgeLog(session.BridgeLogConfig{
		Path:       logPath,
		MaxSizeMB:  s.logMaxMB,
		MaxBackups: s.logBackups,
		Logger:     logger,
	})
	if err != nil {
		if g != nil {
			g.Close()
		}
		return nil, nil, cli.Exit("wa-sidecar: "+flagError(err).Error(), fileExitCode(err))
	}
	logger.Info("appending the bridge's output to bridge.log", "path", logPath)
	return g, bl, nil
}
