package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
	"github.com/wa-sidecar/wa-sidecar/procmon"
	"github.com/wa-sidecar/wa-sidecar/signals"
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
		&cli.StringFlag{Name: "listen", Aliases: []string{"addr"}, Value: feed.DefaultListen, Usage: "address of the status server: host:port, or unix:/path for a Unix socket (mode 0600); --addr and $WA_SIDECAR_ADDR, the client commands' names, work too", EnvVars: []string{"WA_SIDECAR_LISTEN", "WA_SIDECAR_ADDR"}},
		&cli.StringFlag{Name: "token-file", Usage: "file holding the control token (else $" + tokenEnv + ", else one is generated into the state directory)", EnvVars: envs("TOKEN_FILE")},
		stateDirFlag(),
		&cli.StringSliceFlag{Name: "allow-origin", Usage: "browser origin allowed to open the websocket besides the server's own, e.g. app.example.com or https://app.example.com (repeatable)", EnvVars: envs("ALLOW_ORIGIN")},
		&cli.StringFlag{Name: "gateway-url", Usage: "also dial this ws:// or wss:// URL and push the same messages to it, reconnecting with backoff (a URL with credentials is better given in $" + gatewayURLEnv + " or --gateway-url-file, which ps does not show)", EnvVars: envs("GATEWAY_URL")},
		&cli.StringFlag{Name: "gateway-url-file", Usage: "file whose first line is the --gateway-url (mode 0600 keeps its credentials private)", EnvVars: envs("GATEWAY_URL_FILE")},
	}
}

func stateDir(c *cli.Context) (string, error) {
	if d := c.String("state-dir"); d != "" {
		return filepath.Abs(d)
	}
	return feed.DefaultStateDir()
}

// feedSettings are the status server's flags, checked, with the token
// and the gateway URL read from where they were given.
type feedSettings struct {
	token, tokenFile string // tokenFile: absolute; both empty: generate one
	tokenDir         string // where a generated token goes; empty: the state directory
	opts             feed.Options
}

// checkFeedFlags checks the status server's flags and reads the token and
// the gateway URL, writing nothing: run checks them before it touches the
// disk, so a mistake leaves no state or session behind.
func checkFeedFlags(c *cli.Context, logger *slog.Logger) (feedSettings, error) {
	var fs feedSettings
	var err error
	switch {
	case c.String("token-file") != "":
		if fs.tokenFile, err = filepath.Abs(c.String("token-file")); err != nil {
			return fs, usageError("--token-file: %v", err)
		}
		if fs.token, err = feed.ReadTokenFile(fs.tokenFile); err != nil {
			return fs, usageError("--token-file: %v", err)
		}
		warnReadable(logger, "other users can read the control token; chmod 600 it", fs.tokenFile)
	case os.Getenv(tokenEnv) != "":
		fs.token = os.Getenv(tokenEnv)
		if err := feed.CheckToken(fs.token); err != nil {
			return fs, usageError("$%s: %v", tokenEnv, err)
		}
	}
	gatewayURL, err := gatewayURLFlag(c, logger)
	if err != nil {
		return fs, err
	}
	fs.opts = feed.Options{
		Listen:       c.String("listen"),
		Token:        fs.token,
		AllowOrigins: c.StringSlice("allow-origin"),
		GatewayURL:   gatewayURL,
	}
	if err := fs.opts.Check(); err != nil {
		return fs, usageError("%v", flagError(err))
	}
	return fs, nil
}

// gatewayURLEnv is the variable of --gateway-url.
const gatewayURLEnv = "WA_SIDECAR_GATEWAY_URL"

// gatewayURLFlag is the push URL: --gateway-url (or $WA_SIDECAR_GATEWAY_URL),
// or the first line of --gateway-url-file. A URL with credentials typed on
// the command line is visible to every user in ps, so that gets a warning.
func gatewayURLFlag(c *cli.Context, logger *slog.Logger) (string, error) {
	file := c.String("gateway-url-file")
	u := c.String("gateway-url")
	if file != "" && u != "" {
		return "", usageError("--gateway-url and --gateway-url-file both given; keep one")
	}
	if file != "" {
		b, err := privdir.ReadRegularFile(file, 64<<10)
		if err != nil {
			return "", usageError("--gateway-url-file: %v", err)
		}
		u, _, _ = strings.Cut(string(b), "\n")
		if u = strings.TrimSpace(u); u == "" {
			return "", usageError("--gateway-url-file %s is empty; put the ws:// or wss:// URL on its first line", file)
		}
		warnReadable(logger, "other users can read the gateway URL's credentials; chmod 600 it", file)
		return u, nil
	}
	if u != "" && urlHasCredentials(u) && onCommandLine(c, "gateway-url") {
		logger.Warn("the --gateway-url on the command line holds credentials, which every user of this machine can read with ps; " +
			"pass it in $" + gatewayURLEnv + " or --gateway-url-file instead")
	}
	return u, nil
}

// urlHasCredentials reports whether a URL carries a user, a password or a
// query, where gateways take their tokens.
func urlHasCredentials(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.User != nil || u.RawQuery != "")
}

// warnReadable warns when other users can read the secret file path.
func warnReadable(logger *slog.Logger, msg, path string) {
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		logger.Warn(msg, "file", path, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
	}
}

