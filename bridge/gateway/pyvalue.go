package gateway

import (
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unicode/utf16"

	"go.yaml.in/yaml/v3"
)

// The gateway reads config.yaml with PyYAML, which follows YAML 1.1, and
// turns what it gets into text with Python's str() and json.dumps(). The
// YAML library here follows YAML 1.2, where "yes" is a string and 0123 is
// a decimal; so scalars are typed again here the way PyYAML types them,
// and written out the way Python writes them, so that a variable holds
// the text the gateway would put there.

// pyKind is the Python type PyYAML builds for a node.
type pyKind uint8

const (
	pyNone pyKind = iota
	pyBool
	pyInt
	pyFloat
	pyStr
	pyList
	pyDict
)

// pyValue is a value as PyYAML loads it.
type pyValue struct {
	kind  pyKind
	b     bool
	i     *big.Int
	f     float64
	s     string
	items []pyValue // a list's items; a dict's keys and values, alternating
}

// PyYAML's implicit resolvers for plain scalars (resolver.py), tried float
// first, then int, as PyYAML does. They are compiled on first use: every
// start of the sidecar would otherwise pay for them, also when there is no
// config.yaml to read.
var (
	pyBoolPattern = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$`)
	})
	pyNullPattern  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(?:~|null|Null|NULL|)$`) })
	pyFloatPattern = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?` +
			`|\.[0-9_]+(?:[eE][-+][0-9]+)?` +
			`|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*` +
			`|[-+]?\.(?:inf|Inf|INF)` +
			`|\.(?:nan|NaN|NAN))$`)
	})
	pyIntPattern = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^(?:[-+]?0b[0-1_]+` +
			`|[-+]?0[0-7_]+` +
			`|[-+]?(?:0|[1-9][0-9_]*)` +
			`|[-+]?0x[0-9a-fA-F_]+` +
			`|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$`)
	})
)

// pyScalar types a scalar node as PyYAML would. Values PyYAML itself could
// not build (an explicit !!int that is no number) stay strings.
func pyScalar(n *yaml.Node) pyValue {
	text := n.Value
	str := pyValue{kind: pyStr, s: text}
	tag := ""
	switch {
	case n.Style&yaml.TaggedStyle != 0:
		tag = n.Tag
	case n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		return str
	}
	switch {
	case tag == "!!null" || tag == "" && pyNullPattern().MatchString(text):
		return pyValue{kind: pyNone}
	case tag == "!!bool" || tag == "" && pyBoolPattern().MatchString(text):
		switch strings.ToLower(text) {
		case "yes", "true", "on":
			return pyValue{kind: pyBool, b: true}
		case "no", "false", "off":
			return pyValue{kind: pyBool, b: false}
		}
	case tag == "!!float" || tag == "" && pyFloatPattern().MatchString(text):
		if f, ok := parsePyFloat(text); ok {
			return pyValue{kind: pyFloat, f: f}
		}
	case tag == "!!int" || tag == "" && pyIntPattern().MatchString(text):
		if i, ok := parsePyInt(text); ok {
			return pyValue{kind: pyInt, i: i}
		}
	}
	return str
}

func parsePyInt(text string) (*big.Int, bool) {
	v := strings.ReplaceAll(text, "_", "")
	neg := strings.HasPrefix(v, "-")
	v = strings.TrimLeft(v, "+-")
	i := new(big.Int)
	var ok bool
	switch {
	case v == "0":
		ok = true
	case strings.HasPrefix(v, "0b"):
		_, ok = i.SetString(v[2:], 2)
	case strings.HasPrefix(v, "0x"):
		_, ok = i.SetString(v[2:], 16)
	case strings.HasPrefix(v, "0"):
		_, ok = i.SetString(v, 8)
	case strings.Contains(v, ":"):
		ok = true
		for _, part := range strings.Split(v, ":") {
			d, good := new(big.Int).SetString(part, 10)
			if !good {
				return nil, false
			}
			i.Mul(i, big.NewInt(60)).Add(i, d)
		}
	default:
		_, ok = i.SetString(v, 10)
	}
	if !ok {
		return nil, false
	}
	if neg {
		i.Neg(i)
	}
	return i, true
}

func parsePyFloat(text string) (float64, bool) {
	v := strings.ToLower(strings.ReplaceAll(text, "_", ""))
	sign := 1.0
	if strings.HasPrefix(v, "-") {
		sign = -1
	}
	v = strings.TrimLeft(v, "+-")
	switch {
	case v == ".inf":
		return sign * math.Inf(1), true
	case v == ".nan":
		return math.NaN(), true
	case strings.Contains(v, ":"):
		f := 0.0
		for _, part := range strings.Split(v, ":") {
			d, err := strconv.ParseFloat(part, 64)
			if err != nil {
				return 0, false
			}
			f = f*60 + d
		}
		return sign * f, true
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, false
	}
	return sign * f, true
}

// isScalar says whether str() of v is a plain value rather than the
// repr of a container.
func (v pyValue) isScalar() bool { return v.kind != pyList && v.kind != pyDict }

// str is Python's str() of a scalar.
func (v pyValue) str() string {
	switch v.kind {
	case pyNone:
		return "None"
	case pyBool:
		if v.b {
			return "True"
		}
		return "False"
	case pyInt:
		return v.i.String()
	case pyFloat:
		return pyFloatRepr(v.f, false)
	default:
		return v.s
	}
}

