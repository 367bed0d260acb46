package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/urfave/cli/v2"
	"go.yaml.in/yaml/v3"

	"github.com/wa-sidecar/wa-sidecar/integrations/hermes"
	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
	"github.com/wa-sidecar/wa-sidecar/internal/unit"
)

func installHermesPluginCommand() *cli.Command {
	return &cli.Command{
		Name:  "install-hermes-plugin",
		Usage: "install the Hermes gateway plugin that leaves the WhatsApp bridge to wa-sidecar, and enable it",
		Description: "Writes the plugin to $HERMES_HOME/plugins/" + hermes.PluginName + "/ and adds it to plugins.enabled in\n" +
			"$HERMES_HOME/config.yaml, keeping the file's comments and layout. With the plugin, the gateway's\n" +
			"WhatsApp platform never starts, signals or replaces a bridge: it follows the sidecar's status feed.\n" +
			"Restart the gateway afterwards. When config.yaml cannot be edited safely, it prints the lines to add\n" +
			"and exits 1. It refuses to replace plugin files that differ (another version's) unless --force is\n" +
			"given, as after updating wa-sidecar. It checks the gateway's code (--hermes-source, else the installed\n" +
			"Hermes) for what the plugin relies on, and refuses when that is missing unless\n" +
			"--ignore-interface-check is given.\n\n" +
			"Examples:\n" +
			"   wa-sidecar install-hermes-plugin --print\n" +
			"   wa-sidecar install-hermes-plugin\n" +
			"   wa-sidecar install-hermes-plugin --force     # after updating wa-sidecar\n" +
			"   wa-sidecar install-hermes-plugin --hermes-home ~/.hermes/profiles/work",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "print", Usage: "only show the files and the lines of config.yaml it would change; write nothing"},
			&cli.BoolFlag{Name: "force", Usage: "replace plugin files that differ (the upgrade after updating wa-sidecar)"},
			&cli.BoolFlag{Name: "ignore-interface-check", Usage: "install even for a gateway whose code lacks what the plugin uses (its WhatsApp platform then fails to connect, saying why)"},
			&cli.StringFlag{Name: "hermes-home", Usage: "the Hermes home (default $HERMES_HOME, else ~/.hermes)"},
			&cli.StringFlag{Name: "hermes-source", Usage: "the gateway's code to check (default <home>/hermes-agent, for a profile the root home's, or /usr/local/lib/hermes-agent)"},
		},
		OnUsageError: onUsageError,
		Action:       installHermesPluginAction,
	}
}

// knownHermes are the gateway versions the plugin was tested against.
var knownHermes = []string{"0.18.2"}

// hermesInterface is what the plugin uses of the gateway, file by file, as
// text that must appear in it. The plugin checks the same again, for real,
// when the gateway loads it.
var hermesInterface = []struct{ file, want string }{
	{"plugins/platforms/whatsapp/adapter.py", "class WhatsAppAdapter("},
	{"plugins/platforms/whatsapp/adapter.py", "async def _poll_messages(self)"},
	{"plugins/platforms/whatsapp/adapter.py", "async def connect(self, *, is_reconnect"},
	{"plugins/platforms/whatsapp/adapter.py", "self._bridge_port"},
	{"plugins/platforms/whatsapp/adapter.py", "self._http_session"},
	{"plugins/platforms/whatsapp/adapter.py", "self._poll_task"},
	{"plugins/platforms/whatsapp/adapter.py", "def register(ctx)"},
	{"gateway/platforms/base.py", "def _mark_connected(self)"},
	{"gateway/platforms/base.py", "def _mark_disconnected(self)"},
	{"gateway/platforms/base.py", "def _set_fatal_error(self, code"},
	{"gateway/platforms/base.py", "def _write_runtime_status_safe(self"},
	{"gateway/platforms/base.py", "def _acquire_platform_lock(self"},
	{"gateway/platforms/base.py", "def _release_platform_lock(self)"},
	{"hermes_cli/plugins.py", "def register_platform("},
}

// The command's patterns are compiled on first use, so that run, which
// never needs them, does not compile them at each start.
var pyprojectVersion = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?m)^version\s*=\s*"([^"]+)"`) })

