package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/bridge/session"
)

// logsPoll is how often logs -f looks for new lines and for a rotation,
// as tail -F does where it cannot use inotify: a stat and a read that
// finds nothing cost next to nothing, and a person does not notice a
// quarter of a second.
const logsPoll = 250 * time.Millisecond

func logsCommand() *cli.Command {
	return &cli.Command{
		Name:  "logs",
		Usage: "print the end of the bridge's output (bridge.log); -f follows it",
		Description: "Prints the last lines of bridge.log, the bridge's own output that the sidecar appends\n" +
			"next to the session directory, and with -f keeps printing new lines as they are written,\n" +
			"across rotations, like tail -F. The file is found as run finds it: --bridge-log, else\n" +
			"<session dir>/../bridge.log for --session-dir, for the session of the sidecar that runs\n" +
			"(its status names it), or for the one the Hermes install uses. A bridge.log that is a\n" +
			"symbolic link is refused, never followed. The sidecar's own log is elsewhere: the journal\n" +
			"(journalctl --user -u wa-sidecar), docker logs, or the terminal that runs it.\n\n" +
			"Examples:\n" +
			"   wa-sidecar logs\n" +
			"   wa-sidecar logs -f\n" +
			"   wa-sidecar logs -n 200 | grep -i error\n" +
			"   wa-sidecar logs -f --bridge-log /var/lib/hermes/platforms/whatsapp/bridge.log",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "lines", Aliases: []string{"n"}, Value: 10, Usage: "print the last N lines first (0: none, only what -f finds)"},
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing lines as the bridge writes them (Ctrl-C ends)"},
			&cli.StringFlag{Name: "bridge-log", Usage: "the file to read (default: found as described above)", EnvVars: envs("BRIDGE_LOG")},
			&cli.StringFlag{Name: "session-dir", Usage: "the bridge's session directory; bridge.log is next to it", EnvVars: envs("SESSION_DIR")},
			&cli.StringFlag{Name: "hermes-home", Usage: "Hermes home whose session to use (default $HERMES_HOME, else ~/.hermes)", EnvVars: envs("HERMES_HOME")},
			addrFlag(),
			stateDirFlag(),
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Second, Usage: "how long to ask the running sidecar for its session"},
		},
		OnUsageError: onUsageError,
		Action:       logsAction,
	}
}

