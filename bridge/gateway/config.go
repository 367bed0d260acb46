package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Limits on walking config.yaml: aliases can make a small file stand for a
// huge tree, and merge keys can chain.
const (
	maxDepth = 64
	maxNodes = 100000
)

// setting is one value of config.yaml with where it was written.
type setting struct {
	node *yaml.Node // aliases resolved
	line int        // of its key: where a person looks for it
	path string     // dotted, as in platforms.whatsapp.extra.bridge_port
}

func (s setting) from() string {
	return fmt.Sprintf("config.yaml line %d (%s)", s.line, s.path)
}

// config is what the gateway takes from config.yaml for WhatsApp.
type config struct {
	file string
	// extra holds the platform settings: gateway.platforms.whatsapp.extra,
	// then platforms.whatsapp.extra, then the keys the gateway copies from
	// the platform block, each later source winning key by key.
	extra map[string]setting
	// block is the platform block whose keys become WHATSAPP_* variables:
	// the top-level whatsapp: mapping, or else the platform's block under
	// gateway.platforms or platforms. nil when there is none.
	block    map[string]setting
	problems []Problem
	nodes    int  // visited so far, against maxNodes
	tooDeep  bool // the walk hit a limit; said once
}

// bridgedKeys are the keys the gateway copies from the platform block into
// the platform settings (among others that do not concern WhatsApp).
var bridgedKeys = []string{"reply_prefix", "dm_policy", "allow_from", "group_policy",
	"group_allow_from", "require_mention", "mention_patterns"}

// parseConfig reads the bytes of config.yaml. What it cannot use becomes a
// problem and is left out; a file that cannot be parsed counts as empty.
func parseConfig(file string, data []byte) *config {
	c := &config{file: file, extra: map[string]setting{}}
	root, ok := c.decode(data)
	if !ok {
		return c
	}
	root = c.resolve(root)
	if root == nil || isNull(root) {
		return c
	}
	if root.Kind != yaml.MappingNode {
		c.problem(root.Line, "the top level is %s, not a mapping; the gateway cannot use the file, and it is ignored", kindText(root))
		return c
	}
	gateway := c.mapping(root, "gateway", "gateway")
	gwPlatforms := c.mapping(gateway, "platforms", "gateway.platforms")
	gwBlock := c.mapping(gwPlatforms, "whatsapp", "gateway.platforms.whatsapp")
	platforms := c.mapping(root, "platforms", "platforms")
	plBlock := c.mapping(platforms, "whatsapp", "platforms.whatsapp")
	for _, src := range []struct {
		block *yaml.Node
		path  string
	}{{gwBlock, "gateway.platforms.whatsapp"}, {plBlock, "platforms.whatsapp"}} {
		extra := c.extraOf(src.block, src.path+".extra")
		for k, s := range c.settings(extra, src.path+".extra") {
			c.extra[k] = s
		}
	}
	switch top := c.mapping(root, "whatsapp", "whatsapp"); {
	case top != nil:
		c.block = c.settings(top, "whatsapp")
	case gwBlock != nil:
		c.block = c.settings(gwBlock, "gateway.platforms.whatsapp")
	case plBlock != nil:
		c.block = c.settings(plBlock, "platforms.whatsapp")
	}
	for _, k := range bridgedKeys {
		if s, ok := c.block[k]; ok {
			c.extra[k] = s
		}
	}
	return c
}

