// Package gatewaymodel is a model of the Hermes gateway's WhatsApp adapter,
// for tests: what its connect() does with a bridge it finds on its port
// (adopt it, or kill it and start its own), what its poll loop and its
// disconnect() do afterwards. It follows Hermes 0.18.2
// (plugins/platforms/whatsapp/adapter.py) and, with Config.Newer, the later
// upstream adapter, with real processes, real signals and real sockets on
// 127.0.0.1, and with the gateway's own waits.
//
// The model knows nothing about wa-sidecar and imports none of it: it finds
// listeners in /proc as lsof or ss would, checks bridge.pid as the gateway
// does, and runs Config.Spawn where the gateway would run node bridge.js.
// It signals what the gateway would signal, except its own process.
//
// A test that proves a running bridge is adopted:
//
//	g := gatewaymodel.New(gatewaymodel.Config{
//		Script:     "/path/to/bridge.js",
//		SessionDir: session,
//		Port:       port,
//		Spawn:      []string{bin, "--port", strconv.Itoa(port), "--session", session},
//	})
//	defer g.Close()
//	res := g.Connect(ctx)
//	if res.Outcome != gatewaymodel.Adopted {
//		t.Fatalf("not adopted: %s (%s)", res.Reason, res.Replaced)
//	}
//	go g.Poll(ctx, time.Second, nil)
//	...
//	g.Disconnect()
//
// The model reaps its children with waitid on their own pids, so it must not
// run in a process where something else reaps every child (wait4(-1)).
package gatewaymodel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Config is what the gateway knows about its WhatsApp platform. The zero
// durations take the real gateway's values.
type Config struct {
	// Script is the bridge.js the gateway is configured with. It must exist,
	// and its content hash is what a running bridge's scriptHash is compared
	// with.
	Script string
	// SessionDir must hold creds.json (the gateway checks only that it
	// exists); bridge.pid is read and written here.
	SessionDir string
	// Port is the bridge port on 127.0.0.1.
	Port int
	// SendReadReceipts is the gateway's send_read_receipts setting. Only a
	// Newer gateway compares it with a running bridge's sendReadReceipts and
	// passes it to its own bridge as WHATSAPP_SEND_READ_RECEIPTS.
	SendReadReceipts bool
	// Newer selects the later upstream adapter: it also compares
	// sendReadReceipts before adopting, and SIGTERMs only port listeners
	// that look like node.
	Newer bool
	// Spawn is the command the gateway runs for its own bridge, in place of
	// node bridge.js --port P --session S --mode M.
	Spawn []string
	// Env is its bridge's environment; nil means this process's.
	Env []string
	// LogPath is the file its bridge's stdout and stderr are appended to;
	// empty means bridge.log beside SessionDir, as in the gateway.
	LogPath string
	// KillWait is how long the gateway sleeps after signalling: after
	// killing a bridge and before starting its own, and in Disconnect
	// between SIGTERM and SIGKILL. Zero means 1 s, as in the gateway.
	KillWait time.Duration
	// StartTimeout bounds the first wait for its own bridge: it ends early
	// on status "connected", and the attempt fails unless /health answered
	// in it at all. Zero means 15 s, as in the gateway.
	StartTimeout time.Duration
	// ConnectTimeout bounds the second wait, entered only when /health
	// answered but not "connected": it ends early on "connected", and the
	// attempt succeeds either way. Zero means 15 s, as in the gateway.
	ConnectTimeout time.Duration
	// PollEvery is the sleep before each /health probe in those waits. Zero
	// means 1 s, as in the gateway; each wait makes its timeout/PollEvery
	// probes.
	PollEvery time.Duration
	// ScriptHash compares the scriptHash a running bridge reported ("" when
	// it reported none, or not a string) with Script, returning the hash it
	// expected. Nil means the gateway's: the first 16 hex digits of the
	// SHA-256 of Script, equal to a non-empty report.
	ScriptHash func(reported, script string) (disk string, ok bool)
	// Logf receives what the gateway would print. Nil discards it.
	Logf func(format string, args ...any)
}

// Outcome is how one connect attempt ended.
type Outcome string

