package gateway

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// DefaultSystemInstall is where the Hermes installer puts the code when it
// runs as root.
const DefaultSystemInstall = "/usr/local/lib/hermes-agent"

// The gateway's defaults.
const (
	defaultPort = 3000
	defaultMode = "self-chat"
)

// Options say where to look. The zero value looks where the gateway would.
type Options struct {
	// HermesHome is the Hermes home. Empty: $HERMES_HOME, else
	// $HOME/.hermes.
	HermesHome string
	// HomeFrom says where HermesHome came from, for Install.HomeFrom (the
	// sidecar passes "--hermes-home"); empty is "the given home".
	HomeFrom string
	// Getenv is the sidecar's own environment; nil is os.Getenv. A
	// variable set to the empty string counts as unset, as it does for the
	// gateway.
	Getenv func(string) string
	// SystemInstall is the root install of Hermes; empty is
	// DefaultSystemInstall.
	SystemInstall string

	// writable decides whether the gateway could write in an install
	// tree; nil asks the kernel. Tests replace it, since root may write
	// anywhere.
	writable func(dir string) bool
}

// Looked is a place where the bridge script was looked for, and what was
// found there.
type Looked struct {
	Path    string
	Verdict string // e.g. "not found", "found, writable install tree: used"
}

// Problem is something in the Hermes home that could not be read or used.
type Problem struct {
	File    string // empty when it is not about a file (the sidecar's environment)
	Line    int    // 0 when it is about the whole file
	Message string
}

func (p Problem) Error() string {
	switch {
	case p.File == "":
		return p.Message
	case p.Line == 0:
		return p.File + ": " + p.Message
	}
	return p.File + ":" + strconv.Itoa(p.Line) + ": " + p.Message
}

// Var is a variable of the bridge's environment.
type Var struct {
	Name, Value string
	// From says where the value comes from: "config.yaml line 7
	// (whatsapp.allow_from)", ".env line 3", "default". It never holds the
	// value.
	From string
	// Secret: the name says it holds a credential; show the value to
	// nobody.
	Secret bool
}

// Shown says whether the value may be printed, as wa-sidecar doctor
// does: only for the bridge's own settings, whose names start with
// WHATSAPP_ or HERMES_, and then neither for a Secret nor for a value
// with a URL that names a user (socks5://user:password@host, or a token
// in the user's place). Any other
// variable of .env is the gateway's business and may hold a credential
// under a name that does not say so, such as DATABASE_URL; its name and
// From may be shown, its value not.
func (v Var) Shown() bool {
	if !strings.HasPrefix(v.Name, "WHATSAPP_") && !strings.HasPrefix(v.Name, "HERMES_") {
		return false
	}
	return !v.Secret && !hasURLUser(v.Value)
}

// hasURLUser says whether s holds a URL with user information (what comes
// before an @ in its authority), where credentials go.
func hasURLUser(s string) bool {
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			return false
		}
		s = s[i+3:]
		authority := s
		if end := strings.IndexAny(s, "/?# \t\n,;"); end >= 0 {
			authority = s[:end]
		}
		if strings.Contains(authority, "@") {
			return true
		}
	}
}

// Install is what the gateway would do with its WhatsApp bridge. Each
// value has a ...From field that says where it comes from.
type Install struct {
	Home     string
	HomeFrom string // Options.HomeFrom, "$HERMES_HOME" or "the default ~/.hermes"

	// Looked lists every place looked at for bridge.js, in order.
	Looked []Looked
	// Script is the absolute path of the bridge.js the gateway would run;
	// "" when there is none.
	Script, ScriptFrom string

	Port     int
	PortFrom string

	SessionDir, SessionFrom string

	Mode, ModeFrom string // self-chat or bot

	// SendReadReceipts is the gateway's send_read_receipts setting, which
	// newer gateways compare with a running bridge's before adopting it.
	SendReadReceipts bool
	ReadReceiptsFrom string

	// Env is what the gateway's bridge would have in its environment
	// beyond the sidecar's own. Names set in the sidecar's environment are
	// left out: they win. Then what the gateway sets for its bridge from
	// its platform settings in config.yaml (the reply prefix, the dm
	// policy, the allow list, the read receipts setting) and its media
	// directories win over .env; then come the .env entries; then the
	// variables the gateway makes of the whatsapp: block where they are
	// still unset; then the gateway's defaults. A dm policy or an allow
	// list taken from .env is normalized as the gateway does, and an
	// allow list with no entries is left out. It holds
	// every variable of .env, whatever it is for: print a value only when
	// Var.Shown says so.
	Env []Var

	Problems []Problem
}

