// Package lockfile is wa-sidecar's one lock file: an exclusive flock(2) on
// a file in a private directory, with the holder's identity written into
// it so that a second process can name who holds it. The session and the
// state directory are each locked with one.
package lockfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/internal/privdir"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

// maxInfo bounds what is read of a lock file: its holder is one short line.
const maxInfo = 4096

// HeldError says another process holds the lock.
type HeldError struct {
	Path string
	// Holder is the process named in the lock file, if it is still the
	// process that wrote it; Pid is 0 when the holder cannot be told.
	Holder signals.Identity
	Name   string    // its command name, from /proc
	Since  time.Time // when it took the lock
}

func (e *HeldError) Error() string {
	if e.Holder.Pid <= 0 {
		return e.Path + " is locked by another process"
	}
	return fmt.Sprintf("%s is locked by pid %d (%s)", e.Path, e.Holder.Pid, e.Name)
}

// Who names a lock's holder for a message: "another wa-sidecar (pid 812,
// wa-sidecar, since 2026-12-01 10:00:00)", or, when the lock file did not
// tell (pid 0), "another process (its pid could not be read from where)".
func Who(pid int, name string, since time.Time, where string) string {
	if pid <= 0 {
		return "another process (its pid could not be read from " + where + ")"
	}
	who := fmt.Sprintf("another wa-sidecar (pid %d, %s", pid, name)
	if !since.IsZero() {
		who += ", since " + since.Local().Format(time.DateTime)
	}
	return who + ")"
}

// info is what the holder writes into the lock file.
type info struct {
	Pid       int       `json:"pid"`
	StartTime uint64    `json:"start_time"`
	Since     time.Time `json:"since"`
}

// parseInfo reads a lock file's contents. It fails on anything that is not
// a plausible holder, so a damaged file never names a wrong process.
func parseInfo(data []byte) (info, error) {
	var in info
	if err := json.Unmarshal(data, &in); err != nil {
		return info{}, fmt.Errorf("lock file is not JSON: %w", err)
	}
	if in.Pid <= 0 || in.StartTime == 0 {
		return info{}, errors.New("lock file names no process")
	}
	return in, nil
}

// Lock is a held lock. The kernel drops it when the holder dies, however it
// dies, so a stale lock never blocks a restart.
type Lock struct {
	path     string
	f        *os.File
	dev, ino uint64
}

// Take locks name in d, or returns a *HeldError naming its holder. The file
// is never opened through a link, and is opened close-on-exec, so a child
// never inherits the lock and outlives its parent holding it. The file
// stays when the lock is released: removing it would let a second process
// lock a new file while a third still waits on the old one.
func Take(d *privdir.Dir, name string) (*Lock, error) {
	f, err := d.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	path := f.Name()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, heldBy(d, name, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	l := &Lock{path: path, f: f}
	if err := l.writeInfo(); err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

func (l *Lock) writeInfo() error {
	var st unix.Stat_t
	if err := unix.Fstat(int(l.f.Fd()), &st); err != nil {
		return fmt.Errorf("stat %s: %w", l.path, err)
	}
	l.dev, l.ino = st.Dev, st.Ino
	id, err := signals.IdentityOf(os.Getpid())
	if err != nil {
		return fmt.Errorf("read own identity: %w", err)
	}
	data, err := json.Marshal(info{Pid: id.Pid, StartTime: id.StartTime, Since: time.Now().UTC()})
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

// heldBy reads the lock file of a lock another process holds. It names the
// holder only if that process still runs, so a damaged or old file never
// names a wrong one.
func heldBy(d *privdir.Dir, name, path string) error {
	e := &HeldError{Path: path}
	data, err := d.ReadFile(name, maxInfo)
	if err != nil {
		return e
	}
	in, err := parseInfo(data)
	if err != nil {
		return e
	}
	id := signals.Identity{Pid: in.Pid, StartTime: in.StartTime}
	if !id.Alive() {
		return e
	}
	e.Holder, e.Name, e.Since = id, signals.ProcessName(id.Pid), in.Since
	return e
}

// Stale reports whether the lock file is no longer at its path, as after
// someone deleted its directory: a lock on a deleted file keeps no one
// else out.
func (l *Lock) Stale() bool {
	var st unix.Stat_t
	if err := unix.Stat(l.path, &st); err != nil {
		return true
	}
	return st.Dev != l.dev || st.Ino != l.ino
}

// Close releases the lock.
func (l *Lock) Close() error {
	return l.f.Close()
}