const (
	// Adopted: a running bridge was used as it is, without a signal.
	Adopted Outcome = "adopted"
	// Spawned: the gateway's own bridge answered /health (connected, or
	// not yet: see Result.Reason), and the attempt succeeded.
	Spawned Outcome = "spawned"
	// Failed: the attempt failed; the gateway would retry it later unless
	// Result.Fatal is set.
	Failed Outcome = "failed"
)

// Cause says why the gateway did not adopt what answered on its port.
type Cause string

const (
	// NoBridge: nothing answered GET /health with 200 and a JSON object
	// within 2 s.
	NoBridge Cause = "no_bridge"
	// NotConnected: the bridge's status was not "connected".
	NotConnected Cause = "not_connected"
	// Stale: the bridge's scriptHash did not match Config.Script.
	Stale Cause = "stale"
	// ReadReceipts: a Newer gateway's send_read_receipts differed from the
	// bridge's sendReadReceipts.
	ReadReceipts Cause = "read_receipts"
)

// The gateway's codes for the errors it never retries.
const (
	FatalBridgeMissing = "whatsapp_bridge_missing"
	FatalNotPaired     = "whatsapp_not_paired"
)

// Result is what one connect attempt did.
type Result struct {
	Outcome Outcome
	// Fatal is the gateway's code for a non-retryable failure
	// (FatalNotPaired, FatalBridgeMissing); empty otherwise.
	Fatal string
	// Replaced says why a bridge was not adopted; empty when one was, or
	// when the attempt ended before asking.
	Replaced Cause
	// Reason says how the attempt ended, close to the gateway's own words:
	// "bridge process died (exit code 1)", "not connected after wait", ...
	Reason string
	// Health is the first /health answer, the one the adoption decision was
	// made on; nil when none was a JSON object.
	Health map[string]any
	// Killed lists the pids SIGTERMed (from bridge.pid, then port
	// listeners), one entry per signal sent.
	Killed []int
	// Own is the bridge this attempt started, alive or not; nil when it
	// started none. The Gateway reaps it: only signal it.
	Own *os.Process
	// NPMInstall reports that the gateway would have run npm install first
	// (missing node_modules, or a stamp that does not match package.json).
	// The model never runs it.
	NPMInstall bool
}

// Gateway is one WhatsApp adapter. It keeps the bridge it started between
// attempts, as the adapter does. Connect, Disconnect and Close are not safe
// to call concurrently with each other; Poll may run beside them.
type Gateway struct {
	cfg    Config
	probes *http.Transport // a fresh connection per /health, as the gateway opens a session per probe
	polls  *http.Transport // one kept-alive session for /messages

	mu      sync.Mutex
	own     *child   // the bridge it started last and still answers for
	earlier []*child // bridges it started before, not yet reaped
	poll    *pollRun // the running Poll, if any
}

// New returns a gateway with cfg, holding no bridge yet.
func New(cfg Config) *Gateway {
	if cfg.KillWait <= 0 {
		cfg.KillWait = time.Second
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 15 * time.Second
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 15 * time.Second
	}
	if cfg.PollEvery <= 0 {
		cfg.PollEvery = time.Second
	}
	if cfg.ScriptHash == nil {
		cfg.ScriptHash = shortScriptHash
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.LogPath == "" {
		cfg.LogPath = filepath.Join(filepath.Dir(filepath.Clean(cfg.SessionDir)), "bridge.log")
	}
	return &Gateway{
		cfg: cfg,
		// aiohttp ignores proxy variables unless asked; so does the model.
		probes: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		polls:  &http.Transport{Proxy: nil},
	}
}

// ContentHash returns the first 16 hex digits of the SHA-256 of the file at
// path, or "" when it cannot be read: the hash the gateway compares with a
// bridge's scriptHash, and package.json's for the npm stamp.
func ContentHash(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:16]
}

func shortScriptHash(reported, script string) (string, bool) {
	disk := ContentHash(script)
	return disk, reported != "" && disk != "" && reported == disk
}

