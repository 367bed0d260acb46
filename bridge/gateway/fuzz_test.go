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
