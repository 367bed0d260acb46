package gateway

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// bridgeSubdir is where a Hermes tree keeps the bridge.
var bridgeSubdir = filepath.Join("scripts", "whatsapp-bridge")

// dirWritable is the gateway's test of an install tree, asked of the
// kernel instead of by creating a file: may this process write in dir?
func dirWritable(dir string) bool {
	return unix.Access(dir, unix.W_OK) == nil
}

// isFile follows links, as the gateway does when it looks for the script.
func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// findScript decides which bridge.js the gateway would run, in the
// gateway's order, and records every place it looked.
func (in *Install) findScript(cfg *config, systemInstall string, writable func(string) bool) {
	if s, ok := cfg.extra["bridge_script"]; ok {
		if p, ok := cfg.path(s); ok {
			in.configScript(cfg, s, p)
			return
		}
	}
	mirrorDir := filepath.Join(in.Home, bridgeSubdir)
	mirror := filepath.Join(mirrorDir, "bridge.js")
	trees := []struct{ root, kind string }{
		{filepath.Join(in.Home, "hermes-agent"), "user install"},
		{systemInstall, "root install"},
	}
	for _, t := range trees {
		dir := filepath.Join(t.root, bridgeSubdir)
		script := filepath.Join(dir, "bridge.js")
		if !isFile(script) {
			in.look(script, "not found")
			continue
		}
		if writable(dir) {
			in.look(script, "found, writable install tree: used")
			in.Script, in.ScriptFrom = script, "the "+t.kind+" "+t.root
			return
		}
		switch _, err := os.Stat(mirrorDir); {
		case isFile(mirror):
			in.look(script, "found, read-only install tree: the gateway uses the mirror")
			in.look(mirror, "found, the mirror of the read-only install tree: used")
			in.Script, in.ScriptFrom = mirror, "the mirror of the read-only "+t.kind+" "+t.root
		case err == nil:
			in.look(script, "found, read-only install tree: the gateway uses the mirror")
			in.look(mirror, "not found, though the mirror directory exists: the gateway would run it and find no bridge.js")
			in.problem(Problem{File: mirrorDir, Message: "the install tree " + dir + " is read-only, and its mirror here has no bridge.js: " +
				"the gateway would stop with \"bridge script missing\"; remove " + mirrorDir + " so that the gateway copies the install tree again"})
		default:
			in.look(script, "found, read-only install tree with no mirror yet: used; the gateway would first copy the tree to "+
				mirrorDir+" and run the copy, which has the same bytes")
			in.Script, in.ScriptFrom = script, "the "+t.kind+" "+t.root+" (read-only, not mirrored yet)"
		}
		return
	}
	if isFile(mirror) {
		in.look(mirror, "found: used")
		in.Script, in.ScriptFrom = mirror, "the mirror "+mirrorDir
		return
	}
	in.look(mirror, "not found")
}

// configScript takes bridge_script from config.yaml. The gateway runs it as
// given, without looking anywhere else.
func (in *Install) configScript(cfg *config, s setting, p string) {
	from := s.from()
	if !filepath.IsAbs(p) {
		p = filepath.Join(in.Home, p)
		from += ", relative to the Hermes home"
	}
	if isFile(p) {
		in.look(p, "set by "+s.from()+": used")
		in.Script, in.ScriptFrom = p, from
		return
	}
	in.look(p, "set by "+s.from()+": not found")
	in.problem(Problem{File: cfg.file, Line: s.line, Message: s.path + " is " + p +
		", which is not a file: the gateway would stop with \"bridge script missing\"; fix the path or remove the setting"})
}

func (in *Install) look(path, verdict string) {
	in.Looked = append(in.Looked, Looked{Path: path, Verdict: verdict})
}

func (in *Install) problem(p Problem) {
	in.Problems = append(in.Problems, p)
}

// hasContent is the gateway's test of whether a legacy location is still in
// use: a directory with something in it, or anything else that exists.
// What cannot be inspected counts as in use, so that no data is orphaned;
// a dangling link counts as absent.
func hasContent(path string) bool {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		return true
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		st, err = os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return false
		}
		if err != nil {
			return true
		}
	}
	if !st.IsDir() {
		return true
	}
	d, err := os.Open(path)
	if err != nil {
		return true
	}
	defer d.Close()
	_, err = d.Readdirnames(1)
	return !errors.Is(err, io.EOF)
}
