package signals

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Identity names one process for its whole life: a pid alone can be reused
// by an unrelated program once the original is reaped, a pid with its start
// time cannot.
type Identity struct {
	Pid       int    `json:"pid"`
	StartTime uint64 `json:"start_time"` // clock ticks after boot, field 22 of /proc/PID/stat
}

// ErrNotSameProcess says a pid now belongs to a process the sidecar did not
// start, so it must not be signalled.
var ErrNotSameProcess = errors.New("pid now belongs to another process")

// StartTime reads when pid started, in clock ticks after boot.
func StartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStartTime(b)
}

// parseStartTime reads field 22 of a /proc/PID/stat line. The command name
// (field 2) may hold spaces and parentheses, so fields are counted from the
// last ')'.
func parseStartTime(stat []byte) (uint64, error) {
	s, err := parseStat(stat)
	return s.StartTime, err
}

// IdentityOf records pid's identity now.
func IdentityOf(pid int) (Identity, error) {
	st, err := StartTime(pid)
	if err != nil {
		return Identity{}, err
	}
	return Identity{Pid: pid, StartTime: st}, nil
}

// Alive reports whether the process is still the one recorded, alive or a
// zombie not yet reaped.
func (id Identity) Alive() bool {
	st, err := StartTime(id.Pid)
	return err == nil && st == id.StartTime
}

// Signal sends sig to the process only if it is still the recorded one.
func (id Identity) Signal(sig syscall.Signal) error {
	if id.Pid <= 0 {
		return fmt.Errorf("refusing to signal pid %d", id.Pid)
	}
	st, err := StartTime(id.Pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return syscall.ESRCH
		}
		return err
	}
	if st != id.StartTime {
		return fmt.Errorf("pid %d: %w", id.Pid, ErrNotSameProcess)
	}
	return unix.Kill(id.Pid, sig)
}

// ProcessName returns the short command name of pid from /proc/PID/comm.
func ProcessName(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return "?"
	}
	return string(bytes.TrimSpace(b))
}

// BecomeSubreaper makes orphaned descendants of this process re-parent to it
// instead of to init, so it can reap them.
func BecomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	return nil
}

// maxCmdline bounds what Cmdline reads: a command line is at most a few
// pages, and a hostile one must not make the sidecar read without end.
const maxCmdline = 128 << 10

// Cmdline returns pid's argument vector from /proc/PID/cmdline. A process
// that rewrote its own arguments into one string (as some do) comes back
// as that one element.
func Cmdline(pid int) ([]string, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, maxCmdline)
	n, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	b = bytes.TrimRight(b[:n], "\x00")
	if len(b) == 0 {
		return nil, nil // a kernel thread or a zombie
	}
	parts := bytes.Split(b, []byte{0})
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = string(p)
	}
	return out, nil
}
