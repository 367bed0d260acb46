package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
)

func prepareBridgeCommand() *cli.Command {
	return &cli.Command{
		Name:      "prepare-bridge",
		Usage:     "put the bridge's files and node_modules in a folder, with the gateway's npm stamp",
		ArgsUsage: "DIR",
		Description: "Copies the bridge's files from --from (when given) into DIR, runs 'npm ci' there and writes\n" +
			"node_modules/.hermes-pkg-hash as the gateway would after its own npm install, so that the\n" +
			"gateway finds the bridge's dependencies fresh and never runs npm under a running bridge.\n" +
			"For a volume shared with the gateway, such as a Kubernetes init container.\n\n" +
			"Examples:\n" +
			"   wa-sidecar prepare-bridge --from /opt/hermes/scripts/whatsapp-bridge /hermes/scripts/whatsapp-bridge\n" +
			"   wa-sidecar prepare-bridge ~/.hermes/hermes-agent/scripts/whatsapp-bridge",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Usage: "copy the bridge's files (regular files at the top of this folder; node_modules is not copied) into DIR first"},
			&cli.StringFlag{Name: "npm", Value: "npm", Usage: "the npm binary"},
			&cli.BoolFlag{Name: "force", Usage: "run npm even when node_modules is already stamped for this package.json"},
		},
		OnUsageError: onUsageError,
		Action:       prepareBridgeAction,
	}
}

func prepareBridgeAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError("prepare-bridge takes one folder, DIR (got %d arguments)", c.NArg())
	}
	dir := c.Args().First()
	if src := c.String("from"); src != "" {
		n, err := copyBridgeFiles(src, dir)
		if err != nil {
			return cli.Exit("wa-sidecar: prepare-bridge: "+err.Error(), exitError)
		}
		fmt.Fprintf(c.App.Writer, "copied %d files from %s to %s\n", n, src, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "package.json")); err != nil {
		return cli.Exit(fmt.Sprintf("wa-sidecar: prepare-bridge: %s has no package.json (%v); give the bridge's folder, or --from the folder to copy it from", dir, err), exitConfig)
	}
	if st := gateway.CheckStamp(dir); st.Fresh && !c.Bool("force") {
		// Installing again under a bridge that may be running would
		// replace its modules for nothing.
		fmt.Fprintf(c.App.Writer, "%s is up to date with package.json (%s); nothing to install (--force installs anyway)\n", st.Path, st.Found)
		return nil
	}
	args := []string{"ci", "--omit=dev", "--no-audit", "--no-fund"}
	if _, err := os.Stat(filepath.Join(dir, "package-lock.json")); err != nil {
		args = []string{"install", "--omit=dev", "--no-audit", "--no-fund"} // no lock to follow
	}
	npm := exec.Command(c.String("npm"), args...)
	npm.Dir, npm.Stdout, npm.Stderr = dir, c.App.Writer, c.App.ErrWriter
	if err := npm.Run(); err != nil {
		return cli.Exit(fmt.Sprintf("wa-sidecar: prepare-bridge: npm %s in %s failed: %v", args[0], dir, err), exitError)
	}
	stamp, err := gateway.WantStamp(dir)
	if err != nil {
		return cli.Exit("wa-sidecar: prepare-bridge: "+err.Error(), exitError)
	}
	path := filepath.Join(dir, "node_modules", ".hermes-pkg-hash")
	if err := privdir.WriteFile(path, []byte(stamp), 0o644); err != nil {
		return cli.Exit("wa-sidecar: prepare-bridge: write the npm stamp: "+err.Error(), exitError)
	}
	fmt.Fprintf(c.App.Writer, "wrote %s (%s)\n", path, stamp)
	return nil
}

// copyBridgeFiles copies the regular files at the top of src into dst.
// Links are not followed and not copied: a planted one must not make the
// copy read or write outside the two folders.
func copyBridgeFiles(src, dst string) (int, error) {
	entries, err := os.ReadDir(src)
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue // node_modules and other folders, links, devices
		}
		data, err := readNoFollow(filepath.Join(src, e.Name()))
		if err != nil {
			return n, err
		}
		if err := privdir.WriteFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
			return n, err
		}
		n++
	}
	if n == 0 {
		return 0, fmt.Errorf("%s holds no files to copy", src)
	}
	return n, nil
}

// maxBridgeFile bounds one copied file; the bridge's largest, its
// package-lock.json, is a few hundred kilobytes.
const maxBridgeFile = 16 << 20

func readNoFollow(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > maxBridgeFile {
		return nil, fmt.Errorf("%s is not a regular file of at most 16 MiB", path)
	}
	return io.ReadAll(io.LimitReader(f, maxBridgeFile))
}
