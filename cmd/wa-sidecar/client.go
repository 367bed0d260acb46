package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/bridge/session"
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
		addrFlag(),
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
		cmd("status", "print the bridge's state once; exit 0 while it runs, 3 while it does not", statusAction),
		cmd("watch", "follow the bridge's events live, drawing pairing QR codes on a terminal (Ctrl-C ends)", watchAction),
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
	addr string
	anon *feed.Client // sends no token
	// tok sends the control token; nil when no token may go to addr.
	tok *feed.Client
	// tokFrom says where tok's token came from, for messages.
	tokFrom string
	// asked says the token was given for this command (--token-file or
	// $WA_SIDECAR_TOKEN) rather than found in the state directory.
	asked bool
	// noTok says why tok is nil, for a command that needs it.
	noTok string
	// guessed says the address is the default, tried because the state
	// directory names none; no token is sent there.
	guessed bool
	// stale is why sidecar.json was not used although it is there.
	stale  *feed.StaleDiscoveryError
	dir    string
	json   bool
	colour bool
	out    io.Writer
	errw   io.Writer
}

// tokenUse is when a command sends the control token. A token is only
// ever sent to the address it was given for: one from --token-file or
// $WA_SIDECAR_TOKEN to the address given with it (or the one sidecar.json
// names), one found in the state directory only to the sidecar whose
// sidecar.json names that address.
type tokenUse int

const (
	// tokenNever: healthcheck needs none, so an unreadable --token-file
	// must not stop it.
	tokenNever tokenUse = iota
	// tokenRead: a read sends the token only when it was asked to, or when
	// the sidecar refuses to be read without it and the token is its own.
	tokenRead
	// tokenPrivate: a read that wants the fields only token holders get,
	// such as the pairing QR code: the token goes first.
	tokenPrivate
	// tokenControl: restart, stop and start cannot work without it.
	tokenControl
)

// Exit code of status while the bridge is not running, as systemctl
// is-active and the LSB's "status" action have it.
const exitNotRunning = 3

// addrFlag is the client commands' address flag. Its names and variables
// are the server's too (--listen, WA_SIDECAR_LISTEN), so a container's
// healthcheck with the server's environment finds the server.
func addrFlag() cli.Flag {
	return &cli.StringFlag{Name: "addr", Aliases: []string{"listen"}, EnvVars: []string{"WA_SIDECAR_ADDR", "WA_SIDECAR_LISTEN"},
		Usage: "the sidecar's address, host:port or unix:/path (default: from sidecar.json in the state directory, else " + feed.DefaultListen + ")"}
}

// newSession finds the sidecar: --addr, else the address in sidecar.json,
// else the default address, and settles which token, if any, may go there.
func newSession(c *cli.Context, use tokenUse) (*clientConn, error) {
	dir, err := stateDir(c)
	if err != nil {
		return nil, usageError("%v", flagError(err))
	}
	// ReadDiscovery checks the file: private, naming an address of this
	// machine and a process that still runs as its writer. A stale one
	// names no sidecar, as a missing one does.
	disc, derr := feed.ReadDiscovery(dir)
	if derr != nil && !errors.Is(derr, fs.ErrNotExist) {
		return nil, cli.Exit("wa-sidecar: "+derr.Error(), exitError)
	}
	var stale *feed.StaleDiscoveryError
	errors.As(derr, &stale)
	addr := c.String("addr")
	if strings.HasSuffix(addr, ":0") {
		// The server's "any free port" (from its --listen or
		// $WA_SIDECAR_LISTEN): the port it took is in sidecar.json.
		addr = ""
	}
	if addr == "" {
		addr = disc.Listen
	}
	guessed := addr == ""
	if guessed {
		addr = feed.DefaultListen
	}
	// At the address sidecar.json names, only its sidecar is spoken to:
	// over a Unix socket, its pid must be the one that listens.
	pid := 0
	if derr == nil && sameAddr(disc.Listen, addr) {
		pid = disc.Pid
	}
	anon, err := feed.NewClientOf(addr, "", pid)
	if err != nil {
		return nil, usageError("--addr: %v", err)
	}
	tty := isTerminal(os.Stdout)
	s := &clientConn{
		addr: addr, anon: anon, guessed: guessed, dir: dir, stale: stale,
		json:   c.Bool("json") || !tty,
		colour: tty && os.Getenv("NO_COLOR") == "",
		out:    c.App.Writer, errw: c.App.ErrWriter,
	}
	if use == tokenNever {
		return s, nil
	}
	token, from, asked, why, err := findToken(c, disc, dir, addr, guessed, stale)
	if err != nil {
		return nil, err
	}
	s.tokFrom, s.asked, s.noTok = from, asked, why
	if token != "" {
		if s.tok, err = feed.NewClientOf(addr, token, pid); err != nil {
			return nil, usageError("--addr: %v", err)
		}
	}
	return s, nil
}