// checkHermes reports the gateway's version (empty when unknown) and what of
// hermesInterface its code at dir lacks.
func checkHermes(dir string) (version string, missing []string, err error) {
	if b, err := os.ReadFile(filepath.Join(dir, "pyproject.toml")); err == nil {
		if m := pyprojectVersion().FindSubmatch(b); m != nil {
			version = string(m[1])
		}
	}
	texts := map[string]string{}
	for _, c := range hermesInterface {
		t, ok := texts[c.file]
		if !ok {
			b, err := os.ReadFile(filepath.Join(dir, c.file))
			if err != nil {
				return version, nil, fmt.Errorf("the gateway's code at %s: %w", dir, err)
			}
			t = string(b)
			texts[c.file] = t
		}
		if !strings.Contains(t, c.want) {
			missing = append(missing, c.file+": "+c.want)
		}
	}
	return version, missing, nil
}

// hermesSourceDirs are the places the gateway's code may be for home, in
// the order they are tried: as root the system-wide install first; the
// home's own hermes-agent; for a profile (<root>/profiles/<name>) the root
// home's; then the system-wide install.
func hermesSourceDirs(home string, root bool) []string {
	const system = "/usr/local/lib/hermes-agent"
	var dirs []string
	if root {
		dirs = append(dirs, system)
	}
	dirs = append(dirs, filepath.Join(home, "hermes-agent"))
	if clean := filepath.Clean(home); filepath.Base(filepath.Dir(clean)) == "profiles" {
		dirs = append(dirs, filepath.Join(filepath.Dir(filepath.Dir(clean)), "hermes-agent"))
	}
	if !root {
		dirs = append(dirs, system)
	}
	return dirs
}

// hermesSourceDir returns the first of hermesSourceDirs that holds the
// gateway's code, else the home's own hermes-agent (for the message).
func hermesSourceDir(home string) string {
	for _, d := range hermesSourceDirs(home, os.Geteuid() == 0) {
		if fi, err := os.Stat(filepath.Join(d, "gateway")); err == nil && fi.IsDir() {
			return d
		}
	}
	return filepath.Join(home, "hermes-agent")
}

func installHermesPluginAction(c *cli.Context) error {
	if c.Args().Present() {
		return usageError("install-hermes-plugin takes no arguments, got %q", c.Args().First())
	}
	out, errw := c.App.Writer, c.App.ErrWriter
	home := c.String("hermes-home")
	if home == "" {
		home = os.Getenv("HERMES_HOME")
	}
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return usageError("no home directory (%v); pass --hermes-home", err)
		}
		home = filepath.Join(h, ".hermes")
	}
	home = expandHome(home)
	force, printOnly, ignoreIface := c.Bool("force"), c.Bool("print"), c.Bool("ignore-interface-check")

	src := c.String("hermes-source")
	explicitSrc := src != ""
	if !explicitSrc {
		src = hermesSourceDir(home)
	}
	ver, missing, err := checkHermes(expandHome(src))
	switch {
	case err != nil && explicitSrc:
		return cli.Exit("wa-sidecar: "+err.Error(), exitError)
	case err != nil:
		fmt.Fprintf(errw, "wa-sidecar: cannot check the gateway's code (%v); pass --hermes-source. The plugin checks it again when the gateway loads it; if it does not fit, WhatsApp fails to connect and says why.\n", err)
	case len(missing) > 0 && !ignoreIface:
		return cli.Exit(fmt.Sprintf("wa-sidecar: the gateway at %s (version %s) lacks what the plugin relies on:\n  %s\nThis is not a gateway version the plugin knows; update wa-sidecar, or pass --ignore-interface-check to install anyway (the gateway's WhatsApp platform would then fail to connect, saying why, until the plugin is updated or disabled).",
			src, orUnknown(ver), strings.Join(missing, "\n  ")), exitError)
	case len(missing) > 0:
		fmt.Fprintf(errw, "wa-sidecar: the gateway at %s lacks %s; installing anyway (--ignore-interface-check)\n", src, strings.Join(missing, ", "))
	case !slices.Contains(knownHermes, ver):
		fmt.Fprintf(errw, "wa-sidecar: Hermes %s is not a version the plugin was tested with (%s), but its code has everything the plugin uses\n", orUnknown(ver), strings.Join(knownHermes, ", "))
	}

	dir := filepath.Join(home, "plugins", hermes.PluginName)
	files, err := pluginFiles()
	if err != nil {
		return cli.Exit("wa-sidecar: "+err.Error(), exitError)
	}
	cfgPath := filepath.Join(home, "config.yaml")
	oldCfg, _ := os.ReadFile(cfgPath) // for --print's diff; enablePlugin reads it again, with its checks
	newCfg, cfgChanged, cfgErr := enablePlugin(cfgPath, hermes.PluginName)

	if printOnly {
		for _, f := range files {
			fmt.Fprintf(out, "# %s\n%s\n", filepath.Join(dir, f.name), f.data)
		}
		switch {
		case cfgErr != nil:
			fmt.Fprintf(out, "# %s: cannot be edited safely (%v); add by hand:\n%s\n", cfgPath, cfgErr, manualLines)
		case cfgChanged:
			// Only the lines it changes: config.yaml holds tokens, and --print output lands in CI logs.
			fmt.Fprintf(out, "# %s: the lines it would change (enabling %s)\n%s", cfgPath, hermes.PluginName, strings.Join(lineChanges(oldCfg, newCfg), ""))
		default:
			fmt.Fprintf(out, "# %s already enables %s\n", cfgPath, hermes.PluginName)
		}
		return nil
	}

	// Run as root on a user's Hermes home, what it writes keeps the home's owner (config.yaml's
	// own, for config.yaml), so the gateway, running as that user, can still read and rewrite it.
	own := ownerFor(home)
	if err := writePlugin(dir, files, force, own); err != nil {
		return cli.Exit("wa-sidecar: "+err.Error(), exitError)
	}
	fmt.Fprintf(out, "wrote the plugin to %s\n", dir)
	switch {
	case cfgErr != nil:
		return cli.Exit(fmt.Sprintf("wa-sidecar: %s cannot be edited safely (%v); add these lines to it by hand, then restart the gateway:\n%s", cfgPath, cfgErr, manualLines), exitError)
	case cfgChanged:
		cfgOwn := own
		if o := ownerFor(cfgPath); o != nil {
			cfgOwn = o
		}
		if err := writeConfig(cfgPath, newCfg, cfgOwn); err != nil {
			return cli.Exit(fmt.Sprintf("wa-sidecar: %v; add these lines to %s by hand:\n%s", err, cfgPath, manualLines), exitError)
		}
		fmt.Fprintf(out, "enabled it in %s (plugins.enabled)\n", cfgPath)
	default:
		fmt.Fprintf(out, "%s already enables it\n", cfgPath)
	}
	fmt.Fprintf(out, "restart the gateway to use it: systemctl --user restart %s (or stop and start `hermes gateway`)\n", gatewayUnitName(home))
	return nil
}

