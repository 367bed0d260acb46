package bridge

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/bridge/sim"
)

// machine describes a computer to Discover: its environment and which
// programs are in PATH.
func machine(env map[string]string, programs ...string) (func(string) string, func(string) (string, error)) {
	getenv := func(k string) string { return env[k] }
	lookPath := func(name string) (string, error) {
		for _, p := range programs {
			if filepath.Base(p) == name || p == name {
				return p, nil
			}
		}
		return "", errors.New("executable file not found in $PATH")
	}
	return getenv, lookPath
}

func touch(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// load reads a Hermes home as the gateway would, on a machine without
// the root install.
func load(t *testing.T, home string) gateway.Install {
	t.Helper()
	return gateway.Load(gateway.Options{HermesHome: home, SystemInstall: filepath.Join(t.TempDir(), "none"),
		Getenv: func(string) string { return "" }})
}

func TestDiscoverFindsTheGatewaysBridge(t *testing.T) {
	home := t.TempDir()
	// Where the installer puts the code, and so the bridge.
	script := filepath.Join(home, "hermes-agent", "scripts", "whatsapp-bridge", "bridge.js")
	touch(t, script, "// bridge")
	getenv, look := machine(nil, "/usr/bin/node")
	tg, err := Discover(Where{Install: load(t, home), Getenv: getenv, LookPath: look})
	if err != nil {
		t.Fatal(err)
	}
	session := filepath.Join(home, "platforms", "whatsapp", "session")
	want := []string{"/usr/bin/node", script, "--port", "3000", "--session", session, "--mode", "self-chat"}
	if strings.Join(tg.Command, " ") != strings.Join(want, " ") || tg.Port != 3000 || tg.SessionDir != session || tg.Dir != filepath.Dir(script) || tg.Script != script {
		t.Fatalf("target %+v\nwant command %v", tg, want)
	}
}

func TestDiscoverTakesTheGatewaysSettingsAndFlagsWin(t *testing.T) {
	home := t.TempDir()
	touch(t, filepath.Join(home, "scripts", "whatsapp-bridge", "bridge.js"), "")
	touch(t, filepath.Join(home, "config.yaml"), "platforms:\n  whatsapp:\n    extra:\n      bridge_port: 3007\n")
	touch(t, filepath.Join(home, ".env"), "WHATSAPP_MODE=bot\n")
	legacy := filepath.Join(home, "whatsapp", "session")
	touch(t, filepath.Join(legacy, "creds.json"), `{"me":{}}`)
	getenv, look := machine(nil, "/opt/node/bin/nodejs")
	tg, err := Discover(Where{Install: load(t, home), Getenv: getenv, LookPath: look})
	if err != nil {
		t.Fatal(err)
	}
	// The legacy session has content, so the gateway uses it.
	if tg.SessionDir != legacy || tg.Port != 3007 || tg.Command[0] != "/opt/node/bin/nodejs" || tg.Command[len(tg.Command)-1] != "bot" {
		t.Fatalf("target %+v", tg)
	}
	tg, err = Discover(Where{Install: load(t, home), Port: 3005, Mode: "self-chat", SessionDir: home, Getenv: getenv, LookPath: look})
	if err != nil || tg.Port != 3005 || tg.SessionDir != home || tg.Command[len(tg.Command)-1] != "self-chat" {
		t.Fatalf("flags did not win: %+v, %v", tg, err)
	}
}

func TestDiscoverErrorsSayWhatWasLookedFor(t *testing.T) {
	home := t.TempDir()
	getenv, look := machine(nil, "/usr/bin/node")
	_, err := Discover(Where{Install: load(t, home), Getenv: getenv, LookPath: look})
	for _, want := range []string{
		filepath.Join(home, "hermes-agent", "scripts", "whatsapp-bridge", "bridge.js"),
		filepath.Join(home, "scripts", "whatsapp-bridge", "bridge.js"),
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("no bridge: error %v does not mention %q", err, want)
		}
	}
	wantSetting(t, "no bridge", err, "Script", "")

	touch(t, filepath.Join(home, "b.js"), "")
	getenv, look = machine(map[string]string{"HOME": home, "PATH": "/usr/bin:/bin"})
	_, err = Discover(Where{Install: load(t, home), Script: filepath.Join(home, "b.js"), Getenv: getenv, LookPath: look})
	for _, want := range []string{"node and nodejs", "/usr/bin:/bin"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("no node: error %v does not mention %q", err, want)
		}
	}
	wantSetting(t, "no node", err, "Node", "")

	cases := []struct {
		w            Where
		field, value string
		text         string
	}{
		{Where{Script: filepath.Join(home, "missing.js")}, "Script", filepath.Join(home, "missing.js"),
			"bridge script " + filepath.Join(home, "missing.js") + ": no such file"},
		{Where{Script: filepath.Join(home, "b.js"), Mode: "group"}, "Mode", "group", `the mode must be self-chat or bot (got "group")`},
		{Where{Script: filepath.Join(home, "b.js"), Node: "nonode"}, "Node", "nonode", "node nonode: executable file not found in $PATH"},
	}
	for _, c := range cases {
		c.w.Install = load(t, home)
		c.w.Getenv, c.w.LookPath = machine(map[string]string{"HOME": home}, "/usr/bin/node")
		_, err := Discover(c.w)
		wantSetting(t, c.field, err, c.field, c.value)
		if err == nil || !strings.HasPrefix(err.Error(), c.text) {
			t.Errorf("Discover(%+v): %v, want it to start %q", c.w, err, c.text)
		}
	}

	// A bad port is a typed error, which cmd words as its --port flag.
	getenv, look = machine(map[string]string{"HOME": home}, "/usr/bin/node")
	_, err = Discover(Where{Install: load(t, home), Script: filepath.Join(home, "b.js"), Port: 70000, Getenv: getenv, LookPath: look})
	var pe *gateway.PortError
	if !errors.As(err, &pe) || pe.Port != 70000 {
		t.Errorf("port 70000: %v, want a *gateway.PortError", err)
	}

	getenv, look = machine(nil, "/usr/bin/node")
	_, err = Discover(Where{Getenv: getenv, LookPath: look})
	if err == nil || err.Error() != "cannot find the Hermes home: neither HERMES_HOME nor HOME is set" {
		t.Errorf("no HOME: %v", err)
	}
	wantSetting(t, "no HOME", err, "Home", "")
}

