package session

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
)

// maxPrivateFile bounds what is read of the session's own files: creds.json
// and its copies are a few kilobytes.
const maxPrivateFile = 16 << 20

// writeFileAtomic replaces path with data so that a crash at any moment
// leaves either the old file or the new one, never a torn or empty one:
// the data goes to a temporary file in the same directory, is synced, and
// is renamed over path; the directory is synced so the rename survives a
// power cut too. This is exactly what creds.json itself lacks. The
// directory must be private (no other user can change it), and a link at
// path is replaced, never written through.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	d, err := privdir.Open(filepath.Dir(path), false)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.WriteFile(filepath.Base(path), data, perm, true)
}

// readPrivate reads one of the sidecar's own files in the session: never
// through a link, and only a regular file of this user's that no one else
// can write, so a file planted there is never taken for ours.
func readPrivate(path string) ([]byte, error) {
	d, err := privdir.Open(filepath.Dir(path), false)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.ReadFile(filepath.Base(path), maxPrivateFile)
}

// WriteFile replaces path with data atomically and durably, as
// writeFileAtomic does but in any directory the caller chose (the bridge's
// files, the Hermes plugin): a link at path is replaced, never written
// through.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	ok = true
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
