package gateway

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The bridge files of an install tree as the installer leaves them.
func bridgeFiles(prefix string) map[string]string {
	return map[string]string{
		prefix + "/bridge.js":    "// bridge\n",
		prefix + "/package.json": `{"name":"whatsapp-bridge"}`,
	}
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func TestScriptCandidates(t *testing.T) {
	const (
		user   = "home/hermes-agent/scripts/whatsapp-bridge"
		root   = "root/scripts/whatsapp-bridge"
		mirror = "home/scripts/whatsapp-bridge"
	)
	tests := []struct {
		name     string
		files    map[string]string
		readOnly []string // bridge directories the process may not write
		script   string   // "" for none
		from     string   // part of ScriptFrom
		looked   []Looked // paths relative to the temp dir
		problem  string   // part of the one problem; "" for none
	}{
		{
			name:   "writable user install",
			files:  merge(bridgeFiles(user), bridgeFiles(mirror)),
			script: user + "/bridge.js",
			from:   "the user install",
			looked: []Looked{{user + "/bridge.js", "found, writable install tree: used"}},
		},
		{
			name:     "read-only user install with a mirror",
			files:    merge(bridgeFiles(user), bridgeFiles(mirror)),
			readOnly: []string{user},
			script:   mirror + "/bridge.js",
			from:     "the mirror of the read-only user install",
			looked: []Looked{
				{user + "/bridge.js", "found, read-only install tree: the gateway uses the mirror"},
				{mirror + "/bridge.js", "found, the mirror of the read-only install tree: used"},
			},
		},
		{
			name:     "read-only user install, not mirrored yet",
			files:    bridgeFiles(user),
			readOnly: []string{user},
			script:   user + "/bridge.js",
			from:     "not mirrored yet",
			looked: []Looked{{user + "/bridge.js", "found, read-only install tree with no mirror yet: used; " +
				"the gateway would first copy the tree to MIRROR and run the copy, which has the same bytes"}},
		},
		{
			name:     "read-only user install, mirror directory without bridge.js",
			files:    merge(bridgeFiles(user), map[string]string{mirror + "/": ""}),
			readOnly: []string{user},
			looked: []Looked{
				{user + "/bridge.js", "found, read-only install tree: the gateway uses the mirror"},
				{mirror + "/bridge.js", "not found, though the mirror directory exists: the gateway would run it and find no bridge.js"},
			},
			problem: "bridge script missing",
		},
		{
			name:   "writable root install",
			files:  merge(bridgeFiles(root), bridgeFiles(mirror)),
			script: root + "/bridge.js",
			from:   "the root install",
			looked: []Looked{
				{user + "/bridge.js", "not found"},
				{root + "/bridge.js", "found, writable install tree: used"},
			},
		},
		{
			name:     "read-only root install with a mirror",
			files:    merge(bridgeFiles(root), bridgeFiles(mirror)),
			readOnly: []string{root},
			script:   mirror + "/bridge.js",
			from:     "the mirror of the read-only root install",
			looked: []Looked{
				{user + "/bridge.js", "not found"},
				{root + "/bridge.js", "found, read-only install tree: the gateway uses the mirror"},
				{mirror + "/bridge.js", "found, the mirror of the read-only install tree: used"},
			},
		},
		{
			name:   "the mirror alone",
			files:  bridgeFiles(mirror),
			script: mirror + "/bridge.js",
			from:   "the mirror",
			looked: []Looked{
				{user + "/bridge.js", "not found"},
				{root + "/bridge.js", "not found"},
				{mirror + "/bridge.js", "found: used"},
			},
		},
		{
			name:  "nothing",
			files: map[string]string{"home/": ""},
			looked: []Looked{
				{user + "/bridge.js", "not found"},
				{root + "/bridge.js", "not found"},
				{mirror + "/bridge.js", "not found"},
			},
		},
		{
			name: "a directory named bridge.js does not count",
			files: merge(bridgeFiles(mirror), map[string]string{
				user + "/bridge.js/": "",
			}),
			script: mirror + "/bridge.js",
			looked: []Looked{
				{user + "/bridge.js", "not found"},
				{root + "/bridge.js", "not found"},
				{mirror + "/bridge.js", "found: used"},
			},
		},
		{
			name: "bridge_script in config.yaml, absolute",
			files: merge(bridgeFiles(user), map[string]string{
				"home/config.yaml": "platforms:\n  whatsapp:\n    extra:\n      bridge_script: TMP/custom/bridge.js\n",
				"custom/bridge.js": "// mine\n",
			}),
			script: "custom/bridge.js",
			from:   "config.yaml line 4 (platforms.whatsapp.extra.bridge_script)",
			looked: []Looked{{"custom/bridge.js", "set by config.yaml line 4 (platforms.whatsapp.extra.bridge_script): used"}},
		},
		{
			name: "bridge_script in config.yaml, relative to the home",
			files: map[string]string{
				"home/config.yaml":    "gateway:\n  platforms:\n    whatsapp:\n      extra:\n        bridge_script: mine/bridge.js\n",
				"home/mine/bridge.js": "// mine\n",
			},
			script: "home/mine/bridge.js",
			from:   "config.yaml line 5 (gateway.platforms.whatsapp.extra.bridge_script), relative to the Hermes home",
			looked: []Looked{{"home/mine/bridge.js", "set by config.yaml line 5 (gateway.platforms.whatsapp.extra.bridge_script): used"}},
		},
		{
			name: "bridge_script in config.yaml that does not exist",
			files: merge(bridgeFiles(user), map[string]string{
				"home/config.yaml": "platforms:\n  whatsapp:\n    extra:\n      bridge_script: /nonexistent/bridge.js\n",
			}),
			looked:  []Looked{{"/nonexistent/bridge.js", "set by config.yaml line 4 (platforms.whatsapp.extra.bridge_script): not found"}},
			problem: "bridge script missing",
		},
		{
			name: "bridge_script that is not a string is ignored",
			files: merge(bridgeFiles(user), map[string]string{
				"home/config.yaml": "platforms:\n  whatsapp:\n    extra:\n      bridge_script: [a, b]\n",
			}),
			script:  user + "/bridge.js",
			looked:  []Looked{{user + "/bridge.js", "found, writable install tree: used"}},
			problem: "platforms.whatsapp.extra.bridge_script is a list, not a path; it is ignored",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			files := map[string]string{}
			for k, v := range tt.files {
				files[k] = strings.ReplaceAll(v, "TMP", tmp)
			}
			layout(t, tmp, files)
			abs := func(p string) string {
				if filepath.IsAbs(p) {
					return p
				}
				return filepath.Join(tmp, filepath.FromSlash(p))
			}
			readOnly := map[string]bool{}
			for _, d := range tt.readOnly {
				readOnly[abs(d)] = true
			}
			in := Load(Options{
				HermesHome:    abs("home"),
				Getenv:        env(),
				SystemInstall: abs("root"),
				writable:      func(dir string) bool { return !readOnly[dir] },
			})
			want := ""
			if tt.script != "" {
				want = abs(tt.script)
			}
			if in.Script != want {
				t.Errorf("Script = %q, want %q", in.Script, want)
			}
			if !strings.Contains(in.ScriptFrom, tt.from) {
				t.Errorf("ScriptFrom = %q, want it to say %q", in.ScriptFrom, tt.from)
			}
			var looked []Looked
			for _, l := range tt.looked {
				looked = append(looked, Looked{abs(l.Path), strings.ReplaceAll(l.Verdict, "MIRROR", abs(mirror))})
			}
			if !reflect.DeepEqual(in.Looked, looked) {
				t.Errorf("Looked:\n got %q\nwant %q", in.Looked, looked)
			}
			if tt.problem == "" {
				noProblems(t, in)
			} else if len(in.Problems) != 1 || !strings.Contains(in.Problems[0].Message, tt.problem) {
				t.Errorf("want one problem saying %q, got:\n%s", tt.problem, problemsText(in))
			}
		})
	}
}

