package main

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/bridge/session"
	"github.com/wa-sidecar/wa-sidecar/procmon"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

// The lower layers' typed errors come out of cmd as the flag to change,
// with the words the CLI has always used; feed's own push backoff is not
// blamed on the restart flags.
func TestFlagErrorNamesTheFlag(t *testing.T) {
	b := func(initial, max time.Duration, jitter float64, reset time.Duration) error {
		return procmon.Backoff{Initial: initial, Max: max, Multiplier: 2, Jitter: jitter, Reset: reset}.Validate()
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{gateway.CheckPort(70000), "--port must be between 1 and 65535 (got 70000)"},
		{fmt.Errorf("discover: %w", gateway.CheckPort(0)), "--port must be between 1 and 65535 (got 0)"},
		{b(-time.Second, time.Second, 0, 0), "--backoff-initial must not be negative (got -1s)"},
		{b(5*time.Second, time.Second, 0, 0), "--backoff-max (1s) is shorter than --backoff-initial (5s); raise --backoff-max or lower --backoff-initial"},
		{b(time.Second, time.Second, 1.5, 0), "--backoff-jitter must be at least 0 and below 1 (got 1.5); 0.2 spreads delays by ±20 %"},
		{b(time.Second, time.Second, 0, -time.Second), "--backoff-reset must not be negative (got -1s)"},
		{&feed.PushBackoffError{Err: b(5*time.Second, time.Second, 0, 0)},
			"feed: Options.PushBackoff: backoff: the longest delay (1s) is shorter than the initial one (5s)"},
		{&bridge.SettingError{Field: "Mode", Value: "group"}, `--mode must be self-chat or bot (got "group")`},
		{&bridge.SettingError{Field: "Home"}, "cannot find the Hermes home: neither HERMES_HOME nor HOME is set; set HERMES_HOME or pass --hermes-home"},
		{&bridge.SettingError{Field: "SessionDir"}, "no session directory: pass --session-dir"},
		{&bridge.SettingError{Field: "Script", Value: "/x/b.js", Err: errors.New("no such file")}, "--bridge-script /x/b.js: no such file; give the path of bridge.js"},
		{&bridge.SettingError{Field: "Script", Err: errors.New("no WhatsApp bridge found in the Hermes home /h")},
			"no WhatsApp bridge found in the Hermes home /h\ninstall the Hermes agent, set HERMES_HOME, pass --bridge-script PATH, put your own bridge command after --, or try --demo"},
		{&bridge.SettingError{Field: "Node", Value: "nonode", Err: errors.New("not found")}, "--node nonode: not found; give the path of the node binary"},
		{&bridge.SettingError{Field: "Node", Err: errors.New("no Node.js found: looked for node in PATH (/bin); install Node.js 18 or later")},
			"no Node.js found: looked for node in PATH (/bin); install Node.js 18 or later, or pass --node PATH"},
		{&bridge.ProbeError{Field: "HealthFailures", Failures: 0}, "--health-failures must be at least 1 (got 0)"},
		{&bridge.ProbeError{Field: "HealthTimeout", Period: time.Second, Timeout: 2 * time.Second},
			"--health-timeout (2s) is longer than --health-period (1s); probes would overlap: lower the timeout or raise the period"},
		{&session.BridgeLogError{Path: "/s/bridge.log", Err: errors.New("mkdir /s: not a directory")},
			"bridge.log: mkdir /s: not a directory; choose another place with --bridge-log PATH, or --bridge-log off"},
		{&session.HeldError{SessionDir: "/s"}, "session /s is in use by another process (its pid could not be read from the lock file); " +
			"two bridges on one WhatsApp session knock each other off. Stop the other sidecar first, or give this one its own --session-dir"},
		{&session.DirError{Dir: "/s", Err: errors.New("mkdir /s: permission denied")},
			"session directory: mkdir /s: permission denied; point --session-dir at a directory you can write"},
		{&feed.StateDirHeldError{Dir: "/st", Pid: 812, Name: "wa-sidecar"},
			"state directory /st is in use by another wa-sidecar (pid 812, wa-sidecar); to run a second sidecar, pass it a different --state-dir (and --listen)"},
		{&feed.StateDirHeldError{Dir: "/st"},
			"state directory /st is in use by another process (its pid could not be read from /st/sidecar.lock); to run a second sidecar, pass it a different --state-dir (and --listen)"},
		{feed.Options{AllowOrigins: []string{"app.example.com", "*.com"}}.Check(),
			`--allow-origin "*.com" would let in pages from too many sites, and any of them could control the bridge; name the origins, e.g. app.example.com or *.example.com`},
		{feed.Options{GatewayURL: "http://user:pw@gw/x?token=s"}.Check(),
			`--gateway-url "http://gw/x?…": want a ws:// or wss:// URL, e.g. ws://127.0.0.1:8650/whatsapp/sidecar`},
		{&feed.StateDirError{Err: errors.New("$HOME is not defined")}, "no state directory: $HOME is not defined; pass --state-dir"},
		{&feed.StateDirError{Dir: "/st", Err: errors.New("mkdir /st: permission denied")},
			"state directory: mkdir /st: permission denied; pass --state-dir to choose another"},
		{feed.CheckListen("unix:"), "--listen unix: needs a path, e.g. unix:/run/wa-sidecar.sock"},
		{feed.CheckListen("127.0.0.1:http2x"), `--listen 127.0.0.1:http2x: "http2x" is not a port number`},
		{&feed.AddrInUseError{Addr: "127.0.0.1:7390", Holder: &signals.PortHolder{Identity: signals.Identity{Pid: 812}, Name: "python3"}},
			"--listen 127.0.0.1:7390 is already in use by pid 812 (python3) (is another wa-sidecar running? 'wa-sidecar status --addr 127.0.0.1:7390' tells); pass --listen to choose another address"},
	} {
		if got := flagError(tc.err).Error(); got != tc.want {
			t.Errorf("flagError(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
