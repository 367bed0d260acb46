package feed

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"
)

// Names of the files the server keeps in its state directory.
const (
	TokenFileName     = "token"
	DiscoveryFileName = "sidecar.json"
)

// DefaultStateDir is where the server keeps its token and discovery file
// unless told otherwise: /var/lib/wa-sidecar for root, otherwise
// $XDG_STATE_HOME/wa-sidecar, or ~/.local/state/wa-sidecar.
func DefaultStateDir() (string, error) {
	if os.Geteuid() == 0 {
		return "/var/lib/wa-sidecar", nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "wa-sidecar"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no state directory: %w; pass --state-dir", err)
	}
	return filepath.Join(home, ".local", "state", "wa-sidecar"), nil
}

// maxTokenBytes bounds a token read from a file or the environment.
const maxTokenBytes = 4096

// CheckToken rejects tokens that cannot travel in an Authorization header.
func CheckToken(tok string) error {
	switch {
	case tok == "":
		return errors.New("the token is empty")
	case len(tok) > maxTokenBytes:
		return fmt.Errorf("the token is longer than %d bytes", maxTokenBytes)
	}
	for _, r := range tok {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) || r == ' ' {
			return errors.New("the token must be printable ASCII without spaces")
		}
	}
	return nil
}

// ReadTokenFile reads a token from path. Surrounding white space, such as
// the newline an editor adds, is ignored.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if err := CheckToken(tok); err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	return tok, nil
}

// NewToken generates a random token: 32 bytes from the system's secure
// source, in hex.
func NewToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// PrepareStateDir creates dir (mode 0700) if it is missing.
func PrepareStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w; pass --state-dir to choose another", err)
	}
	return nil
}

// WriteToken stores tok in dir with mode 0600 and returns the file's path.
func WriteToken(dir, tok string) (string, error) {
	path := filepath.Join(dir, TokenFileName)
	if err := writeFileAtomic(path, []byte(tok+"\n")); err != nil {
		return "", fmt.Errorf("write token: %w", err)
	}
	return path, nil
}

// Discovery is what the server leaves in its state directory so the CLI
// clients can find it.
type Discovery struct {
	Listen    string    `json:"listen"`     // address as Dial takes it
	TokenFile string    `json:"token_file"` // where the token is, if in a file
	Pid       int       `json:"pid"`
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
}

// WriteDiscovery stores d in dir (mode 0600).
func WriteDiscovery(dir string, d Discovery) error {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, DiscoveryFileName), append(b, '\n')); err != nil {
		return fmt.Errorf("write discovery file: %w", err)
	}
	return nil
}

// ReadDiscovery reads the discovery file in dir. A missing file gives an
// error that matches fs.ErrNotExist.
func ReadDiscovery(dir string) (Discovery, error) {
	var d Discovery
	b, err := os.ReadFile(filepath.Join(dir, DiscoveryFileName))
	if err != nil {
		return d, err
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("%s: %w", filepath.Join(dir, DiscoveryFileName), err)
	}
	return d, nil
}

// RemoveDiscovery removes the discovery file in dir if it is still the
// one process pid wrote, so a newer sidecar's file survives.
func RemoveDiscovery(dir string, pid int) error {
	d, err := ReadDiscovery(dir)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && d.Pid != pid) {
		return nil
	}
	return os.Remove(filepath.Join(dir, DiscoveryFileName))
}

// writeFileAtomic writes through a temporary file and a rename, so a
// reader never sees half a file; CreateTemp makes it mode 0600 from the start.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
