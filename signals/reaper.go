package signals

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reaper is the one owner of wait in the process. It spawns children, learns
// of their exits on SIGCHLD, and hands each exit status to the Child it
// belongs to. With ReapAll it also reaps every other process that ends up as
// its child (orphans re-parented to a PID 1 or a subreaper), and still never
// loses a spawned child's status to that reaping, because every wait goes
// through the same loop.
//
// With ReapAll, nothing else in the process may wait for children: an
// os/exec Cmd's Wait would find its child already reaped. The sidecar
// starts its children only through the Reaper.
//
// Children are spawned from one goroutine locked to its own OS thread for
// the Reaper's whole life: Linux fires a parent-death signal when the thread
// that forked the child exits, not the process, and Go may retire threads.
//
// A spawned child's exit is learnt from its pidfd, which Go's poller waits
// on with the child's pipes: the goroutine it wakes reaps the child at
// once, with no hand-off through the signal goroutine. SIGCHLD is listened
// to only where it is needed: for the orphans of ReapAll, for a child
// without a pidfd in the poller (kernels older than 5.3 have no pidfds),
// and for a traced child, whose exit its tracer sees first.
type Reaper struct {
	opts     ReaperOptions
	mu       sync.Mutex // held across a spawn and across a reap pass
	children map[int]*Child
	spawns   chan spawnRequest
	sigch    chan os.Signal
	listen   sync.Once // starts SIGCHLD's delivery to sigch
	quit     chan struct{}
	wg       sync.WaitGroup
	watchers sync.WaitGroup // one per child that has a pidfd in the poller
	// devnull is the child's stdin (and its stdout or stderr when it is
	// given none), opened once by the spawning goroutine, which alone uses it.
	devnull int
}

// ReaperOptions configures a Reaper. The zero value waits only for the
// children the Reaper spawned.
type ReaperOptions struct {
	// ReapAll makes the Reaper wait for any child, as PID 1 and subreapers must.
	ReapAll bool
	// Orphan, if set, is told of each reaped process that the Reaper did not
	// spawn. It runs on the reaper goroutine and must not block.
	Orphan func(pid int, status syscall.WaitStatus)
}

// SpawnAttr describes a child to start.
type SpawnAttr struct {
	Path   string   // resolved program path
	Args   []string // argv, including argv[0]
	Env    []string // full environment
	Dir    string   // working directory; empty means the sidecar's
	Stdout *os.File
	Stderr *os.File
	// Pdeathsig is sent to the child when the Reaper's spawning thread
	// (and so the sidecar) dies. Zero disables it.
	Pdeathsig syscall.Signal
	// OwnGroup puts the child in a new process group led by itself. On exit,
	// what is left of that group is sent SIGKILL before the leader is reaped,
	// while its pid (and so the group id) cannot yet be reused.
	OwnGroup bool
}

// Child is a process started by a Reaper.
type Child struct {
	Identity
	Started time.Time

	ownGroup bool
	mu       sync.Mutex // orders Signal against reaping
	pidfd    int        // -1 where pidfd_open is not available
	pidf     *os.File   // pidfd, in the poller; nil if it could not be
	reaped   bool
	ended    time.Time // when it was reaped
	status   syscall.WaitStatus
	rusage   syscall.Rusage
	done     chan struct{}
}

// ErrFinished is returned when signalling a child that has been reaped.
var ErrFinished = errors.New("process already finished")

type spawnRequest struct {
	attr  SpawnAttr
	reply chan spawnReply
}

type spawnReply struct {
	pid int
	err error
}

// NewReaper starts a Reaper. Close it once every child it spawned is done.
func NewReaper(opts ReaperOptions) *Reaper {
	r := &Reaper{
		opts:     opts,
		children: map[int]*Child{},
		spawns:   make(chan spawnRequest),
		sigch:    make(chan os.Signal, 1),
		quit:     make(chan struct{}),
		devnull:  -1,
	}
	if opts.ReapAll {
		r.listenSIGCHLD()
	}
	r.wg.Add(2)
	go r.spawnLoop()
	go r.reapLoop()
	return r
}