// TestReadOnlyInstallTreeForReal asks the kernel, through a tree that is
// really read-only. Root may write anyway, so it skips as root; the
// decision itself is tested through the injected test above.
func TestReadOnlyInstallTreeForReal(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may write in a read-only directory")
	}
	home := t.TempDir()
	layout(t, home, merge(bridgeFiles("hermes-agent/scripts/whatsapp-bridge"), bridgeFiles("scripts/whatsapp-bridge")))
	dir := filepath.Join(home, "hermes-agent", "scripts", "whatsapp-bridge")
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
	in := Load(Options{HermesHome: home, Getenv: env(), SystemInstall: filepath.Join(home, "none")})
	if want := filepath.Join(home, "scripts", "whatsapp-bridge", "bridge.js"); in.Script != want {
		t.Errorf("Script = %q, want the mirror %q", in.Script, want)
	}
}

func TestHome(t *testing.T) {
	tests := []struct {
		name     string
		flag     string
		env      []string
		home     string
		from     string
		problems int
	}{
		{"given first", "/from/flag", []string{"HERMES_HOME", "/from/env", "HOME", "/u"}, "/from/flag", "the given home", 0},
		{"HERMES_HOME, trimmed", "", []string{"HERMES_HOME", "  /from/env \n", "HOME", "/u"}, "/from/env", "$HERMES_HOME", 0},
		{"blank HERMES_HOME", "", []string{"HERMES_HOME", "  ", "HOME", "/u"}, "/u/.hermes", "the default ~/.hermes", 0},
		{"HOME", "", []string{"HOME", "/u"}, "/u/.hermes", "the default ~/.hermes", 0},
		{"nothing", "", nil, "", "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := Load(Options{HermesHome: tt.flag, Getenv: env(tt.env...), SystemInstall: t.TempDir()})
			if in.Home != tt.home || in.HomeFrom != tt.from {
				t.Errorf("home %q from %q, want %q from %q", in.Home, in.HomeFrom, tt.home, tt.from)
			}
			if len(in.Problems) != tt.problems {
				t.Errorf("want %d problems, got:\n%s", tt.problems, problemsText(in))
			}
			if in.Port != 3000 || in.Mode != "self-chat" {
				t.Errorf("defaults: port %d, mode %q", in.Port, in.Mode)
			}
		})
	}
}

