package session

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
	"github.com/wa-sidecar/wa-sidecar/procmon"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

// A foreign program on the bridge's port is reported by pid and name,
// never signalled, and the monitor keeps retrying with backoff; once it
// goes, the bridge starts.
func TestForeignProcessOnPortSurvivesUntouched(t *testing.T) {
	foreign := startHelper(t, "listen", "HELPER_PORT=0")
	port := foreign.port(t)
	pid := foreign.cmd.Process.Pid

	dir := newSession(t, pairedCreds)
	g := openGuard(t, Config{SessionDir: dir, Port: port})
	h := startMonitor(t, g, procmon.Config{Command: []string{fakeBridge, "-hang"}})

	// The cause first: port_busy, then the spawn_failed it makes.
	busy := h.nextUnless(EventPortBusy, procmon.EventSpawnFailed)
	failed := h.next(procmon.EventSpawnFailed)
	if failed.Seq != busy.Seq+1 {
		t.Fatalf("port_busy (seq %d) not right before spawn_failed (seq %d): %v", busy.Seq, failed.Seq, h.kinds())
	}
	if failed.Exit == nil || !strings.Contains(failed.Exit.Error, "pid "+strconv.Itoa(pid)) {
		t.Fatalf("spawn failure does not name the holder: %+v", failed.Exit)
	}
	// In a form a program can read too: /v1/status serves this snapshot.
	want := procmon.Holder{Pid: pid, Name: signals.ProcessName(pid)}
	if st := failed.Status; st.Reason != ReasonPortBusy || st.Holder == nil || *st.Holder != want || failed.Exit.Reason != ReasonPortBusy {
		t.Fatalf("port_busy status: reason %q holder %+v (want %+v), exit reason %q", st.Reason, st.Holder, want, failed.Exit.Reason)
	}
	if busy.Data["holder_pid"] != pid || busy.Data["holder_name"] != signals.ProcessName(pid) || busy.Data["pid"] != nil || busy.Data["port"] != port {
		t.Fatalf("port_busy data %+v, want pid %d", busy.Data, pid)
	}
	if !strings.Contains(busy.Message, "stop that program, or give the bridge another port") || busy.Status.Message != busy.Message {
		t.Fatalf("port_busy message %q (status %q)", busy.Message, busy.Status.Message)
	}
	// Retried with backoff, and refused again each time.
	h.next(procmon.EventBackoff)
	h.nextUnless(EventPortBusy, procmon.EventSpawnFailed)
	h.next(procmon.EventSpawnFailed)

	// Untouched: still serving, and it got no signal at all.
	c, err := net.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("the foreign listener stopped serving: %v", err)
	}
	c.Close()
	foreign.cmd.Process.Kill()
	ws := foreign.wait(t)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("foreign process ended with %v before the test killed it", ws)
	}
	if got := foreign.said(); len(got) > 0 {
		t.Fatalf("the foreign process was signalled: %q", got)
	}
	h.next(procmon.EventStarted)
}

// writeRecord makes it look as if an earlier sidecar on dir had spawned id.
func writeRecord(t *testing.T, dir string, id signals.Identity) {
	t.Helper()
	args, err := signals.Cmdline(id.Pid)
	if err != nil {
		t.Fatal(err)
	}
	writeRecordArgs(t, dir, id, args)
}

