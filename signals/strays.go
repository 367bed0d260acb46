package signals

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ProcIsOurs reports whether /proc shows this process's own PID
// namespace. Under `unshare --pid` without a /proc of its own, /proc is
// the outer namespace's: its pids and parents are not ours, so a scan of
// it would name other namespaces' processes as ours. Every scan here
// (Strays, Descendants, PipeHolders) finds nothing then, and pidfdOf
// refuses to vouch for a process by its /proc start time.
var ProcIsOurs = sync.OnceValue(func() bool {
	self, err := os.Readlink("/proc/self")
	return err == nil && self == strconv.Itoa(os.Getpid())
})

// processes reads the stat of every process in /proc. Those that end
// while it reads are left out. It reads nothing when /proc is another
// PID namespace's.
func processes() []Stat {
	if !ProcIsOurs() {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make([]Stat, 0, len(entries))
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		if s, err := ReadStat(pid); err == nil {
			out = append(out, s)
		}
	}
	return out
}

// ReapsAll reports whether the Reaper waits for any child (as PID 1 and
// subreapers do), so that descendants of its children that outlive them
// become its own children.
func (r *Reaper) ReapsAll() bool { return r.opts.ReapAll }

// Strays lists what a child of this Reaper left behind outside its
// process group (group, the child's pid): the processes re-parented to
// this process, as PID 1 or a subreaper, that the Reaper did not spawn and
// that started no earlier than since (the child's start time), with all
// their descendants. A process that left the group with setsid or setpgid
// and outlived the child is one; members of group are left out, since the
// Reaper kills the group itself.
func (r *Reaper) Strays(since uint64, group int) []Identity {
	self := os.Getpid()
	all := processes()
	kids := map[int][]Stat{}
	for _, s := range all {
		kids[s.PPid] = append(kids[s.PPid], s)
	}
	r.mu.Lock()
	var roots []Stat
	for _, s := range kids[self] {
		if _, ours := r.children[s.Pid]; !ours && s.StartTime >= since {
			roots = append(roots, s)
		}
	}
	r.mu.Unlock()
	return outsideGroup(roots, kids, group)
}

// Descendants lists pid's descendants, as /proc shows them now, that are
// not in process group group: those that left the group with setsid or
// setpgid, and their own descendants.
func Descendants(pid, group int) []Identity {
	kids := map[int][]Stat{}
	for _, s := range processes() {
		kids[s.PPid] = append(kids[s.PPid], s)
	}
	return outsideGroup(kids[pid], kids, group)
}

// outsideGroup walks roots and their descendants (kids maps a pid to its
// children) and lists those not in process group group.
func outsideGroup(roots []Stat, kids map[int][]Stat, group int) []Identity {
	var out []Identity
	for len(roots) > 0 {
		s := roots[0]
		roots = roots[1:]
		if s.Pgrp != group {
			out = append(out, Identity{Pid: s.Pid, StartTime: s.StartTime})
		}
		roots = append(roots, kids[s.Pid]...)
	}
	return out
}

// SignalAll sends sig to each of ids that is still the recorded process,
// through a pidfd checked against its start time.
func SignalAll(ids []Identity, sig syscall.Signal) {
	for _, id := range ids {
		if fd, ok, _ := pidfdOf(id); ok {
			_ = unix.PidfdSendSignal(fd, sig, nil, 0)
			unix.Close(fd)
		}
	}
}

// HasWriters says whether anything still holds the write end of the pipe
// whose read end is f. It says false once f is closed.
func HasWriters(f *os.File) bool {
	c, err := f.SyscallConn()
	if err != nil {
		return false
	}
	held := false
	c.Control(func(fd uintptr) {
		// A pipe without writers polls as hung up, data or not.
		p := []unix.PollFd{{Fd: int32(fd)}}
		if n, err := unix.Poll(p, 0); err == nil {
			held = n == 0 || p[0].Revents&unix.POLLHUP == 0
		}
	})
	return held
}

