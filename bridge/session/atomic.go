package session

import (
	"os"
	"path/filepath"

	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
)

// maxPrivateFile bounds what is read of the session's own files: creds.json
// and its copies are a few kilobytes.
const maxPrivateFile = 16 << 20

// writeFileAtomic replaces path with data so that a crash at any moment
// leaves either the old file or the new one, never a torn or empty one:
// privdir.Dir.WriteFile syncs the data, renames it over path and syncs the
// directory. This is exactly what creds.json itself lacks. The directory
// must be private (no other user can change it), and a link at path is
// replaced, never written through.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	d, err := privdir.Open(filepath.Dir(path), false)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.WriteFile(filepath.Base(path), data, perm)
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
