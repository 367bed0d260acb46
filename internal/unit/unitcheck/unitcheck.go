// Package unitcheck is for tests only: it reads unit files the way
// systemd does and has systemd's own parser verify them, for the tests of
// package unit and of the install-service command.
package unitcheck

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Parse reads a unit file into section → key → values, the way systemd's
// own parser sees repeated keys.
func Parse(t *testing.T, unit string) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	section := ""
	for i, line := range strings.Split(unit, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("line %d is not key=value in a section: %q", i+1, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

// One is the value of a key that must appear exactly once in section.
func One(t *testing.T, u map[string]map[string][]string, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) != 1 {
		t.Fatalf("[%s] %s appears %d times; want once (unit %v)", section, key, len(vs), u)
	}
	return vs[0]
}

// Verifier returns a check that has systemd's own parser read a unit,
// failing the test on any warning; it skips the test where
// systemd-analyze is not installed.
func Verifier(t *testing.T) func(path, shown string) {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian: apt-get install systemd)")
	}
	// The user manager's verify needs a runtime directory of its own.
	runtime := t.TempDir()
	return func(path, shown string) {
		t.Helper()
		cmd := exec.Command(analyze, "--user", "verify", path)
		cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+runtime, "SYSTEMD_LOG_LEVEL=notice")
		out, err := cmd.CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Fatalf("systemd-analyze verify: %v\n%s\nunit:\n%s", err, out, shown)
		}
	}
}