// writeRecordArgs is writeRecord with the command line the record names.
func writeRecordArgs(t *testing.T, dir string, id signals.Identity, args []string) {
	t.Helper()
	data, _ := json.Marshal(spawnRecord{Identity: id, BootID: bootID(), Cmdline: args, At: time.Now()})
	if err := os.WriteFile(filepath.Join(dir, StateDirName, "bridge.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A bridge an earlier sidecar on this session left running is stopped
// before the next spawn: SIGTERM first.
func TestLeftoverBridgeIsStopped(t *testing.T) {
	left, g := leftoverBridge(t)
	var stream emitted

	g.StopLeftover()
	if err := g.BeforeSpawn(stream.emit); err != nil {
		t.Fatalf("BeforeSpawn: %v", err)
	}
	ws := left.wait(t)
	if !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("leftover ended with %v, want SIGTERM", ws)
	}
	var stopped bool
	for _, ev := range stream.take() {
		stopped = stopped || (ev.Kind == EventLeftoverStopped && ev.Data["bridge_pid"] == left.cmd.Process.Pid)
	}
	if !stopped {
		t.Fatal("no leftover_stopped event")
	}
}

// A bridge's process group outlives a SIGKILLed sidecar when the bridge is
// a wrapper (npm, sh): the parent-death signal reaches only the wrapper.
// What is left of the group is stopped even after its leader is gone, and
// a process outside it is not touched.
func TestLeftoverGroupIsStoppedWhenItsLeaderIsGone(t *testing.T) {
	sh := exec.Command("sh", "-c", "sleep 300 & echo $!; exec sleep 301")
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // as procmon spawns the bridge
	out, err := sh.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	member, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("sh said %q", line)
	}
	memberFd, err := unix.PidfdOpen(member, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(memberFd)
	defer unix.PidfdSendSignal(memberFd, unix.SIGKILL, nil, 0) // if the test fails
	leader, err := signals.IdentityOf(sh.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	foreign := exec.Command("sleep", "302")
	foreign.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := foreign.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		foreign.Process.Kill()
		foreign.Wait()
	}()

	// The sidecar and its bridge die together; the member is left.
	sh.Process.Kill()
	sh.Wait()

	dir := newSession(t, pairedCreds)
	g := openGuard(t, Config{SessionDir: dir, LeftoverTimeout: time.Second})
	var stream emitted
	writeRecordArgs(t, dir, leader, nil) // a dead leader's command line is not checked
	g.StopLeftover()
	if err := g.BeforeSpawn(stream.emit); err != nil {
		t.Fatalf("BeforeSpawn: %v", err)
	}
	// A pidfd polls readable once its process has ended.
	if n, err := unix.Poll([]unix.PollFd{{Fd: int32(memberFd), Events: unix.POLLIN}}, 0); err != nil || n != 1 {
		t.Fatalf("the leftover group's member %d still runs (%v)", member, err)
	}
	var ev *procmon.Event
	for _, e := range stream.take() {
		if e.Kind == EventLeftoverStopped {
			ev = &e
		}
	}
	if ev == nil || ev.Data["bridge_pid"] != leader.Pid || ev.Data["processes"] != 1 {
		t.Fatalf("leftover_stopped: %+v", ev)
	}
	if err := foreign.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("a process outside the group was stopped: %v", err)
	}
}

// waitCmdline waits until pid runs the program named name (sh has
// exec'd it) and returns its command line.
func waitCmdline(t *testing.T, pid int, name string) []string {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if args, err := signals.Cmdline(pid); err == nil && len(args) > 0 && filepath.Base(args[0]) == name {
			return args
		}
	}
	t.Fatalf("pid %d never ran %s", pid, name)
	return nil
}