// Load finds out what the gateway would do. It never fails: what it
// cannot read becomes a Problem, and the gateway's defaults apply.
func Load(o Options) Install {
	o = o.withDefaults()
	l := newLoader(o.Getenv)
	if l.findHome(o) {
		l.readDotEnv()
		l.readConfig()
	}
	return l.finish(o)
}

func (o Options) withDefaults() Options {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.SystemInstall == "" {
		o.SystemInstall = DefaultSystemInstall
	}
	if o.writable == nil {
		o.writable = dirWritable
	}
	return o
}

func newLoader(getenv func(string) string) *loader {
	l := &loader{getenv: getenv, cfg: &config{extra: map[string]setting{}}}
	l.in.Port, l.in.PortFrom = defaultPort, "default"
	l.in.Mode, l.in.ModeFrom = defaultMode, "default"
	l.in.ReadReceiptsFrom = "default"
	return l
}

// finish derives the rest from the files read.
func (l *loader) finish(o Options) Install {
	in := &l.in
	if in.Home != "" {
		in.findScript(l.cfg, o.SystemInstall, o.writable)
		l.port()
		l.session()
	}
	l.mode()
	l.readReceipts()
	l.env()

	// A setting read twice (the same key feeds a variable and the
	// gateway's own use) reports its problem once.
	problems := slices.Concat(l.envProblems, l.cfg.problems, in.Problems)
	in.Problems = nil
	for _, p := range problems {
		if !slices.Contains(in.Problems, p) {
			in.Problems = append(in.Problems, p)
		}
	}
	return *in
}

// loader holds what Load has read so far.
type loader struct {
	in          Install
	getenv      func(string) string
	envFile     string
	dotenv      []envEntry
	envProblems []Problem
	cfg         *config
}

const fromSidecar = "the sidecar's environment"

func (l *loader) findHome(o Options) bool {
	in := &l.in
	switch h := strings.TrimSpace(l.getenv("HERMES_HOME")); {
	case o.HermesHome != "":
		in.Home, in.HomeFrom = o.HermesHome, cmp.Or(o.HomeFrom, "the given home")
	case h != "":
		in.Home, in.HomeFrom = h, "$HERMES_HOME"
	case l.getenv("HOME") != "":
		in.Home, in.HomeFrom = filepath.Join(l.getenv("HOME"), ".hermes"), "the default ~/.hermes"
	default:
		in.problem(Problem{Message: "cannot find the Hermes home: no home was given, and neither HERMES_HOME nor HOME is set"})
		return false
	}
	if abs, err := filepath.Abs(in.Home); err == nil {
		in.Home = abs
	}
	return true
}

func (l *loader) readDotEnv() {
	l.envFile = filepath.Join(l.in.Home, ".env")
	data, err := readRegular(l.envFile, configLimit, followLinks|private)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		l.envProblems = append(l.envProblems, Problem{File: l.envFile, Message: err.Error()})
		return
	}
	entries, problems := parseDotEnv(data, l.getenv)
	l.dotenv = entries
	for _, p := range problems {
		l.envProblems = append(l.envProblems, Problem{File: l.envFile, Line: p.line, Message: p.msg})
	}
}

func (l *loader) readConfig() {
	file := filepath.Join(l.in.Home, "config.yaml")
	data, err := readRegular(file, configLimit, followLinks|private)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		l.cfg.file = file
	case err != nil:
		l.cfg.file = file
		l.cfg.problems = append(l.cfg.problems, Problem{File: file, Message: err.Error()})
	default:
		l.cfg = parseConfig(file, data)
	}
}