// Close releases the clients' idle connections.
func (s *clientConn) Close() {
	s.anon.Close()
	if s.tok != nil {
		s.tok.Close()
	}
}

// noteGuess says, for a read, which address is tried and why.
func (s *clientConn) noteGuess() {
	switch {
	case s.guessed && s.stale != nil:
		fmt.Fprintf(s.errw, "wa-sidecar: %s; trying the default address %s without a token\n", printable(s.stale.Error()), s.addr)
	case s.guessed:
		fmt.Fprintf(s.errw, "wa-sidecar: %s has no %s (no sidecar runs with this --state-dir); trying the default address %s without a token\n",
			s.dir, feed.DiscoveryFileName, s.addr)
	}
}

func isTerminal(f *os.File) bool {
	return isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
}

// findToken looks for the control token that may go to addr, as run
// looks for its own: --token-file (or $WA_SIDECAR_TOKEN_FILE), then
// $WA_SIDECAR_TOKEN, then the file sidecar.json names. An explicit flag
// beats the environment, which may be left over from another shell. The
// first two were given for this command and go to the address it
// reaches, unless that is only the default guessed for want of a
// sidecar.json; the last belongs to the sidecar that wrote sidecar.json,
// and goes to no other address. Without a token, reads still work; why
// says, for a control op, why there is none.
func findToken(c *cli.Context, disc feed.Discovery, dir, addr string, guessed bool, stale *feed.StaleDiscoveryError) (token, from string, asked bool, why string, err error) {
	noDisc := fmt.Sprintf("%s has no %s", dir, feed.DiscoveryFileName)
	if stale != nil {
		noDisc = printable(stale.Error())
	}
	if guessed {
		return "", "", false, noDisc + ", so no token is known to belong to whatever answers at the default address", nil
	}
	if f := c.String("token-file"); f != "" {
		t, err := feed.ReadTokenFile(f)
		if err != nil {
			return "", "", false, "", cli.Exit("wa-sidecar: --token-file: "+err.Error(), exitDenied)
		}
		return t, f, true, "", nil
	}
	if t := os.Getenv(tokenEnv); t != "" {
		if err := feed.CheckToken(t); err != nil {
			return "", "", false, "", cli.Exit(fmt.Sprintf("wa-sidecar: $%s: %v", tokenEnv, err), exitDenied)
		}
		return t, "$" + tokenEnv, true, "", nil
	}
	switch {
	case disc.Listen == "":
		return "", "", false, fmt.Sprintf("neither --token-file nor $%s is set, and %s", tokenEnv, noDisc), nil
	case !sameAddr(disc.Listen, addr):
		return "", "", false, fmt.Sprintf("neither --token-file nor $%s is set, and the token in %s belongs to the sidecar at %s, not %s",
			tokenEnv, dir, disc.Listen, addr), nil
	case disc.TokenFile == "":
		return "", "", false, fmt.Sprintf("neither --token-file nor $%s is set, and the sidecar at %s keeps its token in no file (it was given $%s)",
			tokenEnv, addr, tokenEnv), nil
	}
	t, err := feed.ReadDiscoveredToken(dir, disc)
	if err != nil {
		return "", "", false, fmt.Sprintf("looked at --token-file, $%s and %s (%v)", tokenEnv, disc.TokenFile, errors.Unwrap(err)), nil
	}
	return t, disc.TokenFile, false, "", nil
}

// sameAddr reports whether a client dialling b reaches the server that
// listens on a (as sidecar.json writes it): the same text, or the same
// port where a's host is b's as an IP, or where a listens on every
// address and b is one of this machine's loopback names, which no other
// process can then hold.
func sameAddr(a, b string) bool {
	if a == b {
		return true
	}
	if strings.HasPrefix(a, "unix:") || strings.HasPrefix(b, "unix:") {
		return false
	}
	ah, ap, err1 := net.SplitHostPort(a)
	bh, bp, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || ap != bp {
		return false
	}
	aip, bip := net.ParseIP(ah), net.ParseIP(bh)
	if aip != nil && bip != nil && aip.Equal(bip) {
		return true
	}
	every := ah == "" || (aip != nil && aip.IsUnspecified())
	local := strings.EqualFold(bh, "localhost") || (bip != nil && (bip.IsLoopback() || bip.IsUnspecified()))
	return every && local
}