func orUnknown(v string) string {
	if v == "" {
		return "unknown"
	}
	return v
}

func expandHome(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, p[1:])
		}
	}
	return p
}

func gatewayUnitName(home string) string {
	h, _ := os.UserHomeDir()
	cwd, _ := os.Getwd()
	return unit.GatewayName(home, h, cwd)
}

var manualLines = "plugins:\n  enabled:\n    - " + hermes.PluginName + "\n(or, if plugins.enabled exists, add `- " + hermes.PluginName + "` to it), and delete `- " + hermes.PluginName + "` from plugins.disabled if it is there: a name in plugins.disabled stays off whatever plugins.enabled says"

type pluginFile struct {
	name string
	data []byte
}

func pluginFiles() ([]pluginFile, error) {
	var files []pluginFile
	err := fs.WalkDir(hermes.Plugin, "plugin", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := hermes.Plugin.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, pluginFile{name: path.Base(p), data: b})
		return nil
	})
	return files, err
}

// writePlugin writes files into dir, each through a temporary file and a
// rename. Neither dir nor a file in it may be a symlink: it would write
// wherever the link points. A file that differs is replaced only with force,
// and then no file is written unless all may be.
func writePlugin(dir string, files []pluginFile, force bool, own *owner) error {
	var created []string
	for _, d := range []string{filepath.Dir(dir), dir} {
		fi, err := os.Lstat(d)
		if err == nil && !fi.IsDir() {
			return fmt.Errorf("%s is not a directory (a symlink or a file); remove it or pass another --hermes-home", d)
		}
		if errors.Is(err, fs.ErrNotExist) {
			created = append(created, d)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("plugin directory: %w", err)
	}
	for _, d := range created {
		if err := own.chown(d); err != nil {
			return err
		}
	}
	var differ []string
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file (a symlink?); remove it first", p)
		}
		old, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(old, f.data) {
			differ = append(differ, p)
		}
	}
	if len(differ) > 0 && !force {
		return fmt.Errorf("these files differ from this wa-sidecar's plugin (edited, or another version): %s; pass --force to replace them", strings.Join(differ, ", "))
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := writeFileChecked(p, f.data, 0o644); err != nil {
			return err
		}
		if err := own.chown(p); err != nil {
			return err
		}
	}
	return nil
}