// A forged bridge.json naming an unrelated process of this user, with its
// real pid and start time (anyone can read both in /proc), does not get it
// signalled: its command line is not the one recorded.
func TestForgedRecordOfAnUnrelatedProcessIsNotSignalled(t *testing.T) {
	other := startHelper(t, "listen", "HELPER_PORT=0")
	id, err := signals.IdentityOf(other.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	dir := newSession(t, pairedCreds)
	g := openGuard(t, Config{SessionDir: dir, LeftoverTimeout: 100 * time.Millisecond})
	var stream emitted
	for _, args := range [][]string{nil, {"node", "bridge.js", "--session", dir}} {
		writeRecordArgs(t, dir, id, args)
		g.StopLeftover()
		if err := g.BeforeSpawn(stream.emit); err != nil {
			t.Fatalf("BeforeSpawn: %v", err)
		}
	}
	for _, ev := range stream.take() {
		if ev.Kind == EventLeftoverStopped {
			t.Fatalf("stopped after a forged record: %+v", ev)
		}
	}
	other.cmd.Process.Kill()
	if ws := other.wait(t); ws.Signal() != syscall.SIGKILL {
		t.Fatalf("it ended with %v before the test killed it", ws)
	}
	if got := other.said(); len(got) > 0 {
		t.Fatalf("it was signalled: %q", got)
	}
}

// Nor does one naming another user's process, even with everything right
// but the owner: the bridges the sidecar spawns run as its own user.
func TestForgedRecordOfAnotherUsersProcessIsNotSignalled(t *testing.T) {
	shared := proctest.SharedTempDir(t)
	os.Chmod(shared, 0o777)
	pidFile := filepath.Join(shared, "pid")
	proctest.AsNobody(t, "sh", "-c", "sleep 300 </dev/null >/dev/null 2>&1 & echo $! >"+pidFile)
	pid := proctest.WaitPids(t, pidFile, 1)[0]
	defer unix.Kill(pid, unix.SIGKILL)
	id, err := signals.IdentityOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	dir := newSession(t, pairedCreds)
	g := openGuard(t, Config{SessionDir: dir, LeftoverTimeout: 100 * time.Millisecond})
	var stream emitted
	writeRecordArgs(t, dir, id, waitCmdline(t, pid, "sleep"))
	g.StopLeftover()
	if err := g.BeforeSpawn(stream.emit); err != nil {
		t.Fatalf("BeforeSpawn: %v", err)
	}
	if !id.Alive() || !proctest.Running(pid) {
		t.Fatal("another user's process was stopped after a forged record")
	}
}

// A record planted as a link, or written by another user, is not read.
func TestRecordMustBeOurOwnFile(t *testing.T) {
	other := startHelper(t, "listen", "HELPER_PORT=0")
	id, _ := signals.IdentityOf(other.cmd.Process.Pid)
	dir := newSession(t, pairedCreds)
	g := openGuard(t, Config{SessionDir: dir, LeftoverTimeout: 100 * time.Millisecond})
	var stream emitted
	writeRecord(t, dir, id)
	rec := filepath.Join(dir, StateDirName, "bridge.json")
	elsewhere := filepath.Join(t.TempDir(), "bridge.json")
	if err := os.Rename(rec, elsewhere); err != nil {
		t.Fatal(err)
	}
	os.Symlink(elsewhere, rec)
	g.StopLeftover()
	if err := g.BeforeSpawn(stream.emit); err != nil {
		t.Fatalf("BeforeSpawn: %v", err)
	}
	if !proctest.Running(id.Pid) {
		t.Fatal("stopped through a record that is a link")
	}
	if os.Geteuid() == 0 {
		os.Remove(rec)
		os.Rename(elsewhere, rec)
		os.Chown(rec, proctest.Nobody, proctest.Nobody)
		g.StopLeftover()
		if err := g.BeforeSpawn(stream.emit); err != nil {
			t.Fatalf("BeforeSpawn: %v", err)
		}
		if !proctest.Running(id.Pid) {
			t.Fatal("stopped through a record another user owns")
		}
	}
}

// A leftover that ignores SIGTERM gets SIGKILL after the timeout.
func TestLeftoverIgnoringTermIsKilled(t *testing.T) {
	left := startHelper(t, "listen-ignore-term", "HELPER_PORT=0")
	port := left.port(t)
	id, _ := signals.IdentityOf(left.cmd.Process.Pid)
	dir := newSession(t, pairedCreds)
	g := openGuard(t, Config{SessionDir: dir, Port: port, LeftoverTimeout: 100 * time.Millisecond})
	var stream emitted
	writeRecord(t, dir, id)

	g.StopLeftover()
	if err := g.BeforeSpawn(stream.emit); err != nil {
		t.Fatalf("BeforeSpawn: %v", err)
	}
	ws := left.wait(t)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("leftover ended with %v, want SIGKILL", ws)
	}
	if got := left.said(); !slices.Contains(got, "got terminated") {
		t.Fatalf("leftover was not sent SIGTERM before SIGKILL: it saw %q", got)
	}
}

