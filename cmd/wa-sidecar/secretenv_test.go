package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/internal/unit/unitcheck"
)

// install-service keeps secrets out of the unit file, which is mode 0644
// and shown by 'systemctl show': the token, the push URL and variables
// named as credentials go to an EnvironmentFile= of mode 0600 instead. A
// push URL with credentials in the run flags is refused.
func TestInstallServiceKeepsSecretsOutOfTheUnit(t *testing.T) {
	bin, _ := binaries(t)
	cfg, home := t.TempDir(), t.TempDir()
	const token = "0123456789abcdef0123456789abcdef"
	run := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"install-service", "--no-gateway-dropin"}, args...)...)
		cmd.Env = append(hermeticEnv(home), "XDG_CONFIG_HOME="+cfg, "WA_SIDECAR_TOKEN="+token, "OPENAI_API_KEY=sk-secret")
		return runOutput(t, cmd)
	}
	args := []string{"--env", "WA_SIDECAR_TOKEN", "--env", "OPENAI_API_KEY", "--env", "WA_SIDECAR_GATEWAY_URL=ws://u:pw@gw/x", "--env", "WHATSAPP_MODE=bot"}
	unitPath := filepath.Join(cfg, "systemd", "user", "wa-sidecar.service")
	envPath := filepath.Join(cfg, "systemd", "user", "wa-sidecar.env")

	out, code := run(append([]string{"--print"}, args...)...)
	if code != 0 {
		t.Fatalf("--print: exit %d:\n%s", code, out)
	}
	for _, secret := range []string{token, "sk-secret", "u:pw"} {
		if strings.Contains(out, secret) {
			t.Fatalf("--print shows %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "# "+envPath+"\n") || !strings.Contains(out, "WA_SIDECAR_TOKEN=(secret, not shown)") {
		t.Fatalf("--print does not show the environment file:\n%s", out)
	}

	out, code = run(args...)
	if code != 0 || !strings.Contains(out, "Wrote "+envPath+" (mode 0600") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	unit, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	u := unitcheck.Parse(t, string(unit))
	if got := unitcheck.One(t, u, "Service", "EnvironmentFile"); got != envPath {
		t.Errorf("EnvironmentFile = %q, want %q", got, envPath)
	}
	if env := strings.Join(u["Service"]["Environment"], " "); !strings.Contains(env, `"WHATSAPP_MODE=bot"`) || strings.Contains(env, "TOKEN") ||
		strings.Contains(env, "KEY") || strings.Contains(env, "GATEWAY_URL") {
		t.Errorf("Environment= = %s", env)
	}
	fi, err := os.Stat(envPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("environment file: %v, %v", fi, err)
	}
	text, _ := os.ReadFile(envPath)
	for _, want := range []string{`WA_SIDECAR_TOKEN="` + token + `"`, `OPENAI_API_KEY="sk-secret"`, `WA_SIDECAR_GATEWAY_URL="ws://u:pw@gw/x"`} {
		if !strings.Contains(string(text), want+"\n") {
			t.Errorf("environment file lacks %s:\n%s", want, text)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		unitcheck.Verifier(t)(unitPath, string(unit))
	}

	// The same again leaves both alone; an environment file others can
	// read is made private again.
	if out, code = run(args...); code != 0 || strings.Count(out, "Unchanged") != 2 {
		t.Fatalf("again: exit %d:\n%s", code, out)
	}
	if err := os.Chmod(envPath, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code = run(args...); code != 0 {
		t.Fatalf("after chmod: exit %d:\n%s", code, out)
	}
	if fi, err := os.Stat(envPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("environment file after chmod 644 and install-service: %v, %v", fi, err)
	}

	if out, code = run("--", "--gateway-url", "wss://gw.example.com/x?token=abc"); code != exitUsage || !strings.Contains(out, "--env WA_SIDECAR_GATEWAY_URL=URL") {
		t.Fatalf("credentials in the run flags: exit %d:\n%s", code, out)
	}
}

// A bare credential name is a secret as much as one with a prefix.
func TestSecretEnvNames(t *testing.T) {
	for name, want := range map[string]bool{
		"PASSWORD": true, "DB_PASSWORD": true, "TOKEN": true, "GITHUB_TOKEN": true, "API_KEY": true,
		"AWS_CREDENTIALS": true, "WA_SIDECAR_TOKEN": true, "WA_SIDECAR_GATEWAY_URL": true,
		"WHATSAPP_MODE": false, "KEYBOARD": false, "PATH": false, "HERMES_HOME": false,
	} {
		if got := secretEnv(name); got != want {
			t.Errorf("secretEnv(%q) = %v, want %v", name, got, want)
		}
	}
}
