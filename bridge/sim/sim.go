// Package sim is a simulated Hermes WhatsApp bridge. It keeps the real
// bridge's contract (its flags, its stdout lines, GET /health with the same
// fields and Host check, exit 1 when logged out, no SIGTERM handler) so the
// sidecar can be shown and tested without Node.js or a phone.
//
// It runs as a child process of its own, through the hidden
// `wa-sidecar simulate-bridge` command, because the sidecar must supervise
// a real process: real pipes, real exits, real signal deaths.
package sim

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/bridge/qrcode"
)

// Crash is how a simulated run ends by itself.
type Crash string

// The ways a simulated bridge can die, each one a real failure of the Node
// bridge.
const (
	CrashException Crash = "exception" // uncaught exception: stack on stderr, exit 1
	CrashAbort     Crash = "abort"     // V8 out of memory: dies by SIGABRT
	CrashKill      Crash = "kill"      // the kernel's OOM killer: dies by SIGKILL
	CrashLogout    Crash = "logout"    // WhatsApp logged the device out: exit 1
)

// Config is one simulated run. Durations of 0 switch a behaviour off.
type Config struct {
	Port       int
	SessionDir string
	Mode       string
	PairOnly   bool // pair, save credentials, exit 0; no HTTP server
	PairJSON   bool // pairing events as JSON lines

	QREvery        time.Duration // a fresh QR code this often while unpaired
	PairAfter      time.Duration // the QR is "scanned" this long after start; 0 waits forever
	ConnectAfter   time.Duration // time to connect with saved credentials
	FlipEvery      time.Duration // the connection drops after being up this long
	ReconnectAfter time.Duration // and comes back after this long
	CrashAfter     time.Duration // the process dies this long after start
	Crashes        []Crash       // one is picked at random for each run
	HealthHang     bool          // GET /health never answers, like a wedged event loop
	// ScriptHashOf, if set, makes /health report the scriptHash of this
	// bridge.js (16 hex digits, as Hermes 0.18 bridges do) instead of the
	// simulator's own, so that a gateway's adoption check can pass.
	ScriptHashOf string
	// RuntimeHashOf, if set, reports the 64-hex hash of this bridge
	// folder's runtime files, as newer bridges do.
	RuntimeHashOf string
}

// Defaults are the timings of the real bridge, roughly: a QR every 20 s,
// reconnect 3 s after a drop, no crashes, no scan.
func Defaults() Config {
	return Config{
		Port:           3000,
		Mode:           "self-chat",
		QREvery:        20 * time.Second,
		ConnectAfter:   time.Second,
		ReconnectAfter: 3 * time.Second,
		Crashes:        []Crash{CrashException},
	}
}

// Demo is the story `wa-sidecar run --demo` tells: the normal life of a
// bridge, compressed. A QR code every 5 s until the simulated scan at 12 s;
// connected; the connection drops once per run, after 75 s, and comes back
// 3 s later; and the process crashes (an uncaught exception or V8 out of
// memory) after 150 s. That is past the sidecar's default backoff reset of
// 2 minutes, so each respawned bridge is forgiven ("recovered") before it
// crashes again, and every restart waits only the initial delay: a bridge
// that crashes now and then, not a crash loop. Port and SessionDir are left
// for the caller.
func Demo() Config {
	c := Defaults()
	c.QREvery = 5 * time.Second
	c.PairAfter = 12 * time.Second
	c.FlipEvery = 75 * time.Second
	c.CrashAfter = 150 * time.Second
	c.Crashes = []Crash{CrashException, CrashAbort}
	return c
}

// Args renders c as the command-line arguments Main parses.
func (c Config) Args() []string {
	a := []string{"--port", strconv.Itoa(c.Port), "--session", c.SessionDir, "--mode", c.Mode,
		"--qr-every", c.QREvery.String(), "--pair-after", c.PairAfter.String(),
		"--connect-after", c.ConnectAfter.String(), "--flip-every", c.FlipEvery.String(),
		"--reconnect-after", c.ReconnectAfter.String(), "--crash-after", c.CrashAfter.String()}
	if len(c.Crashes) > 0 {
		a = append(a, "--crash", crashList(c.Crashes))
	}
	if c.PairOnly {
		a = append(a, "--pair-only")
	}
	if c.PairJSON {
		a = append(a, "--pair-json")
	}
	if c.HealthHang {
		a = append(a, "--health-hang")
	}
	if c.ScriptHashOf != "" {
		a = append(a, "--script-hash-of", c.ScriptHashOf)
	}
	if c.RuntimeHashOf != "" {
		a = append(a, "--runtime-hash-of", c.RuntimeHashOf)
	}
	return a
}

