package signals

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if pid, err := strconv.Atoi(os.Getenv(traceEnv)); err == nil {
		os.Exit(traceAndHold(pid))
	}
	goleak.VerifyTestMain(m)
}

func TestParse(t *testing.T) {
	good := map[string]syscall.Signal{"TERM": syscall.SIGTERM, "sigint": syscall.SIGINT, " KILL ": syscall.SIGKILL, "15": syscall.SIGTERM, "SIGUSR1": syscall.SIGUSR1}
	for in, want := range good {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "TERMINATE", "0", "65", "-1", "SIG"} {
		if _, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) accepted", in)
		}
	}
}

func TestSet(t *testing.T) {
	s, err := ParseSet("KILL, TERM,INT,")
	if err != nil {
		t.Fatal(err)
	}
	if !s.Has(syscall.SIGTERM) || !s.Has(syscall.SIGKILL) || s.Has(syscall.SIGHUP) {
		t.Fatalf("set %v", s)
	}
	if got := s.String(); got != "INT,KILL,TERM" {
		t.Fatalf("String = %q", got)
	}
	if _, err := ParseSet("TERM,BOGUS"); err == nil {
		t.Fatal("bad member accepted")
	}
	if Name(syscall.Signal(40)) != "SIG40" || Name(syscall.SIGSEGV) != "SIGSEGV" {
		t.Fatal("Name")
	}
}

func TestIdentityRefusesAnotherProcess(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	id, err := IdentityOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Alive() {
		t.Fatal("live process not Alive")
	}
	stale := Identity{Pid: id.Pid, StartTime: id.StartTime - 1}
	if err := stale.Signal(syscall.SIGTERM); !errors.Is(err, ErrNotSameProcess) {
		t.Fatalf("stale identity: %v", err)
	}
	if err := stale.Signal(0); err == nil {
		t.Fatal("stale identity signalled")
	}
	if err := (Identity{Pid: 0}).Signal(syscall.SIGTERM); err == nil {
		t.Fatal("pid 0 signalled")
	}
	if err := id.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}

func TestReaperDeliversStatusAndKillsGroup(t *testing.T) {
	r := NewReaper(ReaperOptions{})
	defer r.Close()
	// The shell leaves a sleeping member in its group and exits 7.
	c, err := r.Spawn(SpawnAttr{Path: "/bin/sh", Args: []string{"sh", "-c", "sleep 30 & echo $! > \"$PIDFILE\"; exit 7"},
		Env: []string{"PIDFILE=" + t.TempDir() + "/p"}, OwnGroup: true, Pdeathsig: syscall.SIGKILL})
	if err != nil {
		t.Fatal(err)
	}
	if c.StartTime == 0 {
		t.Fatal("start time not recorded")
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("exit not delivered")
	}
	if ws := c.Status(); !ws.Exited() || ws.ExitStatus() != 7 {
		t.Fatalf("status %v", ws)
	}
	if err := syscall.Kill(-c.Pid, 0); err == nil {
		// The group may take a moment to disappear after SIGKILL.
		deadline := time.Now().Add(5 * time.Second)
		for syscall.Kill(-c.Pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if syscall.Kill(-c.Pid, 0) == nil {
			t.Fatal("group member outlived the leader")
		}
	}
	if err := c.Signal(syscall.SIGTERM); !errors.Is(err, ErrFinished) {
		t.Fatalf("signal after reap: %v", err)
	}
}

func TestReaperSpawnError(t *testing.T) {
	r := NewReaper(ReaperOptions{})
	defer r.Close()
	if _, err := r.Spawn(SpawnAttr{Path: "/nonexistent/bridge", Args: []string{"bridge"}}); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("err = %v", err)
	}
	if _, err := r.Spawn(SpawnAttr{Path: "/bin/true", Args: []string{"true"}, Dir: "/nonexistent"}); err == nil {
		t.Fatal("bad dir accepted")
	}
}

