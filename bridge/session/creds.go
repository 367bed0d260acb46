package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// CredsState says what was found in the session's creds.json.
type CredsState string

// The states of creds.json.
const (
	CredsOK      CredsState = "ok"      // a JSON object, as the bridge writes it
	CredsMissing CredsState = "missing" // no file: never paired, or deleted to re-pair
	CredsEmpty   CredsState = "empty"   // 0 bytes (or only blanks): damaged, the bridge was stopped mid-write
	CredsCorrupt CredsState = "corrupt" // not a JSON object: damaged the same way, or overwritten
)

// Creds is what a look at creds.json found.
type Creds struct {
	State CredsState
	// Paired is true when the credentials name a WhatsApp account, which
	// the bridge only records once a phone has scanned the QR code. Keys
	// written while a QR code waits to be scanned are not yet a pairing.
	Paired bool
	// Problem says what is wrong with a corrupt file.
	Problem string
}

// InspectCreds classifies the contents of a creds.json file. It never
// fails: whatever it is given, it says what that is.
func InspectCreds(data []byte) Creds {
	if len(bytes.TrimSpace(data)) == 0 {
		return Creds{State: CredsEmpty}
	}
	var creds struct {
		Me *struct {
			ID string `json:"id"`
		} `json:"me"`
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return Creds{State: CredsCorrupt, Problem: "not valid JSON: " + err.Error()}
	}
	if obj == nil {
		return Creds{State: CredsCorrupt, Problem: "JSON null instead of an object"}
	}
	if err := json.Unmarshal(data, &creds); err != nil {
		return Creds{State: CredsCorrupt, Problem: "unexpected \"me\" field: " + err.Error()}
	}
	return Creds{State: CredsOK, Paired: creds.Me != nil && creds.Me.ID != ""}
}

// credsFile is the bridge's credentials file in a session directory.
func credsFile(sessionDir string) string { return filepath.Join(sessionDir, "creds.json") }

// readCreds reads and classifies creds.json at path.
func readCreds(path string) (Creds, []byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Creds{State: CredsMissing}, nil, nil
	}
	if err != nil {
		return Creds{}, nil, fmt.Errorf("read %s: %w", path, err)
	}
	return InspectCreds(data), data, nil
}

// Backup describes the last good copy of creds.json the sidecar keeps.
type Backup struct {
	Path    string    `json:"path"`
	SavedAt time.Time `json:"saved_at"`
}

// statBackup returns the backup at path, or nil when there is none that
// would be worth restoring.
func statBackup(path string) *Backup {
	data, err := readPrivate(path)
	if err != nil {
		return nil
	}
	if c := InspectCreds(data); c.State != CredsOK || !c.Paired {
		return nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil
	}
	return &Backup{Path: path, SavedAt: st.ModTime()}
}

// saveBackup copies a paired creds.json to the backup path, unless the
// backup already holds the same bytes. Only paired credentials are kept:
// the keys of an unfinished pairing must never replace a copy that can
// still log in.
func saveBackup(path string, creds Creds, data []byte) (saved bool, err error) {
	if creds.State != CredsOK || !creds.Paired {
		return false, nil
	}
	if old, err := readPrivate(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err := writeFileAtomic(path, data, 0o600); err != nil {
		return false, fmt.Errorf("save the last good creds.json to %s: %w", path, err)
	}
	return true, nil
}
