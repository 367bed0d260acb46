package unit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
)

// UserDir is where systemd --user looks for the user's own units:
// $XDG_CONFIG_HOME/systemd/user, else ~/.config/systemd/user.
func UserDir() (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("cannot find the home directory for the unit: %w", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "systemd", "user"), nil
}

// File is one file to write for a unit.
type File struct {
	Path, Text string
	Secret     bool // mode 0600, not 0644
}

// DiffersError says files that WriteFiles would replace hold other
// contents, and it was not told to replace them.
type DiffersError struct {
	Paths []string
}

func (e *DiffersError) Error() string {
	return strings.Join(e.Paths, " and ") + " exists and differs"
}

// WriteFiles writes files, unless one of them is there with other
// contents and force is off: then it writes none, so the sidecar's unit
// and the gateway's drop-in never disagree, and returns a *DiffersError.
// It reports which files changed.
func WriteFiles(files []File, force bool) ([]bool, error) {
	changed := make([]bool, len(files))
	var differ []string
	for i, f := range files {
		old, err := os.ReadFile(f.Path)
		switch {
		case err == nil && bytes.Equal(old, []byte(f.Text)):
		case err == nil:
			changed[i] = true
			differ = append(differ, f.Path)
		case errors.Is(err, os.ErrNotExist):
			changed[i] = true
		default:
			return nil, fmt.Errorf("reading %s: %w", f.Path, err)
		}
	}
	if len(differ) > 0 && !force {
		return nil, &DiffersError{Paths: differ}
	}
	for i, f := range files {
		if fi, err := os.Lstat(f.Path); f.Secret && !changed[i] && (err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600) {
			changed[i] = true // the same secrets, but others could read them
		}
		if changed[i] {
			if err := writeFile(f.Path, f.Text, f.Secret); err != nil {
				return nil, err
			}
		}
	}
	return changed, nil
}

// writeFile replaces a unit file atomically, so systemd never reads half
// a file. privdir.WriteFile creates its temporary file afresh, mode 0600
// and never through a link planted there, so a secret one is private from
// its first byte.
func writeFile(path, text string, secret bool) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	mode := os.FileMode(0o644)
	if secret {
		mode = 0o600
	}
	if err := privdir.WriteFile(path, []byte(text), mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
