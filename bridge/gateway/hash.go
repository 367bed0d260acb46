package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// RuntimeInputs are the bridge files whose bytes newer gateways hash
// together to tell whether a running bridge runs the code on disk.
var RuntimeInputs = []string{
	"allowlist.js",
	"baileys_logger.js",
	"bridge.js",
	"bridge_helpers.js",
	"connection_close.js",
	"outbound_ids.js",
	"owner_message_gate.js",
	"package.json",
	"package-lock.json",
}

// missingMarker stands in for the bytes of an input that is not there, so
// that a missing file and an empty one hash differently.
const missingMarker = "HERMES-BRIDGE-MISSING-v1"

// stampFile is the npm install stamp, relative to the bridge directory.
var stampFile = filepath.Join("node_modules", ".hermes-pkg-hash")

// ScriptHash is the bridge's older fingerprint of one file, as it reports
// it in /health as scriptHash: the first 16 hex digits of the SHA-256 of
// the file's bytes. It follows a symbolic link, as the gateway's read_bytes
// does, and as the bridge does when it hashes the file its import.meta.url
// names (Node resolves the links of the script it runs); what the link
// leads to must be a regular file of at most 4 MiB.
func ScriptHash(path string) (string, error) {
	data, err := readRegular(path, inputLimit, followLinks)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])[:16], nil
}

// RuntimeHash is the newer fingerprint of the bridge in dir: the full
// SHA-256, in hex, over one record per name of RuntimeInputs (sorted, each
// once): the name, a zero byte, the file's bytes, a zero byte.
//
// A missing file is hashed as the bytes "HERMES-BRIDGE-MISSING-v1", the way
// the bridge itself hashes it; RuntimeHash then returns that digest with an
// error, because the gateway counts an incomplete set as having no hash.
// A file that is a symbolic link (newer gateways refuse one here, unlike
// ScriptHash), is not a regular file, or is larger than 4 MiB is an error,
// and the digest is "".
func RuntimeHash(dir string) (string, error) {
	return compositeHash(dir, RuntimeInputs)
}

// compositeHash hashes names in dir in the record format of RuntimeHash.
func compositeHash(dir string, names []string) (string, error) {
	names = slices.Clone(names)
	slices.Sort(names)
	names = slices.Compact(names)
	h := sha256.New()
	var missing []string
	for _, name := range names {
		path := filepath.Join(dir, name)
		data, err := readRegular(path, inputLimit, 0)
		if errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, name)
			data = []byte(missingMarker)
		} else if err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		h.Write([]byte(name))
		h.Write([]byte{0})
		h.Write(data)
		h.Write([]byte{0})
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if len(missing) > 0 {
		return sum, fmt.Errorf("%s: %s missing; the gateway counts an incomplete set of bridge files as having no hash",
			dir, listText(missing))
	}
	return sum, nil
}

