package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/bridge/qrcode"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// Exit codes of pair besides those of every client command (see
// clientFlags): the pairing did not happen within --wait, which a later
// try may change.
const exitPairTimeout = exitTempFail

func pairCommand() *cli.Command {
	flags := append(clientFlags(),
		&cli.DurationFlag{Name: "wait", Value: 5 * time.Minute, Usage: "give up (exit 75) when the bridge has not connected after this long"},
	)
	return &cli.Command{
		Name:      "pair",
		Usage:     "link the bridge to a phone: draw the pairing QR code until WhatsApp is connected",
		ArgsUsage: "[-- COMMAND [ARGS...]]",
		Description: "Connects to the running sidecar (found as status finds it) as a holder of its control token,\n" +
			"draws each pairing QR code the bridge shows, and exits 0 once the bridge is connected to\n" +
			"WhatsApp (at once if it already is). When no sidecar answers, it runs the bridge itself, as\n" +
			"'wa-sidecar run' would with the same flags, until the phone is linked, then stops it.\n\n" +
			"Exit status: 0 paired (or already connected); 1 the bridge cannot pair now (logged out and\n" +
			"waiting for its session to be deleted, stopped, or given up; the message says what to do);\n" +
			"69 the sidecar went away; 75 not connected within --wait (or, running the bridge itself,\n" +
			"another sidecar holds the session); 77 no control token for this sidecar, or it was\n" +
			"refused; 78 no bridge found to run; 130 interrupted by Ctrl-C.\n\n" +
			"Examples:\n" +
			"   wa-sidecar pair\n" +
			"   wa-sidecar pair --state-dir /var/lib/wa-sidecar\n" +
			"   wa-sidecar pair --demo\n" +
			"   docker compose exec wa-sidecar wa-sidecar pair",
		Flags:        append(flags, targetFlags()...),
		OnUsageError: onUsageError,
		Action:       pairAction,
	}
}

func pairAction(c *cli.Context) error {
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	wait := c.Duration("wait")
	if wait <= 0 {
		return usageError("--wait must be a positive duration such as 5m (got %s)", wait)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()

	own := c.Bool("demo") || c.Args().Len() > 0
	if !own {
		s, err := newSession(c, tokenPrivate)
		if err != nil {
			return err
		}
		defer s.Close()
		// A --state-dir without a live sidecar.json names a sidecar that
		// is not running: whatever answers at the default address is
		// another one, which no token may go to, so it is not asked.
		elsewhere := s.guessed && c.IsSet("state-dir")
		if !elsewhere && s.reachable(ctx, c.Duration("timeout")) {
			return s.pair(ctx, c)
		}
		switch {
		case ctx.Err() != nil:
		case elsewhere:
			fmt.Fprintf(c.App.ErrWriter, "wa-sidecar: no sidecar runs with --state-dir %s; running the bridge until it is paired\n", s.dir)
		default:
			fmt.Fprintf(c.App.ErrWriter, "wa-sidecar: no sidecar answers at %s; running the bridge until it is paired\n", s.addr)
		}
	}
	return pairOwn(ctx, c)
}

// reachable reports whether anything answers /healthz at the address.
func (s *clientConn) reachable(ctx context.Context, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := s.anon.Get(ctx, "/healthz")
	if err != nil {
		return !errors.Is(err, feed.ErrUnreachable)
	}
	resp.Body.Close()
	return true
}

// pair follows the sidecar's events as a token holder until the bridge
// is connected, drawing each QR code.
func (s *clientConn) pair(ctx context.Context, c *cli.Context) error {
	if s.tok == nil {
		return s.noToken(ctx, "pair")
	}
	dctx, cancel := context.WithTimeout(ctx, c.Duration("timeout"))
	ws, control, err := s.events(dctx, tokenPrivate)
	cancel()
	if err != nil {
		return pairError(ctx, clientError(err, s.addr))
	}
	defer ws.CloseNow()
	if !control {
		return cli.Exit(fmt.Sprintf("wa-sidecar: pair needs the control token of the sidecar at %s to be shown its QR codes, and it refused the one from %s; pass --token-file with the one it uses", s.addr, s.tokFrom), exitDenied)
	}
	note := func(format string, args ...any) {
		if !s.json {
			fmt.Fprintf(s.out, format+"\n", args...)
		}
	}
	_, err = s.follow(ctx, ws, func(m feed.Message) (bool, error) {
		if m.Type == feed.TypeEvent && (m.Event == bridge.EventConnected || m.Event == bridge.EventPaired) {
			note("paired: the bridge is connected to WhatsApp")
			return true, nil
		}
		if m.Status == nil {
			return false, nil
		}
		if c := connection(*m.Status); c == "connected" || strings.HasPrefix(c, "connected as") {
			if m.Type == feed.TypeHello {
				note("already paired: the bridge is connected to WhatsApp")
			} else {
				note("paired: the bridge is connected to WhatsApp")
			}
			return true, nil
		}
		if why := cannotPair(*m.Status); why != "" {
			return false, cli.Exit("wa-sidecar: pair: "+why, exitError)
		}
		if m.Type == feed.TypeHello {
			note("waiting for the bridge's QR code (a new one comes about every 20 s; Ctrl-C ends)")
		}
		return false, nil
	})
	if err == nil && ctx.Err() != nil {
		return pairError(ctx, nil)
	}
	return err
}

// pairError turns the end of pair's context into the right exit: 75 when
// --wait passed, 130 on Ctrl-C.
func pairError(ctx context.Context, err error) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return cli.Exit("wa-sidecar: pair: the bridge did not connect within --wait; run pair again to get a new QR code", exitPairTimeout)
	case ctx.Err() != nil:
		return cli.Exit("wa-sidecar: pair: interrupted before the phone was linked", 130)
	}
	return err
}

