package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// runtimeFiles is a newer bridge directory: every runtime input.
func runtimeFiles() map[string]string {
	files := map[string]string{}
	for _, name := range RuntimeInputs {
		files[name] = "// " + name + "\n"
	}
	return files
}

// records is the expected composite, built here from the documented
// format rather than from the code under test. nil content: missing.
func records(files map[string]*string) string {
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var b []byte
	for _, n := range names {
		b = append(b, n...)
		b = append(b, 0)
		if c := files[n]; c != nil {
			b = append(b, *c...)
		} else {
			b = append(b, "HERMES-BRIDGE-MISSING-v1"...)
		}
		b = append(b, 0)
	}
	return sha(b)
}

func ptr(s string) *string { return &s }

func TestScriptHash(t *testing.T) {
	dir := t.TempDir()
	content := []byte("// the bridge\nconsole.log('hi')\n")
	path := filepath.Join(dir, "bridge.js")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ScriptHash(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha(content)[:16]; got != want {
		t.Errorf("ScriptHash %s, want %s", got, want)
	}
	if _, err := ScriptHash(filepath.Join(dir, "none.js")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	link := filepath.Join(dir, "link.js")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	// The gateway reads bridge.js with read_bytes and the bridge hashes
	// the file import.meta.url names, resolved: both follow a link.
	if got, err := ScriptHash(link); err != nil || got != sha(content)[:16] {
		t.Errorf("symbolic link: %q, %v; want the target's hash %s", got, err, sha(content)[:16])
	}
	for name, prepare := range map[string]func(*testing.T, string){
		"a link to a directory":  linkTo(mkdir),
		"a link to a named pipe": linkTo(mkfifo),
		"a link to a large file": linkTo(grow(inputLimit + 1)),
		"a loop of links":        linkLoop,
		"a link that leads nowhere": func(t *testing.T, path string) {
			symlinkTo(t, path)
			if err := os.Remove(path + ".real"); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bridge.js")
			if err := os.WriteFile(path, content, 0o644); err != nil {
				t.Fatal(err)
			}
			prepare(t, path)
			if got, err := ScriptHash(path); err == nil || got != "" {
				t.Errorf("got %q, %v; want an error", got, err)
			}
		})
	}
}

func TestRuntimeHash(t *testing.T) {
	dir := t.TempDir()
	files := runtimeFiles()
	layout(t, dir, files)
	want := map[string]*string{}
	for n, c := range files {
		want[n] = ptr(c)
	}
	got, err := RuntimeHash(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got != records(want) {
		t.Errorf("RuntimeHash %s, want %s", got, records(want))
	}
	if len(got) != 64 {
		t.Errorf("want 64 hex digits, got %q", got)
	}

	// A missing input is hashed as the marker, and the set is incomplete.
	if err := os.Remove(filepath.Join(dir, "outbound_ids.js")); err != nil {
		t.Fatal(err)
	}
	want["outbound_ids.js"] = nil
	got, err = RuntimeHash(dir)
	if err == nil || !strings.Contains(err.Error(), "outbound_ids.js is missing") {
		t.Errorf("want an error naming the missing file, got %v", err)
	}
	if got != records(want) {
		t.Errorf("with a missing file: %s, want %s", got, records(want))
	}
}

func TestRuntimeHashRefuses(t *testing.T) {
	for name, prepare := range map[string]func(t *testing.T, path string){
		"a symbolic link": symlinkTo,
		"a directory":     mkdir,
		"over 4 MiB":      grow(inputLimit + 1),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			layout(t, dir, runtimeFiles())
			prepare(t, filepath.Join(dir, "bridge_helpers.js"))
			got, err := RuntimeHash(dir)
			if err == nil || got != "" || !strings.Contains(err.Error(), "bridge_helpers.js") {
				t.Errorf("got %q, %v", got, err)
			}
		})
	}
}

