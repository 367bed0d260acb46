package main

import (
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// The bash script completes from what the binary answers: commands
// after wa-sidecar, flags after a command.
func TestCompletionBash(t *testing.T) {
	bin, _ := binaries(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	env := []string{"PATH=" + filepath.Dir(bin) + ":/usr/bin:/bin", "HOME=" + t.TempDir()}
	script, stderr, code := cliRun(t, bin, env, "completion", "bash")
	if code != 0 || !strings.Contains(script, "complete ") {
		t.Fatalf("completion bash: exit %d, %q", code, stderr)
	}
	for words, want := range map[string]string{
		"wa-sidecar sta":       "status start",
		"wa-sidecar logs --fo": "--follow",
		"wa-sidecar pa":        "pair",
	} {
		w := strings.Fields(words)
		cmd := exec.Command(bash, "--norc", "-c", script+`
COMP_WORDS=(`+words+`); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _wa_sidecar; echo "${COMPREPLY[*]}"`)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("completing %q (%d words): %q, %v; want %q", words, len(w), out, err, want)
		}
	}
}

func TestCompletionScripts(t *testing.T) {
	bin, _ := binaries(t)
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	for shell, want := range map[string]string{
		"zsh":  "compdef _wa_sidecar wa-sidecar",
		"fish": "complete -c wa-sidecar",
	} {
		out, stderr, code := cliRun(t, bin, env, "completion", shell)
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("completion %s: exit %d, %q; want it to contain %q", shell, code, stderr, want)
		}
		if sh, err := exec.LookPath(shell); err == nil {
			cmd := exec.Command(sh, "-n")
			cmd.Stdin = strings.NewReader(out)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s -n on the script: %v %s", shell, err, b)
			}
		}
	}
	for _, args := range [][]string{{"completion"}, {"completion", "tcsh"}, {"completion", "bash", "zsh"}} {
		if _, stderr, code := cliRun(t, bin, env, args...); code != exitUsage || !strings.Contains(stderr, "bash, zsh or fish") {
			t.Errorf("%q: exit %d, %q", args, code, stderr)
		}
	}
	// Asking for completions runs nothing: run does not start a bridge.
	if out, stderr, code := cliRun(t, bin, env, "run", "--generate-bash-completion"); code != 0 || strings.Contains(stderr, "bridge") {
		t.Errorf("run --generate-bash-completion: exit %d, %q %q", code, out, stderr)
	}
}

func TestVersionOf(t *testing.T) {
	info := func(version string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Path: "github.com/wa-sidecar/wa-sidecar", Version: version}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	for _, tc := range []struct {
		stamped string
		bi      *debug.BuildInfo
		want    string
	}{
		{"v1.4.0", info("(devel)"), "v1.4.0"},
		{"", info("v1.3.2"), "v1.3.2"},
		{"", info("(devel)", "vcs.revision", "93574ac0f1e2d3c4b5a69788", "vcs.time", "2026-12-01T22:00:00Z", "vcs.modified", "true"),
			"devel (93574ac0f1e2, 2026-12-01T22:00:00Z, modified)"},
		{"", info("(devel)", "vcs.revision", "93574ac0f1e2d3c4b5a69788", "vcs.modified", "false"), "devel (93574ac0f1e2)"},
		{"", info("(devel)"), "devel (built without VCS information, e.g. by go run or with -buildvcs=false; go1.26.1)"},
		{"", nil, "devel (no build information)"},
	} {
		if got := versionOf(tc.stamped, tc.bi); got != tc.want {
			t.Errorf("versionOf(%q, …) = %q, want %q", tc.stamped, got, tc.want)
		}
	}

}

// A build from this checkout names its commit.
func TestVersionOfACheckout(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "wa-sidecar")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Skipf("cannot build with VCS information here: %v\n%s", err, out)
	}
	if m, _ := exec.Command("go", "version", "-m", bin).Output(); !strings.Contains(string(m), "vcs.revision=") {
		t.Skip("go records no VCS information here (a git worktree, whose .git is a file, or no git)")
	}
	rev, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		t.Skipf("no git: %v", err)
	}
	out, _, code := cliRun(t, bin, nil, "--version")
	// Go stamps a checkout's build with a pseudo-version naming the commit
	// (v0.0.0-<time>-<commit>); older toolchains leave "(devel)", and the
	// commit comes from vcs.revision. Either way the commit is shown.
	if code != 0 || !strings.Contains(out, strings.TrimSpace(string(rev))) {
		t.Errorf("--version = %q (exit %d); want the commit %s", out, code, rev)
	}
}

// The manual page generator is kept out of the release build only.
func TestManPage(t *testing.T) {
	bin, _ := binaries(t)
	out, stderr, code := cliRun(t, bin, nil, "man")
	if code != 0 || !strings.HasPrefix(out, ".nh\n.TH wa-sidecar 1") || !strings.Contains(out, "pair") {
		t.Errorf("man: exit %d, %.200q %q", code, out, stderr)
	}
}