// startFeed locks the state directory and binds the status server, with
// the control token in memory; the server serves once its Run is called,
// and files writes the token and the discovery file for the client
// commands once the first spawn is over (see stateFiles). Nothing in the
// state directory is written until the lock is held and the flags have
// been checked and the address bound, so a second run that fails leaves
// the first one's token and discovery file alone. release closes the
// server (a no-op once Run has returned), removes the discovery file and
// releases the lock.
func startFeed(s runSettings, m *procmon.Monitor, files *stateFiles, logger *slog.Logger) (_ *feed.Server, release func(), err error) {
	dir := s.stateDir
	if dir == "" {
		if dir, err = feed.DefaultStateDir(); err != nil {
			return nil, nil, usageError("%v", flagError(err))
		}
	}
	fs := s.feed
	token, tokenFile := fs.token, fs.tokenFile
	held, err := feed.HoldStateDir(dir)
	var busy *feed.StateDirHeldError
	if errors.As(err, &busy) {
		return nil, nil, cli.Exit("wa-sidecar: "+flagError(err).Error(), exitTempFail)
	}
	if err != nil {
		return nil, nil, cli.Exit("wa-sidecar: "+err.Error()+"; pass --state-dir to choose another", fileExitCode(err))
	}
	defer func() {
		if err != nil {
			held.Release()
		}
	}()
	generated := token == ""
	if generated {
		if token, err = feed.NewToken(); err != nil {
			return nil, nil, cli.Exit("wa-sidecar: "+err.Error(), exitError)
		}
	}

	opts := fs.opts
	opts.Monitor, opts.Token, opts.Version, opts.Logger = m, token, sidecarVersion(), logger
	opts.Summary = statusSummary()
	srv, err := feed.New(opts)
	var inUse *feed.AddrInUseError
	if errors.As(err, &inUse) {
		// Not a mistake in the command line: the holder may be gone by
		// the next try (an old sidecar still stopping), and a service
		// manager restarts 75 where it would leave 64 down for good.
		return nil, nil, cli.Exit("wa-sidecar: "+flagError(err).Error(), exitTempFail)
	}
	if err != nil {
		return nil, nil, usageError("%v", flagError(err))
	}
	files.follow = m.Follow(16)
	files.write = func() error {
		// The token first: a client that finds sidecar.json reads the
		// token file it names, which must by then be this run's.
		if generated {
			var err error
			if tokenFile, err = feed.WriteToken(cmp.Or(fs.tokenDir, dir), token); err != nil {
				return fmt.Errorf("%w; pass --state-dir or --token-file", err)
			}
			logger.Info("generated a control token", "file", tokenFile)
		}
		if err := held.Publish(feed.Discovery{Listen: srv.Addr(), TokenFile: tokenFile, Version: sidecarVersion()}); err != nil {
			logger.Warn("the client commands will need --addr to find this sidecar", "error", err)
		}
		return nil
	}
	return srv, func() {
		srv.Close()
		if err := held.Release(); err != nil {
			logger.Warn("could not release the state directory", "error", err)
		}
	}, nil
}

// stateFiles writes the control token (when the sidecar made one) and then
// the discovery file, once, when the first spawn is over: the disk, and
// the flushes of the atomic writes (about 2 ms), then no longer stand
// between the sidecar's exec and the bridge's, nor before the status
// server's first answer. As a monitor hook (an AfterSpawner) it writes
// them right after the first spawn, before the bridge's "bridge started";
// as a part, it writes them when the first start ends without a spawn
// (yielded to the gateway's bridge, refused, or failed), so that a
// sidecar that waits can be found too, and then tells systemd it is
// ready. So whoever has heard "bridge started", its event or READY=1
// finds both files (unless writing them failed, and then the sidecar is
// stopping), and the token file is in place before sidecar.json names
// it. The status server may answer before they are written (it has the
// token in memory): a client that looks in the state directory meanwhile
// finds no sidecar there yet, as one that looked a moment earlier would
// have. A token that cannot be written fails the part, which stops the
// bridge and the sidecar (exit 1). In the hook list the files come after
// the session guard, whose record of the bridge must not wait for them.
type stateFiles struct {
	follow *procmon.Follower // set by startFeed
	write  func() error      // set by startFeed
	// ready, if set, is called from Run once the files are written:
	// systemd's READY=1, which lets the units ordered after the sidecar
	// (the gateway's) start, must not promise a sidecar they cannot find.
	ready func()
	once  sync.Once
	err   error
}

// AfterSpawn writes the files after the first spawn; later spawns find
// them written.
func (f *stateFiles) AfterSpawn(signals.Identity) { f.publish() }

func (f *stateFiles) publish() error {
	f.once.Do(func() { f.err = f.write() })
	return f.err
}

// Run waits for the first start to end, spawned or not, writes the
// files if AfterSpawn has not, calls ready once they are, and returns
// what writing them gave. A sidecar that ends before its first start
// did writes nothing: there is no one to find.
func (f *stateFiles) Run(ctx context.Context) error {
	defer f.follow.Close()
	for f.follow.Last().Status.State == procmon.StateStarting {
		if _, err := f.follow.Next(ctx); errors.Is(err, procmon.ErrFinished) {
			return nil
		} else if err != nil {
			return err
		}
	}
	if err := f.publish(); err != nil {
		return err
	}
	if f.ready != nil {
		f.ready()
	}
	return nil
}

// fileExitCode is the exit code for an error about the sidecar's own
// directories: 78 (a configuration to fix, which the unit does not
// restart in a loop) when one is not safe to trust, else 1.
func fileExitCode(err error) int {
	var unsafe *privdir.UnsafeError
	if errors.As(err, &unsafe) {
		return exitConfig
	}
	return exitError
}