func TestMatchScriptHash(t *testing.T) {
	dir := t.TempDir()
	layout(t, dir, runtimeFiles())
	script := filepath.Join(dir, "bridge.js")
	legacy, _ := ScriptHash(script)
	runtime, _ := RuntimeHash(dir)
	tests := []struct {
		name, reported, disk string
		ok                   bool
	}{
		{"16 hex, equal", legacy, legacy, true},
		{"16 hex, different", "0123456789abcdef", legacy, false},
		{"64 hex, equal", runtime, runtime, true},
		{"64 hex, different", strings.Repeat("0", 64), runtime, false},
		{"empty: an old bridge", "", legacy, false},
		{"another length", legacy[:10], legacy, false},
		{"16 characters, not hex", "zzzzzzzzzzzzzzzz", legacy, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			disk, ok := MatchScriptHash(tt.reported, script)
			if disk != tt.disk || ok != tt.ok {
				t.Errorf("MatchScriptHash = %q, %t; want %q, %t", disk, ok, tt.disk, tt.ok)
			}
		})
	}

	// An incomplete set never matches, even the digest the bridge computed.
	if err := os.Remove(filepath.Join(dir, "allowlist.js")); err != nil {
		t.Fatal(err)
	}
	incomplete, _ := RuntimeHash(dir)
	if _, ok := MatchScriptHash(incomplete, script); ok {
		t.Error("an incomplete set matched")
	}
}

func TestCheckStamp(t *testing.T) {
	pkg := `{"name":"whatsapp-bridge","dependencies":{"baileys":"7"}}`
	lock := `{"lockfileVersion":3}`
	legacy := sha([]byte(pkg))[:16]
	newer := records(map[string]*string{"package.json": ptr(pkg), "package-lock.json": ptr(lock)})
	tests := []struct {
		name    string
		files   map[string]string
		fresh   bool
		want    []string
		problem string
	}{
		{"the older stamp", map[string]string{"package.json": pkg, "package-lock.json": lock, "node_modules/.hermes-pkg-hash": legacy + "\n"},
			true, []string{legacy, newer}, ""},
		{"the newer stamp", map[string]string{"package.json": pkg, "package-lock.json": lock, "node_modules/.hermes-pkg-hash": "  " + newer + " \n"},
			true, []string{legacy, newer}, ""},
		{"stale", map[string]string{"package.json": pkg, "package-lock.json": lock, "node_modules/.hermes-pkg-hash": "0123456789abcdef"},
			false, []string{legacy, newer}, "matches neither"},
		{"no node_modules", map[string]string{"package.json": pkg, "package-lock.json": lock},
			false, []string{legacy, newer}, "node_modules is missing"},
		{"no stamp", map[string]string{"package.json": pkg, "node_modules/": ""},
			false, []string{legacy}, "there is no install stamp"},
		{"without a lock file only the older value counts", map[string]string{"package.json": pkg, "node_modules/.hermes-pkg-hash": legacy},
			true, []string{legacy}, ""},
		{"no package.json", map[string]string{"node_modules/.hermes-pkg-hash": legacy},
			false, nil, "package.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			layout(t, dir, tt.files)
			s := CheckStamp(dir)
			if s.Path != filepath.Join(dir, "node_modules", ".hermes-pkg-hash") {
				t.Errorf("Path %q", s.Path)
			}
			if s.Fresh != tt.fresh || strings.Join(s.Want, ",") != strings.Join(tt.want, ",") {
				t.Errorf("Fresh %t Want %q; want %t %q (%s)", s.Fresh, s.Want, tt.fresh, tt.want, s.Problem)
			}
			if tt.problem == "" && s.Problem != "" || !strings.Contains(s.Problem, tt.problem) {
				t.Errorf("Problem %q, want it to say %q", s.Problem, tt.problem)
			}
			if stamp, ok := tt.files["node_modules/.hermes-pkg-hash"]; ok && s.Found != strings.TrimSpace(stamp) {
				t.Errorf("Found %q", s.Found)
			}
		})
	}
}

