package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// Exit codes of the client commands, besides 0, 1 and 64. 69 and 77 are
// EX_UNAVAILABLE and EX_NOPERM from sysexits.h.
const (
	exitNoSidecar = 69 // nothing answers at the address
	exitDenied    = 77 // the op needs the token, or the token was refused
)

func clientFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "addr", Usage: "the sidecar's address, host:port or unix:/path (default: from sidecar.json in the state directory, else " + feed.DefaultListen + ")", EnvVars: envs("ADDR")},
		stateDirFlag(),
		&cli.StringFlag{Name: "token-file", Usage: "file holding the control token (it beats $" + tokenEnv + "; default: $" + tokenEnv + ", else the file sidecar.json names)", EnvVars: envs("TOKEN_FILE")},
		&cli.BoolFlag{Name: "json", Usage: "print JSON (the default when stdout is not a terminal)"},
		&cli.DurationFlag{Name: "timeout", Value: 5 * time.Second, Usage: "give up after this long"},
	}
}

func clientCommands() []*cli.Command {
	cmd := func(name, usage string, action cli.ActionFunc, extra ...cli.Flag) *cli.Command {
		return &cli.Command{Name: name, Usage: usage, Flags: append(clientFlags(), extra...), OnUsageError: onUsageError, Action: action}
	}
	cmds := []*cli.Command{
		cmd("status", "print the bridge's state once", statusAction),
		cmd("watch", "follow the bridge's events live (Ctrl-C ends)", watchAction),
		cmd("restart", "restart the bridge", opAction(feed.OpRestart)),
		cmd("stop", "stop the bridge and keep it down", opAction(feed.OpStop)),
		cmd("start", "start the bridge after a stop, or give it another try after given_up", opAction(feed.OpStart)),
		cmd("healthcheck", "exit 0 if the sidecar answers (with --ready: if the bridge is ready), else 1; for a container HEALTHCHECK", healthcheckAction,
			&cli.BoolFlag{Name: "ready", Usage: "require the bridge to be up and ready, not just the sidecar"},
			&cli.DurationFlag{Name: "wait", DefaultText: "ask once", Usage: "keep asking, about every 500 ms, until the answer is healthy or this long has passed (each request then takes at most 2s, or --timeout); " +
				"stops at once when the bridge needs pairing or the sidecar gave up, since waiting cannot help"}),
	}
	for _, c := range cmds {
		c.Description = "Examples:\n" + clientExamples[c.Name]
	}
	return cmds
}

// clientExamples are shown by each client command's --help.
var clientExamples = map[string]string{
	"status": "   wa-sidecar status\n" +
		"   wa-sidecar status --json\n" +
		"   wa-sidecar status --addr 127.0.0.1:7391",
	"watch": "   wa-sidecar watch\n" +
		"   wa-sidecar watch --json | jq .event",
	"restart": "   wa-sidecar restart\n" +
		"   WA_SIDECAR_TOKEN=... wa-sidecar restart --addr 10.0.0.5:7390",
	"stop": "   wa-sidecar stop\n" +
		"   wa-sidecar stop --state-dir /var/lib/wa-sidecar",
	"start": "   wa-sidecar start\n" +
		"   wa-sidecar start --token-file ~/.local/state/wa-sidecar/token",
	"healthcheck": "   wa-sidecar healthcheck            # Docker HEALTHCHECK: is the sidecar up?\n" +
		"   wa-sidecar healthcheck --ready    # would the gateway adopt the bridge now?\n" +
		"   wa-sidecar healthcheck --ready --wait 90s   # wait until it would (a gateway's ExecStartPre)\n" +
		"   wa-sidecar healthcheck --addr unix:/run/wa-sidecar.sock",
}

// clientConn is what a client command needs to reach the sidecar.
type clientConn struct {
	client  *feed.Client
	hasTok  bool
	tokHint string // where a token was looked for, for the error
	// guessed says the address is the default, tried because the state
	// directory names none; no token is sent there.
	guessed bool
	dir     string
	json    bool
	colour  bool
	out     io.Writer
}

// The tokens newSession may look for.
const (
	noToken   = false // healthcheck: it needs none, so an unreadable --token-file must not stop it
	withToken = true
)

