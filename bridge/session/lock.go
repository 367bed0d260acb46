package session

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/lockfile"
	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

// HeldError says the session is locked by another process.
type HeldError struct {
	SessionDir string
	// Holder is the process named in the lock file, if it is still the
	// process that wrote it; Pid is 0 when the holder cannot be told.
	Holder signals.Identity
	Name   string    // its command name, from /proc
	Since  time.Time // when it took the lock
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("session %s is in use by %s; two bridges on one WhatsApp session knock each other off",
		e.SessionDir, lockfile.Who(e.Holder.Pid, e.Name, e.Since, "the lock file"))
}

// DirError is a session directory, or the sidecar's directory in it, that
// cannot be made or opened, for a reason other than its being unsafe.
type DirError struct {
	Dir string
	Err error
}

func (e *DirError) Error() string { return "session directory: " + e.Err.Error() }

func (e *DirError) Unwrap() error { return e.Err }

// lockFile takes the lock at path or says who holds it. Its directory
// must be private and the file is never opened through a link, so no one
// else can make us write into another file.
func lockFile(path, sessionDir string) (*lockfile.Lock, error) {
	d, err := privdir.Open(filepath.Dir(path), false)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	l, err := lockfile.Take(d, filepath.Base(path))
	var held *lockfile.HeldError
	switch {
	case errors.As(err, &held):
		return nil, &HeldError{SessionDir: sessionDir, Holder: held.Holder, Name: held.Name, Since: held.Since}
	case err != nil:
		return nil, fmt.Errorf("open the session lock: %w", err)
	}
	return l, nil
}