func logsAction(c *cli.Context) error {
	n := c.Int("lines")
	if n < 0 {
		return usageError("--lines must not be negative (got %d)", n)
	}
	path, from, err := bridgeLogPath(c)
	if err != nil {
		return err
	}
	if path == "off" {
		return cli.Exit("wa-sidecar: logs: --bridge-log is off, so the bridge's output is in the sidecar's own log only", exitError)
	}
	if isTerminal(os.Stderr) {
		fmt.Fprintf(c.App.ErrWriter, "==> %s (%s) <==\n", path, from)
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	tty := isTerminal(os.Stdout)
	w := bufio.NewWriter(c.App.Writer)
	out := func(line []byte) {
		if tty {
			// The bridge's output could carry escape sequences; on a
			// terminal they are shown, not obeyed.
			line = []byte(printable(string(line)))
		}
		w.Write(line)
		w.WriteByte('\n')
	}
	err = tailFile(ctx, path, n, c.Bool("follow"), out, w.Flush)
	w.Flush()
	return err
}

// bridgeLogPath finds bridge.log, and says how.
func bridgeLogPath(c *cli.Context) (path, from string, err error) {
	if p := c.String("bridge-log"); p != "" {
		return p, "--bridge-log", nil
	}
	if d := c.String("session-dir"); d != "" {
		return session.BridgeLogPath(d), "next to --session-dir", nil
	}
	if d := runningSession(c); d != "" {
		return session.BridgeLogPath(d), "the running sidecar's session", nil
	}
	in := gateway.Load(gateway.Options{HermesHome: c.String("hermes-home"), HomeFrom: "--hermes-home"})
	if in.SessionDir == "" {
		return "", "", cli.Exit("wa-sidecar: logs: no session directory found (no sidecar answers, and no Hermes home was found); pass --session-dir or --bridge-log", exitConfig)
	}
	return session.BridgeLogPath(in.SessionDir), "the Hermes install's session", nil
}

// runningSession asks the sidecar the state directory names (or --addr)
// for its session directory, without a token: a read needs none. A
// sidecar only guessed at the default address is not asked, since it may
// be anyone's.
func runningSession(c *cli.Context) string {
	s, err := newSession(c, tokenNever)
	if err != nil || s.guessed {
		return ""
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	resp, err := s.anon.Get(ctx, "/v1/status")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	var st struct {
		Details struct {
			Session struct {
				Dir string `json:"dir"`
			} `json:"session"`
		} `json:"details"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&st) != nil || !filepath.IsAbs(st.Details.Session.Dir) {
		return ""
	}
	return st.Details.Session.Dir
}

// openLog opens path for reading without following a symbolic link in
// its last part, and only if it is a regular file: a link planted in
// the bridge's directory must not make us print a file it points to, and
// a FIFO must not hang us.
func openLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link, which logs does not follow (it could point anywhere); read the file it points to with tail", path)
	}
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file (%s)", path, st.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// tailFile prints the last n lines of path, then, with follow, every
// line appended after them until ctx ends, reopening the file when it is
// rotated (replaced by a new one) and starting over when it is truncated.
// flush is called whenever the lines found so far have been printed.
func tailFile(ctx context.Context, path string, n int, follow bool, out func([]byte), flush func() error) error {
	f, err := openLog(path)
	switch {
	case errors.Is(err, os.ErrNotExist) && follow:
		f = nil // it comes with the bridge's first line
	case errors.Is(err, os.ErrNotExist):
		return cli.Exit(fmt.Sprintf("wa-sidecar: logs: %s does not exist: no bridge has written there yet; -f waits for it, and --bridge-log or --session-dir name another", path), exitError)
	case errors.Is(err, os.ErrPermission):
		return cli.Exit(fmt.Sprintf("wa-sidecar: logs: %v; bridge.log is the sidecar's user's alone (it holds pairing codes): run logs as that user", err), exitError)
	case err != nil:
		return cli.Exit("wa-sidecar: logs: "+err.Error(), exitError)
	}
	var pos int64
	if f != nil {
		defer func() { f.Close() }()
		if pos, err = lastLines(f, n, follow, out); err != nil {
			return cli.Exit("wa-sidecar: logs: "+err.Error(), exitError)
		}
	}
	if !follow {
		return nil
	}
	var partial []byte
	buf := make([]byte, 64<<10)
	// drain prints what was appended to f since pos; a last line without
	// its newline waits for the rest.
	drain := func() error {
		for {
			k, err := f.ReadAt(buf, pos)
			pos += int64(k)
			data := append(partial, buf[:k]...)
			for {
				i := bytes.IndexByte(data, '\n')
				if i < 0 {
					break
				}
				out(data[:i])
				data = data[i+1:]
			}
			partial = append(partial[:0], data...)
			if errors.Is(err, io.EOF) || k == 0 {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	t := time.NewTicker(logsPoll)
	defer t.Stop()
	warned := false
	for {
		if f != nil {
			if err := drain(); err != nil {
				return cli.Exit("wa-sidecar: logs: "+err.Error(), exitError)
			}
			if st, err := f.Stat(); err == nil && st.Size() < pos {
				pos, partial = 0, partial[:0] // truncated: start over
				continue
			}
		}
		if err := flush(); err != nil {
			return nil // the reader has gone, as for tail -f | head
		}
		// Rotated: the path names another file now. What the old one got
		// until it was renamed is printed first.
		if nf, err := openLog(path); err == nil {
			if f == nil || !os.SameFile(mustStat(f), mustStat(nf)) {
				if f != nil {
					if err := drain(); err != nil {
						nf.Close()
						return cli.Exit("wa-sidecar: logs: "+err.Error(), exitError)
					}
					f.Close()
					if len(partial) > 0 {
						out(partial)
						partial = partial[:0]
					}
				}
				f, pos, warned = nf, 0, false
				continue
			}
			nf.Close()
		} else if !errors.Is(err, os.ErrNotExist) && !warned {
			fmt.Fprintf(os.Stderr, "wa-sidecar: logs: %v; still following the file that was there\n", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			if len(partial) > 0 {
				out(partial)
			}
			return nil
		case <-t.C:
		}
	}
}

func mustStat(f *os.File) os.FileInfo {
	st, err := f.Stat()
	if err != nil {
		return nil
	}
	return st
}

// lastLines prints the last n lines of f, reading back from its end a
// block at a time, and returns the offset it read up to. With hold, a last
// line without its newline is left for the follower to print whole.
func lastLines(f *os.File, n int, hold bool, out func([]byte)) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	end := st.Size()
	if n == 0 || end == 0 {
		return end, nil
	}
	const block = 32 << 10
	start := end
	var tail []byte
	for start > 0 {
		k := min(int64(block), start)
		start -= k
		chunk := make([]byte, k)
		if _, err := f.ReadAt(chunk, start); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		tail = append(chunk, tail...)
		// One newline more than lines wanted (the last line's own) marks
		// the start of the first line to print.
		if bytes.Count(tail[:len(tail)-1], []byte{'\n'}) >= n {
			break
		}
	}
	data := bytes.TrimSuffix(tail, []byte{'\n'})
	lines := bytes.Split(data, []byte{'\n'})
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	complete := len(tail) > 0 && tail[len(tail)-1] == '\n'
	for i, l := range lines {
		if i == len(lines)-1 && !complete && hold {
			// A line still being written: it is printed when it ends.
			return end - int64(len(l)), nil
		}
		out(l)
	}
	return end, nil
}