// newSession finds the sidecar: --addr, else the address in sidecar.json,
// else the default address. A token is sent only to the first two: a
// token in the state directory belongs to the sidecar its sidecar.json
// names, not to whatever answers on the default port.
func newSession(c *cli.Context, wantToken bool) (*clientConn, error) {
	dir, err := stateDir(c)
	if err != nil {
		return nil, usageError("%v", err)
	}
	disc, derr := feed.ReadDiscovery(dir)
	if derr != nil && !errors.Is(derr, fs.ErrNotExist) {
		return nil, cli.Exit("wa-sidecar: "+derr.Error(), exitError)
	}
	addr := c.String("addr")
	if addr == "" {
		addr = disc.Listen
	}
	guessed := addr == ""
	if guessed {
		addr = feed.DefaultListen
	}
	var token, hint string
	if wantToken && !guessed {
		if token, hint, err = findToken(c, disc, dir); err != nil {
			return nil, err
		}
	}
	client, err := feed.NewClient(addr, token)
	if err != nil {
		return nil, usageError("--addr: %v", err)
	}
	tty := isTerminal(os.Stdout)
	return &clientConn{
		client: client, hasTok: token != "", tokHint: hint, guessed: guessed, dir: dir,
		json:   c.Bool("json") || !tty,
		colour: tty && os.Getenv("NO_COLOR") == "",
		out:    c.App.Writer,
	}, nil
}

// noteGuess says, for a read, which address is tried and why.
func (s *clientConn) noteGuess(c *cli.Context) {
	if s.guessed {
		fmt.Fprintf(c.App.ErrWriter, "wa-sidecar: %s has no %s (no sidecar runs with this --state-dir); trying the default address %s without a token\n",
			s.dir, feed.DiscoveryFileName, s.client.Addr())
	}
}

func isTerminal(f *os.File) bool {
	return isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
}

// findToken looks for the control token as run does: --token-file (or
// $WA_SIDECAR_TOKEN_FILE), then $WA_SIDECAR_TOKEN, then the file the
// discovery file names. An explicit flag beats the environment, which
// may be left over from another shell. Without a token, reads still work.
func findToken(c *cli.Context, disc feed.Discovery, dir string) (token, hint string, err error) {
	if f := c.String("token-file"); f != "" {
		t, err := feed.ReadTokenFile(f)
		if err != nil {
			return "", "", cli.Exit("wa-sidecar: --token-file: "+err.Error(), exitDenied)
		}
		return t, f, nil
	}
	if t := os.Getenv(tokenEnv); t != "" {
		if err := feed.CheckToken(t); err != nil {
			return "", "", cli.Exit(fmt.Sprintf("wa-sidecar: $%s: %v", tokenEnv, err), exitDenied)
		}
		return t, "$" + tokenEnv, nil
	}
	f := disc.TokenFile
	if f == "" {
		f = filepath.Join(dir, feed.TokenFileName)
	}
	t, err := feed.ReadTokenFile(f)
	if err != nil {
		// Reading is allowed without the token; a control op will say why
		// it has none.
		return "", fmt.Sprintf("--token-file, $%s, %s (%v)", tokenEnv, f, errors.Unwrap(err)), nil
	}
	return t, f, nil
}

// clientError turns a failure to reach the sidecar into one clear line
// and a distinct exit code.
func clientError(err error, addr string) error {
	var se *feed.StatusError
	switch {
	case errors.Is(err, feed.ErrUnreachable):
		return cli.Exit(fmt.Sprintf("wa-sidecar: no sidecar is running at %s; start one with 'wa-sidecar run', or pass --addr or --state-dir to reach another", addr), exitNoSidecar)
	case errors.As(err, &se) && se.Code == http.StatusUnauthorized:
		return cli.Exit("wa-sidecar: the sidecar refused the token; pass --token-file or set $"+tokenEnv+" to the one it uses", exitDenied)
	case errors.Is(err, context.DeadlineExceeded):
		return cli.Exit(fmt.Sprintf("wa-sidecar: the sidecar at %s did not answer in time (--timeout)", addr), exitError)
	}
	return cli.Exit("wa-sidecar: "+err.Error(), exitError)
}

// withSession finds the sidecar (see newSession) and runs fn with a
// context that ends after --timeout.
func withSession(c *cli.Context, wantToken bool, fn func(ctx context.Context, s *clientConn) error) error {
	s, err := newSession(c, wantToken)
	if err != nil {
		return err
	}
	defer s.client.Close()
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	return fn(ctx, s)
}

func statusAction(c *cli.Context) error {
	return withSession(c, withToken, func(ctx context.Context, s *clientConn) error { return status(ctx, c, s) })
}

