package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
)

func TestRunGivesTheBridgeTheGatewaysEnvironment(t *testing.T) {
	bin, _ := binaries(t)
	in := newHermesInstall(t)
	writeTestFile(t, filepath.Join(in.home, ".env"), "WHATSAPP_ALLOWED_USERS=15551234567\nnot a line\nOPENAI_API_KEY=sk-test-secret\n")
	writeTestFile(t, filepath.Join(in.home, "config.yaml"), "platforms:\n  whatsapp:\n    extra:\n      send_read_receipts: true\n")
	show := `echo "A=$WHATSAPP_ALLOWED_USERS R=$WHATSAPP_SEND_READ_RECEIPTS D=$WHATSAPP_DM_POLICY T=${WA_SIDECAR_TOKEN:-none} I=$HERMES_IMAGE_CACHE_DIR K=${OPENAI_API_KEY:+set}"; exec sleep 60`
	cmd := exec.Command(bin, "run", "--", "sh", "-c", show)
	cmd.Env = append(os.Environ(), "HERMES_HOME="+in.home, "WA_SIDECAR_TOKEN=0123456789abcdef0123456789abcdef",
		"WA_SIDECAR_LISTEN=127.0.0.1:0", "WA_SIDECAR_STATE_DIR="+t.TempDir(), "WHATSAPP_DM_POLICY=allowlist")
	p := startCmd(t, cmd)
	// The bad .env line is named, with its file and line, and the rest
	// of the file still counts.
	if rec := p.waitLog(".env:2"); rec["level"] != "WARN" {
		t.Fatalf("bad .env line: %v", rec)
	}
	rec := p.waitLog("A=")
	line, _ := rec["msg"].(string)
	want := "A=15551234567 R=true D=allowlist T=none I=" + filepath.Join(in.home, "cache", "images") + " K=set"
	if line != want {
		t.Fatalf("the bridge's environment:\n got %s\nwant %s", line, want)
	}
	if _, err := os.Stat(filepath.Join(in.home, "cache", "images")); err != nil {
		t.Fatalf("media cache not created: %v", err)
	}
	if strings.Contains(p.logText(), "sk-test-secret") {
		t.Fatal("a secret from .env reached the sidecar's log")
	}
	p.stopOK()
}

func TestDoctorShowsWhatTheGatewayWouldRun(t *testing.T) {
	bin, _ := binaries(t)
	in := newHermesInstall(t)
	writeTestFile(t, filepath.Join(in.home, ".env"), "OPENAI_API_KEY=sk-test-secret\nDATABASE_URL=postgres://u:hunter2@db/x\nWHATSAPP_MODE=bot\n")
	writeTestFile(t, filepath.Join(in.home, "config.yaml"), "whatsapp:\n  allow_from: [\"111\", \"222\"]\nplatforms: [oops\n")
	cmd := exec.Command(bin, "doctor", "--json")
	cmd.Env = append(os.Environ(), "HERMES_HOME="+in.home)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("doctor: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "sk-test-secret") || strings.Contains(string(out), "hunter2") {
		t.Fatal("doctor printed a secret")
	}
	var r doctorReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out)
	}
	if r.Script != in.script || r.Session != in.session || !r.Paired || r.Mode != "bot" || r.Port != 3000 {
		t.Fatalf("report: %+v", r)
	}
	if want, _ := gateway.ScriptHash(in.script); r.ScriptHash != want || r.Stamp == nil || !r.Stamp.Fresh {
		t.Fatalf("hash %q (want %q), stamp %+v", r.ScriptHash, want, r.Stamp)
	}
	if len(r.Command) == 0 || r.Command[1] != in.script {
		t.Fatalf("command: %q", r.Command)
	}
	if len(r.Looked) == 0 || r.Looked[0].Path != in.script {
		t.Fatalf("looked at: %+v", r.Looked)
	}
	secret, dm := false, ""
	for _, v := range r.Env {
		if v.Name == "OPENAI_API_KEY" {
			secret = v.Secret && v.Value == ""
		}
		if v.Name == "WHATSAPP_DM_POLICY" {
			dm = v.Value
		}
	}
	if !secret || dm != "pairing" {
		t.Fatalf("environment: %+v", r.Env)
	}
	if len(r.Problems) == 0 || !strings.Contains(r.Problems[0], "config.yaml") {
		t.Fatalf("the broken config.yaml is not reported: %q", r.Problems)
	}

	// Nothing installed: 78, and every place looked at.
	empty := t.TempDir()
	cmd = exec.Command(bin, "doctor")
	cmd.Env = append(os.Environ(), "HERMES_HOME="+empty)
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 78 {
		t.Fatalf("doctor without a bridge: %v\n%s", err, out)
	}
	for _, want := range []string{filepath.Join(empty, "hermes-agent", "scripts", "whatsapp-bridge", "bridge.js"), filepath.Join(empty, "scripts", "whatsapp-bridge", "bridge.js")} {
		if !strings.Contains(string(out), want) {
			t.Errorf("doctor does not say it looked at %s:\n%s", want, out)
		}
	}
}

func TestPrepareBridgeCopiesInstallsAndStamps(t *testing.T) {
	bin, _ := binaries(t)
	src := t.TempDir()
	writeTestFile(t, filepath.Join(src, "bridge.js"), "// bridge\n")
	writeTestFile(t, filepath.Join(src, "package.json"), `{"name":"b"}`)
	writeTestFile(t, filepath.Join(src, "package-lock.json"), `{"lockfileVersion":3}`)
	secret := filepath.Join(t.TempDir(), "secret")
	writeTestFile(t, secret, "not to be copied")
	if err := os.Symlink(secret, filepath.Join(src, "planted.js")); err != nil {
		t.Fatal(err)
	}
	// npm stands in as a script that records its arguments.
	runs := filepath.Join(t.TempDir(), "runs")
	npm := filepath.Join(t.TempDir(), "npm")
	writeTestFile(t, npm, "#!/bin/sh\necho \"$@\" >> "+runs+"\nmkdir -p node_modules\n")
	if err := os.Chmod(npm, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "scripts", "whatsapp-bridge")
	prepare := func() string {
		t.Helper()
		out, err := exec.Command(bin, "prepare-bridge", "--npm", npm, "--from", src, dst).CombinedOutput()
		if err != nil {
			t.Fatalf("prepare-bridge: %v\n%s", err, out)
		}
		return string(out)
	}
	prepare()
	if got, _ := os.ReadFile(filepath.Join(dst, "bridge.js")); string(got) != "// bridge\n" {
		t.Fatalf("bridge.js not copied: %q", got)
	}
	if _, err := os.Lstat(filepath.Join(dst, "planted.js")); !os.IsNotExist(err) {
		t.Fatalf("a symlink was copied or followed: %v", err)
	}
	if st := gateway.CheckStamp(dst); !st.Fresh {
		t.Fatalf("stamp after prepare-bridge: %+v", st)
	}
	if got, _ := os.ReadFile(runs); !strings.HasPrefix(string(got), "ci ") {
		t.Fatalf("npm ran as %q, want npm ci", got)
	}
	// Up to date: npm is not run again under a bridge that may be running.
	if out := prepare(); !strings.Contains(out, "up to date") {
		t.Fatalf("second run: %s", out)
	}
	if got, _ := os.ReadFile(runs); strings.Count(string(got), "\n") != 1 {
		t.Fatalf("npm ran again: %q", got)
	}
	if out, err := exec.Command(bin, "prepare-bridge").CombinedOutput(); err == nil {
		t.Fatalf("no folder given, yet: %s", out)
	}
}