// PipeHolders lists the processes other than this one that have the pipe
// of f open, leaving out the members of process group group. It only
// sees the processes whose descriptors it may read (its own user's, or
// all as root).
func PipeHolders(f *os.File, group int) []Identity {
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	want := "pipe:[" + strconv.FormatUint(st.Ino, 10) + "]"
	self := os.Getpid()
	var out []Identity
	for _, s := range processes() {
		if s.Pid == self || s.Pgrp == group {
			continue
		}
		dir := "/proc/" + strconv.Itoa(s.Pid) + "/fd/"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if target, err := os.Readlink(dir + fd.Name()); err == nil && target == want {
				out = append(out, Identity{Pid: s.Pid, StartTime: s.StartTime})
				break
			}
		}
	}
	return out
}

// killWait bounds how long Terminate waits for the processes it sent
// SIGKILL to: the kernel ends them at once unless they are stuck in an
// uninterruptible sleep.
const killWait = 5 * time.Second

// Terminate stops processes the sidecar is responsible for but did not
// spawn: it sends SIGTERM (and SIGCONT, in case one is stopped) to each
// that is still the recorded process, waits until all have ended or grace
// has passed, and then sends SIGKILL to those left and to those more (if
// set) then lists, such as children they started meanwhile. Each process
// is held by a pidfd from the moment its identity is checked, so a pid
// reused by another program is never signalled.
//
// It returns how many of ids were still the recorded processes and have
// now ended, and an error for one it could not open or signal, or that
// was still there some seconds after SIGKILL.
func Terminate(ids []Identity, grace time.Duration, more func() []Identity) (int, error) {
	var errs []error
	var open []int
	pids := map[int]int{}
	defer func() {
		for _, fd := range open {
			unix.Close(fd)
		}
	}()
	for _, id := range ids {
		fd, ok, err := pidfdOf(id)
		if err != nil {
			errs = append(errs, err)
		}
		if !ok {
			continue
		}
		open = append(open, fd)
		pids[fd] = id.Pid
		if err := unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("signal pid %d: %w", id.Pid, err))
		}
		_ = unix.PidfdSendSignal(fd, unix.SIGCONT, nil, 0)
	}
	left := waitExited(open, grace)
	for _, fd := range left {
		_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	}
	if more != nil {
		for _, id := range more() {
			if fd, ok, _ := pidfdOf(id); ok {
				_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
				unix.Close(fd)
			}
		}
	}
	left = waitExited(left, killWait)
	for _, fd := range left {
		errs = append(errs, fmt.Errorf("pid %d did not die after SIGKILL", pids[fd]))
	}
	return len(open) - len(left), errors.Join(errs...)
}

// pidfdOf opens a pidfd for id, if it is still that process: the start
// time read after the pidfd was opened proves the pidfd is not someone
// else's. It says false, without an error, for a process that has gone
// or whose pid is another's now, and for any when /proc cannot vouch for
// the start time.
func pidfdOf(id Identity) (int, bool, error) {
	if id.Pid <= 0 || !ProcIsOurs() {
		return -1, false, nil
	}
	fd, err := unix.PidfdOpen(id.Pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return -1, false, nil
	}
	if err != nil {
		return -1, false, fmt.Errorf("pidfd_open %d: %w", id.Pid, err)
	}
	if st, err := StartTime(id.Pid); err != nil || st != id.StartTime {
		unix.Close(fd)
		return -1, false, nil
	}
	return fd, true, nil
}

// waitExited waits until every pidfd in fds says its process has ended,
// or d has passed, and returns those whose process has not ended.
func waitExited(fds []int, d time.Duration) []int {
	deadline := time.Now().Add(d)
	left := append([]int(nil), fds...)
	for len(left) > 0 {
		ms := time.Until(deadline).Milliseconds()
		if ms <= 0 {
			return left
		}
		p := make([]unix.PollFd, len(left))
		for i, fd := range left {
			p[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
		}
		n, err := unix.Poll(p, int(min(ms, 1000)))
		if err != nil && err != unix.EINTR {
			return left
		}
		if n <= 0 {
			continue
		}
		left = left[:0]
		for _, q := range p {
			if q.Revents == 0 {
				left = append(left, int(q.Fd))
			}
		}
	}
	return left
}