func status(ctx context.Context, c *cli.Context, s *clientConn) error {
	s.noteGuess(c)
	resp, err := s.client.Get(ctx, "/v1/status")
	if err != nil {
		return clientError(err, s.client.Addr())
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, feed.MaxServerMessage))
	if err != nil {
		return clientError(err, s.client.Addr())
	}
	if resp.StatusCode != http.StatusOK {
		return httpError(resp, body)
	}
	var st procmon.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return cli.Exit("wa-sidecar: the sidecar sent a status this client cannot read: "+err.Error(), exitError)
	}
	if s.json {
		fmt.Fprint(s.out, string(body))
		return nil
	}
	fmt.Fprintln(s.out, statusLine(st, time.Now(), s.colour))
	if st.Message != "" {
		fmt.Fprintln(s.out, "  "+st.Message)
	}
	return nil
}

func httpError(resp *http.Response, body []byte) error {
	var e struct{ Error string }
	json.Unmarshal(body, &e)
	if e.Error == "" {
		e.Error = resp.Status
	}
	code := exitError
	if resp.StatusCode == http.StatusUnauthorized {
		code = exitDenied
	}
	return cli.Exit("wa-sidecar: "+e.Error, code)
}

func opAction(op string) cli.ActionFunc {
	return func(c *cli.Context) error {
		return withSession(c, withToken, func(ctx context.Context, s *clientConn) error { return doOp(ctx, s, op) })
	}
}

// doOp sends one control op over the websocket and reports its result.
func doOp(ctx context.Context, s *clientConn, op string) error {
	if s.guessed {
		return s.noTokenForGuess(ctx, op)
	}
	if !s.hasTok {
		return cli.Exit(fmt.Sprintf("wa-sidecar: %s needs the sidecar's control token, and none was found (looked at %s); run as the user that started the sidecar, or pass --token-file", op, s.tokHint), exitDenied)
	}
	ws, err := s.client.Events(ctx)
	if err != nil {
		return clientError(err, s.client.Addr())
	}
	defer ws.CloseNow()
	id := fmt.Sprintf("cli-%d", os.Getpid())
	req, _ := json.Marshal(map[string]string{"op": op, "id": id})
	if err := ws.Write(ctx, websocket.MessageText, req); err != nil {
		return clientError(err, s.client.Addr())
	}
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			return clientError(err, s.client.Addr())
		}
		m, err := feed.DecodeMessage(b)
		if err != nil || m.Type != feed.TypeResult || string(m.ID) != `"`+id+`"` {
			continue
		}
		ws.Close(websocket.StatusNormalClosure, "")
		if s.json {
			fmt.Fprintln(s.out, string(b))
		}
		if !m.OK {
			code := exitError
			if strings.Contains(m.Error, "token") {
				code = exitDenied
			}
			return cli.Exit("wa-sidecar: "+op+": "+m.Error, code)
		}
		if !s.json && m.Status != nil {
			fmt.Fprintf(s.out, "%s: done; %s\n", op, statusLine(*m.Status, time.Now(), s.colour))
		}
		return nil
	}
}

// noTokenForGuess answers a control op when the state directory names no
// sidecar: 69 if nothing answers at the default address, else 77, since
// whatever answers there was not shown to own any token this client has.
func (s *clientConn) noTokenForGuess(ctx context.Context, op string) error {
	resp, err := s.client.Get(ctx, "/healthz")
	if err != nil {
		if errors.Is(err, feed.ErrUnreachable) {
			return cli.Exit(fmt.Sprintf("wa-sidecar: no sidecar is running at the default address %s, and %s has no %s naming another; start one with 'wa-sidecar run', or pass --addr or --state-dir to reach another",
				s.client.Addr(), s.dir, feed.DiscoveryFileName), exitNoSidecar)
		}
		return clientError(err, s.client.Addr())
	}
	resp.Body.Close()
	return cli.Exit(fmt.Sprintf("wa-sidecar: %s needs the control token of the sidecar at the default address %s, but %s has no %s, so no token is known to be its; pass the --state-dir it runs with, or --addr %s with --token-file",
		op, s.client.Addr(), s.dir, feed.DiscoveryFileName, s.client.Addr()), exitDenied)
}

func healthcheckAction(c *cli.Context) error {
	if c.IsSet("wait") {
		wait := c.Duration("wait")
		if wait <= 0 {
			return usageError("--wait must be a positive duration such as 90s (got %s); leave it out to ask once", wait)
		}
		return healthcheckWait(c, wait)
	}
	return withSession(c, noToken, func(ctx context.Context, s *clientConn) error { return healthcheck(ctx, c, s) })
}

