package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// tokenEnv holds the control token when it should not be in a file. There
// is no --token flag: a flag would show the token in ps.
const tokenEnv = "WA_SIDECAR_TOKEN"

// stateDirFlag is shared by run and the client commands, which find the
// server through the files run leaves there.
func stateDirFlag() cli.Flag {
	return &cli.StringFlag{Name: "state-dir", Usage: "where the token and the discovery file (sidecar.json) live (default: $XDG_STATE_HOME/wa-sidecar or ~/.local/state/wa-sidecar; /var/lib/wa-sidecar as root)", EnvVars: envs("STATE_DIR")}
}

func feedFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "listen", Value: feed.DefaultListen, Usage: "address of the status server: host:port, or unix:/path for a Unix socket (mode 0600)", EnvVars: envs("LISTEN")},
		&cli.StringFlag{Name: "token-file", Usage: "file holding the control token (else $" + tokenEnv + ", else one is generated into the state directory)", EnvVars: envs("TOKEN_FILE")},
		stateDirFlag(),
		&cli.StringSliceFlag{Name: "allow-origin", Usage: "browser origin allowed to open the websocket besides the server's own, e.g. app.example.com or https://app.example.com (repeatable)", EnvVars: envs("ALLOW_ORIGIN")},
		&cli.StringFlag{Name: "gateway-url", Usage: "also dial this ws:// or wss:// URL and push the same messages to it, reconnecting with backoff", EnvVars: envs("GATEWAY_URL")},
	}
}

func stateDir(c *cli.Context) (string, error) {
	if d := c.String("state-dir"); d != "" {
		return filepath.Abs(d)
	}
	return feed.DefaultStateDir()
}

// startFeed locks the state directory, binds the status server, settles
// the control token, leaves the discovery file for the client commands and
// starts serving. Nothing in the state directory is written until the lock
// is held and the flags have been checked and the address bound, so a
// second run that fails leaves the first one's token and discovery file
// alone. The returned wait blocks until the server has sent the monitor's
// last events and closed, then removes the discovery file and releases the
// lock; if the monitor never ran, it stops the server at once.
func startFeed(c *cli.Context, m *procmon.Monitor, logger *slog.Logger) (_ *feed.Server, _ func(), err error) {
	dir, err := stateDir(c)
	if err != nil {
		return nil, nil, usageError("%v", err)
	}
	var token, tokenFile string
	switch {
	case c.String("token-file") != "":
		if tokenFile, err = filepath.Abs(c.String("token-file")); err != nil {
			return nil, nil, usageError("--token-file: %v", err)
		}
		if token, err = feed.ReadTokenFile(tokenFile); err != nil {
			return nil, nil, usageError("--token-file: %v", err)
		}
		if fi, err := os.Stat(tokenFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			logger.Warn("other users can read the control token; chmod 600 it", "file", tokenFile, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
		}
	case os.Getenv(tokenEnv) != "":
		token = os.Getenv(tokenEnv)
		if err := feed.CheckToken(token); err != nil {
			return nil, nil, usageError("$%s: %v", tokenEnv, err)
		}
	}
	if err := feed.PrepareStateDir(dir); err != nil {
		return nil, nil, cli.Exit("wa-sidecar: "+err.Error(), exitError)
	}
	lock, err := feed.LockStateDir(dir)
	var held *feed.StateDirHeldError
	if errors.As(err, &held) {
		return nil, nil, cli.Exit("wa-sidecar: "+err.Error(), exitTempFail)
	}
	if err != nil {
		return nil, nil, cli.Exit("wa-sidecar: "+err.Error()+"; pass --state-dir to choose another", exitError)
	}
	defer func() {
		if err != nil {
			lock.Unlock()
		}
	}()
	generated := token == ""
	if generated {
		if token, err = feed.NewToken(); err != nil {
			return nil, nil, cli.Exit("wa-sidecar: "+err.Error(), exitError)
		}
	}

	srv, err := feed.New(feed.Options{
		Monitor:      m,
		Listen:       c.String("listen"),
		Token:        token,
		AllowOrigins: c.StringSlice("allow-origin"),
		GatewayURL:   c.String("gateway-url"),
		Version:      sidecarVersion(),
		Logger:       logger,
	})
	if err != nil {
		return nil, nil, usageError("%v", err)
	}
	if generated {
		if tokenFile, err = feed.WriteToken(dir, token); err != nil {
			srv.Close()
			return nil, nil, cli.Exit("wa-sidecar: "+err.Error()+"; pass --state-dir or --token-file", exitError)
		}
		logger.Info("generated a control token", "file", tokenFile)
	}
	disc := feed.Discovery{Listen: srv.Addr(), TokenFile: tokenFile, Pid: os.Getpid(), Version: sidecarVersion(), StartedAt: time.Now()}
	if err := feed.WriteDiscovery(dir, disc); err != nil {
		logger.Warn("the client commands will need --addr to find this sidecar", "error", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	wait := func() {
		select {
		case <-m.Done():
		default:
			cancel()
		}
		if err := <-served; err != nil && !errors.Is(err, context.Canceled) {
			logger.Warn("status server", "error", err)
		}
		cancel()
		if err := feed.RemoveDiscovery(dir, os.Getpid()); err != nil {
			logger.Warn("could not remove the discovery file", "error", err)
		}
		lock.Unlock()
	}
	return srv, wait, nil
}
