package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
)

// TestAsPID1InPIDNamespace runs the sidecar as PID 1 of a new PID
// namespace, as in a container without an init: it must forward signals,
// reap orphans re-parented to it without losing the bridge's own status,
// leave no zombies, and exit 0 on SIGTERM.
func TestAsPID1InPIDNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for unshare --pid")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare not installed")
	}
	if out, err := exec.Command("unshare", "--pid", "--fork", "true").CombinedOutput(); err != nil {
		t.Skipf("PID namespaces not allowed here: %v %s", err, out)
	}
	bin, fake := binaries(t)
	p := startCmd(t, exec.Command("unshare", "--pid", "--fork", "--kill-child",
		bin, "run", "--log-level", "debug", "--", fake, "-report-signals", "-orphan", "50ms", "-say", "armed"))

	ready := p.waitLog("reaping orphaned processes")
	if ready["pid1"] != true {
		t.Fatalf("sidecar is not PID 1 in the namespace: %v", ready)
	}
	sidecar := childOf(t, p.cmd.Process.Pid)
	p.waitLog("armed")

	// Signals reach the bridge through PID 1.
	if err := syscall.Kill(sidecar, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	p.waitLog("got SIGUSR1")

	// The bridge's grandchild lives in its own session, outside the group
	// the sidecar kills. Once the bridge goes, it is re-parented to PID 1,
	// which must reap it when it exits, while the bridge's own exit status
	// still reaches the monitor.
	if err := syscall.Kill(sidecar, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	stopped := p.waitLog("bridge stopped")
	if !strings.Contains(fmt.Sprint(stopped["exit"]), "SIGTERM") {
		t.Fatalf("bridge status lost to the orphan reaper: %v", stopped)
	}
	p.waitLog("bridge started")
	p.waitLog("reaped an orphaned process")
	if z := proctest.ZombieChildren(sidecar); len(z) > 0 {
		t.Fatalf("zombies under PID 1: %v", z)
	}

	if err := syscall.Kill(sidecar, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d; log:\n%s", code, p.logText())
	}
	// /proc here is the outer namespace's: its processes are not the
	// bridge's leftovers, and the sidecar says it cannot tell them apart.
	log := p.logText()
	if strings.Contains(log, "left processes behind") || !strings.Contains(log, "/proc shows another PID namespace") {
		t.Fatalf("the sidecar took the outer namespace's /proc for its own:\n%s", log)
	}
}

// childOf finds the single child of pid (the sidecar under unshare).
func childOf(t *testing.T, pid int) int {
	t.Helper()
	for i := 0; i < 500; i++ {
		if kids := proctest.Children(pid); len(kids) > 0 {
			return kids[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no child of pid %d", pid)
	return 0
}