// cannotPair says why a bridge in this state will show no QR code until
// a person acts, or "" while one may come.
func cannotPair(st procmon.Status) string {
	switch st.State {
	case bridge.StateNeedsPairing:
		msg := "WhatsApp logged this device out; delete the bridge's session directory, and the sidecar starts it again by itself"
		if st.Message != "" {
			msg = printable(st.Message)
		}
		return msg + " Then run 'wa-sidecar pair' again."
	case procmon.StateGivenUp:
		return "the sidecar gave up on the bridge (" + printable(st.Message) + "); fix the cause, run 'wa-sidecar start', then pair again"
	case procmon.StateStopped:
		return "the bridge was stopped; run 'wa-sidecar start', then pair again"
	}
	return ""
}

// pairOwn runs a sidecar as 'wa-sidecar run' would, with pair's bridge
// flags, waits for it to write its sidecar.json, pairs through it, and
// stops it.
func pairOwn(ctx context.Context, c *cli.Context) error {
	exe, err := os.Executable()
	if err != nil {
		return cli.Exit(fmt.Sprintf("wa-sidecar: pair: cannot find my own executable: %v", err), exitError)
	}
	dir, err := stateDir(c)
	if err != nil {
		return usageError("%v", flagError(err))
	}
	listen := c.String("addr")
	if c.Bool("demo") {
		// A demo lives in a world of its own: its state, and any free port.
		if !c.IsSet("state-dir") {
			if dir, err = os.MkdirTemp("", "wa-sidecar-pair-"); err != nil {
				return cli.Exit("wa-sidecar: pair --demo: "+err.Error(), exitError)
			}
			defer os.RemoveAll(dir)
			if err := c.Set("state-dir", dir); err != nil {
				return cli.Exit("wa-sidecar: pair --demo: "+err.Error(), exitError)
			}
		}
		if listen == "" {
			listen = "127.0.0.1:0"
		}
	}
	args := []string{"run", "--state-dir", dir, "--log-format", "json"}
	if listen != "" {
		args = append(args, "--listen", listen)
	}
	if f := c.String("token-file"); f != "" {
		args = append(args, "--token-file", f)
	}
	for _, f := range targetFlags() {
		if name := f.Names()[0]; c.IsSet(name) {
			args = append(args, fmt.Sprintf("--%s=%v", name, c.Value(name)))
		}
	}
	if c.Args().Len() > 0 {
		args = append(append(args, "--"), c.Args().Slice()...)
	}
	child := exec.Command(exe, args...)
	var out tailBuffer
	child.Stdout, child.Stderr = &out, &out
	// Should pair itself die, the sidecar it started stops its bridge and
	// goes too.
	child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := child.Start(); err != nil {
		return cli.Exit("wa-sidecar: pair: "+err.Error(), exitError)
	}
	exited := make(chan struct{})
	go func() { child.Wait(); close(exited) }()
	defer func() {
		child.Process.Signal(syscall.SIGTERM)
		<-exited
	}()
	if err := waitDiscovery(ctx, dir, child.Process.Pid, exited); err != nil {
		if errors.Is(err, errChildExited) {
			code := child.ProcessState.ExitCode()
			if code <= 0 {
				code = exitError
			}
			return cli.Exit(fmt.Sprintf("wa-sidecar: pair: the sidecar it started to run the bridge exited (%d):\n%s", code, out.errors()), code)
		}
		return pairError(ctx, err)
	}
	s, err := newSession(c, tokenPrivate)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.pair(ctx, c)
}