func crashList(cs []Crash) string {
	s := make([]string, len(cs))
	for i, cr := range cs {
		s[i] = string(cr)
	}
	return strings.Join(s, ",")
}

// Parse reads the simulator's command line. Errors say which flag is wrong.
func Parse(args []string, stderr io.Writer) (Config, error) {
	return parse(Defaults(), args, stderr)
}

// Override changes c by the simulator's flags in args, the chaos knobs
// (`--crash-after 20s --flip-every 10s`), keeping its port and session,
// which belong to whoever made c. Errors say which flag is wrong.
func (c Config) Override(args []string, stderr io.Writer) (Config, error) {
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && (name == "port" || name == "session") {
			return c, fmt.Errorf("%s is chosen by the demo itself; pass only the timings and failures to change", a)
		}
	}
	return parse(c, append(c.Args(), args...), stderr)
}

func parse(c Config, args []string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet("simulate-bridge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.Port, "port", c.Port, "HTTP port on 127.0.0.1")
	fs.StringVar(&c.SessionDir, "session", c.SessionDir, "session directory (creds.json lives here)")
	fs.StringVar(&c.Mode, "mode", c.Mode, "self-chat or bot")
	fs.BoolVar(&c.PairOnly, "pair-only", c.PairOnly, "pair, save credentials and exit 0")
	fs.BoolVar(&c.PairJSON, "pair-json", c.PairJSON, "print pairing events as JSON lines")
	fs.DurationVar(&c.QREvery, "qr-every", c.QREvery, "show a new QR code this often while unpaired")
	fs.DurationVar(&c.PairAfter, "pair-after", c.PairAfter, "pretend the QR code is scanned after this long (0: never)")
	fs.DurationVar(&c.ConnectAfter, "connect-after", c.ConnectAfter, "time to connect when already paired")
	fs.DurationVar(&c.FlipEvery, "flip-every", c.FlipEvery, "drop the connection after it has been up this long (0: never)")
	fs.DurationVar(&c.ReconnectAfter, "reconnect-after", c.ReconnectAfter, "reconnect this long after a drop")
	fs.DurationVar(&c.CrashAfter, "crash-after", c.CrashAfter, "die this long after start (0: never)")
	if len(c.Crashes) == 0 {
		c.Crashes = []Crash{CrashException}
	}
	crashes := fs.String("crash", crashList(c.Crashes), "comma-separated ways to die, one picked per run: exception, abort, kill, logout")
	fs.BoolVar(&c.HealthHang, "health-hang", c.HealthHang, "accept /health requests but never answer them")
	fs.StringVar(&c.ScriptHashOf, "script-hash-of", c.ScriptHashOf, "report the scriptHash of this bridge.js (16 hex digits, as Hermes 0.18 computes it)")
	fs.StringVar(&c.RuntimeHashOf, "runtime-hash-of", c.RuntimeHashOf, "report the runtime hash of this bridge folder (64 hex digits, as newer Hermes computes it)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q; the simulator takes flags only", fs.Arg(0))
	}
	if c.SessionDir == "" {
		return c, errors.New("--session is required: the directory where creds.json is kept (use a temporary one)")
	}
	if gateway.CheckPort(c.Port) != nil {
		return c, fmt.Errorf("--port must be between 1 and %d (got %d)", gateway.MaxPort, c.Port)
	}
	if c.Mode != "self-chat" && c.Mode != "bot" {
		return c, fmt.Errorf("--mode must be self-chat or bot (got %q)", c.Mode)
	}
	if c.QREvery <= 0 || c.ReconnectAfter <= 0 || c.ConnectAfter < 0 || c.PairAfter < 0 || c.FlipEvery < 0 || c.CrashAfter < 0 {
		return c, errors.New("durations must not be negative, and --qr-every and --reconnect-after must be positive")
	}
	c.Crashes = nil
	for _, s := range strings.Split(*crashes, ",") {
		switch cr := Crash(strings.TrimSpace(s)); cr {
		case CrashException, CrashAbort, CrashKill, CrashLogout:
			c.Crashes = append(c.Crashes, cr)
		default:
			return c, fmt.Errorf("--crash: unknown way to die %q; use exception, abort, kill or logout", s)
		}
	}
	return c, nil
}

