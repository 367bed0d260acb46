package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/integrations/hermes"
)

func TestHermesPluginEnableConfig(t *testing.T) {
	const n = hermes.PluginName
	cases := []struct {
		name, in, want string
		fails          bool
	}{
		{"no plugins section", "model: x # keep\n", "model: x # keep\nplugins:\n  enabled:\n    - " + n + "\n", false},
		{"no final newline", "model: x", "model: x\nplugins:\n  enabled:\n    - " + n + "\n", false},
		{"no enabled key", "plugins:\n    disabled: []\nother: 1\n", "plugins:\n    enabled:\n      - " + n + "\n    disabled: []\nother: 1\n", false},
		{"block list with comments", "plugins:\n  enabled:\n  # mine\n  - foo  # yes\n  - bar\n\n# tail\nx: 1\n", "plugins:\n  enabled:\n  # mine\n  - foo  # yes\n  - bar\n  - " + n + "\n\n# tail\nx: 1\n", false},
		{"empty flow list", "plugins:\n  enabled: []\n", "plugins:\n  enabled:\n    - " + n + "\n", false},
		{"already there", "plugins:\n  enabled:\n    - " + n + "\n", "plugins:\n  enabled:\n    - " + n + "\n", false},
		{"crlf", "plugins:\r\n  enabled:\r\n    - foo\r\n", "plugins:\r\n  enabled:\r\n    - foo\r\n    - " + n + "\r\n", false},
		{"disabled by hermes plugins disable", "plugins:\n  disabled:\n  - " + n + "\n  enabled: []\n", "plugins:\n  disabled: []\n  enabled:\n    - " + n + "\n", false},
		{"disabled among others", "plugins:\n  disabled:\n  - a\n  - " + n + "  # off\n  - b\n  enabled:\n  - other\n", "plugins:\n  disabled:\n  - a\n  - b\n  enabled:\n  - other\n  - " + n + "\n", false},
		{"enabled and disabled", "plugins:\n  enabled:\n    - " + n + "\n  disabled: [" + n + "]  # x\n", "plugins:\n  enabled:\n    - " + n + "\n  disabled: []  # x\n", false},
		{"disabled quoted, no enabled", "plugins:\n  disabled:\n    - \"" + n + "\"\n", "plugins:\n  enabled:\n    - " + n + "\n  disabled: []\n", false},
		{"disabled inline with others", "plugins:\n  enabled: []\n  disabled: [a, " + n + "]\n", "", true},
		{"inline flow list", "plugins:\n  enabled: [foo]\n", "", true},
		{"inline section", "plugins: {enabled: [foo]}\n", "", true},
		{"not yaml", "plugins: [\n", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(p, []byte(tc.in), 0o600); err != nil {
				t.Fatal(err)
			}
			got, _, err := enablePlugin(p, n)
			if tc.fails {
				if err == nil {
					t.Fatalf("no error; got:\n%s", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got:\n%q\nwant:\n%q", got, tc.want)
			}
		})
	}
}

// fakeHermes writes the gateway files checkHermes reads, with what the
// plugin relies on unless lacking names one of them.
func fakeHermes(t *testing.T, version, lacking string) string {
	dir := t.TempDir()
	for _, c := range hermesInterface {
		p := filepath.Join(dir, c.file)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if c.want == lacking {
			continue
		}
		f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(c.want + "\n")
		f.Close()
	}
	os.WriteFile(filepath.Join(dir, "pyproject.toml"), []byte("[project]\nversion = \""+version+"\"\n"), 0o644)
	return dir
}

func TestHermesPluginInstallCommand(t *testing.T) {
	bin, _ := binaries(t)
	home := t.TempDir()
	run := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"install-hermes-plugin", "--hermes-home", home}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		return runOutput(t, cmd)
	}
	known := fakeHermes(t, "0.18.2", "")
	dir := filepath.Join(home, "plugins", hermes.PluginName)
	cfg := filepath.Join(home, "config.yaml")
	os.WriteFile(cfg, []byte("# mine\nsecret_token: hunter2\nplugins:\n  enabled:\n    - other\n"), 0o640)

	out, code := run("--print", "--hermes-source", known)
	if code != 0 || !strings.Contains(out, "# "+filepath.Join(dir, "adapter.py")) || !strings.Contains(out, "+6:     - "+hermes.PluginName+"\n") {
		t.Fatalf("--print exit %d:\n%s", code, out)
	}
	if strings.Contains(out, "hunter2") || strings.Contains(out, "- other") {
		t.Fatalf("--print showed lines of config.yaml it does not change:\n%s", out)
	}
	os.WriteFile(cfg, []byte("# mine\nplugins:\n  enabled:\n    - other\n"), 0o640)
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("--print wrote the plugin")
	}

	if out, code = run("--hermes-source", known); code != 0 {
		t.Fatalf("install exit %d:\n%s", code, out)
	}
	b, _ := os.ReadFile(cfg)
	if string(b) != "# mine\nplugins:\n  enabled:\n    - other\n    - "+hermes.PluginName+"\n" {
		t.Fatalf("config.yaml:\n%s", b)
	}
	if fi, _ := os.Stat(cfg); fi.Mode().Perm() != 0o640 {
		t.Fatalf("config.yaml mode %v", fi.Mode().Perm())
	}
	for _, f := range []string{"__init__.py", "adapter.py", "sidecar.py", "plugin.yaml"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if out, code = run("--hermes-source", known); code != 0 || !strings.Contains(out, "already enables") {
		t.Fatalf("second install exit %d:\n%s", code, out)
	}

	// `hermes plugins disable` moves it to plugins.disabled, which wins: installing again undoes that.
	os.WriteFile(cfg, []byte("# mine\nplugins:\n  disabled:\n  - "+hermes.PluginName+"\n  enabled:\n  - other\n"), 0o640)
	if out, code = run("--hermes-source", known); code != 0 {
		t.Fatalf("install after disable exit %d:\n%s", code, out)
	}
	if b, _ := os.ReadFile(cfg); string(b) != "# mine\nplugins:\n  disabled: []\n  enabled:\n  - other\n  - "+hermes.PluginName+"\n" {
		t.Fatalf("config.yaml after re-install:\n%s", b)
	}

	adapter := filepath.Join(dir, "adapter.py")
	os.WriteFile(adapter, []byte("# edited\n"), 0o644)
	if out, code = run("--hermes-source", known); code != 1 || !strings.Contains(out, "--force") {
		t.Fatalf("differing file: exit %d:\n%s", code, out)
	}
	if b, _ := os.ReadFile(adapter); string(b) != "# edited\n" {
		t.Fatal("replaced a differing file without --force")
	}
	if out, code = run("--hermes-source", known, "--force"); code != 0 {
		t.Fatalf("--force exit %d:\n%s", code, out)
	}

	target := filepath.Join(t.TempDir(), "elsewhere")
	os.WriteFile(target, []byte("keep"), 0o644)
	os.Remove(adapter)
	os.Symlink(target, adapter)
	if out, code = run("--hermes-source", known, "--force"); code != 1 || !strings.Contains(out, "not a regular file") {
		t.Fatalf("symlinked file: exit %d:\n%s", code, out)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatal("wrote through a symlink")
	}
	os.Remove(adapter)

	newer := fakeHermes(t, "0.99.0", "")
	if out, code = run("--hermes-source", newer); code != 0 || !strings.Contains(out, "not a version the plugin was tested with") {
		t.Fatalf("unknown version exit %d:\n%s", code, out)
	}
	broken := fakeHermes(t, "0.99.0", "async def _poll_messages(self)")
	if out, code = run("--hermes-source", broken); code != 1 || !strings.Contains(out, "_poll_messages") || !strings.Contains(out, "--ignore-interface-check") {
		t.Fatalf("missing interface exit %d:\n%s", code, out)
	}
	// --force replaces differing files; it does not mean "install on a gateway the plugin does not know".
	if out, code = run("--hermes-source", broken, "--force"); code != 1 {
		t.Fatalf("missing interface with --force exit %d:\n%s", code, out)
	}
	if out, code = run("--hermes-source", broken, "--ignore-interface-check"); code != 0 || !strings.Contains(out, "installing anyway") {
		t.Fatalf("missing interface with --ignore-interface-check exit %d:\n%s", code, out)
	}

	inline := t.TempDir()
	os.WriteFile(filepath.Join(inline, "config.yaml"), []byte("plugins: {enabled: [a]}\n"), 0o600)
	cmd := exec.Command(bin, "install-hermes-plugin", "--hermes-home", inline, "--hermes-source", known)
	out2, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out2), "by hand") {
		t.Fatalf("inline config: %v\n%s", err, out2)
	}
	if b, _ := os.ReadFile(filepath.Join(inline, "config.yaml")); string(b) != "plugins: {enabled: [a]}\n" {
		t.Fatalf("changed an inline config:\n%s", b)
	}
}

