// Package bridge knows the Hermes WhatsApp bridge and its gateway: where a
// Hermes install keeps the bridge, what its output and its /health answer
// mean, when it is paired, connected, or logged out. It drives a
// procmon.Monitor through the monitor's hooks and commands, and adds its
// findings to the monitor's event stream.
package bridge

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/sim"
)

// Target is one bridge to supervise: the command that runs it and where it
// listens and keeps its session.
type Target struct {
	Command    []string
	Dir        string // working directory for the command; empty keeps the sidecar's
	Port       int    // the bridge's HTTP port; 0 when unknown
	SessionDir string // holds creds.json; empty when unknown
	// Cleanup removes what the target made for itself (the demo's
	// temporary session). nil when there is nothing to remove.
	Cleanup func()
}

// DefaultPort and DefaultMode are the gateway's defaults.
const (
	DefaultPort = 3000
	DefaultMode = "self-chat"
)

// Where is what Discover is told; empty fields are looked up.
type Where struct {
	HermesHome string // default $HERMES_HOME, else ~/.hermes
	Script     string // default <home>/scripts/whatsapp-bridge/bridge.js
	Node       string // default node (then nodejs) in PATH
	SessionDir string // default <home>/platforms/whatsapp/session, or the legacy <home>/whatsapp/session
	Port       int    // default 3000
	Mode       string // default self-chat
	// Getenv and LookPath default to os.Getenv and exec.LookPath; tests
	// replace them to describe a machine.
	Getenv   func(string) string
	LookPath func(string) (string, error)
}

// Discover finds the bridge the way the Hermes gateway starts it. Its
// errors list every place it looked and the flag that points elsewhere.
func Discover(w Where) (Target, error) {
	if w.Getenv == nil {
		w.Getenv = os.Getenv
	}
	if w.LookPath == nil {
		w.LookPath = exec.LookPath
	}
	if w.Port == 0 {
		w.Port = DefaultPort
	}
	if w.Port < 1 || w.Port > 65535 {
		return Target{}, fmt.Errorf("--port must be between 1 and 65535 (got %d)", w.Port)
	}
	if w.Mode == "" {
		w.Mode = DefaultMode
	}
	if w.Mode != "self-chat" && w.Mode != "bot" {
		return Target{}, fmt.Errorf("--mode must be self-chat or bot (got %q)", w.Mode)
	}

	home, homeFrom, err := hermesHome(w)
	if err != nil {
		return Target{}, err
	}
	script := w.Script
	if script == "" {
		script = filepath.Join(home, "scripts", "whatsapp-bridge", "bridge.js")
		if !isFile(script) {
			return Target{}, fmt.Errorf("no WhatsApp bridge found: looked for %s (Hermes home %s, from %s); "+
				"install the Hermes agent, set HERMES_HOME, pass --bridge-script PATH, "+
				"put your own bridge command after --, or try --demo", script, home, homeFrom)
		}
	} else if !isFile(script) {
		return Target{}, fmt.Errorf("--bridge-script %s: no such file; give the path of bridge.js", script)
	}
	script, _ = filepath.Abs(script)

	node, err := findNode(w)
	if err != nil {
		return Target{}, err
	}
	session := w.SessionDir
	if session == "" {
		session = sessionDir(home)
	}
	session, _ = filepath.Abs(session)

	return Target{
		Command:    []string{node, script, "--port", strconv.Itoa(w.Port), "--session", session, "--mode", w.Mode},
		Dir:        filepath.Dir(script),
		Port:       w.Port,
		SessionDir: session,
	}, nil
}

func hermesHome(w Where) (home, from string, err error) {
	if w.HermesHome != "" {
		return w.HermesHome, "--hermes-home", nil
	}
	if h := w.Getenv("HERMES_HOME"); h != "" {
		return h, "$HERMES_HOME", nil
	}
	user := w.Getenv("HOME")
	if user == "" {
		return "", "", errors.New("cannot find the Hermes home: neither HERMES_HOME nor HOME is set; set HERMES_HOME or pass --hermes-home")
	}
	return filepath.Join(user, ".hermes"), "the default ~/.hermes", nil
}

// sessionDir prefers a session that is paired, then one that exists, in
// the gateway's order: the current location before the legacy one. With
// neither, the current location is used and the bridge will ask to pair.
func sessionDir(home string) string {
	candidates := []string{
		filepath.Join(home, "platforms", "whatsapp", "session"),
		filepath.Join(home, "whatsapp", "session"),
	}
	for _, c := range candidates {
		if Paired(c) {
			return c
		}
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && st.IsDir() {
			return c
		}
	}
	return candidates[0]
}

func findNode(w Where) (string, error) {
	if w.Node != "" {
		p, err := w.LookPath(w.Node)
		if err != nil {
			return "", fmt.Errorf("--node %s: %v; give the path of the node binary", w.Node, err)
		}
		return p, nil
	}
	var tried []string
	for _, name := range []string{"node", "nodejs"} {
		if p, err := w.LookPath(name); err == nil {
			return p, nil
		}
		tried = append(tried, name)
	}
	return "", fmt.Errorf("Node.js not found: looked for %s in PATH (%s); install Node.js 18 or later, or pass --node PATH",
		strings.Join(tried, " and "), w.Getenv("PATH"))
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// Paired reports whether a session directory holds credentials: a
// creds.json that is not empty. A 0-byte file is what a crash during a
// write leaves behind, and does not count.
func Paired(sessionDir string) bool {
	st, err := os.Stat(filepath.Join(sessionDir, "creds.json"))
	return err == nil && st.Mode().IsRegular() && st.Size() > 0
}

// Demo is a simulated bridge in a fresh temporary session, on a free port
// of 127.0.0.1, with timings that show pairing, connecting, a dropped
// connection, a crash and a respawn within a minute. exe is the sidecar's
// own executable, which runs the simulator as `exe simulate-bridge`.
func Demo(exe string) (Target, error) {
	dir, err := os.MkdirTemp("", "wa-sidecar-demo-")
	if err != nil {
		return Target{}, fmt.Errorf("--demo: make a temporary session directory: %w (set TMPDIR to a writable directory)", err)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return Target{}, fmt.Errorf("--demo: find a free port on 127.0.0.1: %w", err)
	}
	cfg := DemoConfig(port, filepath.Join(dir, "session"))
	return Target{
		Command:    append([]string{exe, "simulate-bridge"}, cfg.Args()...),
		Port:       port,
		SessionDir: cfg.SessionDir,
		Cleanup:    func() { os.RemoveAll(dir) },
	}, nil
}

// DemoConfig is the simulated bridge --demo runs.
func DemoConfig(port int, session string) sim.Config {
	c := sim.Defaults()
	c.Port = port
	c.SessionDir = session
	c.QREvery = 5 * time.Second
	c.PairAfter = 12 * time.Second
	c.FlipEvery = 10 * time.Second
	c.CrashAfter = 25 * time.Second
	c.Crashes = []sim.Crash{sim.CrashException, sim.CrashAbort}
	return c
}

// freePort asks the kernel for a port nobody uses. Another program could
// take it before the bridge binds it; the bridge would then exit with
// EADDRINUSE and be respawned on the same port, which is good enough for a
// demo.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