func writeConfig(p string, data []byte, own *owner) error {
	perm := os.FileMode(0o600)
	if fi, err := os.Lstat(p); err == nil {
		perm = fi.Mode().Perm()
	}
	if _, err := os.Lstat(filepath.Dir(p)); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := own.chown(filepath.Dir(p)); err != nil {
			return err
		}
	}
	if err := writeFileChecked(p, data, perm); err != nil {
		return err
	}
	return own.chown(p)
}

// owner is whom the files written belong to when the command runs as root.
type owner struct{ uid, gid int }

// ownerFor returns the owner of p (or, when p does not exist, of the nearest
// directory above it that does) when running as root and it is not root;
// else nil, and nothing is chowned.
func ownerFor(p string) *owner {
	if os.Geteuid() != 0 {
		return nil
	}
	for {
		fi, err := os.Lstat(p)
		if err == nil {
			st, ok := fi.Sys().(*syscall.Stat_t)
			if !ok || (st.Uid == 0 && st.Gid == 0) {
				return nil
			}
			return &owner{int(st.Uid), int(st.Gid)}
		}
		up := filepath.Dir(p)
		if up == p {
			return nil
		}
		p = up
	}
}

func (o *owner) chown(p string) error {
	if o == nil {
		return nil
	}
	if err := os.Lchown(p, o.uid, o.gid); err != nil {
		return fmt.Errorf("cannot give %s to its owner %d:%d as the Hermes home's (%v); remove it, or run this command as that user", p, o.uid, o.gid, err)
	}
	return nil
}

// enablePlugin returns config.yaml at p with name added to plugins.enabled
// and taken out of plugins.disabled (which `hermes plugins disable` fills,
// and which wins over plugins.enabled), changing nothing else: it edits
// lines as text, then checks by parsing both versions that those two lists
// are the whole difference. It reports false when the file already enables
// name, and an error when it cannot make the change that way (then a person
// should).
func enablePlugin(p, name string) ([]byte, bool, error) {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return []byte("plugins:\n  enabled:\n    - " + name + "\n"), true, nil
	}
	if err != nil {
		return nil, false, err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil, false, errors.New("it is a symlink, which this command does not write through")
	}
	old, err := os.ReadFile(p)
	if err != nil {
		return nil, false, err
	}
	var before map[string]any
	if err := yaml.Unmarshal(old, &before); err != nil {
		return nil, false, fmt.Errorf("it does not parse as YAML: %w", err)
	}
	enabled, disabled := pluginList(before, "enabled"), pluginList(before, "disabled")
	if slices.Contains(enabled, name) && !slices.Contains(disabled, name) {
		return old, false, nil
	}
	edited := old
	if slices.Contains(disabled, name) {
		if edited, err = removeDisabled(edited, name); err != nil {
			return nil, false, err
		}
	}
	if !slices.Contains(enabled, name) {
		if edited, err = insertEnabled(edited, name); err != nil {
			return nil, false, err
		}
	}
	var after map[string]any
	if err := yaml.Unmarshal(edited, &after); err != nil {
		return nil, false, fmt.Errorf("the edit would not parse (%v)", err)
	}
	wantEnabled := enabled
	if !slices.Contains(enabled, name) {
		wantEnabled = append(slices.Clone(enabled), name)
	}
	wantDisabled := slices.DeleteFunc(slices.Clone(disabled), func(s string) bool { return s == name })
	if !slices.Equal(pluginList(after, "enabled"), wantEnabled) || !slices.Equal(pluginList(after, "disabled"), wantDisabled) ||
		!sameExceptEnabled(before, after) {
		return nil, false, errors.New("the edit would change more than plugins.enabled and plugins.disabled")
	}
	return edited, true, nil
}

