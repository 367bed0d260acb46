package gateway

import (
	"bytes"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The .env reader follows python-dotenv 1.2 (the version the gateway pins),
// because the gateway's process environment, and so its bridge's, is what
// python-dotenv makes of the file. Where python-dotenv gives up on a
// statement it warns and goes on with the next line; so does this reader,
// but it also says which line and why. A ready-made Go parser would stop at
// the first such line and lose the rest.

// envEntry is one variable a .env file sets.
type envEntry struct {
	name  string
	value string
	line  int
	// bare: a name alone on its line, with no "=". python-dotenv sets
	// nothing for it, but it shadows the name in later ${...} references.
	bare bool
}

// lineProblem is a statement of the .env file that was skipped.
type lineProblem struct {
	line int
	msg  string
}

// parseDotEnv reads the bytes of a .env file. getenv is the sidecar's
// environment, which ${NAME} references consult before the file's own
// earlier entries (python-dotenv's order when it does not override). An
// entry set twice keeps its first place and its last value.
func parseDotEnv(data []byte, getenv func(string) string) ([]envEntry, []lineProblem) {
	// The gateway strips NUL bytes before python-dotenv reads the file, and
	// reads a file that is not UTF-8 as Latin-1.
	data = bytes.ReplaceAll(data, []byte{0}, nil)
	var text []rune
	if utf8.Valid(data) {
		text = []rune(strings.TrimPrefix(string(data), "\uFEFF"))
	} else {
		text = make([]rune, len(data))
		for i, b := range data {
			text[i] = rune(b)
		}
	}
	r := envReader{s: text, line: 1}
	var entries []envEntry
	var problems []lineProblem
	index := map[string]int{}
	for {
		r.skip(isPySpace)
		if r.pos >= len(r.s) {
			break
		}
		first := r.line
		b, reason := r.binding()
		if reason != "" {
			r.skipLine()
			msg := "cannot be read (" + reason + "); it is skipped"
			if last := r.lastLine(); last > first {
				msg = fmt.Sprintf("cannot be read (%s); it is skipped, and so is what follows it up to line %d", reason, last)
			}
			problems = append(problems, lineProblem{first, msg})
			continue
		}
		if b.comment {
			continue
		}
		if !validName(b.key) {
			problems = append(problems, lineProblem{first, "cannot be read (the name is not a valid variable name: " +
				"letters, digits, _ . and -, not starting with a digit); it is skipped"})
			continue
		}
		e := envEntry{name: b.key, line: first, bare: !b.hasValue}
		if b.hasValue {
			e.value = expand(b.value, func(name string) (string, bool) {
				if v := getenv(name); v != "" {
					return v, true
				}
				if i, ok := index[name]; ok {
					return entries[i].value, true
				}
				return "", false
			})
		}
		if i, ok := index[e.name]; ok {
			entries[i] = e
			continue
		}
		index[e.name] = len(entries)
		entries = append(entries, e)
	}
	return entries, problems
}

// binding is one statement of a .env file.
type binding struct {
	comment  bool
	key      string
	value    string
	hasValue bool
}

type envReader struct {
	s    []rune
	pos  int
	line int // of pos
}

// advance moves to p, counting line breaks; CR LF counts once.
func (r *envReader) advance(p int) {
	for ; r.pos < p; r.pos++ {
		if c := r.s[r.pos]; c == '\n' || c == '\r' && (r.pos+1 >= len(r.s) || r.s[r.pos+1] != '\n') {
			r.line++
		}
	}
}

func (r *envReader) skip(f func(rune) bool) {
	p := r.pos
	for p < len(r.s) && f(r.s[p]) {
		p++
	}
	r.advance(p)
}

func (r *envReader) peek() rune {
	if r.pos < len(r.s) {
		return r.s[r.pos]
	}
	return -1
}

// skipLine moves past the rest of the line and its line break.
func (r *envReader) skipLine() {
	r.skip(func(c rune) bool { return c != '\n' && c != '\r' })
	switch {
	case r.pos+1 < len(r.s) && r.s[r.pos] == '\r' && r.s[r.pos+1] == '\n':
		r.advance(r.pos + 2)
	case r.pos < len(r.s):
		r.advance(r.pos + 1)
	}
}

// lastLine is the line the statement just read ended on.
func (r *envReader) lastLine() int {
	if r.pos > 0 && (r.s[r.pos-1] == '\n' || r.s[r.pos-1] == '\r') {
		return r.line - 1
	}
	return r.line
}

// binding reads one statement, or says why it cannot. On failure the
// position is where reading stopped: the rest of that line goes too.
func (r *envReader) binding() (binding, string) {
	var b binding
	if r.hasWord("export") && r.pos+6 < len(r.s) && isInlineSpace(r.s[r.pos+6]) {
		r.advance(r.pos + 6)
		r.skip(isInlineSpace)
	}
	switch c := r.peek(); c {
	case '#':
		b.comment = true
	case '\'':
		end := -1
		for i := r.pos + 1; i < len(r.s); i++ {
			if r.s[i] == '\'' {
				end = i
				break
			}
		}
		if end < 0 {
			return b, "a quoted name is not closed"
		}
		if end == r.pos+1 {
			return b, "the quoted name is empty"
		}
		b.key = string(r.s[r.pos+1 : end])
		r.advance(end + 1)
	default:
		p := r.pos
		for p < len(r.s) && r.s[p] != '=' && r.s[p] != '#' && !isPySpace(r.s[p]) {
			p++
		}
		if p == r.pos {
			return b, "there is no name before the ="
		}
		b.key = string(r.s[r.pos:p])
		r.advance(p)
	}
	if !b.comment {
		r.skip(isInlineSpace)
		if r.peek() == '=' {
			r.advance(r.pos + 1)
			r.skip(isInlineSpace)
			v, reason := r.value()
			if reason != "" {
				return b, reason
			}
			b.value, b.hasValue = v, true
		}
	}
	// An optional comment, then the end of the line.
	p := r.pos
	for p < len(r.s) && isInlineSpace(r.s[p]) {
		p++
	}
	if p < len(r.s) && r.s[p] == '#' {
		for p < len(r.s) && r.s[p] != '\n' && r.s[p] != '\r' {
			p++
		}
	}
	r.advance(p)
	switch c := r.peek(); {
	case c == -1:
	case c == '\r' && r.pos+1 < len(r.s) && r.s[r.pos+1] == '\n':
		r.advance(r.pos + 2)
	case c == '\n' || c == '\r':
		r.advance(r.pos + 1)
	case b.hasValue:
		return b, "there is text after the closing quote"
	default:
		return b, "the name is followed by text that is not an ="
	}
	return b, ""
}

func (r *envReader) hasWord(w string) bool {
	if len(r.s)-r.pos < len(w) {
		return false
	}
	for i, c := range w {
		if r.s[r.pos+i] != c {
			return false
		}
	}
	return true
}

// value reads what follows "=" and its spaces.
func (r *envReader) value() (string, string) {
	switch c := r.peek(); c {
	case '\'', '"':
		end, ok := closingQuote(r.s, r.pos, c)
		if !ok {
			return "", "a quoted value is not closed"
		}
		raw := r.s[r.pos+1 : end]
		r.advance(end + 1)
		if c == '\'' {
			return unescape(raw, singleEscapes), ""
		}
		return unescape(raw, doubleEscapes), ""
	case -1, '\n', '\r':
		return "", ""
	}
	p := r.pos
	for p < len(r.s) && r.s[p] != '\n' && r.s[p] != '\r' {
		p++
	}
	raw := r.s[r.pos:p]
	r.advance(p)
	// An inline comment starts at the first # that follows white space.
	for i := 1; i < len(raw); i++ {
		if raw[i] == '#' && isPySpace(raw[i-1]) {
			raw = raw[:i]
			break
		}
	}
	return strings.TrimRightFunc(string(raw), isPySpace), ""
}

// closingQuote finds the quote that closes the value opening at s[open].
// A backslash before a quote escapes it; when that leaves the value
// unclosed, python-dotenv's pattern backtracks so that the last escaped
// quote closes it, and so does this.
func closingQuote(s []rune, open int, q rune) (int, bool) {
	lastEscaped := -1
	for i := open + 1; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == q:
			lastEscaped = i + 1
			i++
		case s[i] == q:
			return i, true
		}
	}
	return lastEscaped, lastEscaped >= 0
}