// refused says whether err is the sidecar refusing a token (or the lack of one).
func refused(err error) bool {
	var se *feed.StatusError
	return errors.As(err, &se) && se.Code == http.StatusUnauthorized
}

// get reads path. A token given for this command goes first, and if the
// sidecar refuses it the read is tried again without: a wrong token is no
// reason not to read what anyone on this machine may. The sidecar's own
// token goes only when the sidecar will not be read without it (from
// another host).
func (s *clientConn) get(ctx context.Context, path string) (*http.Response, error) {
	first, second := s.anon, s.tok
	if s.asked {
		first, second = s.tok, s.anon
	}
	resp, err := first.Get(ctx, path)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || second == nil {
		return resp, err
	}
	resp.Body.Close()
	if first == s.tok {
		s.noteRefused()
	}
	return second.Get(ctx, path)
}

// events opens the event websocket with the token when it may and the
// read wants what only token holders see (use is tokenPrivate), or was
// asked to send it; otherwise as get.
func (s *clientConn) events(ctx context.Context, use tokenUse) (ws *websocket.Conn, control bool, err error) {
	first, second := s.anon, s.tok
	if s.tok != nil && (s.asked || use >= tokenPrivate) {
		first, second = s.tok, s.anon
	}
	ws, err = first.Events(ctx)
	if err == nil || !refused(err) || second == nil {
		return ws, err == nil && first == s.tok, err
	}
	if first == s.tok {
		s.noteRefused()
	}
	ws, err = second.Events(ctx)
	return ws, err == nil && second == s.tok, err
}

func (s *clientConn) noteRefused() {
	fmt.Fprintf(s.errw, "wa-sidecar: the sidecar at %s refused the token from %s; reading without it\n", s.addr, s.tokFrom)
}

// clientError turns a failure to reach the sidecar into one clear line
// and a distinct exit code.
func clientError(err error, addr string) error {
	var se *feed.StatusError
	var pe *feed.PeerError
	switch {
	case errors.Is(err, feed.ErrUnreachable):
		return cli.Exit(fmt.Sprintf("wa-sidecar: no sidecar is running at %s; start one with 'wa-sidecar run', or pass --addr or --state-dir to reach another", addr), exitNoSidecar)
	case errors.As(err, &se) && se.Code == http.StatusUnauthorized:
		return cli.Exit("wa-sidecar: the sidecar refused the token; pass --token-file or set $"+tokenEnv+" to the one it uses", exitDenied)
	case errors.As(err, &pe):
		return cli.Exit("wa-sidecar: "+pe.Error(), exitError)
	case errors.Is(err, context.DeadlineExceeded):
		return cli.Exit(fmt.Sprintf("wa-sidecar: the sidecar at %s did not answer in time (--timeout)", addr), exitError)
	}
	return cli.Exit("wa-sidecar: "+err.Error(), exitError)
}

// withSession finds the sidecar (see newSession) and runs fn with a
// context that ends after --timeout.
func withSession(c *cli.Context, use tokenUse, fn func(ctx context.Context, s *clientConn) error) error {
	s, err := newSession(c, use)
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	return fn(ctx, s)
}

func statusAction(c *cli.Context) error {
	return withSession(c, tokenRead, func(ctx context.Context, s *clientConn) error { return status(ctx, s) })
}

// status prints the snapshot and exits like systemctl is-active: 0 while
// the bridge runs, 3 while it does not (starting, in backoff, stopped,
// given up, waiting for a pairing, yielded to another bridge).
func status(ctx context.Context, s *clientConn) error {
	s.noteGuess()
	resp, err := s.get(ctx, "/v1/status")
	if err != nil {
		return clientError(err, s.addr)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, feed.MaxServerMessage))
	if err != nil {
		return clientError(err, s.addr)
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
	} else {
		fmt.Fprint(s.out, statusTable(st, time.Now(), s.colour))
	}
	if st.State != procmon.StateRunning {
		return cli.Exit("", exitNotRunning)
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
		return withSession(c, tokenControl, func(ctx context.Context, s *clientConn) error { return doOp(ctx, s, op) })
	}
}

