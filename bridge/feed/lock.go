package feed

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/lockfile"
	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
)

// LockFileName is the lock a running server holds in its state directory.
const LockFileName = "sidecar.lock"

// StateDirHeldError says another process holds the state directory's lock,
// so its token and discovery file belong to that process.
type StateDirHeldError struct {
	Dir string
	// Pid is the holder's pid, 0 when the lock file does not tell.
	Pid   int
	Name  string    // its command name, from /proc
	Since time.Time // when it took the lock
}

func (e *StateDirHeldError) Error() string {
	return fmt.Sprintf("state directory %s is in use by %s", e.Dir, lockfile.Who(e.Pid, e.Name, e.Since, filepath.Join(e.Dir, LockFileName)))
}

// StateLock is an exclusive flock(2) on the state directory's lock file,
// held for the server's life. The kernel drops it when the holder dies,
// however it dies, so a crashed sidecar never blocks the next one.
type StateLock struct {
	l *lockfile.Lock
}

// LockStateDir takes the lock of dir, which must exist, or returns a
// *StateDirHeldError naming its holder. dir must be private (see
// OpenStateDir), and a lock file that is a link or another user's file is
// refused untouched. The file is opened close-on-exec, so the bridge
// never inherits the lock and outlives the sidecar holding it.
func LockStateDir(dir string) (*StateLock, error) {
	d, err := OpenStateDir(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return lockIn(d)
}

// lockIn takes the lock of the state directory d, opened and checked.
func lockIn(d *privdir.Dir) (*StateLock, error) {
	l, err := lockfile.Take(d, LockFileName)
	var held *lockfile.HeldError
	switch {
	case errors.As(err, &held):
		return nil, &StateDirHeldError{Dir: d.Path(), Pid: held.Holder.Pid, Name: held.Name, Since: held.Since}
	case err != nil:
		return nil, fmt.Errorf("open the state directory's lock: %w", err)
	}
	return &StateLock{l: l}, nil
}

// Unlock releases the lock. The file stays: removing it would let a
// second sidecar lock a new file while a third still waits on the old one.
func (l *StateLock) Unlock() error {
	return l.l.Close()
}
