package gatewaymodel

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// child is a bridge the gateway started. Like a Python Popen it is reaped
// only when someone asks whether it has exited, so until then an exited
// bridge stays a zombie, as under the gateway.
type child struct {
	cmd *exec.Cmd

	mu   sync.Mutex
	done bool
	code int // Python's returncode: the exit status, or minus the signal
}

// spawn starts Config.Spawn as the gateway starts node: in a new session,
// stdout and stderr appended to LogPath, with Env (and, when Newer,
// WHATSAPP_SEND_READ_RECEIPTS set from SendReadReceipts).
func (g *Gateway) spawn() (*child, error) {
	c := &g.cfg
	if len(c.Spawn) == 0 {
		return nil, errors.New("no command to run (Config.Spawn is empty)")
	}
	log, err := os.OpenFile(c.LogPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o666)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(c.Spawn[0], c.Spawn[1:]...)
	cmd.Env = c.Env
	if c.Newer {
		if cmd.Env == nil {
			cmd.Env = os.Environ()
		}
		cmd.Env = append(cmd.Env[:len(cmd.Env):len(cmd.Env)],
			"WHATSAPP_SEND_READ_RECEIPTS="+strconv.FormatBool(c.SendReadReceipts))
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := &child{cmd: cmd}
	g.mu.Lock()
	if g.own != nil {
		g.earlier = append(g.earlier, g.own)
	}
	g.own = ch
	g.mu.Unlock()
	return ch, nil
}

func (ch *child) pid() int { return ch.cmd.Process.Pid }

// exitCode is the returncode once exited has reported true.
func (ch *child) exitCode() int {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.code
}

// exited reports whether the bridge has ended, reaping it if it has: what
// Popen.poll() tells the gateway.
func (ch *child) exited() bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.done {
		return true
	}
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, ch.pid(), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			// Someone else reaped it; Python reports 0 then.
			ch.reapLocked()
			return true
		}
		break
	}
	if info.Signo == 0 {
		return false
	}
	ch.reapLocked()
	return true
}

// wait blocks until the bridge has ended and reaps it.
func (ch *child) wait() {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if !ch.done {
		ch.reapLocked()
	}
}

func (ch *child) reapLocked() {
	_ = ch.cmd.Wait()
	ch.done = true
	if ch.cmd.ProcessState == nil {
		return // reaped elsewhere: the status is lost, and Python says 0
	}
	if ws, ok := ch.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		ch.code = -int(ws.Signal())
	} else if ok {
		ch.code = ws.ExitStatus()
	}
}

// stop is how disconnect() ends the gateway's own bridge: sig to the
// bridge's descendants, then to it; sleep; if it still runs, SIGKILL the
// same way. The model then reaps it, which the gateway leaves to Python.
func (ch *child) stop(wait time.Duration) {
	if !ch.exited() {
		ch.signalTree(unix.SIGTERM)
	}
	time.Sleep(wait) // the gateway's own pause, not synchronisation
	if !ch.exited() {
		ch.signalTree(unix.SIGKILL)
	}
	ch.wait()
}

// kill SIGKILLs a bridge still running, with its descendants, and reaps it.
func (ch *child) kill() {
	if !ch.exited() {
		ch.signalTree(unix.SIGKILL)
	}
	ch.wait()
}

// signalTree signals the bridge's descendants, found through /proc as
// psutil's children(recursive=True) finds them, then the bridge. Only call
// it while the bridge is unreaped, so its pid cannot name anyone else.
func (ch *child) signalTree(sig unix.Signal) {
	for _, pid := range descendants(ch.pid()) {
		_ = unix.Kill(pid, sig)
	}
	_ = ch.cmd.Process.Signal(sig)
}

// descendants lists the processes below pid, nearest first.
func descendants(pid int) []int {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	kids := map[int][]int{}
	for _, p := range procs {
		n, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		if pp, ok := parentOf(n); ok {
			kids[pp] = append(kids[pp], n)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		next := kids[queue[0]]
		queue = append(queue[1:], next...)
		out = append(out, next...)
	}
	return out
}

// parentOf reads the parent pid (field 4) of /proc/PID/stat, counting from
// the last ')' since the command name may hold anything. It does not use
// signals.ReadStat: the model imports nothing of wa-sidecar (see the
// package doc and kill.go), so that a bug in the sidecar's /proc reading
// cannot hide in the model meant to catch it.
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(f[1])
	return pp, err == nil
}
