package main

import (
	"runtime/debug"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

// sidecarVersion is the stamped version, else the module's version (as
// go install …@v1.2.3 records it), else what the build knows of its
// checkout: the commit, its time, and whether the tree had changes. A
// build that knows none of these says so, rather than a bare "dev" that
// no one can trace back to a source.
func sidecarVersion() string {
	bi, _ := debug.ReadBuildInfo()
	return versionOf(version, bi)
}

func versionOf(stamped string, bi *debug.BuildInfo) string {
	if stamped != "" {
		return stamped
	}
	if bi == nil {
		return "devel (no build information)"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, at string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel (built without VCS information, e.g. by go run or with -buildvcs=false; " + bi.GoVersion + ")"
	}
	parts := []string{rev[:min(12, len(rev))]}
	if at != "" {
		parts = append(parts, at)
	}
	if modified {
		parts = append(parts, "modified")
	}
	return "devel (" + strings.Join(parts, ", ") + ")"
}