// listenSIGCHLD makes SIGCHLD start a reap pass. A child that exited before
// it was called is found by the pass that the caller then asks for (poke).
func (r *Reaper) listenSIGCHLD() {
	r.listen.Do(func() { signal.Notify(r.sigch, syscall.SIGCHLD) })
}

// poke makes sure a reap pass runs soon.
func (r *Reaper) poke() {
	select {
	case r.sigch <- syscall.SIGCHLD:
	default:
	}
}

// Close stops the Reaper. Children it spawned and that still run would get
// their parent-death signal when the spawning thread goes, so Close first
// waits for them (up to a few seconds) and only then ends the thread.
func (r *Reaper) Close() {
	deadline := time.Now().Add(5 * time.Second)
	n := 0
	for time.Now().Before(deadline) {
		r.mu.Lock()
		n = len(r.children)
		r.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	signal.Stop(r.sigch)
	close(r.quit)
	r.wg.Wait()
	if n == 0 {
		// Every child is reaped, so every watcher has ended or is ending;
		// a child still running would keep its watcher waiting.
		r.watchers.Wait()
	}
}

func (r *Reaper) spawnLoop() {
	defer r.wg.Done()
	// Never unlocked: when this goroutine returns, Go ends the thread, which
	// is exactly what should fire the children's parent-death signal.
	runtime.LockOSThread()
	defer func() {
		if r.devnull >= 0 {
			unix.Close(r.devnull)
		}
	}()
	for {
		select {
		case req := <-r.spawns:
			pid, err := r.forkExec(req.attr)
			req.reply <- spawnReply{pid, err}
		case <-r.quit:
			return
		}
	}
}

// forkExec runs on the spawning goroutine.
func (r *Reaper) forkExec(a SpawnAttr) (int, error) {
	if err := closeOnExecAboveStderr(); err != nil {
		return 0, fmt.Errorf("mark inherited file descriptors close-on-exec: %w", err)
	}
	if r.devnull < 0 {
		// Read-only, as os.Open would: a child given no stdout or stderr
		// gets EBADF when it writes, not a silent sink.
		fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, &os.PathError{Op: "open", Path: os.DevNull, Err: err}
		}
		r.devnull = fd
	}
	stdout, stderr := uintptr(r.devnull), uintptr(r.devnull)
	if a.Stdout != nil {
		stdout = a.Stdout.Fd()
	}
	if a.Stderr != nil {
		stderr = a.Stderr.Fd()
	}
	return syscall.ForkExec(a.Path, a.Args, &syscall.ProcAttr{
		Dir:   a.Dir,
		Env:   a.Env,
		Files: []uintptr{uintptr(r.devnull), stdout, stderr},
		Sys: &syscall.SysProcAttr{
			Setpgid:   a.OwnGroup,
			Pdeathsig: a.Pdeathsig,
		},
	})
}

// closeOnExecAboveStderr marks every descriptor above stderr
// close-on-exec, so that a child gets only the three it is given. Go opens
// all of its own that way, but the sidecar may have inherited others
// without the flag (a parent's socket, pipe or lock file), and the bridge
// must not hold them: it would keep them open after the sidecar closes
// them, and could use them. Descriptors handed to a child on purpose are
// unaffected, since ForkExec dups those into place in the child.
func closeOnExecAboveStderr() error {
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		// close_range came with Linux 5.9, its CLOEXEC flag with 5.11.
		if ferr := closeOnExecFromProc(); ferr != nil {
			return errors.Join(err, ferr)
		}
	}
	return nil
}

// closeOnExecFromProc does closeOnExecAboveStderr's work one descriptor at
// a time, for kernels without CLOSE_RANGE_CLOEXEC.
func closeOnExecFromProc() error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range entries {
		fd, perr := strconv.Atoi(e.Name())
		if perr != nil || fd <= 2 {
			continue
		}
		// EBADF: the descriptor ReadDir used, already closed.
		if _, ferr := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); ferr != nil && ferr != unix.EBADF {
			return ferr
		}
	}
	return nil
}