// wantSetting checks that err is a *SettingError about field, given
// value, which cmd words as its flag.
func wantSetting(t *testing.T, what string, err error, field, value string) {
	t.Helper()
	var se *SettingError
	if !errors.As(err, &se) || se.Field != field || se.Value != value {
		t.Errorf("%s: %v, want a *SettingError for %s (value %q)", what, err, field, value)
	}
}

func TestDemoUsesAFreshSession(t *testing.T) {
	tg, err := Demo("/bin/wa-sidecar", nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Cleanup()
	if tg.Command[1] != "simulate-bridge" || tg.Port == 0 || Paired(tg.SessionDir) {
		t.Fatalf("demo target %+v", tg)
	}
	dir := filepath.Dir(tg.SessionDir)
	tg.Cleanup()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("demo session %s left behind: %v", dir, err)
	}
}

// The chaos knobs after `run --demo --` change the simulated bridge's
// story; its port and session stay the demo's own.
func TestDemoTakesTheSimulatorsKnobs(t *testing.T) {
	tg, err := Demo("/bin/wa-sidecar", []string{"--crash-after", "20s", "--flip-every=10s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Cleanup()
	cfg, err := sim.Parse(tg.Command[2:], io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CrashAfter != 20*time.Second || cfg.FlipEvery != 10*time.Second || cfg.PairAfter != sim.Demo().PairAfter || cfg.Port != tg.Port {
		t.Fatalf("demo with knobs runs %+v", cfg)
	}
	for _, knobs := range [][]string{{"--port", "3000"}, {"--session=/tmp/x"}, {"--crash", "explode"}, {"bridge.js"}} {
		var ke *DemoKnobError
		if _, err := Demo("/bin/wa-sidecar", knobs, io.Discard); !errors.As(err, &ke) {
			t.Errorf("Demo(%q): %v, want a DemoKnobError", knobs, err)
		}
	}
}