// Connect makes one connect attempt, in the gateway's order: preflight, the
// npm stamp, GET /health and the adoption decision; otherwise SIGTERM by
// bridge.pid and to the port's listeners, sleep KillWait, start Spawn, write
// bridge.pid and wait for it. A cancelled ctx ends the attempt as Failed.
func (g *Gateway) Connect(ctx context.Context) Result {
	c := &g.cfg
	g.reapEarlier()
	var res Result
	fail := func(fatal, format string, args ...any) Result {
		res.Outcome, res.Fatal, res.Reason = Failed, fatal, fmt.Sprintf(format, args...)
		c.Logf("gateway: %s", res.Reason)
		return res
	}

	if _, err := os.Stat(c.Script); err != nil {
		return fail(FatalBridgeMissing, "bridge script missing at %s", c.Script)
	}
	creds := filepath.Join(c.SessionDir, "creds.json")
	if _, err := os.Stat(creds); err != nil {
		return fail(FatalNotPaired, "not paired: no creds.json at %s", creds)
	}
	res.NPMInstall = npmWouldInstall(filepath.Dir(c.Script), c.Newer)
	if res.NPMInstall {
		c.Logf("gateway: would run npm install in %s (not run by the model)", filepath.Dir(c.Script))
	}

	ok, data, err := g.probe(ctx)
	if ctx.Err() != nil {
		return fail("", "connect cancelled: %v", ctx.Err())
	}
	if err == nil && ok {
		res.Health = data
	}
	cause, why := judge(res.Health, c)
	if cause == "" {
		g.mu.Lock()
		if g.own != nil {
			// The gateway forgets its own bridge when it adopts, so
			// Disconnect leaves even that one running.
			g.earlier = append(g.earlier, g.own)
			g.own = nil
		}
		g.mu.Unlock()
		res.Outcome, res.Reason = Adopted, "using the running bridge"
		c.Logf("gateway: using the running bridge on port %d (status: connected)", c.Port)
		return res
	}
	res.Replaced = cause
	if why != "" {
		c.Logf("gateway: %s, restarting", why)
	}

	res.Killed = killByPidfile(c.SessionDir, c.Newer, c.Logf)
	res.Killed = append(res.Killed, killListeners(c.Port, c.Newer, c.Logf)...)
	if err := sleep(ctx, c.KillWait); err != nil {
		return fail("", "connect cancelled: %v", err)
	}

	ch, err := g.spawn()
	if err != nil {
		return fail("", "could not start the bridge: %v", err)
	}
	res.Own = ch.cmd.Process
	writePidfile(c.SessionDir, ch.pid())

	res.Outcome, res.Reason = g.await(ctx, ch)
	c.Logf("gateway: %s", res.Reason)
	return res
}

// judge is the adoption decision on a /health answer (nil when there was
// none): an empty Cause adopts. why is what the gateway prints, if anything.
func judge(h map[string]any, c *Config) (cause Cause, why string) {
	if h == nil {
		return NoBridge, ""
	}
	status, present := h["status"]
	if !present {
		status = "unknown"
	}
	if s, _ := status.(string); s != "connected" {
		return NotConnected, fmt.Sprintf("bridge found but not connected (status: %s)", pyStr(status))
	}
	running, present := h["scriptHash"]
	if !present {
		running = ""
	}
	reported, isString := running.(string)
	disk, match := c.ScriptHash(reported, c.Script)
	if !isString && truthy(running) {
		match = false // a number or list never equals the hash on disk
	}
	receipts := !c.Newer || truthy(h["sendReadReceipts"]) == c.SendReadReceipts
	if match && receipts {
		return "", ""
	}
	cause = Stale
	if match {
		cause = ReadReceipts
	}
	if c.Newer && isString && reported == disk {
		return cause, "running bridge is stale (send_read_receipts config changed)"
	}
	shown := "unversioned"
	if truthy(running) {
		shown = pyStr(running)
	}
	return cause, fmt.Sprintf("running bridge is stale (running=%s, disk=%s)", shown, disk)
}

