package feed

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
	"github.com/wa-sidecar/wa-sidecar/signals"
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
	who := "another process (its pid could not be read from " + filepath.Join(e.Dir, LockFileName) + ")"
	if e.Pid > 0 {
		who = fmt.Sprintf("another wa-sidecar (pid %d, %s", e.Pid, e.Name)
		if !e.Since.IsZero() {
			who += ", since " + e.Since.Local().Format(time.DateTime)
		}
		who += ")"
	}
	return fmt.Sprintf("state directory %s is in use by %s; to run a second sidecar, pass it a different --state-dir (and --listen)", e.Dir, who)
}

// StateLock is an exclusive flock(2) on the state directory's lock file,
// held for the server's life. The kernel drops it when the holder dies,
// however it dies, so a crashed sidecar never blocks the next one.
type StateLock struct {
	f *os.File
}

// lockHolder is what the holder writes into the lock file, so that a
// second sidecar can name it.
type lockHolder struct {
	Pid       int       `json:"pid"`
	StartTime uint64    `json:"start_time"`
	Since     time.Time `json:"since"`
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
	path := filepath.Join(d.Path(), LockFileName)
	f, err := d.OpenFile(LockFileName, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the state directory's lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, stateDirHeldBy(d)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	id, err := signals.IdentityOf(os.Getpid())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read own identity: %w", err)
	}
	data, err := json.Marshal(lockHolder{Pid: id.Pid, StartTime: id.StartTime, Since: time.Now().UTC()})
	if err == nil {
		err = f.Truncate(0)
	}
	if err == nil {
		_, err = f.WriteAt(append(data, '\n'), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return &StateLock{f: f}, nil
}

// stateDirHeldBy reads the lock file of a lock another process holds. It
// names the holder only if that process still runs, so a damaged or old
// file never names a wrong one.
func stateDirHeldBy(d *privdir.Dir) error {
	e := &StateDirHeldError{Dir: d.Path()}
	data, err := d.ReadFile(LockFileName, 4096)
	if err != nil {
		return e
	}
	var h lockHolder
	if json.Unmarshal(data, &h) != nil || h.Pid <= 0 || h.StartTime == 0 {
		return e
	}
	if !(signals.Identity{Pid: h.Pid, StartTime: h.StartTime}).Alive() {
		return e
	}
	e.Pid, e.Name, e.Since = h.Pid, signals.ProcessName(h.Pid), h.Since
	return e
}

// Unlock releases the lock. The file stays: removing it would let a
// second sidecar lock a new file while a third still waits on the old one.
func (l *StateLock) Unlock() error {
	return l.f.Close()
}
