// Package bridge knows the Hermes WhatsApp bridge and its gateway: where a
// Hermes install keeps the bridge, what its output and its /health answer
// mean, when it is paired, connected, or logged out. It drives a
// procmon.Monitor through the monitor's hooks and commands, and adds its
// findings to the monitor's event stream.
package bridge

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/bridge/sim"
)

// Target is one bridge to supervise: the command that runs it and where it
// listens and keeps its session.
type Target struct {
	Command    []string
	Dir        string // working directory for the command; empty keeps the sidecar's
	Port       int    // the bridge's HTTP port; 0 when unknown
	SessionDir string // holds creds.json; empty when unknown
	// Script is the bridge.js whose hash the gateway compares; empty when
	// unknown.
	Script string
	// Cleanup removes what the target made for itself (the demo's
	// temporary session). nil when there is nothing to remove.
	Cleanup func()
}

// DefaultPort and DefaultMode are the gateway's defaults.
const (
	DefaultPort = 3000
	DefaultMode = "self-chat"
)

// Where is what Discover is told: what the gateway would run (from
// gateway.Load), and what the user says instead. Empty fields take the
// gateway's values.
type Where struct {
	Install    gateway.Install
	Script     string // the bridge.js to run
	Node       string // the node binary; default node (then nodejs) in PATH
	SessionDir string // the session directory
	Port       int    // the bridge's port; 0: the gateway's
	Mode       string // self-chat or bot; empty: the gateway's
	// Getenv and LookPath default to os.Getenv and exec.LookPath; tests
	// replace them to describe a machine.
	Getenv   func(string) string
	LookPath func(string) (string, error)
}

// Discover finds the bridge the way the Hermes gateway starts it: the
// same script, port, session and mode, the caller's settings winning. Its
// errors list every place it looked; one about a setting is a
// *SettingError, so that the caller can name its own way to change it.
func Discover(w Where) (Target, error) {
	if w.Getenv == nil {
		w.Getenv = os.Getenv
	}
	if w.LookPath == nil {
		w.LookPath = exec.LookPath
	}
	in := w.Install
	if w.Port == 0 {
		w.Port = in.Port
	}
	if w.Port == 0 {
		w.Port = DefaultPort
	}
	if err := gateway.CheckPort(w.Port); err != nil {
		return Target{}, err
	}
	if w.Mode == "" {
		w.Mode = in.Mode
	}
	if w.Mode == "" {
		w.Mode = DefaultMode
	}
	if err := CheckMode(w.Mode); err != nil {
		return Target{}, err
	}
	script := w.Script
	if script == "" {
		if in.Home == "" {
			return Target{}, &SettingError{Field: "Home"}
		}
		script = in.Script
		if script == "" {
			return Target{}, &SettingError{Field: "Script", Err: fmt.Errorf("no WhatsApp bridge found in the Hermes home %s (from %s); looked at:\n%s",
				in.Home, in.HomeFrom, lookedList(in.Looked))}
		}
	}
	if !isFile(script) {
		return Target{}, &SettingError{Field: "Script", Value: script, Err: errors.New("no such file")}
	}
	script, _ = filepath.Abs(script)

	node, err := findNode(w)
	if err != nil {
		return Target{}, err
	}
	session := w.SessionDir
	if session == "" {
		session = in.SessionDir
	}
	if session == "" {
		return Target{}, &SettingError{Field: "SessionDir"}
	}
	session, _ = filepath.Abs(session)

	return Target{
		Command:    []string{node, script, "--port", strconv.Itoa(w.Port), "--session", session, "--mode", w.Mode},
		Dir:        filepath.Dir(script),
		Port:       w.Port,
		SessionDir: session,
		Script:     script,
	}, nil
}

// CheckMode returns a *SettingError unless mode is one the bridge knows:
// self-chat or bot.
func CheckMode(mode string) error {
	if mode != "self-chat" && mode != "bot" {
		return &SettingError{Field: "Mode", Value: mode}
	}
	return nil
}

// SettingError is a setting of Where that Discover cannot use (Value is
// what it was given), or one that it needs and cannot work out (Value is
// empty): the bridge script, Node.js, the session directory, the mode, the
// Hermes home. Field is the setting's name in Where ("Home" for the
// install's); Err, when set, says what is wrong.
type SettingError struct {
	Field string
	Value string
	Err   error
}

func (e *SettingError) Error() string {
	switch {
	case e.Field == "Mode":
		return fmt.Sprintf("the mode must be self-chat or bot (got %q)", e.Value)
	case e.Field == "Home":
		return "cannot find the Hermes home: neither HERMES_HOME nor HOME is set"
	case e.Field == "SessionDir":
		return "no session directory"
	case e.Field == "Script" && e.Value != "":
		return fmt.Sprintf("bridge script %s: %v", e.Value, e.Err)
	case e.Field == "Node" && e.Value != "":
		return fmt.Sprintf("node %s: %v", e.Value, e.Err)
	}
	return e.Err.Error()
}

func (e *SettingError) Unwrap() error { return e.Err }

func lookedList(looked []gateway.Looked) string {
	var b strings.Builder
	for _, l := range looked {
		fmt.Fprintf(&b, "  %s: %s\n", l.Path, l.Verdict)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func findNode(w Where) (string, error) {
	if w.Node != "" {
		p, err := w.LookPath(w.Node)
		if err != nil {
			return "", &SettingError{Field: "Node", Value: w.Node, Err: err}
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
	return "", &SettingError{Field: "Node", Err: fmt.Errorf("no Node.js found: looked for %s in PATH (%s); install Node.js 18 or later",
		strings.Join(tried, " and "), w.Getenv("PATH"))}
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
// of 127.0.0.1, telling the story of sim.Demo: pairing, connected, an
// occasional disconnect and a rare crash. knobs are simulator flags that
// change that story (`--crash-after 20s`); a bad one is an error naming it,
// after the list of knobs on usage. exe is the sidecar's own executable,
// which runs the simulator as `exe simulate-bridge`.
func Demo(exe string, knobs []string, usage io.Writer) (Target, error) {
	dir, err := os.MkdirTemp("", "wa-sidecar-demo-")
	if err != nil {
		return Target{}, fmt.Errorf("make a temporary session directory: %w (set TMPDIR to a writable directory)", err)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return Target{}, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	cfg := sim.Demo()
	cfg.Port, cfg.SessionDir = port, filepath.Join(dir, "session")
	if cfg, err = cfg.Override(knobs, usage); err != nil {
		os.RemoveAll(dir)
		return Target{}, &DemoKnobError{Err: err}
	}
	return Target{
		Command:    append([]string{exe, "simulate-bridge"}, cfg.Args()...),
		Port:       port,
		SessionDir: cfg.SessionDir,
		Cleanup:    func() { os.RemoveAll(dir) },
	}, nil
}

// DemoKnobError is a simulator flag given to Demo that it cannot take.
type DemoKnobError struct{ Err error }

func (e *DemoKnobError) Error() string { return "the simulated bridge's flags: " + e.Err.Error() }
func (e *DemoKnobError) Unwrap() error { return e.Err }

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
