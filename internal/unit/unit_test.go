package unit

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/unit/unitcheck"
)

// executable is a real program for ExecStart=, which systemd-analyze
// verify looks for: this test binary.
func executable(t *testing.T) string {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestUnitContents(t *testing.T) {
	for _, tc := range []struct {
		stop, watchdog time.Duration
		wantStopSec    string
		wantWatchdog   string
	}{
		{10 * time.Second, 0, "15", ""},
		{1500 * time.Millisecond, 0, "7", ""},
		{2 * time.Minute, 30 * time.Second, "125", "30"},
		{time.Second, 2500 * time.Millisecond, "6", "3"},
	} {
		t.Run(tc.stop.String(), func(t *testing.T) {
			spec := Service{Executable: "/opt/wa-sidecar", StopTimeout: tc.stop, Watchdog: tc.watchdog, NoRestart: []int{64, 78},
				RunArgs: []string{"--backoff-max", "30s"}, Env: []string{"PATH=/usr/bin:/bin"}}
			text, err := spec.Render()
			if err != nil {
				t.Fatal(err)
			}
			u := unitcheck.Parse(t, text)
			checks := map[[2]string]string{
				{"Unit", "StartLimitIntervalSec"}:       "0",
				{"Service", "Type"}:                     "notify",
				{"Service", "Restart"}:                  "always",
				{"Service", "KillMode"}:                 "mixed",
				{"Service", "TimeoutStopSec"}:           tc.wantStopSec,
				{"Service", "RestartPreventExitStatus"}: "64 78",
				{"Service", "ExecStart"}:                "/opt/wa-sidecar run --stop-timeout " + tc.stop.String() + " --backoff-max 30s",
				{"Service", "Environment"}:              `"PATH=/usr/bin:/bin"`,
				{"Install", "WantedBy"}:                 "default.target",
			}
			for k, want := range checks {
				if got := unitcheck.One(t, u, k[0], k[1]); got != want {
					t.Errorf("[%s] %s = %q; want %q", k[0], k[1], got, want)
				}
			}
			stopSec, _ := strconv.Atoi(unitcheck.One(t, u, "Service", "TimeoutStopSec"))
			if time.Duration(stopSec)*time.Second <= tc.stop {
				t.Errorf("TimeoutStopSec %ds is not above the stop timeout %s", stopSec, tc.stop)
			}
			switch {
			case tc.wantWatchdog == "" && len(u["Service"]["WatchdogSec"]) > 0:
				t.Errorf("WatchdogSec set without --watchdog: %v", u["Service"]["WatchdogSec"])
			case tc.wantWatchdog != "":
				if got := unitcheck.One(t, u, "Service", "WatchdogSec"); got != tc.wantWatchdog {
					t.Errorf("WatchdogSec = %q; want %q", got, tc.wantWatchdog)
				}
			}
		})
	}
}

func TestQuoteExecArg(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"--port=3000", "--port=3000"},
		{"/home/a b/bridge.js", `"/home/a b/bridge.js"`},
		{"100%", "100%%"},
		{"$HOME", "$$HOME"},
		{`say "hi"`, `"say \"hi\""`},
		{`C:\path`, `"C:\\path"`},
		{"it's", `"it's"`},
		{";", `";"`},
		{"", `""`},
	} {
		got, err := quoteExecArg(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("quoteExecArg(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := quoteExecArg("two\nlines"); err == nil {
		t.Error("a line break in an argument must be refused")
	}
}

// TestUnitVerifiesWithSystemd has systemd's own parser check a unit with
// awkward arguments: any warning (a bad key, unbalanced quotes, a unknown
// escape) fails the test.
func TestUnitVerifiesWithSystemd(t *testing.T) {
	verify := unitcheck.Verifier(t)
	bin := executable(t)
	dir := t.TempDir()
	spec := Service{
		Executable: bin, StopTimeout: 20 * time.Second, Watchdog: time.Minute,
		RunArgs: []string{"--backoff-max", "30s", "--", "node", "/home/a b/bridge.js", "--reply-prefix", `"100%" $X it's \ ;`},
		Env:     []string{"PATH=/usr/bin:/opt/my node/bin", `WHATSAPP_REPLY_PREFIX=[bot] "50%" \o/`},
	}
	text, err := spec.Render()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "wa-sidecar.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	verify(path, text)
}

// TestUnitDropinContents: the gateway starts after the sidecar, waits
// for the bridge with a check that may fail ('-'), and systemd gives that
// wait room before it would fail the start.
func TestUnitDropinContents(t *testing.T) {
	for _, tc := range []struct {
		wait      time.Duration
		check     []string
		wantPre   string
		wantStart string
	}{
		{90 * time.Second, nil, "-/opt/wa-sidecar healthcheck --ready --wait 1m30s", "120"},
		{1500 * time.Millisecond, []string{"--addr", "unix:/run/user/1000/wa.sock"}, "-/opt/wa-sidecar healthcheck --ready --wait 1.5s --addr unix:/run/user/1000/wa.sock", "32"},
		{10 * time.Minute, []string{"--state-dir", "/home/a b/state", "--addr", "127.0.0.1:7391"},
			`-/opt/wa-sidecar healthcheck --ready --wait 10m0s --state-dir "/home/a b/state" --addr 127.0.0.1:7391`, "630"},
	} {
		t.Run(tc.wait.String(), func(t *testing.T) {
			text, err := Dropin{Executable: "/opt/wa-sidecar", Sidecar: "wa-sidecar-work", Wait: tc.wait, CheckArgs: tc.check}.Render()
			if err != nil {
				t.Fatal(err)
			}
			d := unitcheck.Parse(t, text)
			checks := map[[2]string]string{
				{"Unit", "After"}:              "wa-sidecar-work.service",
				{"Unit", "Wants"}:              "wa-sidecar-work.service",
				{"Service", "ExecStartPre"}:    tc.wantPre,
				{"Service", "TimeoutStartSec"}: tc.wantStart,
			}
			for k, want := range checks {
				if got := unitcheck.One(t, d, k[0], k[1]); got != want {
					t.Errorf("[%s] %s = %q; want %q", k[0], k[1], got, want)
				}
			}
			if len(d) != 2 || len(d["Unit"]) != 2 || len(d["Service"]) != 2 {
				t.Errorf("the drop-in sets more than the order and the wait; anything else would change the gateway's own unit:\n%s", text)
			}
		})
	}
	if _, err := (Dropin{Executable: "wa-sidecar", Sidecar: "wa-sidecar", Wait: time.Second}).Render(); err == nil {
		t.Error("a relative executable must be refused")
	}
}

// TestUnitDropinVerifiesWithSystemd has systemd's parser read a gateway
// unit with the drop-in, the check's binary and state directory in paths
// with spaces.
func TestUnitDropinVerifiesWithSystemd(t *testing.T) {
	check := unitcheck.Verifier(t)
	bin := executable(t)
	dir := t.TempDir()
	spaced := filepath.Join(dir, "my tools", "wa-sidecar")
	if err := os.MkdirAll(filepath.Dir(spaced), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, spaced); err != nil {
		t.Fatal(err)
	}
	units := filepath.Join(dir, "units")
	unit, err := Service{Executable: spaced, StopTimeout: 10 * time.Second}.Render()
	if err != nil {
		t.Fatal(err)
	}
	dropin, err := Dropin{Executable: spaced, Sidecar: "wa-sidecar", Wait: 90 * time.Second,
		CheckArgs: []string{"--state-dir", "/home/a b/100% state", "--addr", "127.0.0.1:7390"}}.Render()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dropin, `ExecStartPre=-"`+spaced+`" healthcheck`) || !strings.Contains(dropin, `"/home/a b/100%% state"`) {
		t.Errorf("ExecStartPre quoting:\n%s", dropin)
	}
	for path, text := range map[string]string{
		"wa-sidecar.service": unit,
		// The gateway's own unit, reduced to what verify needs.
		"hermes-gateway.service":                   "[Service]\nType=simple\nExecStart=/bin/sleep infinity\nRestart=always\n",
		"hermes-gateway.service.d/wa-sidecar.conf": dropin,
	} {
		path = filepath.Join(units, path)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	verify := func() { t.Helper(); check(filepath.Join(units, "hermes-gateway.service"), dropin) }
	verify()
	// verify does not look for the program of a command that may fail;
	// without the '-' it must find the binary behind the quoted path.
	strict := strings.Replace(dropin, "ExecStartPre=-", "ExecStartPre=", 1)
	if err := os.WriteFile(filepath.Join(units, "hermes-gateway.service.d", "wa-sidecar.conf"), []byte(strict), 0o644); err != nil {
		t.Fatal(err)
	}
	verify()
}

// TestUnitGatewayName checks the gateway's unit name for a Hermes home
// against values worked out by hand from the gateway's rules, the hashes
// with sha256sum (printf %s PATH | sha256sum | cut -c1-8). The paths do
// not exist, so no symbolic link on this machine can change them.
func TestUnitGatewayName(t *testing.T) {
	const home = "/nonexistent-wa-sidecar-test/ann"
	for _, tc := range []struct{ hermesHome, want string }{
		{"", "hermes-gateway"},
		{home + "/.hermes", "hermes-gateway"},
		{home + "/.hermes/", "hermes-gateway"},
		{home + "/.hermes/profiles/coder", "hermes-gateway-coder"},
		{home + "/.hermes/profiles/./coder/", "hermes-gateway-coder"},
		{home + "/.hermes/profiles/x/../coder", "hermes-gateway-coder"},
		// Inside ~/.hermes but not a profile: a hash of the path.
		{home + "/.hermes/work", "hermes-gateway-8fc3d733"},
		{home + "/.hermes/profiles/Coder", "hermes-gateway-b05c95b2"},
		{home + "/.hermes/a b", "hermes-gateway-92e20b1d"},
		// Outside ~/.hermes, a home is a root of its own (as /opt/data
		// in the gateway's image), and its profiles are profiles.
		{"/nonexistent-wa-sidecar-test/data", "hermes-gateway"},
		{"/nonexistent-wa-sidecar-test/data/profiles/coder", "hermes-gateway-coder"},
		{"/nonexistent-wa-sidecar-test/data/profiles/Bad", "hermes-gateway-0e12d492"},
		// Relative: from the working directory.
		{"data/profiles/coder", "hermes-gateway-coder"},
		{"../ann/.hermes/work", "hermes-gateway-8fc3d733"},
	} {
		if got := GatewayName(tc.hermesHome, home, home); got != tc.want {
			t.Errorf("HERMES_HOME=%q: %s; want %s", tc.hermesHome, got, tc.want)
		}
	}

	// Symbolic links are followed on both sides: a profile reached
	// through a link to the home is still that profile, and a link's
	// hash is its target's.
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	if err := os.MkdirAll(filepath.Join(real, ".hermes", "work"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if got := GatewayName(filepath.Join(dir, "link", ".hermes", "profiles", "coder"), real, "/"); got != "hermes-gateway-coder" {
		t.Errorf("a profile through a link: %s", got)
	}
	sum := sha256.Sum256([]byte(filepath.Join(real, ".hermes", "work")))
	if got, want := GatewayName(filepath.Join(dir, "link", ".hermes", "work"), filepath.Join(dir, "link"), "/"), "hermes-gateway-"+hex.EncodeToString(sum[:])[:8]; got != want {
		t.Errorf("a home through a link: %s; want %s (the hash of the resolved path)", got, want)
	}
}