// A record whose pid now belongs to another process (same pid, another
// start time) must not lead to a signal: that process is foreign.
func TestRecordOfReusedPidIsNotSignalled(t *testing.T) {
	other := startHelper(t, "listen", "HELPER_PORT=0")
	port := other.port(t)
	id, _ := signals.IdentityOf(other.cmd.Process.Pid)
	dir := newSession(t, pairedCreds)
	g := openGuard(t, Config{SessionDir: dir, Port: port})
	var stream emitted
	writeRecord(t, dir, signals.Identity{Pid: id.Pid, StartTime: id.StartTime - 1})

	g.StopLeftover()
	err := g.BeforeSpawn(stream.emit)
	var busy *PortBusyError
	if !errors.As(err, &busy) || len(busy.Holders) != 1 || busy.Holders[0].Identity != id {
		t.Fatalf("BeforeSpawn: %v, want the port busy by %v", err, id)
	}
	other.cmd.Process.Kill()
	if ws := other.wait(t); ws.Signal() != syscall.SIGKILL {
		t.Fatalf("it ended with %v before the test killed it", ws)
	}
	if got := other.said(); len(got) > 0 {
		t.Fatalf("it was signalled: %q", got)
	}
}

// Each spawn records the bridge's identity for the next sidecar, and a
// record from an earlier boot is ignored.
func TestSpawnIsRecorded(t *testing.T) {
	dir := newSession(t, pairedCreds)
	g := openGuard(t, Config{SessionDir: dir})
	h := startMonitor(t, g, procmon.Config{Command: []string{fakeBridge, "-hang"}})
	started := h.next(procmon.EventStarted)
	var rec spawnRecord
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, StateDirName, "bridge.json"))), &rec); err != nil {
		t.Fatal(err)
	}
	want, _ := signals.IdentityOf(started.Pid)
	if rec.Identity != want || rec.BootID != bootID() {
		t.Fatalf("record %+v, want %+v on boot %s", rec, want, bootID())
	}
}

func TestPortFree(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if free, err := portFree(port); err != nil || free {
		t.Fatalf("portFree(%d) with a listener = %v, %v", port, free, err)
	}
	holders, err := portHolders(port)
	if err != nil || len(holders) != 1 || holders[0].Pid != os.Getpid() {
		t.Fatalf("portHolders = %+v, %v; want this process", holders, err)
	}
	ln.Close()
	if free, err := portFree(port); err != nil || !free {
		t.Fatalf("portFree(%d) after close = %v, %v", port, free, err)
	}
}

// BenchmarkBeforeSpawn measures what the guard adds to every respawn of a
// paired session on a free port: reading creds.json and its copy, and one
// trial bind (the leftover record is StopLeftover's, read once).
func BenchmarkBeforeSpawn(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "session")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "creds.json"), []byte(pairedCreds), 0o600); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	g, err := Open(Config{SessionDir: dir, Port: port})
	if err != nil {
		b.Fatal(err)
	}
	var stream emitted
	defer g.Close()
	g.AfterSpawn(signals.Identity{Pid: os.Getpid(), StartTime: 1})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := g.BeforeSpawn(stream.emit); err != nil {
			b.Fatal(err)
		}
		stream.take()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/spawn")
}

func TestBridgeOnOurSessionIsYieldedTo(t *testing.T) {
	dir := newSession(t, pairedCreds)
	// The gateway's own bridge: another program, on this session, holding
	// the port.
	theirs := startHelperArgs(t, "listen", []string{"--port", "0", "--session", dir}, "HELPER_PORT=0")
	port := theirs.port(t)
	g := openGuard(t, Config{SessionDir: dir, Port: port})
	h := startMonitor(t, g, procmon.Config{Command: []string{fakeBridge, "-hang"}})

	y := h.next(procmon.Kind(StateYielded))
	if y.Reason != ReasonPortHeldByBridge || y.Data["holder_pid"] != theirs.cmd.Process.Pid || y.Data["port"] != port {
		t.Fatalf("yielded event: %+v", y)
	}
	if y.Status.State != StateYielded || y.Status.ConsecutiveFailures != 0 || !strings.Contains(y.Status.Message, "restart the gateway") {
		t.Fatalf("yielded status: %+v", y.Status)
	}
	if st := y.Status; st.Reason != ReasonPortHeldByBridge || st.Holder == nil || st.Holder.Pid != theirs.cmd.Process.Pid || st.Holder.Name != signals.ProcessName(theirs.cmd.Process.Pid) {
		t.Fatalf("yielded status: reason %q holder %+v", st.Reason, st.Holder)
	}
	// Freed (the gateway stopped its bridge): the sidecar's bridge starts,
	// with no failure on the way.
	theirs.cmd.Process.Kill()
	ws := theirs.wait(t)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the other bridge ended with %v before the test killed it", ws)
	}
	if got := theirs.said(); len(got) > 0 {
		t.Fatalf("the other bridge was signalled: %q", got)
	}
	st := h.next(procmon.EventStarted)
	if st.Status.ConsecutiveFailures != 0 || st.Status.Restarts != 0 {
		t.Fatalf("after yielding: %+v", st.Status)
	}
	for _, k := range h.kinds() {
		if k == EventPortBusy || k == procmon.EventSpawnFailed || k == procmon.EventCrashloop {
			t.Fatalf("yielding counted as a failure: %v", h.kinds())
		}
	}
}