func TestSignalGroupNeedsOwnGroup(t *testing.T) {
	r := NewReaper(ReaperOptions{})
	defer r.Close()
	c, err := r.Spawn(SpawnAttr{Path: "/bin/sleep", Args: []string{"sleep", "30"}, Stdout: os.Stdout})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SignalGroup(syscall.SIGKILL); err == nil {
		t.Fatal("group signal to a child in the sidecar's own group was allowed")
	}
	if err := c.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if ws := c.Status(); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("status %v", ws)
	}
}

func TestCmdline(t *testing.T) {
	args, err := Cmdline(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if len(args) != len(os.Args) {
		t.Fatalf("Cmdline = %q, want %q", args, os.Args)
	}
	for i := range args {
		if args[i] != os.Args[i] {
			t.Fatalf("Cmdline = %q, want %q", args, os.Args)
		}
	}
	if _, err := Cmdline(1 << 30); err == nil {
		t.Fatal("no error for a pid that cannot exist")
	}
}

// spawnExit starts sh exiting with code.
func spawnExit(t *testing.T, r *Reaper, code int) *Child {
	t.Helper()
	c, err := r.Spawn(SpawnAttr{Path: "/bin/sh", Args: []string{"sh", "-c", "exit " + strconv.Itoa(code)}, OwnGroup: true})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitDone(t *testing.T, c *Child) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("exit of pid %d not delivered", c.Pid)
	}
}

func TestReaperDeliversEveryStatusAmongManyExits(t *testing.T) {
	// Reaping all, a SIGCHLD pass and a child's pidfd watcher race to
	// reap it; whichever wins, the status reaches the right Child.
	for _, all := range []bool{false, true} {
		r := NewReaper(ReaperOptions{ReapAll: all})
		var kids []*Child
		for i := 0; i < 30; i++ {
			kids = append(kids, spawnExit(t, r, i))
		}
		for i, c := range kids {
			waitDone(t, c)
			if ws := c.Status(); !ws.Exited() || ws.ExitStatus() != i {
				t.Errorf("reap all %v: child %d: status %v", all, i, ws)
			}
		}
		r.Close()
	}
}

func TestReaperWithoutPidfdsListensForSIGCHLD(t *testing.T) {
	// As on a kernel older than 5.3: no pidfd, so no watcher in the
	// poller; SIGCHLD must be listened to, and signals go by pid.
	old := pidfdOpen
	pidfdOpen = func(int) (int, error) { return -1, unix.ENOSYS }
	defer func() { pidfdOpen = old }()
	r := NewReaper(ReaperOptions{})
	defer r.Close()
	c := spawnExit(t, r, 3)
	waitDone(t, c)
	if ws := c.Status(); !ws.Exited() || ws.ExitStatus() != 3 {
		t.Fatalf("status %v", ws)
	}
	s, err := r.Spawn(SpawnAttr{Path: "/bin/sleep", Args: []string{"sleep", "30"}, OwnGroup: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.pidfd != -1 {
		t.Fatalf("pidfd %d despite pidfd_open failing", s.pidfd)
	}
	if err := s.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, s)
	if ws := s.Status(); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("status %v", ws)
	}
}

func TestChildrenGetDevNullOnEverySpawn(t *testing.T) {
	// The Reaper keeps one /dev/null open for all its children: each of
	// them still finds it as stdin, and as stdout and stderr when given
	// none.
	r := NewReaper(ReaperOptions{})
	defer r.Close()
	check := `for fd in 0 1 2; do [ "$(readlink /proc/$$/fd/$fd)" = /dev/null ] || exit 1; done`
	for i := 0; i < 3; i++ {
		c, err := r.Spawn(SpawnAttr{Path: "/bin/sh", Args: []string{"sh", "-c", check}})
		if err != nil {
			t.Fatal(err)
		}
		waitDone(t, c)
		if ws := c.Status(); !ws.Exited() || ws.ExitStatus() != 0 {
			t.Fatalf("spawn %d: stdin, stdout or stderr is not /dev/null (status %v)", i, ws)
		}
	}
}
