package session

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
	who := "another process (its pid could not be read from the lock file)"
	if e.Holder.Pid > 0 {
		who = fmt.Sprintf("another wa-sidecar (pid %d, %s", e.Holder.Pid, e.Name)
		if !e.Since.IsZero() {
			who += ", since " + e.Since.Local().Format(time.DateTime)
		}
		who += ")"
	}
	return fmt.Sprintf("session %s is in use by %s; two bridges on one WhatsApp session knock each other off. "+
		"Stop the other sidecar first, or give this one its own --session-dir", e.SessionDir, who)
}

// lockInfo is what the holder writes into the lock file, so that a second
// sidecar can name it.
type lockInfo struct {
	Pid       int       `json:"pid"`
	StartTime uint64    `json:"start_time"`
	Since     time.Time `json:"since"`
}

// parseLockInfo reads a lock file's contents. It fails on anything that is
// not a plausible holder, so a damaged file never names a wrong process.
func parseLockInfo(data []byte) (lockInfo, error) {
	var li lockInfo
	if err := json.Unmarshal(data, &li); err != nil {
		return lockInfo{}, fmt.Errorf("lock file is not JSON: %w", err)
	}
	if li.Pid <= 0 || li.StartTime == 0 {
		return lockInfo{}, errors.New("lock file names no process")
	}
	return li, nil
}

// fileLock is an exclusive flock(2) on a file. The kernel drops it when the
// holder dies, however it dies, so a stale lock never blocks a restart.
type fileLock struct {
	path string
	f    *os.File
	dev  uint64
	ino  uint64
}

// lockFile takes the lock at path or says who holds it. Its directory
// must be private and the file is never opened through a link, so no one
// else can make us write into another file. The file is opened
// close-on-exec, so the bridge never inherits (and outlives us holding) it.
func lockFile(path, sessionDir string) (*fileLock, error) {
	d, err := privdir.Open(filepath.Dir(path), false)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	f, err := d.OpenFile(filepath.Base(path), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the session lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, heldBy(path, sessionDir)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	l := &fileLock{path: path, f: f, dev: st.Dev, ino: st.Ino}
	if err := l.writeInfo(); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

func (l *fileLock) writeInfo() error {
	id, err := signals.IdentityOf(os.Getpid())
	if err != nil {
		return fmt.Errorf("read own identity: %w", err)
	}
	data, err := json.Marshal(lockInfo{Pid: id.Pid, StartTime: id.StartTime, Since: time.Now().UTC()})
	if err != nil {
		return fmt.Errorf("write %s: %w", l.path, err)
	}
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("write %s: %w", l.path, err)
	}
	if _, err := l.f.WriteAt(append(data, '\n'), 0); err != nil {
		return fmt.Errorf("write %s: %w", l.path, err)
	}
	return nil
}

// heldBy reads the lock file of a lock someone else holds.
func heldBy(path, sessionDir string) error {
	e := &HeldError{SessionDir: sessionDir}
	data, err := readPrivate(path)
	if err != nil {
		return e
	}
	li, err := parseLockInfo(data)
	if err != nil {
		return e
	}
	id := signals.Identity{Pid: li.Pid, StartTime: li.StartTime}
	if !id.Alive() {
		return e
	}
	e.Holder, e.Name, e.Since = id, signals.ProcessName(id.Pid), li.Since
	return e
}

// stale reports whether the lock file is no longer at its path, as after
// someone deleted the session directory to pair again: a lock on a deleted
// file would keep no one else out.
func (l *fileLock) stale() bool {
	var st unix.Stat_t
	if err := unix.Stat(l.path, &st); err != nil {
		return true
	}
	return st.Dev != l.dev || st.Ino != l.ino
}

func (l *fileLock) close() error {
	return l.f.Close()
}