// await is the gateway's wait for its own bridge: phase 1 probes until it
// answers "connected" or StartTimeout/PollEvery probes are spent; only if
// /health answered at all does phase 2 give it ConnectTimeout/PollEvery
// more to connect.
func (g *Gateway) await(ctx context.Context, ch *child) (Outcome, string) {
	c := &g.cfg
	connected, httpReady, died, err := g.watch(ctx, ch, c.StartTimeout)
	switch {
	case err != nil:
		return Failed, fmt.Sprintf("connect cancelled: %v", err)
	case died:
		return Failed, fmt.Sprintf("bridge process died (exit code %d)", ch.exitCode())
	case !httpReady:
		// The bridge is left running, as in the gateway; the next attempt
		// kills it through bridge.pid.
		return Failed, fmt.Sprintf("bridge HTTP server did not start in %v", c.StartTimeout)
	case connected:
		return Spawned, "bridge started"
	}
	c.Logf("gateway: bridge HTTP is up, waiting for WhatsApp to connect")
	connected, _, died, err = g.watch(ctx, ch, c.ConnectTimeout)
	switch {
	case err != nil:
		return Failed, fmt.Sprintf("connect cancelled: %v", err)
	case died:
		return Failed, "bridge process died during connection"
	case connected:
		return Spawned, "bridge started"
	}
	// The gateway warns and goes on: the bridge may connect later.
	return Spawned, "not connected after wait"
}

// watch is one phase of the wait, bounded by timeout: each round sleeps
// PollEvery, stops if the bridge has exited (reaping it), then probes
// /health with a 2 s timeout. It stops early only on status "connected", or
// when the bridge died.
func (g *Gateway) watch(ctx context.Context, ch *child, timeout time.Duration) (connected, httpReady, died bool, err error) {
	c := &g.cfg
	rounds := int((timeout + c.PollEvery - 1) / c.PollEvery)
	for range rounds {
		if err := sleep(ctx, c.PollEvery); err != nil {
			return false, httpReady, false, err
		}
		if ch.exited() {
			return false, httpReady, true, nil
		}
		ok, data, err := g.probe(ctx)
		if err != nil || !ok {
			continue
		}
		httpReady = true
		if s, _ := data["status"].(string); s == "connected" {
			return true, true, false, nil
		}
	}
	return false, httpReady, false, ctx.Err()
}

// Disconnect is the gateway's disconnect(): it stops a running Poll, stops
// its own bridge (SIGTERM to the bridge's descendants and the bridge, sleep
// KillWait, SIGKILL if it is still alive) and reaps it, and removes
// bridge.pid, whoever wrote it. An adopted bridge is left running.
func (g *Gateway) Disconnect() {
	g.stopPoll()
	g.mu.Lock()
	own := g.own
	g.own = nil
	g.mu.Unlock()
	if own == nil {
		g.cfg.Logf("gateway: disconnecting, bridge left running")
	} else {
		own.stop(g.cfg.KillWait)
	}
	if err := os.Remove(filepath.Join(g.cfg.SessionDir, "bridge.pid")); err != nil && !os.IsNotExist(err) {
		g.cfg.Logf("gateway: %v", err)
	}
}

// Close is test hygiene, not gateway behaviour: it stops a running Poll,
// SIGKILLs every bridge the gateway started that still runs (with its
// descendants) and reaps them. The real gateway would leave those running.
func (g *Gateway) Close() {
	g.stopPoll()
	g.mu.Lock()
	kids := g.earlier
	if g.own != nil {
		kids = append(kids, g.own)
	}
	g.own, g.earlier = nil, nil
	g.mu.Unlock()
	for _, ch := range kids {
		ch.kill()
	}
	g.probes.CloseIdleConnections()
	g.polls.CloseIdleConnections()
}

// reapEarlier reaps the earlier bridges that have exited, as Python's
// subprocess module does for dropped Popen objects.
func (g *Gateway) reapEarlier() {
	g.mu.Lock()
	defer g.mu.Unlock()
	kept := g.earlier[:0]
	for _, ch := range g.earlier {
		if !ch.exited() {
			kept = append(kept, ch)
		}
	}
	g.earlier = kept
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *Gateway) url(path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(g.cfg.Port) + path
}