// doOp sends one control op over the websocket and reports its result.
func doOp(ctx context.Context, s *clientConn, op string) error {
	if s.tok == nil {
		return s.noToken(ctx, op)
	}
	ws, err := s.tok.Events(ctx)
	if err != nil {
		return clientError(err, s.addr)
	}
	defer ws.CloseNow()
	id := fmt.Sprintf("cli-%d", os.Getpid())
	req, _ := json.Marshal(map[string]string{"op": op, "id": id})
	if err := ws.Write(ctx, websocket.MessageText, req); err != nil {
		return clientError(err, s.addr)
	}
	var settled *procmon.Status // the last event that ends op, already read
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			return clientError(err, s.addr)
		}
		m, err := feed.DecodeMessage(b)
		if err == nil && m.Type == feed.TypeEvent && m.Status != nil && endsOp(op, m.Event) {
			settled = m.Status
		}
		if err != nil || m.Type != feed.TypeResult || string(m.ID) != `"`+id+`"` {
			continue
		}
		if s.json {
			ws.Close(websocket.StatusNormalClosure, "")
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
			// For a person, as systemctl does: done once the bridge is up
			// again (or down), not when the command was taken.
			st, done := awaitOp(ctx, ws, op, *m.Status, settled)
			ws.Close(websocket.StatusNormalClosure, "")
			if done {
				fmt.Fprintf(s.out, "%s: done; %s\n", op, statusLine(st, time.Now(), s.colour))
			} else {
				fmt.Fprintf(s.out, "%s: under way, not done within --timeout; %s\n", op, statusLine(st, time.Now(), s.colour))
			}
		}
		return nil
	}
}

// endsOp reports whether an event of kind ends a control op: the bridge
// is up again (or its start failed or was put off) after a restart or
// start, and down after a stop.
func endsOp(op string, kind procmon.Kind) bool {
	if op == "stop" {
		return kind == procmon.EventStopped
	}
	switch kind {
	case procmon.EventStarted, procmon.EventSpawnFailed, procmon.EventStopped, procmon.EventGivenUp, procmon.Kind(session.StateYielded):
		return true
	}
	return false
}

// awaitOp follows the events after op was taken, with the snapshot st of
// its result, until one ends it (settled, when one came before the
// result), and returns the snapshot then and true; at the end of ctx, the
// last snapshot seen and false.
func awaitOp(ctx context.Context, ws *websocket.Conn, op string, st procmon.Status, settled *procmon.Status) (procmon.Status, bool) {
	switch {
	case settled != nil:
		return *settled, true
	case op == "stop" && st.State == procmon.StateStopped, op != "stop" && st.State == procmon.StateRunning:
		return st, true
	}
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			return st, false
		}
		m, err := feed.DecodeMessage(b)
		if err != nil || m.Type != feed.TypeEvent || m.Status == nil {
			continue
		}
		st = *m.Status
		if endsOp(op, m.Event) {
			return st, true
		}
	}
}

// noToken answers an op that needs the token when none may go to the
// address: 69 if nothing answers there, else 77 with the reason. Only an
// anonymous /healthz is sent, to tell the two apart.
func (s *clientConn) noToken(ctx context.Context, op string) error {
	resp, err := s.anon.Get(ctx, "/healthz")
	if err != nil {
		if errors.Is(err, feed.ErrUnreachable) {
			where := s.addr
			if s.guessed {
				where = fmt.Sprintf("the default address %s, and %s has no %s naming another", s.addr, s.dir, feed.DiscoveryFileName)
			}
			return cli.Exit(fmt.Sprintf("wa-sidecar: no sidecar is running at %s; start one with 'wa-sidecar run', or pass --addr or --state-dir to reach another", where), exitNoSidecar)
		}
		return clientError(err, s.addr)
	}
	resp.Body.Close()
	hint := "run as the user that started the sidecar, pass the --state-dir it runs with, or pass --token-file"
	if s.guessed {
		hint = fmt.Sprintf("pass the --state-dir it runs with, or --addr %s with --token-file", s.addr)
	}
	return cli.Exit(fmt.Sprintf("wa-sidecar: %s needs the control token of the sidecar at %s, and no token may go there: %s; %s", op, s.addr, s.noTok, hint), exitDenied)
}