// Main runs the simulator with a command line and returns its exit code.
// Deaths by signal never return.
func Main(args []string, stdout, stderr io.Writer) int {
	cfg, err := Parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "simulate-bridge:", err)
		return 2
	}
	return Run(context.Background(), cfg, stdout, stderr)
}

// bridge is the simulated bridge's state, shared by its timeline and its
// HTTP handlers.
type bridge struct {
	cfg     Config
	started time.Time
	out     io.Writer
	outMu   sync.Mutex

	scriptHash string // reported in /health, fixed for the run as in the real bridge

	mu        sync.Mutex
	connected bool
}

// reportedHash is what /health says of the bridge's own code. Like the
// real bridge, a file it cannot read makes it report no hash at all.
func reportedHash(cfg Config, stderr io.Writer) string {
	var h string
	var err error
	switch {
	case cfg.ScriptHashOf != "":
		h, err = gateway.ScriptHash(cfg.ScriptHashOf)
	case cfg.RuntimeHashOf != "":
		h, err = gateway.RuntimeHash(cfg.RuntimeHashOf)
	default:
		return scriptHash
	}
	if err != nil {
		fmt.Fprintf(stderr, "warning: no scriptHash: %v\n", err)
		return ""
	}
	return h
}

// Run simulates one life of the bridge. It returns the exit code for the
// ways the real bridge exits, and kills the process for the ways it dies.
func Run(ctx context.Context, cfg Config, stdout, stderr io.Writer) int {
	b := &bridge{cfg: cfg, started: time.Now(), out: stdout, scriptHash: reportedHash(cfg, stderr)}
	if err := os.MkdirAll(cfg.SessionDir, 0o700); err != nil {
		fmt.Fprintf(stderr, "Error: cannot create the session directory: %v\n", err)
		return 1
	}
	if !cfg.PairOnly {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port)))
		if err != nil {
			// Node's uncaught EADDRINUSE: a stack and exit 1.
			fmt.Fprintf(stderr, "Error: listen EADDRINUSE: address already in use 127.0.0.1:%d\n    at Server.setupListenHandle [as _listen2] (node:net:1817:16)\n", cfg.Port)
			return 1
		}
		srv := &http.Server{Handler: b.routes(), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		b.println(fmt.Sprintf("🌉 WhatsApp bridge listening on port %d (mode: %s)", cfg.Port, cfg.Mode))
	}
	b.println("📁 Session stored in: " + cfg.SessionDir)
	if cfg.PairJSON {
		b.json(map[string]any{"event": "started", "session": cfg.SessionDir})
	}

	var crash <-chan time.Time
	if cfg.CrashAfter > 0 && !cfg.PairOnly {
		t := time.NewTimer(cfg.CrashAfter)
		defer t.Stop()
		crash = t.C
	}
	end := make(chan int, 1)
	go b.timeline(ctx, end)
	select {
	case code := <-end:
		return code
	case <-crash:
		return b.die(cfg.Crashes[mrand.IntN(len(cfg.Crashes))], stderr)
	case <-ctx.Done():
		return 0
	}
}

// timeline plays pairing, connecting and connection drops. It sends an
// exit code on end when the run is over by itself.
func (b *bridge) timeline(ctx context.Context, end chan<- int) {
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	creds := filepath.Join(b.cfg.SessionDir, "creds.json")
	if !paired(creds) {
		if !b.pair(ctx, creds) {
			return
		}
		if b.cfg.PairOnly {
			b.setConnected(true, "")
			end <- 0
			return
		}
		// WhatsApp asks for a restart right after a first pairing.
		b.println("↻ WhatsApp requested restart (code 515). Reconnecting...")
		if !wait(time.Second) {
			return
		}
	} else if !wait(b.cfg.ConnectAfter) {
		return
	}
	for {
		b.setConnected(true, "")
		if b.cfg.PairOnly {
			end <- 0
			return
		}
		if b.cfg.FlipEvery <= 0 {
			<-ctx.Done()
			return
		}
		if !wait(b.cfg.FlipEvery) {
			return
		}
		b.setConnected(false, "connectionLost")
		if !wait(b.cfg.ReconnectAfter) {
			return
		}
	}
}

