package unit

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// gatewayBase starts every unit name the gateway gives itself.
const gatewayBase = "hermes-gateway"

// profileName is what the gateway accepts as a profile's directory name.
var profileName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`) })

// GatewayName is the unit name 'hermes gateway install' gives the gateway
// when HERMES_HOME is hermesHome (empty: unset), the user's home is home
// and relative paths start at cwd. The gateway compares its Hermes home
// with a root: ~/.hermes when HERMES_HOME is unset or inside it, else the
// directory above a profiles folder HERMES_HOME is in, else HERMES_HOME
// itself. The root itself is plain hermes-gateway; <root>/profiles/NAME
// is hermes-gateway-NAME; any other home is named by the first 8 hex
// digits of the SHA-256 of its resolved path. Both sides are resolved as
// Python's Path.resolve does: symlinks followed, missing parts kept. The
// gateway trims blanks around HERMES_HOME for its home, but not when it
// finds the root, and this does the same.
func GatewayName(hermesHome, home, cwd string) string {
	native := filepath.Join(home, ".hermes")
	gwHome := strings.TrimSpace(hermesHome)
	if gwHome == "" {
		gwHome = native
	}
	root := native
	if hermesHome != "" {
		if _, inside := relParts(resolvePath(hermesHome, cwd), resolvePath(native, cwd)); !inside {
			root = hermesHome
			if abs, parts := pathParts(hermesHome); len(parts) >= 2 && parts[len(parts)-2] == "profiles" {
				root = joinParts(abs, parts[:len(parts)-2])
			}
		}
	}
	h, r := resolvePath(gwHome, cwd), resolvePath(root, cwd)
	if h == r {
		return gatewayBase
	}
	if rel, ok := relParts(h, resolvePath(filepath.Join(r, "profiles"), cwd)); ok && len(rel) == 1 && profileName().MatchString(rel[0]) {
		return gatewayBase + "-" + rel[0]
	}
	sum := sha256.Sum256([]byte(h))
	return gatewayBase + "-" + hex.EncodeToString(sum[:4])
}

// pathParts splits p into its names as Python's pathlib sees them: empty
// and "." names dropped, ".." kept.
func pathParts(p string) (abs bool, parts []string) {
	for _, n := range strings.Split(p, "/") {
		if n != "" && n != "." {
			parts = append(parts, n)
		}
	}
	return strings.HasPrefix(p, "/"), parts
}

func joinParts(abs bool, parts []string) string {
	p := strings.Join(parts, "/")
	switch {
	case abs:
		return "/" + p
	case p == "":
		return "."
	}
	return p
}

// relParts is path's names below base, when path is base or inside it,
// compared name by name.
func relParts(path, base string) ([]string, bool) {
	_, pp := pathParts(path)
	_, bp := pathParts(base)
	if len(pp) < len(bp) {
		return nil, false
	}
	for i := range bp {
		if pp[i] != bp[i] {
			return nil, false
		}
	}
	return pp[len(bp):], true
}

// maxLinks bounds the symbolic links resolvePath follows, so a loop ends.
const maxLinks = 255

// resolvePath makes p absolute (from cwd) and follows every symbolic link
// in it, name by name; a name that does not exist is kept as it is, and
// ".." removes the name before it. Unlike filepath.EvalSymlinks it never
// fails, which the gateway's naming relies on: a Hermes home may not
// exist yet.
func resolvePath(p, cwd string) string {
	if !filepath.IsAbs(p) {
		p = cwd + "/" + p
	}
	_, todo := pathParts(p)
	done := "/"
	links := 0
	for len(todo) > 0 {
		n := todo[0]
		todo = todo[1:]
		if n == ".." {
			done = filepath.Dir(done)
			continue
		}
		next := filepath.Join(done, n)
		fi, err := os.Lstat(next)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 || links >= maxLinks {
			done = next
			continue
		}
		target, err := os.Readlink(next)
		if err != nil {
			done = next
			continue
		}
		links++
		if filepath.IsAbs(target) {
			done = "/"
		}
		_, tp := pathParts(target)
		todo = append(tp, todo...)
	}
	return done
}

// GatewayInstalled reports whether the gateway's unit file is where
// 'hermes gateway install' writes it (always ~/.config, whatever
// XDG_CONFIG_HOME says) or in dir.
func GatewayInstalled(dir, gateway string) bool {
	dirs := []string{dir}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, ".config", "systemd", "user"))
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, gateway+".service")); err == nil {
			return true
		}
	}
	return false
}