func healthcheckAction(c *cli.Context) error {
	if c.IsSet("wait") {
		wait := c.Duration("wait")
		if wait <= 0 {
			return usageError("--wait must be a positive duration such as 90s (got %s); leave it out to ask once", wait)
		}
		return healthcheckWait(c, wait)
	}
	return withSession(c, tokenNever, func(ctx context.Context, s *clientConn) error { return healthcheck(ctx, c, s) })
}

func healthcheckPath(c *cli.Context) string {
	if c.Bool("ready") {
		return "/readyz"
	}
	return "/healthz"
}

func healthcheck(ctx context.Context, c *cli.Context, s *clientConn) error {
	s.noteGuess()
	a, err := askHealth(ctx, s, healthcheckPath(c))
	if err != nil {
		var ec cli.ExitCoder
		errors.As(clientError(err, s.addr), &ec)
		s.printHealth(c, healthAnswer{}, ec.Error())
		return cli.Exit(ec.Error(), exitError)
	}
	s.printHealth(c, a, "")
	if !a.ok {
		return cli.Exit(fmt.Sprintf("wa-sidecar: unhealthy: %s", a.reason), exitError)
	}
	return nil
}

// healthResult is what healthcheck prints as JSON: one object whatever
// the answer, or the lack of one, so a script or a container's health log
// reads the same fields every time.
type healthResult struct {
	Healthy bool   `json:"healthy"`
	Check   string `json:"check"` // alive (/healthz) or ready (/readyz)
	Addr    string `json:"addr"`
	// HTTPStatus is the answer's status code, 0 when none came.
	HTTPStatus int    `json:"http_status"`
	State      string `json:"state,omitempty"`
	Pid        int    `json:"pid,omitempty"`
	Reason     string `json:"reason,omitempty"`
	// Error says why no answer came.
	Error string `json:"error,omitempty"`
}

// printHealth prints the final answer: as a healthResult in JSON mode,
// else "healthy" when it is (the reason for anything else goes to
// stderr as the exit message). noAnswer is why no answer came, if none did.
func (s *clientConn) printHealth(c *cli.Context, a healthAnswer, noAnswer string) {
	if !s.json {
		if a.ok {
			fmt.Fprintln(s.out, "healthy")
		}
		return
	}
	r := healthResult{Healthy: a.ok, Check: "alive", Addr: s.addr, HTTPStatus: a.code, State: a.state, Pid: a.pid, Reason: a.reason,
		Error: strings.TrimPrefix(noAnswer, "wa-sidecar: ")}
	if c.Bool("ready") {
		r.Check = "ready"
	}
	b, _ := json.Marshal(r)
	fmt.Fprintln(s.out, string(b))
}

// healthAnswer is the sidecar's reply to one health check.
type healthAnswer struct {
	ok     bool // 200
	code   int
	status string // the HTTP status line's text, e.g. "503 Service Unavailable"
	state  string // the bridge's state, in a /readyz answer
	pid    int    // the bridge's (/readyz) or the sidecar's (/healthz) pid
	reason string // why it is not ok, as the sidecar says it
}

