package signals

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"

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

// Stat is what /proc/PID/stat tells of a process: the one parse of that
// line for wa-sidecar, its tests and its benchmark.
type Stat struct {
	Pid       int
	Comm      string // command name (field 2), without its parentheses
	State     string // state letter (field 3): R, S, D, Z, X, ...
	PPid      int    // parent pid
	Pgrp      int    // process group
	StartTime uint64 // clock ticks after boot
}

// ReadStat reads pid's /proc/PID/stat.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	return ParseStat(b)
}

// ParseStat reads a /proc/PID/stat line. The command name (field 2) may
// hold anything a program chose, spaces, parentheses and newlines
// included, so it runs from the first '(' to the last ')' and the other
// fields are counted from there.
func ParseStat(stat []byte) (Stat, error) {
	open := bytes.IndexByte(stat, '(')
	end := bytes.LastIndexByte(stat, ')')
	if open < 1 || end < open || stat[open-1] != ' ' {
		return Stat{}, errors.New("malformed /proc stat line")
	}
	// fields[0] is field 3 (state): field 4 (ppid) is fields[1], field 5
	// (pgrp) fields[2] and field 22 (starttime) fields[19].
	fields := bytes.Fields(stat[end+1:])
	if len(fields) < 20 {
		return Stat{}, errors.New("short /proc stat line")
	}
	s := Stat{Comm: string(stat[open+1 : end]), State: string(fields[0])}
	var errs [4]error
	s.Pid, errs[0] = strconv.Atoi(string(stat[:open-1]))
	s.PPid, errs[1] = strconv.Atoi(string(fields[1]))
	s.Pgrp, errs[2] = strconv.Atoi(string(fields[2]))
	s.StartTime, errs[3] = strconv.ParseUint(string(fields[19]), 10, 64)
	if err := errors.Join(errs[:]...); err != nil {
		return Stat{}, fmt.Errorf("malformed /proc stat line: %w", err)
	}
	return s, nil
}

// StartTime reads when pid started, in clock ticks after boot.
func StartTime(pid int) (uint64, error) {
	s, err := ReadStat(pid)
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

// CmdlineOfSpawned is Cmdline for a child the caller has just spawned. The
// spawn returns once the child's exec has replaced its memory, and the
// kernel sets the new program's arguments up only after that: under load,
// about one read in a hundred right after a spawn found none. An empty
// command line is therefore read again, every 50 µs for up to 50 ms; a
// child that still has none by then (one that exited at once) gets nil.
func CmdlineOfSpawned(pid int) ([]string, error) {
	deadline := time.Now().Add(50 * time.Millisecond)
	for {
		args, err := Cmdline(pid)
		if err != nil || len(args) > 0 || time.Now().After(deadline) {
			return args, err
		}
		time.Sleep(50 * time.Microsecond)
	}
}

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