// truthy is Python's bool() of v.
func (v pyValue) truthy() bool {
	switch v.kind {
	case pyNone:
		return false
	case pyBool:
		return v.b
	case pyInt:
		return v.i.Sign() != 0
	case pyFloat:
		return v.f != 0
	case pyStr:
		return v.s != ""
	default:
		return len(v.items) > 0
	}
}

// pyFloatRepr is Python's repr() of a float (json.dumps differs only for
// the values that are not finite).
func pyFloatRepr(f float64, forJSON bool) string {
	switch {
	case math.IsNaN(f):
		if forJSON {
			return "NaN"
		}
		return "nan"
	case math.IsInf(f, 1):
		if forJSON {
			return "Infinity"
		}
		return "inf"
	case math.IsInf(f, -1):
		if forJSON {
			return "-Infinity"
		}
		return "-inf"
	case f == 0:
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	// The shortest digits that round-trip, placed as Python places them:
	// positional from 1e-4 up to 1e16, else with an exponent.
	e := strconv.FormatFloat(f, 'e', -1, 64)
	sign := ""
	if e[0] == '-' {
		sign, e = "-", e[1:]
	}
	mant, expText, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	exp, _ := strconv.Atoi(expText)
	if exp < -4 || exp >= 16 {
		m := digits[:1]
		if len(digits) > 1 {
			m += "." + digits[1:]
		}
		es := "+"
		if exp < 0 {
			es, exp = "-", -exp
		}
		return sign + m + "e" + es + leftPad(strconv.Itoa(exp), 2)
	}
	if exp < 0 {
		return sign + "0." + strings.Repeat("0", -exp-1) + digits
	}
	if len(digits) <= exp+1 {
		return sign + digits + strings.Repeat("0", exp+1-len(digits)) + ".0"
	}
	return sign + digits[:exp+1] + "." + digits[exp+1:]
}

func leftPad(s string, n int) string {
	if len(s) >= n {
		return s
	}
	return strings.Repeat("0", n-len(s)) + s
}

// json is Python's json.dumps(v) with its defaults: ", " and ": " between
// items, every character outside printable ASCII escaped.
func (v pyValue) json() string {
	var sb strings.Builder
	v.writeJSON(&sb)
	return sb.String()
}

func (v pyValue) writeJSON(sb *strings.Builder) {
	switch v.kind {
	case pyNone:
		sb.WriteString("null")
	case pyBool:
		if v.b {
			sb.WriteString("true")
		} else {
			sb.WriteString("false")
		}
	case pyInt:
		sb.WriteString(v.i.String())
	case pyFloat:
		sb.WriteString(pyFloatRepr(v.f, true))
	case pyStr:
		writeJSONString(sb, v.s)
	case pyList:
		sb.WriteByte('[')
		for i, item := range v.items {
			if i > 0 {
				sb.WriteString(", ")
			}
			item.writeJSON(sb)
		}
		sb.WriteByte(']')
	case pyDict:
		sb.WriteByte('{')
		for i := 0; i+1 < len(v.items); i += 2 {
			if i > 0 {
				sb.WriteString(", ")
			}
			writeJSONString(sb, v.items[i].jsonKey())
			sb.WriteString(": ")
			v.items[i+1].writeJSON(sb)
		}
		sb.WriteByte('}')
	}
}

// dictKey identifies v as a key of a Python dict, where True, 1 and 1.0
// are the same key.
func (v pyValue) dictKey() string {
	switch v.kind {
	case pyNone:
		return "none"
	case pyBool:
		if v.b {
			return "int 1"
		}
		return "int 0"
	case pyInt:
		return "int " + v.i.String()
	case pyFloat:
		if !math.IsInf(v.f, 0) && !math.IsNaN(v.f) && v.f == math.Trunc(v.f) {
			i, _ := new(big.Float).SetFloat64(v.f).Int(nil)
			return "int " + i.String()
		}
		return "float " + pyFloatRepr(v.f, false)
	case pyStr:
		return "str " + v.s
	}
	return "unhashable"
}

// jsonKey is how json.dumps turns a dict key into a string.
func (v pyValue) jsonKey() string {
	switch v.kind {
	case pyNone:
		return "null"
	case pyBool:
		if v.b {
			return "true"
		}
		return "false"
	case pyFloat:
		return pyFloatRepr(v.f, true)
	default:
		return v.str()
	}
}

func writeJSONString(sb *strings.Builder, s string) {
	sb.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			sb.WriteString(`\"`)
		case r == '\\':
			sb.WriteString(`\\`)
		case r == '\n':
			sb.WriteString(`\n`)
		case r == '\r':
			sb.WriteString(`\r`)
		case r == '\t':
			sb.WriteString(`\t`)
		case r == '\b':
			sb.WriteString(`\b`)
		case r == '\f':
			sb.WriteString(`\f`)
		case r >= 0x20 && r <= 0x7e:
			sb.WriteRune(r)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			writeUnicodeEscape(sb, r1)
			writeUnicodeEscape(sb, r2)
		default:
			writeUnicodeEscape(sb, r)
		}
	}
	sb.WriteByte('"')
}

func writeUnicodeEscape(sb *strings.Builder, r rune) {
	sb.WriteString(`\u`)
	sb.WriteString(leftPad(strconv.FormatInt(int64(r), 16), 4))
}