func TestSession(t *testing.T) {
	const (
		current = "platforms/whatsapp/session"
		legacy  = "whatsapp/session"
	)
	tests := []struct {
		name   string
		files  map[string]string
		link   string // make legacy a symbolic link to this (relative to home)
		want   string // relative to home unless absolute
		from   string
		reason string
	}{
		{"new install", map[string]string{current + "/creds.json": "{}"}, "", current, "default", ""},
		{"nothing yet", nil, "", current, "default", ""},
		{"an empty legacy directory does not count", map[string]string{legacy + "/": "", current + "/creds.json": "{}"}, "", current, "default", ""},
		{"a populated legacy directory wins", map[string]string{legacy + "/creds.json": "{}", current + "/creds.json": "{}"}, "", legacy, "the legacy location, which has content", ""},
		{"a file in the legacy place counts", map[string]string{legacy: "x"}, "", legacy, "the legacy location, which has content", ""},
		{"a dangling link does not count", nil, "gone", current, "default", ""},
		{"a link to a populated directory counts", map[string]string{"elsewhere/creds.json": "{}"}, "elsewhere", legacy, "the legacy location, which has content", ""},
		{"a link to an empty directory does not count", map[string]string{"elsewhere/": ""}, "elsewhere", current, "default", ""},
		{"session_path wins", map[string]string{
			legacy + "/creds.json": "{}",
			"config.yaml":          "platforms:\n  whatsapp:\n    extra:\n      session_path: /srv/wa\n",
		}, "", "/srv/wa", "config.yaml line 4 (platforms.whatsapp.extra.session_path)", ""},
		{"a relative session_path is taken from the home", map[string]string{
			"config.yaml": "gateway:\n  platforms:\n    whatsapp:\n      extra:\n        session_path: wa\n",
		}, "", "wa", "config.yaml line 5 (gateway.platforms.whatsapp.extra.session_path), relative to the Hermes home", ""},
		{"an empty session_path is ignored", map[string]string{
			"config.yaml": "platforms:\n  whatsapp:\n    extra:\n      session_path: ''\n",
		}, "", current, "default", "platforms.whatsapp.extra.session_path is an empty string, not a path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := t.TempDir()
			layout(t, home, tt.files)
			if tt.link != "" {
				if err := os.MkdirAll(filepath.Join(home, "whatsapp"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(filepath.Join(home, tt.link), filepath.Join(home, legacy)); err != nil {
					t.Fatal(err)
				}
			}
			in := loadHome(t, home)
			want := tt.want
			if !filepath.IsAbs(want) {
				want = filepath.Join(home, filepath.FromSlash(want))
			}
			if in.SessionDir != want || in.SessionFrom != tt.from {
				t.Errorf("session %q from %q, want %q from %q", in.SessionDir, in.SessionFrom, want, tt.from)
			}
			if tt.reason == "" {
				noProblems(t, in)
			} else {
				onlyProblem(t, in, filepath.Join(home, "config.yaml"), 4, tt.reason)
			}
		})
	}
}

func TestPort(t *testing.T) {
	tests := []struct {
		value   string
		port    int
		problem string
	}{
		{"3011", 3011, ""},
		{"'3012'", 3012, ""},
		{"0x0BB9", 3001, ""},
		{"abc", 3000, `is the string "abc"; want a port number from 1 to 65535`},
		{"'30 12'", 3000, `is the string "30 12"; want a port number`},
		{"0", 3000, "is 0; want a port number"},
		{"70000", 3000, "is 70000; want"},
		{"'99999'", 3000, `is the string "99999"; want a port number`},
		{"3000.5", 3000, "is 3000.5; want"},
		{"true", 3000, "is True; want"},
		{"[3001]", 3000, "is a list; want"},
		{"", 3000, "is None; want"},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			home := t.TempDir()
			layout(t, home, map[string]string{"config.yaml": "platforms:\n  whatsapp:\n    extra:\n      bridge_port: " + tt.value + "\n"})
			in := loadHome(t, home)
			if in.Port != tt.port {
				t.Errorf("port %d, want %d", in.Port, tt.port)
			}
			if tt.problem == "" {
				noProblems(t, in)
				if want := "config.yaml line 4 (platforms.whatsapp.extra.bridge_port)"; in.PortFrom != want {
					t.Errorf("PortFrom %q, want %q", in.PortFrom, want)
				}
				return
			}
			onlyProblem(t, in, filepath.Join(home, "config.yaml"), 4, "platforms.whatsapp.extra.bridge_port "+tt.problem)
			if in.PortFrom != "default" {
				t.Errorf("PortFrom %q, want default", in.PortFrom)
			}
		})
	}
}

func TestPortExtraOrder(t *testing.T) {
	// platforms.whatsapp.extra wins over gateway.platforms.whatsapp.extra,
	// key by key.
	home := t.TempDir()
	layout(t, home, map[string]string{"config.yaml": `gateway:
  platforms:
    whatsapp:
      extra:
        bridge_port: 3001
        send_read_receipts: true
platforms:
  whatsapp:
    extra:
      bridge_port: 3002
`})
	in := loadHome(t, home)
	noProblems(t, in)
	if in.Port != 3002 || in.PortFrom != "config.yaml line 10 (platforms.whatsapp.extra.bridge_port)" {
		t.Errorf("port %d from %q", in.Port, in.PortFrom)
	}
	if !in.SendReadReceipts || in.ReadReceiptsFrom != "config.yaml line 6 (gateway.platforms.whatsapp.extra.send_read_receipts)" {
		t.Errorf("read receipts %t from %q", in.SendReadReceipts, in.ReadReceiptsFrom)
	}
}