func pluginList(doc map[string]any, key string) []string {
	pl, _ := doc["plugins"].(map[string]any)
	list, _ := pl[key].([]any)
	var out []string
	for _, v := range list {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

var flowOne = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^\[\s*(['"]?)([^'",\[\]]+)(['"]?)\s*\]\s*(#.*)?$`) })

// pluginsSection finds the top-level plugins: key, or -1 when there is none;
// one written inline is not edited.
func pluginsSection(lines []string) (int, error) {
	for i, l := range lines {
		if m := topKey().FindStringSubmatch(strings.TrimRight(l, "\r\n")); m != nil && m[1] == "plugins" {
			if rest := strings.TrimSpace(m[2]); rest != "" && !strings.HasPrefix(rest, "#") {
				return -1, errors.New("its plugins: section is written inline")
			}
			return i, nil
		}
	}
	return -1, nil
}

// pluginsChild reads the plugins: section that starts at line at: the
// indentation of its keys, the line of key (-1 when absent), and where the
// section ends, at the next line that is neither blank, a comment, nor
// indented.
func pluginsChild(lines []string, at int, key string) (indent string, keyAt, end int) {
	keyAt, end = -1, len(lines)
	for i := at + 1; i < len(lines); i++ {
		l := strings.TrimRight(lines[i], "\r\n")
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if l[0] != ' ' && l[0] != '\t' {
			return indent, keyAt, i
		}
		if m := childKey().FindStringSubmatch(l); m != nil {
			if indent == "" {
				indent = m[1]
			}
			if m[1] == indent && m[2] == key {
				keyAt = i
			}
		}
	}
	return indent, keyAt, end
}

// removeDisabled takes name out of plugins.disabled, a block list (as Hermes
// writes it) or a one-item flow list, by deleting or changing one line; a
// list left empty becomes [].
func removeDisabled(src []byte, name string) ([]byte, error) {
	lines := strings.SplitAfter(string(src), "\n")
	pluginsAt, err := pluginsSection(lines)
	if err != nil {
		return nil, err
	}
	if pluginsAt < 0 {
		return nil, errors.New("its plugins.disabled is not where this command looks")
	}
	indent, disabledAt, end := pluginsChild(lines, pluginsAt, "disabled")
	if disabledAt < 0 {
		return nil, errors.New("its plugins.disabled is not where this command looks")
	}
	if strings.Contains(indent, "\t") {
		return nil, errors.New("it is indented with tabs")
	}
	keyLine := strings.TrimRight(lines[disabledAt], "\r\n")
	nl := lines[disabledAt][len(keyLine):]
	m := childKey().FindStringSubmatch(keyLine)
	rest := strings.TrimSpace(m[3])
	if rest != "" && !strings.HasPrefix(rest, "#") {
		if f := flowOne().FindStringSubmatch(rest); f != nil && f[1] == f[3] && strings.TrimSpace(f[2]) == name {
			tail := ""
			if f[4] != "" {
				tail = "  " + f[4]
			}
			lines[disabledAt] = m[1] + "disabled: []" + tail + nl
			return []byte(strings.Join(lines, "")), nil
		}
		return nil, errors.New("its plugins.disabled is written inline")
	}
	var items []int
	hit := -1
	for i := disabledAt + 1; i < end; i++ {
		l := strings.TrimRight(lines[i], "\r\n")
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		lm := listItem().FindStringSubmatch(l)
		if lm == nil || len(lm[1]) < len(indent) {
			break
		}
		items = append(items, i)
		v := strings.TrimSpace(strings.TrimPrefix(t, "-"))
		if j := strings.Index(v, " #"); j >= 0 {
			v = strings.TrimSpace(v[:j])
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		if v == name && hit < 0 {
			hit = i
		}
	}
	if hit < 0 {
		return nil, errors.New("its plugins.disabled lists the plugin in a way this command does not edit")
	}
	out := slices.Delete(slices.Clone(lines), hit, hit+1)
	if len(items) == 1 {
		tail := ""
		if c := strings.TrimSpace(m[3]); c != "" {
			tail = " " + c
		}
		out[disabledAt] = m[1] + "disabled: []" + tail + nl
	}
	return []byte(strings.Join(out, "")), nil
}

func sameExceptEnabled(a, b map[string]any) bool {
	strip := func(m map[string]any) string {
		c := map[string]any{}
		for k, v := range m {
			c[k] = v
		}
		if pl, ok := m["plugins"].(map[string]any); ok {
			pc := map[string]any{}
			for k, v := range pl {
				if k == "enabled" {
					continue
				}
				// An emptied or absent disabled list is the same as none.
				if l, ok := v.([]any); k == "disabled" && (v == nil || ok && len(pluginList(m, "disabled")) == len(l)) {
					continue
				}
				pc[k] = v
			}
			c["plugins"] = pc
		}
		// An empty or missing plugins section is the same as none.
		if pc, ok := c["plugins"].(map[string]any); c["plugins"] == nil || (ok && len(pc) == 0) {
			delete(c, "plugins")
		}
		out, _ := yaml.Marshal(c)
		return string(out)
	}
	if a == nil {
		a = map[string]any{}
	}
	return strip(a) == strip(b)
}

var (
	topKey    = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^([A-Za-z_][\w-]*)\s*:(.*)$`) })
	childKey  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(\s+)([A-Za-z_][\w-]*)\s*:(.*)$`) })
	listItem  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(\s*)-\s`) })
	flowEmpty = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^\s*\[\s*\]\s*(#.*)?$`) })
)