// Spawn starts a child. The child is registered before any reap pass can
// see it, so its exit status always reaches the returned Child.
func (r *Reaper) Spawn(a SpawnAttr) (*Child, error) {
	select {
	case <-r.quit:
		return nil, errors.New("reaper is closed")
	default:
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	reply := make(chan spawnReply, 1)
	r.spawns <- spawnRequest{attr: a, reply: reply}
	res := <-reply
	if res.err != nil {
		return nil, res.err
	}
	c := &Child{
		Identity: Identity{Pid: res.pid},
		Started:  time.Now(),
		ownGroup: a.OwnGroup,
		pidfd:    -1,
		done:     make(chan struct{}),
	}
	// The child is ours and unreaped, so its pid cannot have been reused
	// yet: a pidfd taken now refers to it for good, whatever /proc shows
	// (in a PID namespace without its own /proc, pids there are not ours).
	if fd, err := pidfdOpen(res.pid); err == nil {
		c.pidfd = fd
		// Non-blocking, so that os.NewFile puts it in the poller.
		if unix.SetNonblock(fd, true) == nil {
			c.pidf = os.NewFile(uintptr(fd), "pidfd")
		}
	}
	c.StartTime, _ = StartTime(res.pid)
	r.children[res.pid] = c
	if c.pidf != nil {
		r.watchers.Add(1)
		go r.watch(c, c.pidf)
		return c, nil
	}
	r.listenSIGCHLD()
	// A SIGCHLD that arrived while the lock was held was consumed by a pass
	// that could not see this child yet; make sure another pass runs.
	r.poke()
	return c, nil
}

// pidfdOpen is unix.PidfdOpen, replaced by a test to act as an old kernel.
var pidfdOpen = func(pid int) (int, error) { return unix.PidfdOpen(pid, 0) }

// watch waits in the poller for c's pidfd to say that c has exited, and
// reaps it right away. If the poller cannot wait on pidfds, or c cannot be
// reaped yet when its pidfd says it has exited, it hands c over to
// SIGCHLD. It returns early when a reap pass took c first (the pidfd is
// then closed).
func (r *Reaper) watch(c *Child, f *os.File) {
	defer r.watchers.Done()
	rc, err := f.SyscallConn()
	if err == nil {
		err = rc.Read(func(fd uintptr) bool {
			// A pidfd polls readable once its process has exited.
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, perr := unix.Poll(p, 0)
			return perr == nil && n > 0
		})
	}
	if err != nil {
		c.mu.Lock()
		reaped := c.reaped
		c.mu.Unlock()
		if !reaped {
			r.listenSIGCHLD()
			r.poke()
		}
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.children[c.Pid] != c {
		return
	}
	r.check(c.Pid, c)
	if r.children[c.Pid] == c {
		// Dead, but its waitid sees nothing yet: a tracer (strace -f, a
		// debugger) sees a traced zombie first, and the parent hears of it
		// by SIGCHLD once the tracer has taken it. The pidfd stays
		// readable, so only SIGCHLD can tell when.
		r.listenSIGCHLD()
		r.poke()
	}
}

func (r *Reaper) reapLoop() {
	defer r.wg.Done()
	for {
		select {
		case <-r.sigch:
			r.reap()
		case <-r.quit:
			return
		}
	}
}

// reap runs one pass. Each exited child is first peeked at with WNOWAIT so
// its group can be killed while the leader's pid is still held as a zombie,
// then reaped by pid.
func (r *Reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.opts.ReapAll {
		for {
			pid, err := peekExited(unix.P_ALL, 0)
			if err != nil || pid <= 0 {
				return
			}
			if c, ok := r.children[pid]; ok {
				r.finish(c)
				continue
			}
			var ws syscall.WaitStatus
			if _, err := wait4(pid, &ws, nil); err != nil {
				// Peeked but not reapable: stop rather than spin; the
				// next SIGCHLD tries again.
				break
			}
			if r.opts.Orphan != nil {
				r.opts.Orphan(pid, ws)
			}
		}
	}
	for pid, c := range r.children {
		r.check(pid, c)
	}
}

// check reaps c if it has exited; the caller holds r.mu.
func (r *Reaper) check(pid int, c *Child) {
	if p, err := peekExited(unix.P_PID, pid); err == nil && p == pid {
		r.finish(c)
	} else if errors.Is(err, syscall.ECHILD) {
		// Someone else in this process reaped it (a stray os/exec Wait
		// would). The status is lost; say so rather than hang.
		c.mu.Lock()
		c.reaped = true
		c.ended = time.Now()
		c.status = syscall.WaitStatus(0xff << 8) // exit code 255
		c.closePidfd()
		c.mu.Unlock()
		delete(r.children, pid)
		close(c.done)
	}
}

func (r *Reaper) finish(c *Child) {
	c.mu.Lock()
	if c.ownGroup {
		// ESRCH just means the leader was alone in its group.
		_ = unix.Kill(-c.Pid, unix.SIGKILL)
	}
	var ws syscall.WaitStatus
	_, err := wait4(c.Pid, &ws, &c.rusage)
	if err != nil {
		ws = syscall.WaitStatus(0xff << 8)
	}
	c.status = ws
	c.reaped = true
	c.ended = time.Now()
	c.closePidfd()
	c.mu.Unlock()
	delete(r.children, c.Pid)
	close(c.done)
}

func wait4(pid int, ws *syscall.WaitStatus, ru *syscall.Rusage) (int, error) {
	for {
		p, err := syscall.Wait4(pid, ws, syscall.WNOHANG, ru)
		if err == syscall.EINTR {
			continue
		}
		return p, err
	}
}

// siginfoChild is the part of Linux's siginfo_t that waitid fills in for
// SIGCHLD. The union holding si_pid starts at offset 16 on 64-bit Linux and
// at 12 on 32-bit.
type siginfoChild struct {
	Signo int32
	Errno int32
	Code  int32
	_     [unsafe.Sizeof(uintptr(0)) - 4]byte
	Pid   int32
	Uid   uint32
	Stat  int32
	_     [128]byte
}

// peekExited returns the pid of an exited child matching (idtype, id)
// without reaping it, or 0 if none has exited.
func peekExited(idtype, id int) (int, error) {
	for {
		var info siginfoChild
		_, _, e := unix.Syscall6(unix.SYS_WAITID, uintptr(idtype), uintptr(id),
			uintptr(unsafe.Pointer(&info)), unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		if info.Signo != int32(syscall.SIGCHLD) {
			return 0, nil
		}
		return int(info.Pid), nil
	}
}

// Done is closed once the child has been reaped.
func (c *Child) Done() <-chan struct{} { return c.done }

// Status is the raw wait status; valid once Done is closed.
func (c *Child) Status() syscall.WaitStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Ended is when the child was reaped, that is when its end was learnt;
// valid once Done is closed.
func (c *Child) Ended() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ended
}

// Rusage is the child's resource usage; valid once Done is closed.
func (c *Child) Rusage() syscall.Rusage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rusage
}

// closePidfd closes the pidfd, which also ends its watcher; the caller
// holds c.mu.
func (c *Child) closePidfd() {
	switch {
	case c.pidf != nil:
		c.pidf.Close()
		c.pidf = nil
	case c.pidfd >= 0:
		unix.Close(c.pidfd)
	}
	c.pidfd = -1
}

// Signal sends sig to the child itself: through its pidfd, which can only
// ever name this process, or, on kernels without pidfds, by pid, which is
// safe too because the child is not reaped yet and so its pid is still
// held. Once reaped, the child is never signalled again.
func (c *Child) Signal(sig syscall.Signal) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reaped {
		return ErrFinished
	}
	if c.pidfd >= 0 {
		return unix.PidfdSendSignal(c.pidfd, sig, nil, 0)
	}
	return unix.Kill(c.Pid, sig)
}

// SignalGroup sends sig to the child's whole process group. The group's id
// is the child's pid, which stays reserved until the child is reaped, so
// the group cannot be anyone else's. It is refused for a child spawned
// without a group of its own, since the group would be the sidecar's.
func (c *Child) SignalGroup(sig syscall.Signal) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reaped {
		return ErrFinished
	}
	if !c.ownGroup {
		return fmt.Errorf("pid %d has no process group of its own", c.Pid)
	}
	return unix.Kill(-c.Pid, sig)
}