func askHealth(ctx context.Context, s *clientConn, path string) (healthAnswer, error) {
	resp, err := s.anon.Get(ctx, path)
	if err != nil {
		return healthAnswer{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	a := healthAnswer{ok: resp.StatusCode == http.StatusOK, code: resp.StatusCode, status: resp.Status}
	var r struct {
		Reason, Error, State string
		Pid                  int
	}
	json.Unmarshal(body, &r)
	a.state, a.pid = r.State, r.Pid
	if !a.ok {
		a.reason = strings.TrimSpace(r.Reason + r.Error)
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
		s        *clientConn
		told     time.Time
	)
	for {
		var err error
		if s, err = newSession(c, tokenNever); err != nil {
			return err
		}
		sent := time.Now()
		ctx, cancel := context.WithDeadline(c.Context, earliest(sent.Add(perRequest), deadline))
		a, err := askHealth(ctx, s, path)
		cancel()
		s.Close()
		now := time.Now()
		switch {
		case err == nil && a.ok:
			s.printHealth(c, a, "")
			return nil
		case err == nil:
			last, answered, nobody = a, true, false
			why = a.reason
			if why == "" {
				why = "it answered " + a.status
			}
			if what, ok := hopeless[a.state]; ok {
				s.printHealth(c, a, "")
				return cli.Exit(fmt.Sprintf("wa-sidecar: not waiting: %s, which waiting cannot change: %s", what, why), exitError)
			}
		case errors.Is(err, feed.ErrUnreachable):
			answered, nobody, why = false, true, fmt.Sprintf("no sidecar answers at %s yet", s.addr)
		case errors.Is(err, context.DeadlineExceeded) && !now.Before(deadline) && why != "":
			// Cut short by the end of the wait: the reason before it says more.
		case errors.Is(err, context.DeadlineExceeded):
			answered, nobody, why = false, false, fmt.Sprintf("the sidecar at %s did not answer within %s", s.addr, perRequest)
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
	var msg string
	switch {
	case answered:
		if last.state != "" {
			why += " (state " + last.state + ")"
		}
		s.printHealth(c, last, "")
		return cli.Exit(fmt.Sprintf("wa-sidecar: still unhealthy after %s: %s", wait, why), exitError)
	case nobody:
		hint := "start one with 'wa-sidecar run' (or 'systemctl --user start wa-sidecar'), or pass --addr or --state-dir to reach another"
		if s.guessed {
			hint = "the state directory has no " + feed.DiscoveryFileName + ", so the default address was tried; " + hint
		}
		msg = fmt.Sprintf("wa-sidecar: no answer after %s: no sidecar answered at %s; %s", wait, s.addr, hint)
	default:
		msg = fmt.Sprintf("wa-sidecar: no answer after %s: %s", wait, why)
	}
	s.printHealth(c, healthAnswer{}, msg)
	return cli.Exit(msg, exitError)
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func watchAction(c *cli.Context) error {
	s, err := newSession(c, tokenRead)
	if err != nil {
		return err
	}
	defer s.Close()
	s.noteGuess()
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// On a terminal, watch draws pairing QR codes, which only token
	// holders are sent; piped, it sends the token only when asked to, so
	// that the codes stay out of whatever reads the pipe.
	use := tokenRead
	if !s.json {
		use = tokenPrivate
	}
	for {
		dctx, cancel := context.WithTimeout(ctx, c.Duration("timeout"))
		ws, _, err := s.events(dctx, use)
		cancel()
		if err != nil {
			return clientError(err, s.addr)
		}
		again, err := s.follow(ctx, ws, nil)
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
// done, if set, sees each message after it is printed and ends the
// connection when it returns an error (nil for a normal end) or true.
func (s *clientConn) follow(ctx context.Context, ws *websocket.Conn, done func(feed.Message) (bool, error)) (again bool, err error) {
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			switch websocket.CloseStatus(err) {
			case websocket.StatusGoingAway:
				if done != nil {
					return false, cli.Exit(fmt.Sprintf("wa-sidecar: the sidecar at %s is exiting", s.addr), exitNoSidecar)
				}
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
				return false, cli.Exit(fmt.Sprintf("wa-sidecar: the sidecar at %s closed the connection: %d %s", s.addr, int(code), closeReason(err)), exitError)
			}
			// Without a close, the sidecar died or the network failed; the
			// library's error (a frame header and EOF) would tell a person
			// nothing.
			return false, cli.Exit(fmt.Sprintf("wa-sidecar: lost the connection to the sidecar at %s", s.addr), exitNoSidecar)
		}
		m, merr := feed.DecodeMessage(b)
		if s.json {
			fmt.Fprintln(s.out, string(b))
		} else if merr == nil {
			s.show(m)
		}
		if done != nil && merr == nil {
			if end, err := done(m); end || err != nil {
				ws.Close(websocket.StatusNormalClosure, "")
				return false, err
			}
		}
	}
}

// show prints one message for a person: the state on hello, a line per
// event, and a pairing QR code when one comes (to token holders only).
func (s *clientConn) show(m feed.Message) {
	switch m.Type {
	case feed.TypeHello:
		if m.Status != nil {
			fmt.Fprintln(s.out, statusLine(*m.Status, time.Now(), s.colour))
		}
		if rows := helloQR(m); len(rows) > 0 {
			fmt.Fprint(s.out, bridge.QRText("", rows))
		}
	case feed.TypeEvent:
		fmt.Fprintln(s.out, eventLine(m, s.colour))
		if m.Event == bridge.EventQR {
			if rows := qrRows(m.Fields); len(rows) > 0 {
				fmt.Fprint(s.out, bridge.QRText("", rows))
			}
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