// insertEnabled adds name to plugins.enabled by inserting or changing as few
// lines as it can, in the block styles Hermes itself writes.
func insertEnabled(src []byte, name string) ([]byte, error) {
	lines := strings.SplitAfter(string(src), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	pluginsAt, err := pluginsSection(lines)
	if err != nil {
		return nil, err
	}
	if pluginsAt < 0 {
		text := string(src)
		if text != "" && !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		return []byte(text + "plugins:\n  enabled:\n    - " + name + "\n"), nil
	}
	indent, enabledAt, end := pluginsChild(lines, pluginsAt, "enabled")
	if indent == "" {
		indent = "  "
	}
	if strings.Contains(indent, "\t") {
		return nil, errors.New("it is indented with tabs")
	}
	nl := "\n"
	if strings.HasSuffix(lines[pluginsAt], "\r\n") {
		nl = "\r\n"
	}
	insert := func(at int, add ...string) []byte {
		out := slices.Clone(lines[:at])
		if at > 0 && !strings.HasSuffix(out[at-1], "\n") {
			out[at-1] += nl
		}
		for _, a := range add {
			out = append(out, a+nl)
		}
		out = append(out, lines[at:]...)
		return []byte(strings.Join(out, ""))
	}
	if enabledAt < 0 {
		return insert(pluginsAt+1, indent+"enabled:", indent+"  - "+name), nil
	}
	m := childKey().FindStringSubmatch(strings.TrimRight(lines[enabledAt], "\r\n"))
	rest := strings.TrimSpace(m[3])
	switch {
	case flowEmpty().MatchString(rest):
		lines[enabledAt] = m[1] + "enabled:" + nl
		return insert(enabledAt+1, indent+"  - "+name), nil
	case rest != "" && !strings.HasPrefix(rest, "#"):
		return nil, errors.New("its plugins.enabled is written inline")
	}
	// A block list: append after its last item, at the items' indentation.
	last, itemIndent := enabledAt, ""
	for i := enabledAt + 1; i < end; i++ {
		l := strings.TrimRight(lines[i], "\r\n")
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		lm := listItem().FindStringSubmatch(l)
		if lm == nil || len(lm[1]) < len(indent) {
			break
		}
		if itemIndent == "" {
			itemIndent = lm[1]
		}
		if lm[1] != itemIndent {
			break
		}
		last = i
	}
	if itemIndent == "" {
		itemIndent = indent + "  "
	}
	return insert(last+1, itemIndent+"- "+name), nil
}

// writeFileChecked is privdir.WriteFile (atomic, never through a link),
// with the path in its error.
func writeFileChecked(p string, data []byte, perm os.FileMode) error {
	if err := privdir.WriteFile(p, data, perm); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// lineChanges returns the lines of old that new drops and the lines it adds,
// as "-N: line" and "+N: line" (N the line's number in old or new), and
// nothing of the lines both keep.
func lineChanges(old, new []byte) []string {
	split := func(b []byte) []string {
		l := strings.SplitAfter(string(b), "\n")
		if l[len(l)-1] == "" {
			l = l[:len(l)-1]
		}
		return l
	}
	a, b := split(old), split(new)
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	x, y := a[pre:len(a)-suf], b[pre:len(b)-suf]
	// The longest common subsequence of what is left, which is small: the edits are a few lines of
	// the plugins: section.
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	line := func(sign string, n int, l string) {
		out = append(out, fmt.Sprintf("%s%d: %s\n", sign, n, strings.TrimRight(l, "\r\n")))
	}
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			i, j = i+1, j+1
		case i < len(x) && (j == len(y) || lcs[i+1][j] >= lcs[i][j+1]):
			line("-", pre+i+1, x[i])
			i++
		default:
			line("+", pre+j+1, y[j])
			j++
		}
	}
	return out
}