func TestHermesPluginKnowsTheRealGateway(t *testing.T) {
	src := os.Getenv("HERMES_SOURCE")
	if src == "" {
		t.Skip("HERMES_SOURCE (a Hermes checkout) not set")
	}
	ver, missing, err := checkHermes(src)
	if err != nil || len(missing) > 0 {
		t.Fatalf("Hermes %s at %s: %v, lacking %v", ver, src, err, missing)
	}
}

func TestHermesPluginInstallAsRootKeepsTheOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	bin, _ := binaries(t)
	base := t.TempDir()
	os.Chmod(base, 0o755)
	home := filepath.Join(base, "hermes")
	os.Mkdir(home, 0o755)
	cfg := filepath.Join(home, "config.yaml")
	os.WriteFile(cfg, []byte("model: x\n"), 0o600)
	for _, p := range []string{home, cfg} {
		if err := os.Chown(p, 1000, 1000); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "install-hermes-plugin", "--hermes-home", home, "--hermes-source", fakeHermes(t, "0.18.2", ""))
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	dir := filepath.Join(home, "plugins", hermes.PluginName)
	for _, p := range []string{cfg, filepath.Join(home, "plugins"), dir, filepath.Join(dir, "adapter.py"), filepath.Join(dir, "plugin.yaml")} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1000 || st.Gid != 1000 {
			t.Errorf("%s is owned by %d:%d, not 1000:1000", p, st.Uid, st.Gid)
		}
	}
	if b, _ := os.ReadFile(cfg); !strings.Contains(string(b), hermes.PluginName) {
		t.Fatalf("config.yaml not edited:\n%s", b)
	}
}