var (
	singleEscapes = map[rune]rune{'\\': '\\', '\'': '\''}
	doubleEscapes = map[rune]rune{'\\': '\\', '\'': '\'', '"': '"',
		'a': '\a', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t', 'v': '\v'}
)

func unescape(s []rune, escapes map[rune]rune) string {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			if e, ok := escapes[s[i+1]]; ok {
				sb.WriteRune(e)
				i++
				continue
			}
		}
		sb.WriteRune(s[i])
	}
	return sb.String()
}

// expand replaces ${NAME} and ${NAME:-default} in v. lookup says whether a
// name is known, and its value; an unknown name takes the default, or "".
// python-dotenv expands every value this way, quoted or not.
func expand(v string, lookup func(string) (string, bool)) string {
	if !strings.Contains(v, "${") {
		return v
	}
	var sb strings.Builder
	for {
		i := strings.Index(v, "${")
		if i < 0 {
			break
		}
		name, def, end, skip := reference(v[i:])
		if end == 0 {
			if skip == 0 {
				break
			}
			sb.WriteString(v[:i+skip])
			v = v[i+skip:]
			continue
		}
		sb.WriteString(v[:i])
		if val, known := lookup(name); known {
			sb.WriteString(val)
		} else {
			sb.WriteString(def)
		}
		v = v[i+end:]
	}
	sb.WriteString(v)
	return sb.String()
}

// reference parses a reference at the start of s, which begins with "${",
// and says where it ends. When there is none, skip says how far no
// reference can start either (0: nowhere in s), which keeps a long run of
// "${" from being searched again and again.
func reference(s string) (name, def string, end, skip int) {
	rest := s[2:]
	n := strings.IndexAny(rest, "}:")
	if n < 0 {
		return "", "", 0, 0
	}
	name = rest[:n]
	if rest[n] == '}' {
		return name, "", 2 + n + 1, 0
	}
	if !strings.HasPrefix(rest[n:], ":-") {
		// Any reference starting before this colon stops at it too.
		return "", "", 0, 2 + n
	}
	d := strings.IndexByte(rest[n+2:], '}')
	if d < 0 {
		return "", "", 0, 0
	}
	return name, rest[n+2 : n+2+d], 2 + n + 2 + d + 1, 0
}

// isPySpace is Python's idea of white space in a str, which python-dotenv's
// patterns use: Go's, plus the four ASCII separators 0x1C to 0x1F.
func isPySpace(c rune) bool {
	return unicode.IsSpace(c) || 0x1c <= c && c <= 0x1f
}

// isInlineSpace is white space that does not end a line.
func isInlineSpace(c rune) bool {
	return c != '\n' && c != '\r' && isPySpace(c)
}

// validName: [A-Za-z_][A-Za-z0-9_.-]*
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z':
		case i > 0 && (c == '.' || c == '-' || '0' <= c && c <= '9'):
		default:
			return false
		}
	}
	return true
}