func healthcheckPath(c *cli.Context) string {
	if c.Bool("ready") {
		return "/readyz"
	}
	return "/healthz"
}

func healthcheck(ctx context.Context, c *cli.Context, s *clientConn) error {
	s.noteGuess(c)
	a, err := askHealth(ctx, s, healthcheckPath(c))
	if err != nil {
		var ec cli.ExitCoder
		errors.As(clientError(err, s.client.Addr()), &ec)
		return cli.Exit(ec.Error(), exitError)
	}
	if s.json {
		fmt.Fprint(s.out, string(a.body))
	}
	if !a.ok {
		return cli.Exit(fmt.Sprintf("wa-sidecar: unhealthy: %s", a.reason), exitError)
	}
	if !s.json {
		fmt.Fprintln(s.out, "healthy")
	}
	return nil
}

// healthAnswer is the sidecar's reply to one health check.
type healthAnswer struct {
	ok     bool // 200
	body   []byte
	status string // the HTTP status line's text, e.g. "503 Service Unavailable"
	state  string // the bridge's state, in a /readyz refusal
	reason string // why it is not ok, as the sidecar says it
}

func askHealth(ctx context.Context, s *clientConn, path string) (healthAnswer, error) {
	resp, err := s.client.Get(ctx, path)
	if err != nil {
		return healthAnswer{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	a := healthAnswer{ok: resp.StatusCode == http.StatusOK, body: body, status: resp.Status}
	if !a.ok {
		var r struct{ Reason, Error, State string }
		json.Unmarshal(body, &r)
		a.state, a.reason = r.State, strings.TrimSpace(r.Reason+r.Error)
	}
	return a, nil
}

// How healthcheck --wait asks: a request about every waitEvery, each
// allowed waitRequest unless --timeout says otherwise, and a line on a
// terminal at most every waitProgress.
const (
	waitEvery    = 500 * time.Millisecond
	waitRequest  = 2 * time.Second
	waitProgress = 5 * time.Second
)

// hopeless names the /readyz states a bridge never leaves by itself: a
// person has to pair the phone again, or fix the cause and send a start.
// Waiting for them would only hold up whatever waits on the check.
var hopeless = map[string]string{
	string(bridge.StateNeedsPairing): "the bridge needs pairing",
	string(procmon.StateGivenUp):     "the sidecar gave up on the bridge",
}

// healthcheckWait asks until the answer is healthy, waiting cannot help,
// or wait has passed. No answer at all counts as "not yet", so a check
// may start before the sidecar listens (a unit ordered after it, a
// container started alongside it). Without --addr the address is looked up
// again for every request, since a sidecar that starts meanwhile writes a
// new sidecar.json. Progress goes to a terminal only; otherwise the final
// line is all that is printed, as for a single check.
func healthcheckWait(c *cli.Context, wait time.Duration) error {
	path, goal := healthcheckPath(c), "the sidecar to answer"
	if c.Bool("ready") {
		goal = "the bridge to be adoptable"
	}
	perRequest := waitRequest
	if c.IsSet("timeout") {
		perRequest = c.Duration("timeout")
	}
	progress := isTerminal(os.Stderr)
	start := time.Now()
	deadline := start.Add(wait)
	var (
		last     healthAnswer // the last answer, if any came
		answered bool         // whether the last attempt got one
		nobody   bool         // whether nothing listened at the address
		why      string       // why the last attempt was not healthy
		guessed  bool
		addr     string
		jsonOut  bool
		told     time.Time
	)
	for {
		s, err := newSession(c, noToken)
		if err != nil {
			return err
		}
		guessed, addr, jsonOut = s.guessed, s.client.Addr(), s.json
		sent := time.Now()
		ctx, cancel := context.WithDeadline(c.Context, earliest(sent.Add(perRequest), deadline))
		a, err := askHealth(ctx, s, path)
		cancel()
		s.client.Close()
		now := time.Now()
		switch {
		case err == nil && a.ok:
			if s.json {
				fmt.Fprint(s.out, string(a.body))
			} else {
				fmt.Fprintln(s.out, "healthy")
			}
			return nil
		case err == nil:
			last, answered, nobody = a, true, false
			why = a.reason
			if why == "" {
				why = "it answered " + a.status
			}
			if what, ok := hopeless[a.state]; ok {
				if s.json {
					fmt.Fprint(s.out, string(a.body))
				}
				return cli.Exit(fmt.Sprintf("wa-sidecar: not waiting: %s, which waiting cannot change: %s", what, why), exitError)
			}
		case errors.Is(err, feed.ErrUnreachable):
			answered, nobody, why = false, true, fmt.Sprintf("no sidecar answers at %s yet", addr)
		case errors.Is(err, context.DeadlineExceeded) && !now.Before(deadline) && why != "":
			// Cut short by the end of the wait: the reason before it says more.
		case errors.Is(err, context.DeadlineExceeded):
			answered, nobody, why = false, false, fmt.Sprintf("the sidecar at %s did not answer within %s", addr, perRequest)
		default:
			answered, nobody, why = false, false, err.Error()
		}
		if !now.Before(deadline) {
			break
		}
		if progress && (told.IsZero() || now.Sub(told) >= waitProgress) {
			fmt.Fprintf(c.App.ErrWriter, "waiting for %s: %s (%s)\n", goal, why, now.Sub(start).Round(time.Second))
			told = now
		}
		time.Sleep(time.Until(earliest(sent.Add(waitEvery), deadline)))
	}
	if answered {
		if jsonOut {
			fmt.Fprint(c.App.Writer, string(last.body))
		}
		if last.state != "" {
			why += " (state " + last.state + ")"
		}
		return cli.Exit(fmt.Sprintf("wa-sidecar: still unhealthy after %s: %s", wait, why), exitError)
	}
	if nobody {
		hint := "start one with 'wa-sidecar run' (or 'systemctl --user start wa-sidecar'), or pass --addr or --state-dir to reach another"
		if guessed {
			hint = "the state directory has no " + feed.DiscoveryFileName + ", so the default address was tried; " + hint
		}
		return cli.Exit(fmt.Sprintf("wa-sidecar: no answer after %s: no sidecar answered at %s; %s", wait, addr, hint), exitError)
	}
	return cli.Exit(fmt.Sprintf("wa-sidecar: no answer after %s: %s", wait, why), exitError)
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func watchAction(c *cli.Context) error {
	s, err := newSession(c, withToken)
	if err != nil {
		return err
	}
	defer s.client.Close()
	s.noteGuess(c)
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	for {
		dctx, cancel := context.WithTimeout(ctx, c.Duration("timeout"))
		ws, err := s.client.Events(dctx)
		cancel()
		if err != nil {
			return clientError(err, s.client.Addr())
		}
		again, err := s.follow(ctx, ws)
		ws.CloseNow()
		if ctx.Err() != nil {
			return nil
		}
		if !again {
			return err
		}
		if !s.json {
			fmt.Fprintln(s.out, "(fell behind; resyncing)")
		}
	}
}

// follow prints one connection's messages. It reports whether to connect
// again: the server drops a client that fell behind, and it can resync.
func (s *clientConn) follow(ctx context.Context, ws *websocket.Conn) (again bool, err error) {
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			switch websocket.CloseStatus(err) {
			case websocket.StatusGoingAway:
				if !s.json {
					fmt.Fprintln(s.out, "the sidecar is exiting")
				}
				return false, nil
			case websocket.StatusPolicyViolation, websocket.StatusTryAgainLater:
				return true, nil
			}
			if ctx.Err() != nil {
				return false, nil
			}
			if code := websocket.CloseStatus(err); code != -1 {
				return false, cli.Exit(fmt.Sprintf("wa-sidecar: the sidecar at %s closed the connection: %d %s", s.client.Addr(), int(code), closeReason(err)), exitError)
			}
			// Without a close, the sidecar died or the network failed; the
			// library's error (a frame header and EOF) would tell a person
			// nothing.
			return false, cli.Exit(fmt.Sprintf("wa-sidecar: lost the connection to the sidecar at %s", s.client.Addr()), exitNoSidecar)
		}
		if s.json {
			fmt.Fprintln(s.out, string(b))
			continue
		}
		m, err := feed.DecodeMessage(b)
		if err != nil {
			continue
		}
		switch m.Type {
		case feed.TypeHello:
			if m.Status != nil {
				fmt.Fprintln(s.out, statusLine(*m.Status, time.Now(), s.colour))
			}
		case feed.TypeEvent:
			fmt.Fprintln(s.out, eventLine(m, s.colour))
		}
	}
}

func closeReason(err error) string {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return ""
}