func TestBridgeOnAnotherSessionIsPortBusy(t *testing.T) {
	dir := newSession(t, pairedCreds)
	other := t.TempDir()
	theirs := startHelperArgs(t, "listen", []string{"--session", other}, "HELPER_PORT=0")
	g := openGuard(t, Config{SessionDir: dir, Port: theirs.port(t)})
	var stream emitted
	if p := g.HoldSpawn(); p != nil {
		t.Fatalf("held for a bridge on another session: %+v", p)
	}
	if err := g.BeforeSpawn(stream.emit); err == nil {
		t.Fatal("spawn allowed onto a held port")
	}
}

func TestSameDir(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	me := os.Getpid()
	wd, _ := os.Getwd()
	rel, err := filepath.Rel(wd, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		theirs string
		want   bool
	}{{dir, true}, {dir + "/", true}, {link, true}, {rel, true}, {t.TempDir(), false}, {"", false}} {
		if got := sameDir(c.theirs, dir, me); got != c.want {
			t.Errorf("sameDir(%q) = %v", c.theirs, got)
		}
	}
}

func TestInvisibleHolderIsYieldedToWhenTheGatewayStartedABridge(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for unshare --pid")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare not installed")
	}
	dir := newSession(t, pairedCreds)
	// The gateway's bridge, in a PID namespace the guard below cannot see
	// into (as across two containers that share only the network).
	theirs := startHelperArgs(t, "listen", []string{"--session", dir}, "HELPER_PORT=0")
	port := theirs.port(t)
	ask := func() string {
		t.Helper()
		cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"=hold", "HELPER_SESSION="+dir, "HELPER_PORT="+strconv.Itoa(port))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Skipf("cannot run in a new PID namespace here: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// Nobody says it is the gateway's: a stranger, left to port_busy.
	if got := ask(); got != "free" {
		t.Fatalf("without bridge.pid: %q", got)
	}
	// The gateway wrote bridge.pid for the bridge it started.
	if err := os.WriteFile(filepath.Join(dir, "bridge.pid"), []byte("4242\n123456\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := ask(); got != "held "+ReasonPortHeldByBridge+" 0" {
		t.Fatalf("with the gateway's bridge.pid: %q", got)
	}
	// A bridge.pid older than the sidecar's own last spawn is a leftover.
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "bridge.pid"), old, old); err != nil {
		t.Fatal(err)
	}
	writeRecord(t, dir, signals.Identity{Pid: 1, StartTime: 1})
	if got := ask(); got != "free" {
		t.Fatalf("with a stale bridge.pid: %q", got)
	}
}

func TestAHolderWithConnectionsIsOneVisibleHolder(t *testing.T) {
	// A bridge the gateway polls: its listening socket and the connections
	// it accepted all have the port; only the first holds it.
	h := startHelper(t, "listen-keep", "HELPER_PORT=0")
	port := h.port(t)
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	holders, err := portHolders(port)
	if err != nil {
		t.Fatal(err)
	}
	if len(holders) != 1 || holders[0].Pid != h.cmd.Process.Pid {
		t.Fatalf("holders of a port with accepted connections: %+v (want only pid %d)", holders, h.cmd.Process.Pid)
	}
}
