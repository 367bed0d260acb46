package bridge

import (
	"path/filepath"
	"strconv"
	"strings"

	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
)

// CommandTarget is the target for a bridge command given in full, such as
// the command after -- on the sidecar's command line. What the real bridge
// is told on its own command line is read from args: its --port (so its
// health can be probed without repeating the port), its --session
// directory, and the bridge.js whose hash the gateway compares before
// adopting. What args do not say is left empty.
func CommandTarget(args []string) Target {
	return Target{Command: args, Port: portArg(args), SessionDir: flagArg(args, "--session"), Script: scriptArg(args)}
}

// scriptArg finds the bridge.js in a command.
func scriptArg(args []string) string {
	for _, a := range args {
		if filepath.Base(a) == "bridge.js" {
			return a
		}
	}
	return ""
}

// portArg is the bridge's --port in a command, 0 when there is none or it
// is not a port.
func portArg(args []string) int {
	p, err := strconv.Atoi(flagArg(args, "--port"))
	if err != nil || gateway.CheckPort(p) != nil {
		return 0
	}
	return p
}

// flagArg is the value of the flag name in a command, given as "name
// value" or "name=value"; the first one counts.
func flagArg(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok && v != "" {
			return v
		}
	}
	return ""
}