// MatchScriptHash compares the scriptHash a running bridge reports with
// the bridge files beside script, choosing the fingerprint by the reported
// value's length: 16 hex digits is ScriptHash of script, 64 is RuntimeHash
// of its directory. Anything else (an older bridge reports nothing) never
// matches, and disk is then ScriptHash of script. disk is what is on disk,
// for messages: "" when the files cannot be read, and the digest with
// missing markers when some of the newer inputs are missing.
func MatchScriptHash(reported, script string) (disk string, ok bool) {
	var err error
	switch {
	case len(reported) == 16 && isHex(reported):
		disk, err = ScriptHash(script)
	case len(reported) == 64 && isHex(reported):
		disk, err = RuntimeHash(filepath.Dir(script))
	default:
		disk, _ = ScriptHash(script)
		return disk, false
	}
	return disk, err == nil && disk == reported
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// Stamp is what the npm install stamp of a bridge directory says.
type Stamp struct {
	Path  string // <bridge dir>/node_modules/.hermes-pkg-hash
	Found string // its content, trimmed; "" when absent or unreadable
	// Want lists exactly the values that count as fresh, the older before
	// the newer; see CheckStamp.
	Want []string
	// Fresh: node_modules is a directory and Found is one of Want. When it
	// is not, the gateway runs npm install in the bridge directory before
	// it starts or adopts a bridge.
	Fresh   bool
	Problem string // why it is not fresh; "" when it is
}

// CheckStamp reads the npm install stamp of bridgeDir. There are two
// values: the older one, the first 16 hex digits of the SHA-256 of
// package.json, and the newer one, the RuntimeHash record format over
// package.json and package-lock.json (only when both are there).
//
// Which count depends on the directory, as for WantStamp. One with every
// file of RuntimeInputs is a newer bridge, and newer gateways accept only
// the newer value there. One without is an older bridge, but the gateway
// that meets it may be of either kind: Hermes 0.18.2 runs bridge_script
// wherever it points and reuses a mirror of a read-only install that it
// finds already made, never refreshing it, so bridge and gateway can come
// from different versions. There both values count.
func CheckStamp(bridgeDir string) Stamp {
	s := Stamp{Path: filepath.Join(bridgeDir, stampFile)}
	var problems []string
	newerBridge := hasRuntimeInputs(bridgeDir)
	if !newerBridge {
		legacy, err := ScriptHash(filepath.Join(bridgeDir, "package.json"))
		if err != nil {
			problems = append(problems, err.Error())
		} else {
			s.Want = append(s.Want, legacy)
		}
	}
	switch newer, err := packageHash(bridgeDir); {
	case err == nil:
		s.Want = append(s.Want, newer)
	case newerBridge:
		problems = append(problems, err.Error())
	}
	st, err := os.Stat(filepath.Join(bridgeDir, "node_modules"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		problems = append(problems, "node_modules is missing")
	case err != nil:
		problems = append(problems, fmt.Sprintf("node_modules cannot be inspected: %v", err))
	case !st.IsDir():
		problems = append(problems, "node_modules is not a directory")
	}
	data, err := readRegular(s.Path, stampLimit, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		problems = append(problems, "there is no install stamp")
	case err != nil:
		problems = append(problems, fmt.Sprintf("the install stamp %s", err))
	default:
		s.Found = strings.TrimSpace(string(data))
		switch {
		case len(s.Want) == 0 || slices.Contains(s.Want, s.Found):
		case newerBridge:
			problems = append(problems, "the install stamp is not the newer value, the only one newer gateways accept for a bridge with every runtime file")
		case len(s.Want) == 1:
			problems = append(problems, "the install stamp is not the older value, the only one that can be computed here")
		default:
			problems = append(problems, "the install stamp matches neither the older nor the newer value")
		}
	}
	s.Fresh = len(problems) == 0
	if !s.Fresh {
		s.Problem = strings.Join(problems, "; ") + ": the gateway would run npm install in " + bridgeDir
	}
	return s
}

// WantStamp is the stamp a fresh npm install in bridgeDir should leave: the
// newer value when bridgeDir has every file of RuntimeInputs (the newer
// bridge, which comes with newer gateways), else the older one, which the
// gateway of an older bridge most likely is (see CheckStamp). CheckStamp
// accepts it either way.
func WantStamp(bridgeDir string) (string, error) {
	if !hasRuntimeInputs(bridgeDir) {
		return ScriptHash(filepath.Join(bridgeDir, "package.json"))
	}
	return packageHash(bridgeDir)
}

// hasRuntimeInputs says whether every file of RuntimeInputs is in dir:
// whether it holds a newer bridge. A link counts as there.
func hasRuntimeInputs(dir string) bool {
	for _, name := range RuntimeInputs {
		if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
			return false
		}
	}
	return true
}

func packageHash(bridgeDir string) (string, error) {
	sum, err := compositeHash(bridgeDir, []string{"package.json", "package-lock.json"})
	if err != nil {
		return "", err
	}
	return sum, nil
}

func listText(names []string) string {
	switch len(names) {
	case 1:
		return names[0] + " is"
	case 2:
		return names[0] + " and " + names[1] + " are"
	default:
		return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1] + " are"
	}
}