// dotenvEntry is the .env entry that sets name to a value, or nil.
func (l *loader) dotenvEntry(name string) *envEntry {
	for i := range l.dotenv {
		if e := &l.dotenv[i]; e.name == name && !e.bare && e.value != "" {
			return e
		}
	}
	return nil
}

// effective is a variable as the gateway sees it: the sidecar's
// environment first, then .env. problemAt is where a problem with its
// value belongs.
func (l *loader) effective(name string) (value, from string, problemAt Problem) {
	if v := l.getenv(name); v != "" {
		return v, fromSidecar, Problem{}
	}
	if e := l.dotenvEntry(name); e != nil {
		return e.value, fmt.Sprintf(".env line %d", e.line), Problem{File: l.envFile, Line: e.line}
	}
	return "", "", Problem{}
}

func (l *loader) port() {
	s, ok := l.cfg.extra["bridge_port"]
	if !ok {
		return
	}
	v, ok := l.cfg.value(s)
	if !ok {
		return
	}
	port := 0
	switch v.kind {
	case pyInt:
		if v.i.IsInt64() {
			port = int(v.i.Int64())
		}
	case pyStr:
		if allDigits(v.s) {
			port, _ = strconv.Atoi(v.s)
		}
	}
	if CheckPort(port) != nil {
		l.cfg.problem(s.line, "%s is %s; want a port number from 1 to %d; the default %d is used", s.path, describe(v, s), MaxPort, defaultPort)
		return
	}
	l.in.Port, l.in.PortFrom = port, s.from()
}