var errChildExited = errors.New("the sidecar exited")

// waitDiscovery waits until the sidecar with this pid has written its
// sidecar.json in dir, which it does once its first start is over (after
// the bridge's spawn, or after the reason it did not spawn one).
func waitDiscovery(ctx context.Context, dir string, pid int, exited <-chan struct{}) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		d, err := feed.ReadDiscovery(dir)
		if err == nil && d.Pid == pid {
			return nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return cli.Exit("wa-sidecar: pair: "+err.Error(), exitError)
		}
		select {
		case <-exited:
			return errChildExited
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// tailBuffer keeps the last 64 KiB written to it: the output of the
// sidecar pair starts, shown only if it fails.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - 64<<10; over > 0 {
		b.buf = b.buf[over:]
	}
	return len(p), nil
}

// errors is what the failed sidecar said that matters: its own error
// lines, and the messages of its error records. Its other records are
// left out, QR rows of the bridge among them.
func (b *tailBuffer) errors() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var lines []string
	for _, l := range bytes.Split(b.buf, []byte("\n")) {
		var rec struct{ Level, Msg string }
		switch {
		case bytes.HasPrefix(l, []byte("wa-sidecar:")):
			lines = append(lines, "  "+printable(string(l)))
		case json.Unmarshal(l, &rec) == nil && rec.Level == "ERROR":
			lines = append(lines, "  "+printable(rec.Msg))
		}
	}
	if len(lines) == 0 {
		return "  (it said nothing; run 'wa-sidecar run' with the same flags to see why)"
	}
	return strings.Join(lines, "\n")
}

// qrRows are the rows to draw for a qr event's fields, as a token holder
// is sent them: a payload ("qr") drawn anew, or the rows the bridge drew
// ("qr_rows"), with any control characters a hostile bridge put in them
// escaped.
func qrRows(fields map[string]json.RawMessage) []string {
	var payload string
	if json.Unmarshal(fields["qr"], &payload) == nil && payload != "" {
		return qrcode.Lines(payload)
	}
	var rows []string
	if json.Unmarshal(fields["qr_rows"], &rows) != nil {
		return nil
	}
	if len(rows) > 200 {
		rows = rows[:200]
	}
	for i, r := range rows {
		rows[i] = printable(r)
	}
	return rows
}

// helloQR is the QR code a hello carries for a token holder who joins
// while the bridge is pairing: its "qr" field, shaped as a qr event
// (or, from an older server, the payload alone).
func helloQR(m feed.Message) []string {
	raw, ok := m.Fields["qr"]
	if !ok {
		return nil
	}
	var ev map[string]json.RawMessage
	if json.Unmarshal(raw, &ev) == nil {
		return qrRows(ev)
	}
	return qrRows(map[string]json.RawMessage{"qr": raw})
}
