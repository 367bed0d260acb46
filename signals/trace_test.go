package signals

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// traceEnv makes the test binary a tracer of the pid it names (see
// traceAndHold) instead of running the tests.
const traceEnv = "SIGNALS_TEST_TRACE_PID"

// traceAndHold seizes pid as strace or a debugger would, passes on the
// signals it gets, and once it has exited holds its zombie for a second
// before taking its status. A traced zombie is visible to its tracer
// only: its parent's waitid cannot see it until the tracer has taken it,
// although its pidfd is readable from the exit on.
func traceAndHold(pid int) int {
	runtime.LockOSThread()
	if err := unix.PtraceSeize(pid); err != nil {
		fmt.Println("seize:", err)
		return 1
	}
	fmt.Println("seized")
	for {
		var info siginfoChild
		_, _, e := unix.Syscall6(unix.SYS_WAITID, unix.P_PID, uintptr(pid),
			uintptr(unsafe.Pointer(&info)), unix.WEXITED|unix.WSTOPPED|unix.WNOWAIT|unix.WALL, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 2
		}
		var ws syscall.WaitStatus
		if info.Code == 1 || info.Code == 2 || info.Code == 3 { // CLD_EXITED, CLD_KILLED, CLD_DUMPED
			time.Sleep(time.Second)
			syscall.Wait4(pid, &ws, unix.WALL, nil)
			return 0
		}
		// A signal-delivery stop: take it, and let the signal through.
		if _, err := syscall.Wait4(pid, &ws, unix.WALL, nil); err != nil {
			return 3
		}
		sig := 0
		if ws.Stopped() && ws.StopSignal() != syscall.SIGTRAP {
			sig = int(ws.StopSignal())
		}
		unix.PtraceCont(pid, sig)
	}
}

func TestReaperFindsAnExitATracerHeld(t *testing.T) {
	// Under strace -f or a debugger the child's pidfd turns readable when
	// it dies, but its exit reaches the Reaper's waitid only once the
	// tracer has taken it. It must not be lost in between.
	r := NewReaper(ReaperOptions{})
	defer r.Close()
	c, err := r.Spawn(SpawnAttr{Path: "/bin/sleep", Args: []string{"sleep", "30"}, OwnGroup: true})
	if err != nil {
		t.Fatal(err)
	}
	tracer := exec.Command(os.Args[0], "-test.run=^$")
	tracer.Env = append(os.Environ(), traceEnv+"="+strconv.Itoa(c.Pid))
	out, err := tracer.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tracer.Start(); err != nil {
		t.Fatal(err)
	}
	defer tracer.Wait()
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "seized\n" {
		c.Signal(syscall.SIGKILL)
		waitDone(t, c)
		t.Skipf("cannot trace a child here: %q", line)
	}
	if err := c.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitDone(t, c)
	if ws := c.Status(); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("status %v", ws)
	}
}
