package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

// TestStalledNotifySocketDoesNotHangExit runs the sidecar under a
// NOTIFY_SOCKET that nobody reads, its queue full: starting, reporting
// and SIGTERM must all go on, and the sidecar exits 0.
func TestStalledNotifySocketDoesNotHangExit(t *testing.T) {
	bin, fake := binaries(t)
	path, _ := notifySocket(t)
	filler, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		filler.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := filler.Write([]byte("STATUS=filler")); err != nil {
			if !os.IsTimeout(err) {
				t.Fatal(err)
			}
			break
		}
	}
	filler.Close()

	// startCmd passes this process's environment on.
	t.Setenv("NOTIFY_SOCKET", path)
	p := startSidecar(t, bin, "run", "--", fake, "-hang")
	// READY=1 goes once the bridge is spawned and the state directory's
	// files are written: the warning may come either side of the spawn's.
	p.waitLogs("cannot reach systemd's notify socket", "bridge started")
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d; log:\n%s", code, p.logText())
	}
}

// TestInheritedDescriptorIsNotPassedToTheBridge starts the sidecar with a
// descriptor it inherits without close-on-exec, as a careless parent can
// leave it: only stdin, stdout and stderr reach the bridge.
func TestInheritedDescriptorIsNotPassedToTheBridge(t *testing.T) {
	bin, fake := binaries(t)
	planted := filepath.Join(t.TempDir(), "parent-secret")
	if err := os.WriteFile(planted, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(planted)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, "run", "--", fake, "-fds", "-hang")
	cmd.ExtraFiles = []*os.File{f} // fd 3 in the sidecar, without close-on-exec
	p := startCmd(t, cmd)
	p.waitLog("FDS done")
	listing := p.logText()
	if !strings.Contains(listing, "FD=1 pipe:") {
		t.Fatalf("the bridge's listing is missing; log:\n%s", listing)
	}
	if strings.Contains(listing, "FD=3 "+planted) || strings.Contains(listing, " "+planted) {
		t.Fatalf("the sidecar's inherited descriptor reached the bridge; log:\n%s", listing)
	}
	p.stopOK()
}

// setsidBridge writes a bridge script that starts a grandchild in a
// session of its own, as a daemonising helper would, and prints its pid.
func setsidBridge(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("setsid not installed")
	}
	script := filepath.Join(t.TempDir(), "bridge.sh")
	// The grandchild prints its pid itself, after setsid: a pid printed by
	// the parent could be seen while the grandchild is still in the
	// bridge's group, where nothing has escaped yet.
	body := "#!/bin/sh\nsetsid sh -c 'echo \"grandchild $$\"; exec sleep 1000' &\nexec sleep 1000\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script
}

func grandchildPid(t *testing.T, p *sidecarProc) int {
	t.Helper()
	rec := p.waitLog("grandchild ")
	var pid int
	if _, err := fmt.Sscanf(fmt.Sprint(rec["msg"]), "grandchild %d", &pid); err != nil || pid <= 0 {
		t.Fatalf("no grandchild pid in %v", rec)
	}
	return pid
}

// TestSubreaperStopsASetsidGrandchild: with --subreaper, what the bridge
// started in a session of its own is stopped with the bridge, and the
// sidecar exits only once it is gone.
func TestSubreaperStopsASetsidGrandchild(t *testing.T) {
	bin, _ := binaries(t)
	p := startSidecar(t, bin, "run", "--subreaper", "--", "/bin/sh", setsidBridge(t))
	gc := grandchildPid(t, p)
	defer syscall.Kill(gc, syscall.SIGKILL) // only if the test fails
	p.signal(syscall.SIGTERM)
	left := p.waitLog("left processes behind")
	if !strings.Contains(fmt.Sprint(left["processes"]), strconv.Itoa(gc)) {
		t.Fatalf("the warning does not name pid %d: %v", gc, left)
	}
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d; log:\n%s", code, p.logText())
	}
	if proctest.Running(gc) {
		t.Fatalf("the setsid grandchild %d outlived the sidecar", gc)
	}
}

// TestSetsidGrandchildIsReportedWithoutSubreaper: without --subreaper the
// sidecar cannot stop what escaped, but it says so, names it, and reports
// the bridge's own exit at once.
func TestSetsidGrandchildIsReportedWithoutSubreaper(t *testing.T) {
	bin, _ := binaries(t)
	p := startSidecar(t, bin, "run", "--", "/bin/sh", setsidBridge(t))
	gc := grandchildPid(t, p)
	defer syscall.Kill(gc, syscall.SIGKILL) // this test's own leftover
	p.signal(syscall.SIGHUP)
	left := p.waitLog("left processes behind")
	if !strings.Contains(fmt.Sprint(left["processes"]), strconv.Itoa(gc)) {
		t.Fatalf("the warning does not name pid %d: %v", gc, left)
	}
	p.waitLog("bridge started")
	// The restarted bridge starts a grandchild of its own, which outlives
	// the sidecar too.
	defer syscall.Kill(grandchildPid(t, p), syscall.SIGKILL)
	if !proctest.Running(gc) {
		t.Fatal("the grandchild was stopped without --subreaper")
	}
	p.stopOK()
}

// TestStatusSaysPortBusyForPrograms: while a program the sidecar must
// leave alone holds the bridge's port, /v1/status carries the reason and
// the holder in fields, not only in the message.
func TestStatusSaysPortBusyForPrograms(t *testing.T) {
	p, _, state, _ := sidecarWithPortHeld(t)
	p.waitLog("could not start the bridge")
	type holder struct {
		Pid  int    `json:"pid"`
		Name string `json:"name"`
	}
	var st struct {
		State  string  `json:"state"`
		Reason string  `json:"reason"`
		Holder *holder `json:"holder"`
	}
	// Between refusals the bridge is starting again for a moment: read
	// the status until it is caught in backoff.
	for deadline := time.Now().Add(20 * time.Second); st.State != "backoff"; {
		if time.Now().After(deadline) {
			t.Fatalf("never in backoff while the port is held: %+v", st)
		}
		resp, err := http.Get("http://" + listenOf(t, state) + "/v1/status")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	want := holder{Pid: os.Getpid(), Name: signals.ProcessName(os.Getpid())}
	if st.Reason != "port_busy" || st.Holder == nil || *st.Holder != want {
		t.Fatalf("/v1/status while the port is held: %+v (holder %+v), want port_busy held by %+v", st, st.Holder, want)
	}
	p.stopOK()
}
