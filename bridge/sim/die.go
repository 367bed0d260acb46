package sim

import (
	"os"
	"syscall"
	"time"
	"unsafe"
)

const (
	sigAbort = syscall.SIGABRT
	sigKill  = syscall.SIGKILL
)

// dieBySignal kills the process with sig under the kernel's default action,
// so the parent sees a signal death exactly as it would for Node. The Go
// runtime catches SIGABRT itself (and turns it into exit 2), so the
// disposition is reset with a raw rt_sigaction first.
func dieBySignal(sig syscall.Signal) {
	var act struct { // struct kernel_sigaction with SIG_DFL
		handler  uintptr
		flags    uint64
		restorer uintptr
		mask     uint64
	}
	syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
	syscall.Kill(os.Getpid(), sig)
	time.Sleep(time.Second)
	os.Exit(128 + int(sig)) // not reached unless the signal was blocked
}
