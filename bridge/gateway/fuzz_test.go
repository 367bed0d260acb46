package gateway

import (
	"bytes"
	"testing"
)

// envLineCount is an upper bound on the lines of a .env file: its line
// breaks plus one (CR LF counts once).
func envLineCount(data []byte) int {
	return bytes.Count(data, []byte("\n")) + bytes.Count(data, []byte("\r")) - bytes.Count(data, []byte("\r\n")) + 1
}

func FuzzParseDotEnv(f *testing.F) {
	for _, seed := range []string{
		"A=1\nB='two'\nC=\"th\\nree\"\n",
		"export A=${B:-x} # c\r\n=bad\nKEY with space=1\n",
		"A=\"open\nB='x\\'\nC=${A}${}\n",
		"\uFEFF'K'=v\x00\n#\n\n  X\n",
		"A=caf\xe9\rB=\\\"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, problems := parseDotEnv(data, env("A", "sidecar"))
		lines := envLineCount(data)
		for _, p := range problems {
			if p.line < 1 || p.line > lines {
				t.Errorf("problem on line %d of %d: %s", p.line, lines, p.msg)
			}
		}
		for _, e := range entries {
			if e.line < 1 || e.line > lines || !validName(e.name) {
				t.Errorf("entry %q on line %d of %d", e.name, e.line, lines)
			}
		}
	})
}

func FuzzLoadConfig(f *testing.F) {
	for _, seed := range []string{
		"whatsapp:\n  dm_policy: Open\n  allow_from: [+1555, 0123, a]\n  mention_patterns: ['@x', {a: 1.5e+3}]\n",
		"platforms:\n  whatsapp:\n    extra:\n      bridge_port: '3001'\n      bridge_script: b.js\n      session_path: s\n      send_read_receipts: yes\n",
		"gateway:\n  platforms:\n    whatsapp:\n      extra: ~\n      require_mention: on\n",
		"d: &d {dm_policy: x, <<: *d}\nwhatsapp:\n  <<: [*d, *d]\n  allow_from: *d\n",
		"a: [b\n",
		"- 1\n---\n- 2\n",
		"whatsapp: !!str 12\nplatforms: {whatsapp: {extra: {allowFrom: 'a,b', reply_prefix: !!int '7'}}}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l := newLoader(env())
		l.in.Home = "/nonexistent/hermes-home"
		l.cfg = parseConfig("config.yaml", data)
		in := l.finish(Options{
			Getenv:        env(),
			SystemInstall: "/nonexistent/root-install",
			writable:      func(string) bool { return false },
		}.withDefaults())
		lines := lineCount(data)
		for _, p := range in.Problems {
			if p.Line < 0 || p.Line > lines {
				t.Errorf("problem on line %d of %d: %s", p.Line, lines, p.Error())
			}
		}
		if in.Port < 1 || in.Port > 65535 || (in.Mode != "self-chat" && in.Mode != "bot") {
			t.Errorf("port %d, mode %q", in.Port, in.Mode)
		}
		seen := map[string]bool{}
		for _, v := range in.Env {
			if seen[v.Name] {
				t.Errorf("%s twice in Env", v.Name)
			}
			seen[v.Name] = true
		}
	})
}
