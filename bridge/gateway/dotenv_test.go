package gateway

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The expected values are what python-dotenv 1.2.2 gives for the same
// text.
func TestParseDotEnvValues(t *testing.T) {
	tests := []struct {
		name, text string
		want       map[string]string
	}{
		{"plain", "A=1\nB=two words\n", map[string]string{"A": "1", "B": "two words"}},
		{"spaces around =", "A = 1 \nB\t=\tb", map[string]string{"A": "1", "B": "b"}},
		{"export", "export A=1\nexport\tB=2\nexportC=3\n", map[string]string{"A": "1", "B": "2", "exportC": "3"}},
		{"comments and blank lines", "# c\n\n  # indented\nA=1 # inline\nB=x#not a comment\nC=\t#starts the value\n",
			map[string]string{"A": "1", "B": "x#not a comment", "C": "#starts the value"}},
		{"CRLF and CR", "A=1\r\nB=2\rC=3\r\n", map[string]string{"A": "1", "B": "2", "C": "3"}},
		{"BOM", "\uFEFFA=1\n", map[string]string{"A": "1"}},
		{"NUL bytes are stripped", "A=s\x00k\x00\n", map[string]string{"A": "sk"}},
		{"empty value", "A=\nB=''\nC=\"\"\n", map[string]string{"A": "", "B": "", "C": ""}},
		{"single quotes", `A='x # y'` + "\n" + `B='a\'b\\c\n'`, map[string]string{"A": "x # y", "B": `a'b\c\n`}},
		{"double quotes", `A="a\nb\tc\\d\"e\'f\x"`, map[string]string{"A": "a\nb\tc\\d\"e'f\\x"}},
		{"quoted, then a comment", `A="x" # c`, map[string]string{"A": "x"}},
		{"multi-line quoted values", "A='one\ntwo'\nB=\"three\nfour\"\nC=5\n", map[string]string{"A": "one\ntwo", "B": "three\nfour", "C": "5"}},
		{"a trailing backslash closes on the escaped quote", `A='C:\dir\'`, map[string]string{"A": `C:\dir\`}},
		{"quoted name", "'A'=1\n", map[string]string{"A": "1"}},
		{"names with dots and dashes", "a.b-c=1\n", map[string]string{"a.b-c": "1"}},
		{"a bare name sets nothing", "A\nB=2\n", map[string]string{"B": "2"}},
		{"the last of two wins", "A=1\nA=2\n", map[string]string{"A": "2"}},
		{"Latin-1 when not UTF-8", "A=caf\xe9\n", map[string]string{"A": "café"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, problems := parseDotEnv([]byte(tt.text), env())
			if len(problems) > 0 {
				t.Errorf("problems: %+v", problems)
			}
			got := map[string]string{}
			for _, e := range entries {
				if !e.bare {
					got[e.name] = e.value
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestParseDotEnvExpansion(t *testing.T) {
	sidecar := env("SIDE", "side", "BOTH", "from-sidecar")
	text := "BOTH=from-file\nBASE=/srv\n" +
		"A=${BASE}/x\n" + // an earlier entry
		"B=${BOTH}\n" + // the sidecar's environment first
		"C=${NOPE:-fallback value}\n" +
		"D=\"${SIDE}-${NOPE}\"\n" +
		"E='${SIDE}'\n" + // python-dotenv expands single-quoted values too
		"F=$SIDE ${SIDE\nJ=${A:b}\n" + // not references
		"EMPTY=\nG=${EMPTY:-d}\n" + // set but empty: no default
		"BARE\nH=${BARE:-d}\n" +
		"I=${LATER}\nLATER=1\n"
	entries, problems := parseDotEnv([]byte(text), sidecar)
	if len(problems) > 0 {
		t.Errorf("problems: %+v", problems)
	}
	got := map[string]string{}
	for _, e := range entries {
		got[e.name] = e.value
	}
	for k, want := range map[string]string{
		"A": "/srv/x", "B": "from-sidecar", "C": "fallback value", "D": "side-", "E": "side",
		"F": "$SIDE ${SIDE", "J": "${A:b}", "G": "", "H": "", "I": "",
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
}

// TestParseDotEnvGarbage: a line that cannot be read is reported with its
// number, and the lines around it survive.
func TestParseDotEnvGarbage(t *testing.T) {
	// A quote opened on a line runs on to the next quote, even lines
	// later; so the unclosed one comes last.
	text := strings.Join([]string{
		"GOOD1=1",             // 1
		"=value",              // 2
		"KEY with space=1",    // 3
		"",                    // 4
		"GOOD2=2",             // 5
		"1ABC=digit first",    // 6
		`Q="closed" trailing`, // 7
		"GOOD3=3",             // 8
		"export =x",           // 9
		"'unclosed=name",      // 10
		"GOOD4=4",             // 11
		`BAD="unterminated`,   // 12
		"GOOD5=5",             // 13
	}, "\r\n")
	entries, problems := parseDotEnv([]byte(text), env())
	var names []string
	for _, e := range entries {
		names = append(names, e.name+"="+e.value)
	}
	if want := []string{"GOOD1=1", "GOOD2=2", "GOOD3=3", "GOOD4=4", "GOOD5=5"}; !reflect.DeepEqual(names, want) {
		t.Errorf("entries %q, want %q", names, want)
	}
	want := []lineProblem{
		{2, "cannot be read (there is no name before the =); it is skipped"},
		{3, "cannot be read (the name is followed by text that is not an =); it is skipped"},
		{6, "cannot be read (the name is not a valid variable name: letters, digits, _ . and -, not starting with a digit); it is skipped"},
		{7, "cannot be read (there is text after the closing quote); it is skipped"},
		{9, "cannot be read (there is no name before the =); it is skipped"},
		{10, "cannot be read (a quoted name is not closed); it is skipped"},
		{12, "cannot be read (a quoted value is not closed); it is skipped"},
	}
	if !reflect.DeepEqual(problems, want) {
		t.Errorf("problems:\n got %+v\nwant %+v", problems, want)
	}
}

// TestParseDotEnvSwallowedLines: python-dotenv lets a quoted value run on
// to the next quote, and skips to the end of that line when what follows
// it makes no sense; the problem says how far.
func TestParseDotEnvSwallowedLines(t *testing.T) {
	entries, problems := parseDotEnv([]byte("A=\"abc\nB=\"x\"\nC=3\n"), env())
	if len(entries) != 1 || entries[0].name != "C" || entries[0].line != 3 {
		t.Errorf("entries %+v", entries)
	}
	want := []lineProblem{{1, "cannot be read (there is text after the closing quote); it is skipped, and so is what follows it up to line 2"}}
	if !reflect.DeepEqual(problems, want) {
		t.Errorf("problems %+v, want %+v", problems, want)
	}
}

func TestDotEnvInLoad(t *testing.T) {
	home := t.TempDir()
	layout(t, home, map[string]string{".env": "A=1\nnot a line\nB=2\n"})
	in := loadHome(t, home)
	onlyProblem(t, in, filepath.Join(home, ".env"), 2, "cannot be read")
	if got := in.Problems[0].Error(); got != filepath.Join(home, ".env")+":2: cannot be read (the name is followed by text that is not an =); it is skipped" {
		t.Errorf("problem %q", got)
	}
	for _, w := range []Var{{Name: "A", Value: "1", From: ".env line 1"}, {Name: "B", Value: "2", From: ".env line 3"}} {
		if got, _ := envVar(in, w.Name); got != w {
			t.Errorf("got %+v, want %+v", got, w)
		}
	}
	if in.Env[0].Name != "A" || in.Env[1].Name != "B" {
		t.Errorf(".env entries come first, in order: %+v", in.Env)
	}
}