func allDigits(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// describe is a value for a problem message, short.
func describe(v pyValue, s setting) string {
	if !v.isScalar() {
		return kindText(s.node)
	}
	t := v.str()
	if len(t) > 40 {
		t = t[:40] + "..."
	}
	if v.kind == pyStr {
		return "the string " + strconv.Quote(t)
	}
	return t
}

func (l *loader) session() {
	in := &l.in
	if s, ok := l.cfg.extra["session_path"]; ok {
		if p, ok := l.cfg.path(s); ok {
			in.SessionFrom = s.from()
			if !filepath.IsAbs(p) {
				p = filepath.Join(in.Home, p)
				in.SessionFrom += ", relative to the Hermes home"
			}
			in.SessionDir = p
			return
		}
	}
	in.SessionDir, in.SessionFrom = layoutDir(in.Home, filepath.Join("platforms", "whatsapp", "session"), filepath.Join("whatsapp", "session"))
}

// layoutDir is the gateway's choice between a current location and the
// legacy one, which wins when it has content.
func layoutDir(home, current, legacy string) (dir, from string) {
	if old := filepath.Join(home, legacy); hasContent(old) {
		return old, "the legacy location, which has content"
	}
	return filepath.Join(home, current), "default"
}

func (l *loader) mode() {
	v, from, at := l.effective("WHATSAPP_MODE")
	switch v {
	case "":
	case "self-chat", "bot":
		l.in.Mode, l.in.ModeFrom = v, from
	default:
		at.Message = fmt.Sprintf("WHATSAPP_MODE is %q (from %s); want self-chat or bot; %s is used", v, from, defaultMode)
		l.in.problem(at)
	}
}

func (l *loader) readReceipts() {
	in := &l.in
	if s, ok := l.cfg.extra["send_read_receipts"]; ok {
		if v, ok := l.cfg.scalar(s); ok {
			in.SendReadReceipts, in.ReadReceiptsFrom = truthyText(v), s.from()
		}
	}
	// The bridge reports what the variable says, and the gateway adopts a
	// bridge only when that equals its setting. The gateway gives its own
	// bridge the setting over whatever its environment says, .env
	// included, and so does Env; but the sidecar's environment wins.
	if v := l.getenv("WHATSAPP_SEND_READ_RECEIPTS"); v != "" && truthyText(v) != in.SendReadReceipts {
		in.problem(Problem{Message: fmt.Sprintf("WHATSAPP_SEND_READ_RECEIPTS (from %s) makes the bridge report sendReadReceipts %t, "+
			"but the gateway's send_read_receipts is %t (%s): the gateway would not adopt the bridge; "+
			"remove the variable or change the setting", fromSidecar, truthyText(v), in.SendReadReceipts, in.ReadReceiptsFrom)})
	}
}

// truthyText is how the bridge and the gateway read a flag's text.
func truthyText(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// The bridge's media directories, in the current and the legacy layout.
var cacheDirs = []struct{ name, current, legacy string }{
	{"HERMES_IMAGE_CACHE_DIR", filepath.Join("cache", "images"), "image_cache"},
	{"HERMES_AUDIO_CACHE_DIR", filepath.Join("cache", "audio"), "audio_cache"},
	{"HERMES_DOCUMENT_CACHE_DIR", filepath.Join("cache", "documents"), "document_cache"},
}

// env works out the bridge's environment in two steps, as the gateway
// does. First the gateway's own environment: .env, then the variables
// made of the whatsapp: block where they are still unset. Then what the
// gateway sets for its bridge over that environment: the dm policy and
// the allow list when the platform's settings have them (else it
// normalizes what the environment says), the reply prefix, the read
// receipts setting and the media directories. The sidecar's environment
// wins over all of it.
func (l *loader) env() {
	in, cfg := &l.in, l.cfg
	b := envBuilder{getenv: l.getenv, index: map[string]int{}}
	for _, e := range l.dotenv {
		if !e.bare {
			b.add(Var{Name: e.name, Value: e.value, From: fmt.Sprintf(".env line %d", e.line)})
		}
	}
	for _, v := range cfg.blockVars() {
		b.add(v)
	}

	// The gateway passes the mode as --mode, from its environment.
	b.add(Var{Name: "WHATSAPP_MODE", Value: in.Mode, From: in.ModeFrom})
	b.set(Var{Name: "WHATSAPP_SEND_READ_RECEIPTS", Value: strconv.FormatBool(in.SendReadReceipts), From: in.ReadReceiptsFrom})
	l.dmPolicy(&b)
	l.allowedUsers(&b)
	if s, ok := cfg.extra["reply_prefix"]; ok && !isNull(s.node) {
		if t, ok := cfg.scalar(s); ok {
			// Set even when empty: the gateway tests it against None.
			b.set(Var{Name: "WHATSAPP_REPLY_PREFIX", Value: t, From: s.from()})
		}
	}
	if in.Home != "" {
		for _, c := range cacheDirs {
			dir, from := layoutDir(in.Home, c.current, c.legacy)
			b.set(Var{Name: c.name, Value: dir, From: from})
		}
	}
	in.Env = b.vars
}

// dmPolicy is the platform's dm_policy, else the environment's, else
// pairing; trimmed and lower-cased.
func (l *loader) dmPolicy(b *envBuilder) {
	const name = "WHATSAPP_DM_POLICY"
	cfg := l.cfg
	if s, ok := cfg.extra["dm_policy"]; ok {
		if v, ok := cfg.value(s); ok && v.truthy() {
			if t, ok := cfg.scalar(s); ok {
				b.set(Var{Name: name, Value: strings.ToLower(strings.TrimSpace(t)), From: s.from()})
				return
			}
		}
	}
	// Set but empty is not unset here: the gateway reads it with
	// os.getenv(name, "pairing").
	if v, ok := b.get(name); ok {
		v.Value = strings.ToLower(strings.TrimSpace(v.Value))
		b.set(v)
		return
	}
	b.add(Var{Name: name, Value: "pairing", From: "default"})
}

// allowedUsers is the platform's allow list, else the environment's read
// the same way (comma-separated, trimmed, without empty or repeated
// entries), sorted and joined; with no entries the gateway removes the
// variable.
func (l *loader) allowedUsers(b *envBuilder) {
	const name = "WHATSAPP_ALLOWED_USERS"
	if users, s, ok := l.cfg.allowList(); ok && len(users) > 0 {
		b.set(Var{Name: name, Value: strings.Join(users, ","), From: s.from()})
		return
	}
	v, ok := b.get(name)
	if !ok {
		return
	}
	// Empty or not, the gateway's own test is whether the list is.
	if users := splitList(v.Value); len(users) > 0 {
		v.Value = strings.Join(users, ",")
		b.set(v)
		return
	}
	b.remove(name)
}

// envBuilder gathers the bridge's variables. add is for a source that
// sets a variable only when it is unset: the first to set a name wins,
// except that an empty value counts as unset (the gateway tests a
// variable with `not os.getenv(name)`). set is for what the gateway sets
// over its environment. Neither touches a name the sidecar's environment
// sets, which wins.
type envBuilder struct {
	getenv func(string) string
	vars   []Var
	index  map[string]int
}

func (b *envBuilder) add(v Var) {
	if b.sidecars(v.Name) {
		return
	}
	if i, ok := b.index[v.Name]; ok {
		if b.vars[i].Value == "" {
			b.set(v)
		}
		return
	}
	b.set(v)
}

func (b *envBuilder) set(v Var) {
	if b.sidecars(v.Name) {
		return
	}
	v.Secret = isSecret(v.Name)
	if i, ok := b.index[v.Name]; ok {
		b.vars[i] = v
		return
	}
	b.index[v.Name] = len(b.vars)
	b.vars = append(b.vars, v)
}

// get is the variable the environment has so far, even when empty.
func (b *envBuilder) get(name string) (Var, bool) {
	i, ok := b.index[name]
	if !ok {
		return Var{}, false
	}
	return b.vars[i], true
}

func (b *envBuilder) remove(name string) {
	i, ok := b.index[name]
	if !ok {
		return
	}
	b.vars = slices.Delete(b.vars, i, i+1)
	delete(b.index, name)
	for j := i; j < len(b.vars); j++ {
		b.index[b.vars[j].Name] = j
	}
}

// sidecars says whether the name is the sidecar's: its own secret, or set
// in its environment.
func (b *envBuilder) sidecars(name string) bool {
	return sidecarOnly(name) || b.getenv(name) != ""
}

// sidecarOnly names are the sidecar's own secrets, never the bridge's:
// the control token and the push URL, which may hold the gateway's.
func sidecarOnly(name string) bool {
	switch name {
	case "WA_SIDECAR_TOKEN", "WA_SIDECAR_TOKEN_FILE", "WA_SIDECAR_GATEWAY_URL", "WA_SIDECAR_GATEWAY_URL_FILE":
		return true
	}
	return false
}

// isSecret says whether a variable's name marks a credential.
func isSecret(name string) bool {
	n := strings.ToUpper(name)
	for _, suffix := range []string{"_TOKEN", "_KEY", "_SECRET", "_PASSWORD", "_PASS"} {
		if strings.HasSuffix(n, suffix) {
			return true
		}
	}
	return strings.Contains(n, "API_KEY") || strings.Contains(n, "SECRET")
}

// BridgeEnv is the environment to give the bridge: base (the sidecar's own
// environment, as os.Environ gives it) without the sidecar's token
// variables, plus every variable of Env that base does not set. A name
// set to the empty string in base counts as unset, and is replaced.
func (in Install) BridgeEnv(base []string) []string {
	set := map[string]bool{}
	for _, kv := range base {
		if name, value, _ := strings.Cut(kv, "="); value != "" {
			set[name] = true
		}
	}
	adding := map[string]bool{}
	for _, v := range in.Env {
		if !set[v.Name] && !sidecarOnly(v.Name) {
			adding[v.Name] = true
		}
	}
	out := make([]string, 0, len(base)+len(adding))
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		if !sidecarOnly(name) && !adding[name] {
			out = append(out, kv)
		}
	}
	for _, v := range in.Env {
		if adding[v.Name] {
			out = append(out, v.Name+"="+v.Value)
			adding[v.Name] = false
		}
	}
	return out
}

// MakeCacheDirs makes the bridge's media directories named in Env, as the
// gateway does before it starts the bridge: media the bridge cannot write
// there is lost to the gateway.
func (in Install) MakeCacheDirs() error {
	var errs []error
	for _, v := range in.Env {
		for _, c := range cacheDirs {
			if v.Name == c.name && v.Value != "" {
				if err := os.MkdirAll(v.Value, 0o700); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", v.Name, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}