// TestCheckStampNewerBridge: a bridge directory with every runtime input
// comes with a newer gateway, which accepts only the newer stamp there.
func TestCheckStampNewerBridge(t *testing.T) {
	files := runtimeFiles()
	legacy := sha([]byte(files["package.json"]))[:16]
	newer := records(map[string]*string{"package.json": ptr(files["package.json"]), "package-lock.json": ptr(files["package-lock.json"])})
	for _, tt := range []struct {
		name, stamp string
		fresh       bool
		problem     string
	}{
		{"the newer stamp", newer, true, ""},
		{"the older stamp", legacy, false, "the install stamp is not the newer value, the only one newer gateways accept for a bridge with every runtime file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			layout(t, dir, files)
			layout(t, dir, map[string]string{"node_modules/.hermes-pkg-hash": tt.stamp + "\n"})
			s := CheckStamp(dir)
			if s.Fresh != tt.fresh || strings.Join(s.Want, ",") != newer || s.Found != tt.stamp {
				t.Errorf("Fresh %t Want %q Found %q; want %t %q %q (%s)", s.Fresh, s.Want, s.Found, tt.fresh, newer, tt.stamp, s.Problem)
			}
			if tt.problem == "" && s.Problem != "" || !strings.Contains(s.Problem, tt.problem) {
				t.Errorf("Problem %q, want it to say %q", s.Problem, tt.problem)
			}
			// What prepare-bridge writes is what CheckStamp accepts.
			if want, err := WantStamp(dir); err != nil || !slices.Contains(s.Want, want) {
				t.Errorf("WantStamp %q, %v is not among %q", want, err, s.Want)
			}
		})
	}

	// Without one of the newer inputs the gateway may be of either kind
	// (0.18.2 reuses a mirror it did not make, and runs bridge_script
	// wherever it points): both values count.
	dir := t.TempDir()
	layout(t, dir, files)
	layout(t, dir, map[string]string{"node_modules/.hermes-pkg-hash": legacy})
	if err := os.Remove(filepath.Join(dir, "connection_close.js")); err != nil {
		t.Fatal(err)
	}
	if s := CheckStamp(dir); !s.Fresh || strings.Join(s.Want, ",") != legacy+","+newer {
		t.Errorf("an older bridge: Fresh %t Want %q (%s)", s.Fresh, s.Want, s.Problem)
	}
}

// TestStampLink: newer gateways do not follow a link as the npm stamp;
// neither does CheckStamp.
func TestStampLink(t *testing.T) {
	pkg := `{"name":"whatsapp-bridge"}`
	dir := t.TempDir()
	layout(t, dir, map[string]string{"package.json": pkg, "node_modules/.hermes-pkg-hash": sha([]byte(pkg))[:16]})
	symlinkTo(t, filepath.Join(dir, "node_modules", ".hermes-pkg-hash"))
	if s := CheckStamp(dir); s.Fresh || s.Found != "" || !strings.Contains(s.Problem, "is a symbolic link") {
		t.Errorf("a linked stamp: %+v", s)
	}
}

func TestWantStamp(t *testing.T) {
	dir := t.TempDir()
	files := runtimeFiles()
	layout(t, dir, files)
	got, err := WantStamp(dir)
	newer := records(map[string]*string{"package.json": ptr(files["package.json"]), "package-lock.json": ptr(files["package-lock.json"])})
	if err != nil || got != newer {
		t.Errorf("newer bridge: %q, %v; want %q", got, err, newer)
	}
	if err := os.Remove(filepath.Join(dir, "owner_message_gate.js")); err != nil {
		t.Fatal(err)
	}
	got, err = WantStamp(dir)
	if want := sha([]byte(files["package.json"]))[:16]; err != nil || got != want {
		t.Errorf("older bridge: %q, %v; want %q", got, err, want)
	}
	if _, err := WantStamp(t.TempDir()); err == nil {
		t.Error("no package.json: want an error")
	}
}