func TestHermesPluginLineChanges(t *testing.T) {
	got := strings.Join(lineChanges([]byte("a\nplugins:\n  disabled:\n  - p\n  enabled: []\nz\n"), []byte("a\nplugins:\n  disabled: []\n  enabled:\n    - p\nz\n")), "")
	want := "-3:   disabled:\n-4:   - p\n-5:   enabled: []\n+3:   disabled: []\n+4:   enabled:\n+5:     - p\n"
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestHermesPluginSourceDirOfAProfile(t *testing.T) {
	base := t.TempDir()
	if err := os.MkdirAll(filepath.Join(base, "hermes-agent", "gateway"), 0o755); err != nil {
		t.Fatal(err)
	}
	profile := filepath.Join(base, "profiles", "work")
	os.MkdirAll(profile, 0o755)
	dirs := hermesSourceDirs(profile, false)
	want := []string{filepath.Join(profile, "hermes-agent"), filepath.Join(base, "hermes-agent"), "/usr/local/lib/hermes-agent"}
	if !slices.Equal(dirs, want) {
		t.Fatalf("got %q, want %q", dirs, want)
	}
	if d := hermesSourceDirs(base, true); !slices.Equal(d, []string{"/usr/local/lib/hermes-agent", filepath.Join(base, "hermes-agent")}) {
		t.Fatalf("root home as root: %q", d)
	}
	if _, err := os.Stat("/usr/local/lib/hermes-agent/gateway"); err != nil || os.Geteuid() != 0 {
		if got := hermesSourceDir(profile); got != filepath.Join(base, "hermes-agent") {
			t.Fatalf("hermesSourceDir(%s) = %s", profile, got)
		}
	}
}