var yamlLine = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^yaml: line (\d+): `) })

// decode parses the one document the gateway expects. The YAML library is
// not trusted never to panic on hostile input; a panic is a problem too.
func (c *config) decode(data []byte) (root *yaml.Node, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			c.problem(0, "cannot be parsed (the YAML parser failed: %v); it is ignored", p)
			root, ok = nil, false
		}
	}()
	// The gateway reads the file as UTF-8 text and gives up on anything
	// else; the YAML library would read UTF-16 too.
	if !utf8.Valid(data) {
		c.problem(0, "is not UTF-8 text; the gateway cannot read it, and it is ignored")
		return nil, false
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, false
	} else if err != nil {
		c.syntaxProblem(data, err)
		return nil, false
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		c.problem(next.Line, "holds more than one YAML document; the gateway reads none of it, and it is ignored")
		return nil, false
	} else if !errors.Is(err, io.EOF) {
		c.syntaxProblem(data, err)
		return nil, false
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, false
	}
	return doc.Content[0], true
}

func (c *config) syntaxProblem(data []byte, err error) {
	msg := err.Error()
	line := 0
	if m := yamlLine().FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	// The parser's line can point one past the end when the file ends
	// inside a construct; keep it on a line that exists.
	line = min(line, lineCount(data))
	c.problem(line, "is not valid YAML (%s); the gateway cannot use the file, and it is ignored", msg)
}

// lineCount is the number of lines of data as YAML counts them.
func lineCount(data []byte) int {
	n := 1
	for i := 0; i < len(data); i++ {
		switch {
		case data[i] == '\n':
			n++
		case data[i] == '\r' && (i+1 >= len(data) || data[i+1] != '\n'):
			n++
		case data[i] == 0xc2 && i+1 < len(data) && data[i+1] == 0x85: // NEL
			n++
		case data[i] == 0xe2 && i+2 < len(data) && data[i+1] == 0x80 && (data[i+2] == 0xa8 || data[i+2] == 0xa9): // LS, PS
			n++
		}
	}
	return n
}

func (c *config) problem(line int, format string, args ...any) {
	c.problems = append(c.problems, Problem{File: c.file, Line: line, Message: fmt.Sprintf(format, args...)})
}

// resolve follows an alias to its node; nil when the walk is too long.
func (c *config) resolve(n *yaml.Node) *yaml.Node {
	for hops := 0; n != nil && n.Kind == yaml.AliasNode; hops++ {
		if hops > maxDepth {
			return nil
		}
		n = n.Alias
	}
	return n
}

// visit counts a node against the walking budget and says whether the
// walk may go on.
func (c *config) visit(n *yaml.Node, depth int) bool {
	c.nodes++
	if c.nodes <= maxNodes && depth <= maxDepth {
		return true
	}
	if !c.tooDeep {
		c.tooDeep = true
		c.problem(n.Line, "nests too deeply or expands to too much (through aliases?); what lies below is ignored")
	}
	return false
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && pyScalar(n).kind == pyNone
}

func kindText(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch pyScalar(n).kind {
		case pyNone:
			return "empty"
		case pyBool:
			return "a boolean"
		case pyInt, pyFloat:
			return "a number"
		}
		return "a string"
	}
	return "not a value"
}

// pair is a key and its value in a mapping.
type pair struct {
	key, value *yaml.Node
}

// pairs lists a mapping's entries as PyYAML builds the mapping: the
// entries of merge keys (<<) first, then its own, so that a later entry
// with the same key wins.
func (c *config) pairs(m *yaml.Node, depth int) []pair {
	if !c.visit(m, depth) {
		return nil
	}
	var merged, own []pair
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			merged = append(merged, c.mergePairs(v, depth+1)...)
			continue
		}
		own = append(own, pair{k, v})
	}
	return append(merged, own...)
}

// mergePairs are the entries a merge key brings: those of one mapping, or
// of a list of mappings where an earlier mapping wins over a later one.
// They count against the walking budget, since aliases can multiply them.
func (c *config) mergePairs(v *yaml.Node, depth int) []pair {
	v = c.resolve(v)
	switch {
	case v == nil:
		return nil
	case v.Kind == yaml.MappingNode:
		out := c.pairs(v, depth)
		c.nodes += len(out)
		return out
	case v.Kind == yaml.SequenceNode:
		var out []pair
		for i := len(v.Content) - 1; i >= 0; i-- {
			m := c.resolve(v.Content[i])
			if m == nil || m.Kind != yaml.MappingNode {
				c.problem(v.Content[i].Line, "a merge key (<<) lists something that is not a mapping; it is ignored")
				continue
			}
			sub := c.pairs(m, depth+1)
			c.nodes += len(sub)
			out = append(out, sub...)
		}
		return out
	}
	c.problem(v.Line, "a merge key (<<) refers to %s, not a mapping; it is ignored", kindText(v))
	return nil
}

// keyName is a key's text when PyYAML would make a string of it.
func keyName(k *yaml.Node) (string, bool) {
	if k == nil || k.Kind != yaml.ScalarNode {
		return "", false
	}
	v := pyScalar(k)
	return v.s, v.kind == pyStr
}

// settings lists the entries of mapping m (nil: none) whose keys are
// strings, under the dotted prefix.
func (c *config) settings(m *yaml.Node, prefix string) map[string]setting {
	out := map[string]setting{}
	if m == nil {
		return out
	}
	for _, p := range c.pairs(m, 0) {
		name, ok := keyName(c.resolve(p.key))
		if !ok {
			continue
		}
		v := c.resolve(p.value)
		if v == nil {
			continue
		}
		out[name] = setting{node: v, line: p.key.Line, path: prefix + "." + name}
	}
	return out
}

// lookup is the value of key in mapping m, and the line of the key.
func (c *config) lookup(m *yaml.Node, key string) (*yaml.Node, int) {
	if m == nil {
		return nil, 0
	}
	var found *yaml.Node
	line := 0
	for _, p := range c.pairs(m, 0) {
		if name, ok := keyName(c.resolve(p.key)); ok && name == key {
			found, line = c.resolve(p.value), p.key.Line
		}
	}
	return found, line
}

// mapping is the mapping under key in m. An empty value counts as absent,
// as it does for the gateway; any other value that is not a mapping is a
// problem.
func (c *config) mapping(m *yaml.Node, key, path string) *yaml.Node {
	v, line := c.lookup(m, key)
	switch {
	case v == nil || isNull(v):
		return nil
	case v.Kind != yaml.MappingNode:
		c.problem(line, "%s is %s, not a mapping; it is ignored", path, kindText(v))
		return nil
	}
	return v
}

// extraOf is the extra mapping of a platform block. The gateway merges it
// into a dict, which fails for anything else, even an empty value, and
// makes it drop the whole file; here only the block is left out.
func (c *config) extraOf(block *yaml.Node, path string) *yaml.Node {
	v, line := c.lookup(block, "extra")
	switch {
	case v == nil:
		return nil
	case v.Kind != yaml.MappingNode:
		c.problem(line, "%s is %s, not a mapping; it is ignored here, but the gateway fails on it and "+
			"ignores all of config.yaml: make it a mapping or remove it", path, kindText(v))
		return nil
	}
	return v
}

// value is a setting as PyYAML loads it; false (after a problem) when it
// is too large to walk.
func (c *config) value(s setting) (pyValue, bool) {
	return c.toPy(s.node, 0)
}

func (c *config) toPy(n *yaml.Node, depth int) (pyValue, bool) {
	n = c.resolve(n)
	if n == nil || !c.visit(n, depth) {
		return pyValue{}, false
	}
	switch n.Kind {
	case yaml.ScalarNode:
		return pyScalar(n), true
	case yaml.SequenceNode:
		v := pyValue{kind: pyList}
		for _, item := range n.Content {
			iv, ok := c.toPy(item, depth+1)
			if !ok {
				return pyValue{}, false
			}
			v.items = append(v.items, iv)
		}
		return v, true
	case yaml.MappingNode:
		v := pyValue{kind: pyDict}
		index := map[string]int{}
		for _, p := range c.pairs(n, depth+1) {
			k, ok := c.toPy(p.key, depth+1)
			if !ok {
				return pyValue{}, false
			}
			val, ok := c.toPy(p.value, depth+1)
			if !ok {
				return pyValue{}, false
			}
			id := k.dictKey()
			if i, dup := index[id]; dup {
				v.items[i+1] = val
				continue
			}
			index[id] = len(v.items)
			v.items = append(v.items, k, val)
		}
		return v, true
	}
	return pyValue{}, false
}

// scalar is str() of a setting that must be a single value.
func (c *config) scalar(s setting) (string, bool) {
	v, ok := c.value(s)
	if !ok {
		return "", false
	}
	if !v.isScalar() {
		c.problem(s.line, "%s is %s, not a single value; it is ignored", s.path, kindText(s.node))
		return "", false
	}
	return v.str(), true
}

// path is a setting that must be a non-empty string.
func (c *config) path(s setting) (string, bool) {
	v, ok := c.value(s)
	if !ok {
		return "", false
	}
	if v.kind != pyStr || v.s == "" {
		what := kindText(s.node)
		if v.kind == pyStr {
			what = "an empty string"
		}
		c.problem(s.line, "%s is %s, not a path; it is ignored", s.path, what)
		return "", false
	}
	return v.s, true
}

// list is a setting that may be a list of single values or one value:
// its items as str() makes them, and whether it is a list.
func (c *config) list(s setting) (items []string, isList, ok bool) {
	v, ok := c.value(s)
	if !ok {
		return nil, false, false
	}
	switch v.kind {
	case pyDict:
		c.problem(s.line, "%s is a mapping, not a list or a single value; it is ignored", s.path)
		return nil, false, false
	case pyList:
		for i, item := range v.items {
			if !item.isScalar() {
				c.problem(s.node.Content[i].Line, "%s holds %s, not a single value; it is ignored", s.path, kindText(c.resolve(s.node.Content[i])))
				return nil, false, false
			}
			items = append(items, item.str())
		}
		return items, true, true
	}
	return []string{v.str()}, false, true
}

// blockVars are the variables the gateway makes of the platform block,
// each to be used only when the variable is not set already.
func (c *config) blockVars() []Var {
	var out []Var
	add := func(name string, s setting, value string) {
		out = append(out, Var{Name: name, Value: value, From: s.from()})
	}
	lower := func(key, name string) {
		if s, ok := c.block[key]; ok {
			if v, ok := c.scalar(s); ok {
				add(name, s, strings.ToLower(v))
			}
		}
	}
	joined := func(key, name string) {
		s, ok := c.block[key]
		if !ok || isNull(s.node) {
			return
		}
		if items, _, ok := c.list(s); ok {
			add(name, s, strings.Join(items, ","))
		}
	}
	lower("dm_policy", "WHATSAPP_DM_POLICY")
	joined("allow_from", "WHATSAPP_ALLOWED_USERS")
	lower("group_policy", "WHATSAPP_GROUP_POLICY")
	joined("group_allow_from", "WHATSAPP_GROUP_ALLOWED_USERS")
	lower("require_mention", "WHATSAPP_REQUIRE_MENTION")
	if s, ok := c.block["mention_patterns"]; ok {
		if v, ok := c.value(s); ok {
			add("WHATSAPP_MENTION_PATTERNS", s, v.json())
		}
	}
	joined("free_response_chats", "WHATSAPP_FREE_RESPONSE_CHATS")
	return out
}

// allowList is the adapter's allow list from the platform settings:
// allow_from, or allowFrom when allow_from is empty; a list, or a string of
// comma-separated entries; trimmed, without empty entries, sorted.
func (c *config) allowList() ([]string, setting, bool) {
	for _, key := range []string{"allow_from", "allowFrom"} {
		s, ok := c.extra[key]
		if !ok {
			continue
		}
		v, ok := c.value(s)
		if !ok || !v.truthy() {
			continue
		}
		items, isList, ok := c.list(s)
		if !ok {
			return nil, s, false
		}
		if !isList {
			return splitList(items[0]), s, true
		}
		return cleanList(items), s, true
	}
	return nil, setting{}, false
}

// splitList is an allow list written as text: comma-separated entries,
// cleaned as cleanList does.
func splitList(s string) []string {
	return cleanList(strings.Split(s, ","))
}

// cleanList is a set of entries as the adapter makes it: trimmed, without
// empty or repeated ones, sorted.
func cleanList(items []string) []string {
	var out []string
	for _, it := range items {
		if it = strings.TrimSpace(it); it != "" && !slices.Contains(out, it) {
			out = append(out, it)
		}
	}
	slices.Sort(out)
	return out
}