// pair shows QR codes until the simulated scan, then saves credentials.
func (b *bridge) pair(ctx context.Context, creds string) bool {
	var scanned <-chan time.Time
	if b.cfg.PairAfter > 0 {
		t := time.NewTimer(b.cfg.PairAfter)
		defer t.Stop()
		scanned = t.C
	}
	every := time.NewTicker(b.cfg.QREvery)
	defer every.Stop()
	for {
		b.showQR(newPairingRef())
		select {
		case <-every.C:
		case <-scanned:
			me := map[string]any{"id": "15550100000:7@s.whatsapp.net", "name": "Simulated Phone"}
			data, _ := json.MarshalIndent(map[string]any{"me": me, "registered": true, "simulated": true}, "", "  ")
			if err := os.WriteFile(creds, data, 0o600); err != nil {
				b.println("Failed to save credentials: " + err.Error())
				return false
			}
			if b.cfg.PairJSON {
				b.json(map[string]any{"event": "connected", "user": me})
			}
			return true
		case <-ctx.Done():
			return false
		}
	}
}

func (b *bridge) showQR(ref string) {
	if b.cfg.PairJSON {
		b.json(map[string]any{"event": "qr", "qr": ref})
		return
	}
	var sb strings.Builder
	sb.WriteString("\n📱 Scan this QR code with WhatsApp on your phone:\n\n")
	for _, l := range qrcode.Lines(ref) {
		sb.WriteString(l)
		sb.WriteByte('\n')
	}
	sb.WriteString("\nWaiting for scan...")
	b.println(sb.String())
}

// newPairingRef makes a payload shaped like WhatsApp's: a ref, a noise
// key, an identity key and an advertising secret, comma-separated.
func newPairingRef() string {
	part := func(n int) string {
		p := make([]byte, n)
		rand.Read(p)
		return base64.StdEncoding.EncodeToString(p)
	}
	return "2@" + part(48) + "," + part(32) + "," + part(32) + "," + part(32)
}

func (b *bridge) setConnected(up bool, reason string) {
	b.mu.Lock()
	b.connected = up
	b.mu.Unlock()
	if up {
		b.println("✅ WhatsApp connected!")
		return
	}
	b.println(fmt.Sprintf("⚠️  Connection closed (reason: %s). Reconnecting in %ds...", reason, int(b.cfg.ReconnectAfter.Round(time.Second)/time.Second)))
	if b.cfg.PairJSON {
		b.json(map[string]any{"event": "disconnected", "reason": reason})
	}
}

func (b *bridge) isConnected() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.connected
}

func (b *bridge) println(s string) {
	b.outMu.Lock()
	defer b.outMu.Unlock()
	fmt.Fprintln(b.out, s)
}

func (b *bridge) json(ev map[string]any) {
	ev["ts"] = time.Now().UnixMilli()
	line, _ := json.Marshal(ev)
	b.println(string(line))
}

// paired is the real bridge's test: credentials exist and are not empty.
func paired(creds string) bool {
	st, err := os.Stat(creds)
	return err == nil && st.Size() > 0
}

// die ends the run the way the chosen failure ends a Node process.
func (b *bridge) die(how Crash, stderr io.Writer) int {
	switch how {
	case CrashLogout:
		if b.cfg.PairJSON {
			b.json(map[string]any{"event": "error", "error": "logged_out", "reason": "loggedOut"})
		}
		b.println("❌ Logged out. Delete session and restart to re-authenticate.")
		return 1
	case CrashAbort:
		fmt.Fprintln(stderr, "\n<--- Last few GCs --->\n\nFATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory")
		dieBySignal(sigAbort)
	case CrashKill:
		dieBySignal(sigKill)
	}
	fmt.Fprintln(stderr, "Error: simulated uncaught exception\n    at Timeout._onTimeout (bridge.js:1:1)\n    at listOnTimeout (node:internal/timers:581:17)")
	return 1
}
