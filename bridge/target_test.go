package bridge

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestCommandTarget(t *testing.T) {
	for _, tc := range []struct {
		args            []string
		port            int
		session, script string
	}{
		{[]string{"node", "/opt/hermes/scripts/whatsapp-bridge/bridge.js", "--port", "3001", "--session", "/s"}, 3001, "/s", "/opt/hermes/scripts/whatsapp-bridge/bridge.js"},
		{[]string{"node", "bridge.js", "--port=3002", "--session=/home/a b/s"}, 3002, "/home/a b/s", "bridge.js"},
		// The first one counts, as for the bridge's own parser.
		{[]string{"node", "bridge.js", "--port", "3003", "--port", "3004"}, 3003, "", "bridge.js"},
		// Not a port: unknown, so not probed.
		{[]string{"node", "bridge.js", "--port", "0"}, 0, "", "bridge.js"},
		{[]string{"node", "bridge.js", "--port", "65536"}, 0, "", "bridge.js"},
		{[]string{"node", "bridge.js", "--port", "x"}, 0, "", "bridge.js"},
		// A flag without a value says nothing.
		{[]string{"node", "bridge.js", "--session="}, 0, "", "bridge.js"},
		{[]string{"node", "bridge.js", "--port"}, 0, "", "bridge.js"},
		// Only a file named bridge.js is the script the gateway hashes.
		{[]string{"python3", "bridge.py", "--portal", "1"}, 0, "", ""},
	} {
		got := CommandTarget(tc.args)
		if !slices.Equal(got.Command, tc.args) || got.Port != tc.port || got.SessionDir != tc.session || got.Script != tc.script {
			t.Errorf("CommandTarget(%q) = %+v; want port %d, session %q, script %q", tc.args, got, tc.port, tc.session, tc.script)
		}
	}
}

// FuzzCommandTarget: whatever the command, its port is one to probe or
// none, and what is read comes from the command.
func FuzzCommandTarget(f *testing.F) {
	f.Add("node", "--port", "3000", "--session=/s")
	f.Add("bridge.js", "--port=65535", "--session", "")
	f.Fuzz(func(t *testing.T, a, b, c, d string) {
		args := []string{a, b, c, d}
		got := CommandTarget(args)
		if got.Port < 0 || got.Port > 65535 {
			t.Fatalf("port %d from %q", got.Port, args)
		}
		if got.Port != 0 && !slices.ContainsFunc(args, func(s string) bool {
			s = strings.TrimPrefix(s, "--port=")
			p, err := strconv.Atoi(s)
			return err == nil && p == got.Port
		}) {
			t.Fatalf("port %d is not in %q", got.Port, args)
		}
		if got.SessionDir != "" && !slices.ContainsFunc(args, func(s string) bool { return s == got.SessionDir || s == "--session="+got.SessionDir }) {
			t.Fatalf("session %q is not in %q", got.SessionDir, args)
		}
		if got.Script != "" && !slices.Contains(args, got.Script) {
			t.Fatalf("script %q is not in %q", got.Script, args)
		}
	})
}
