package procmon

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"log/slog"

	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

func TestExitClassesWithRealProcesses(t *testing.T) {
	cases := []struct {
		args   []string
		class  Class
		code   *int
		signal string
		rc     int
	}{
		{[]string{"-exit", "1"}, ClassFailure, ptr(1), "", 1},
		{[]string{"-exit", "0"}, ClassFailure, ptr(0), "", 0},
		{[]string{"-signal", "15"}, ClassShutdown, nil, "SIGTERM", -15},
		{[]string{"-signal", "2"}, ClassShutdown, nil, "SIGINT", -2},
		// A SIGKILL soon after the start is the OOM killer's: a failure.
		{[]string{"-signal", "9"}, ClassFailure, nil, "SIGKILL", -9},
		{[]string{"-signal", "11"}, ClassFailure, nil, "SIGSEGV", -11},
		{[]string{"-signal", "6"}, ClassFailure, nil, "SIGABRT", -6},
		{[]string{"-exit", "143"}, ClassShutdown, ptr(143), "", 143},
		{[]string{"-exit", "130"}, ClassShutdown, ptr(130), "", 130},
		{[]string{"-exit", "137"}, ClassFailure, ptr(137), "", 137},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			h := start(t, Config{Command: append([]string{fakeBridge, "-say", "bye"}, c.args...), Backoff: Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 2}})
			started := h.next(EventStarted)
			ev := h.next(EventExited)
			rec := ev.Exit
			if rec.Pid != started.Pid || rec.Class != c.class || rec.ReturnCode != c.rc || rec.Requested {
				t.Fatalf("record %+v, want class %s returncode %d", rec, c.class, c.rc)
			}
			if (c.code == nil) != (rec.Code == nil) || (c.code != nil && *c.code != *rec.Code) {
				t.Fatalf("code = %v, want %v", rec.Code, c.code)
			}
			if c.signal == "" && rec.Signal != nil || c.signal != "" && (rec.Signal == nil || *rec.Signal != c.signal) {
				t.Fatalf("signal = %v, want %q", rec.Signal, c.signal)
			}
			if len(rec.Tail) != 1 || rec.Tail[0] != "bye" {
				t.Fatalf("tail = %q", rec.Tail)
			}
			if c.class == ClassShutdown {
				// Respawned at once, uncounted.
				st := h.nextUnless(EventStarting, EventBackoff)
				if st.Status.ConsecutiveFailures != 0 || st.Status.LastExit == nil || st.Status.LastExit.Pid != rec.Pid {
					t.Fatalf("after a shutdown: %+v", st.Status)
				}
				return
			}
			bo := h.next(EventBackoff)
			wantFailures := 1
			if bo.Status.State != StateBackoff || bo.Status.ConsecutiveFailures != wantFailures || bo.Reason != string(c.class) {
				t.Fatalf("after exit: %+v", bo)
			}
			if bo.Status.LastExit == nil || bo.Status.LastExit.Pid != rec.Pid {
				t.Fatalf("status last_exit = %+v", bo.Status.LastExit)
			}
		})
	}
}

func ptr(i int) *int { return &i }

func count(kinds []Kind, k Kind) int {
	n := 0
	for _, x := range kinds {
		if x == k {
			n++
		}
	}
	return n
}

func TestFailureBackoffGrowsAndCrashloopCaps(t *testing.T) {
	h := start(t, Config{Command: []string{fakeBridge, "-exit", "1"}, Backoff: fast})
	want := []int64{20, 40, 80, 160}
	for i, w := range want {
		ev := h.next(EventBackoff)
		if ev.DelayMS != w || ev.Status.ConsecutiveFailures != i+1 || ev.Status.Crashloop {
			t.Fatalf("backoff %d: delay %d failures %d crashloop %v; want %d", i+1, ev.DelayMS, ev.Status.ConsecutiveFailures, ev.Status.Crashloop, w)
		}
		if ev.Status.NextStartAt == nil {
			t.Fatal("backoff without next_start_at")
		}
	}
	cl := h.next(EventCrashloop)
	if !cl.Status.Crashloop || cl.Status.ConsecutiveFailures != 5 {
		t.Fatalf("crashloop event: %+v", cl.Status)
	}
	for i := 0; i < 2; i++ {
		if ev := h.next(EventBackoff); ev.DelayMS != 160 || !ev.Status.Crashloop {
			t.Fatalf("crash-loop backoff: %d crashloop=%v", ev.DelayMS, ev.Status.Crashloop)
		}
	}
	if st := h.m.Status(); st.Restarts < 5 {
		t.Fatalf("restarts = %d", st.Restarts)
	}
}

func TestUptimeResetsBackoff(t *testing.T) {
	count := filepath.Join(t.TempDir(), "count")
	// Reset is long enough that an instantly failing run never reaches it,
	// even on a loaded machine.
	b := Backoff{Initial: 20 * time.Millisecond, Max: time.Second, Multiplier: 2, Reset: 2 * time.Second}
	// Three quick failures, then a run that stays up.
	h := start(t, Config{Command: []string{fakeBridge, "-count-file", count, "-fail-times", "3"}, Backoff: b})
	for i := 1; i <= 3; i++ {
		if ev := h.next(EventBackoff); ev.Status.ConsecutiveFailures != i {
			t.Fatalf("failure %d: %+v", i, ev.Status)
		}
	}
	started := h.next(EventStarted)
	if started.Status.ConsecutiveFailures != 3 {
		t.Fatalf("started with failures %d", started.Status.ConsecutiveFailures)
	}
	rec := h.next(EventRecovered)
	if rec.Status.ConsecutiveFailures != 0 || rec.Status.Crashloop || rec.Pid != started.Pid {
		t.Fatalf("recovered: %+v", rec)
	}
	// A failure after the reset starts again from the initial delay.
	if err := h.m.Signal(ctxT(t), syscall.SIGSEGV); err != nil {
		t.Fatal(err)
	}
	ev := h.next(EventBackoff)
	if ev.Status.ConsecutiveFailures != 1 || ev.DelayMS != 20 {
		t.Fatalf("after reset: failures %d delay %d", ev.Status.ConsecutiveFailures, ev.DelayMS)
	}
}

func TestLongRunResetsWithoutTimer(t *testing.T) {
	// Each run lives longer than Reset, so every failure is the first.
	b := Backoff{Initial: 10 * time.Millisecond, Max: time.Second, Multiplier: 2, Reset: 50 * time.Millisecond}
	h := start(t, Config{Command: []string{fakeBridge, "-after", "120ms", "-exit", "1"}, Backoff: b})
	for i := 0; i < 3; i++ {
		ev := h.next(EventBackoff)
		if ev.Status.ConsecutiveFailures != 1 || ev.DelayMS != 10 {
			t.Fatalf("run %d: failures %d delay %d", i, ev.Status.ConsecutiveFailures, ev.DelayMS)
		}
	}
}

func TestUnrequestedShutdownIsNotAFailure(t *testing.T) {
	// Killed right after each start: the first respawn is at once (a
	// gateway may have killed a bridge that had just started), then
	// Initial between respawns, so that something that keeps killing it
	// makes no tight loop.
	h := start(t, Config{Command: []string{fakeBridge, "-signal", "15"}, Backoff: Backoff{Initial: 30 * time.Millisecond, Max: time.Second, Multiplier: 2}})
	h.next(EventExited)
	h.nextUnless(EventStarting, EventBackoff)
	for i := 0; i < 3; i++ {
		ev := h.next(EventBackoff)
		if ev.DelayMS != 30 || ev.Status.ConsecutiveFailures != 0 || ev.Reason != "shutdown" {
			t.Fatalf("shutdown %d: %+v", i, ev)
		}
	}
}

func TestOutsideShutdownOfARunningBridgeRespawnsAtOnce(t *testing.T) {
	// Up longer than Initial: a gateway that SIGTERMs the bridge to take its
	// port must find it back before its own bridge starts a second later.
	h := start(t, Config{Command: []string{fakeBridge, "-signal", "15", "-after", "60ms"}, Backoff: Backoff{Initial: 30 * time.Millisecond, Max: time.Second, Multiplier: 2}})
	for i := 0; i < 2; i++ {
		ex := h.next(EventExited)
		if ex.Exit.Class != ClassShutdown {
			t.Fatalf("exit %d: %+v", i, ex.Exit)
		}
		ev := h.nextUnless(EventStarting, EventBackoff)
		if ev.Status.ConsecutiveFailures != 0 {
			t.Fatalf("respawn %d: %+v", i, ev.Status)
		}
	}
}

func TestQuickKillCountStartsAgainAfterAnyOtherEnd(t *testing.T) {
	// A quick kill, a restart by the sidecar, a quick kill again: not
	// twice in a row, so the second is respawned at once too.
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}, Backoff: Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 2}})
	kill := func() Event {
		t.Helper()
		pid := h.next(EventStarted).Pid
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		return h.next(EventExited)
	}
	kill()
	h.nextUnless(EventStarting, EventBackoff)
	// A requested restart in between ends the run of quick kills.
	pid := h.next(EventStarted).Pid
	if err := h.m.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if ex := h.next(EventExited); ex.Pid != pid || ex.Exit.Class != ClassRequested {
		t.Fatalf("restart: %+v", ex.Exit)
	}
	kill()
	h.nextUnless(EventStarting, EventBackoff)
	// Two in a row now: the next waits.
	kill()
	if bo := h.nextUnless(EventBackoff, EventStarting); bo.Reason != string(ClassShutdown) {
		t.Fatalf("backoff after two quick kills in a row: %+v", bo)
	}
}

func TestOutsideSIGKILLSoonAfterStartIsAFailure(t *testing.T) {
	// An OOM loop: every run is SIGKILLed from outside soon after its
	// start. It backs off more each time and meets MaxRestarts.
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}, Backoff: fast, MaxRestarts: 3})
	for i, want := range []int64{20, 40} {
		pid := h.next(EventStarted).Pid
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		ex := h.next(EventExited)
		if ex.Exit.Class != ClassFailure || ex.Exit.Reason != ReasonKilledEarly || *ex.Exit.Signal != "SIGKILL" {
			t.Fatalf("kill %d: %+v", i+1, ex.Exit)
		}
		bo := h.next(EventBackoff)
		if bo.DelayMS != want || bo.Status.ConsecutiveFailures != i+1 || bo.Reason != string(ClassFailure) {
			t.Fatalf("kill %d: backoff %d ms, failures %d, reason %q", i+1, bo.DelayMS, bo.Status.ConsecutiveFailures, bo.Reason)
		}
	}
	pid := h.next(EventStarted).Pid
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	gu := h.next(EventGivenUp)
	if gu.Status.ConsecutiveFailures != 3 {
		t.Fatalf("given up: %+v", gu.Status)
	}
	// In the monitor's own words: the setting's name on a command line is
	// for the program to add.
	if want := "it failed 3 times in a row, the most allowed; a start command tries again"; gu.Message != want || gu.Status.Message != want {
		t.Fatalf("given up: message %q, status message %q; want %q", gu.Message, gu.Status.Message, want)
	}
}

func TestOutsideSIGKILLAfterTheResetTimeIsAShutdown(t *testing.T) {
	b := Backoff{Initial: 20 * time.Millisecond, Max: time.Second, Multiplier: 2, Reset: 100 * time.Millisecond}
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}, Backoff: b})
	// One early kill, so that the next run's reset is an event to wait for.
	if err := syscall.Kill(h.next(EventStarted).Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.next(EventBackoff)
	pid := h.next(EventStarted).Pid
	h.next(EventRecovered)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ex := h.next(EventExited)
	if ex.Exit.Class != ClassShutdown || ex.Exit.Reason != "" {
		t.Fatalf("a SIGKILL after the reset time: %+v", ex.Exit)
	}
	if ev := h.nextUnless(EventStarting, EventBackoff); ev.Status.ConsecutiveFailures != 0 {
		t.Fatalf("respawn after a late SIGKILL: %+v", ev.Status)
	}
}

func TestMaxRestartsGivesUpAndStartResumes(t *testing.T) {
	// MaxRestarts N parks after N failed runs in a row, as documented.
	h := start(t, Config{Command: []string{fakeBridge, "-exit", "2"}, MaxRestarts: 2, Backoff: fast})
	h.next(EventGivenUp)
	st := h.m.Status()
	if st.State != StateGivenUp || st.ConsecutiveFailures != 2 || st.Restarts != 1 || st.Message == "" {
		t.Fatalf("given up status: %+v", st)
	}
	if n := count(h.kinds(), EventExited); n != 2 {
		t.Fatalf("%d failed runs before given_up, want 2: %v", n, h.kinds())
	}
	if err := h.m.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ev := h.next(EventStarted)
	if ev.Status.ConsecutiveFailures != 0 {
		t.Fatalf("start did not forgive failures: %+v", ev.Status)
	}
	h.next(EventGivenUp)
}

func TestStopGraceful(t *testing.T) {
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}})
	pid := h.next(EventStarted).Pid
	if err := h.m.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	h.next(EventStopping)
	ex := h.next(EventExited)
	if ex.Exit.Class != ClassRequested || !ex.Exit.Requested || *ex.Exit.Signal != "SIGTERM" {
		t.Fatalf("exit: %+v", ex.Exit)
	}
	st := h.next(EventStopped)
	if st.Status.State != StateStopped || st.Status.Pid != 0 {
		t.Fatalf("stopped status: %+v", st.Status)
	}
	for _, k := range h.kinds() {
		if k == EventKilling {
			t.Fatal("a bridge that obeys SIGTERM was killed")
		}
	}
	waitGone(t, pid)
	// Stays down, then comes back on Start.
	if err := h.m.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if ev := h.next(EventStarted); ev.Status.Restarts != 1 {
		t.Fatalf("restarts after start = %d", ev.Status.Restarts)
	}
}

func TestStopIgnoringTermIsKilledAfterTimeout(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	h := start(t, Config{Command: []string{fakeBridge, "-ignore-term", "-grandchild", "-pidfile", pids}, StopTimeout: 300 * time.Millisecond})
	h.next(EventStarted)
	all := proctest.WaitPids(t, pids, 2)
	if err := h.m.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	k := h.next(EventKilling)
	if k.Reason != "stop timeout" {
		t.Fatalf("killing reason %q", k.Reason)
	}
	ex := h.next(EventExited)
	if *ex.Exit.Signal != "SIGKILL" || ex.Exit.Class != ClassRequested {
		t.Fatalf("exit: %+v", ex.Exit)
	}
	for _, p := range all {
		waitGone(t, p)
	}
}

func TestSignalGroupReachesAWrapperChild(t *testing.T) {
	// sh waits for its child and would not pass SIGTERM on; with
	// SignalGroup the child gets it directly.
	pids := filepath.Join(t.TempDir(), "pids")
	script := "trap 'echo wrapper got TERM' TERM; " + fakeBridge + " -hang -pidfile " + pids
	for _, group := range []bool{false, true} {
		t.Run(fmt.Sprint("group=", group), func(t *testing.T) { testSignalGroup(t, script, pids, group) })
	}
}

func testSignalGroup(t *testing.T, script, pids string, group bool) {
	os.Remove(pids)
	h := start(t, Config{Command: []string{"/bin/sh", "-c", script}, SignalGroup: group, StopTimeout: 500 * time.Millisecond})
	h.next(EventStarted)
	inner := proctest.WaitPids(t, pids, 1)[0]
	if err := h.m.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ex := h.next(EventExited)
	killed := false
	for _, k := range h.kinds() {
		killed = killed || k == EventKilling
	}
	// Without the group, sh holds the signal until its child ends, so only
	// the timeout's SIGKILL brings them down; with it, TERM is enough.
	if killed == group {
		t.Fatalf("group=%v: SIGKILL needed = %v; events %v", group, killed, h.kinds())
	}
	if ex.Exit.Class != ClassRequested {
		t.Fatalf("exit %+v", ex.Exit)
	}
	waitGone(t, inner)
}

func TestKillSkipsTheWait(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	h := start(t, Config{Command: []string{fakeBridge, "-ignore-term", "-pidfile", pids}, StopTimeout: time.Hour})
	h.next(EventStarted)
	proctest.WaitPids(t, pids, 1) // SIGTERM is ignored from here on
	if err := h.m.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	h.next(EventStopping)
	if err := h.m.Kill(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if k := h.next(EventKilling); k.Reason != "forced" {
		t.Fatalf("killing reason %q", k.Reason)
	}
	h.next(EventStopped)
}

func TestGrandchildInGroupDiesWithBridge(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	h := start(t, Config{Command: []string{fakeBridge, "-grandchild", "-pidfile", pids, "-after", "200ms", "-exit", "3"}, Backoff: Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 2}})
	h.next(EventStarted)
	all := proctest.WaitPids(t, pids, 2)
	h.next(EventExited)
	waitGone(t, all[1])
}

func TestEscapedGrandchildIsReportedAndDelaysNothing(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	h := start(t, Config{
		Command: []string{fakeBridge, "-escapee", "-say", "last words", "-pidfile", pids, "-after", "100ms", "-exit", "4"},
		Backoff: Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 2},
		// The escapee holds the bridge's stdout for as long as it lives:
		// the exit must be reported without waiting for that.
		WaitDelay: time.Hour,
	})
	h.next(EventStarted)
	all := proctest.WaitPids(t, pids, 2)
	// The escapee is in its own session, outside the bridge's group, and
	// this monitor is no subreaper; it is this test's own leftover, so the
	// test cleans it up.
	defer syscall.Kill(all[1], syscall.SIGKILL)
	ex := h.next(EventExited)
	if *ex.Exit.Code != 4 || len(ex.Exit.Tail) != 1 || ex.Exit.Tail[0] != "last words" {
		t.Fatalf("exit: %+v", ex.Exit)
	}
	want := []Escapee{{Pid: all[1], Name: "fakebridge"}}
	if len(ex.Exit.Escaped) != 1 || ex.Exit.Escaped[0] != want[0] || ex.Exit.EscapedStopped {
		t.Fatalf("escaped: %+v (stopped %v), want %+v", ex.Exit.Escaped, ex.Exit.EscapedStopped, want)
	}
	if !proctest.Running(all[1]) {
		t.Fatal("the escapee was stopped, though the monitor is no subreaper")
	}
}

func TestStopReportsWhatTheBridgeStartedOutsideItsGroup(t *testing.T) {
	// A daemon in a session of its own, its output on /dev/null: nothing
	// of it holds the bridge's pipes, but it was the bridge's when the
	// stop began.
	orphans := make(chan int, 1)
	h := start(t, Config{Command: []string{fakeBridge, "-orphan", "1h", "-hang"}, Hooks: []Hook{LineFunc(func(l Line) {
		var pid int
		if _, err := fmt.Sscanf(string(l.Text), "orphan %d", &pid); err == nil {
			orphans <- pid
		}
	})}})
	h.next(EventStarted)
	orphan := <-orphans
	defer syscall.Kill(orphan, syscall.SIGKILL) // no subreaper: this test's own leftover
	if err := h.m.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ex := h.next(EventExited)
	if len(ex.Exit.Escaped) != 1 || ex.Exit.Escaped[0].Pid != orphan || ex.Exit.EscapedStopped {
		t.Fatalf("escaped: %+v (stopped %v), want pid %d, not stopped", ex.Exit.Escaped, ex.Exit.EscapedStopped, orphan)
	}
}

// subreaper makes this test process a subreaper, with a Reaper that reaps
// all, as `wa-sidecar run --subreaper` does, for the rest of the test.
func subreaper(t *testing.T) *signals.Reaper {
	t.Helper()
	if err := signals.BecomeSubreaper(); err != nil {
		t.Skipf("cannot become a subreaper: %v", err)
	}
	r := signals.NewReaper(signals.ReaperOptions{ReapAll: true})
	t.Cleanup(func() {
		r.Close()
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	})
	return r
}

func TestSubreaperStopsWhatTheBridgeLeftBehind(t *testing.T) {
	r := subreaper(t)
	pids := filepath.Join(t.TempDir(), "pids")
	h := start(t, Config{
		Command:   []string{fakeBridge, "-escapee", "-pidfile", pids, "-after", "100ms", "-exit", "4"},
		Backoff:   Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 2},
		WaitDelay: time.Hour,
		Reaper:    r,
	})
	h.next(EventStarted)
	all := proctest.WaitPids(t, pids, 2)
	ex := h.next(EventExited)
	if len(ex.Exit.Escaped) != 1 || ex.Exit.Escaped[0].Pid != all[1] || !ex.Exit.EscapedStopped {
		t.Fatalf("escaped: %+v (stopped %v), want pid %d stopped", ex.Exit.Escaped, ex.Exit.EscapedStopped, all[1])
	}
	waitGone(t, all[1])
}

func TestSubreaperShutdownWaitsForWhatTheBridgeLeftBehind(t *testing.T) {
	r := subreaper(t)
	pids := filepath.Join(t.TempDir(), "pids")
	h := start(t, Config{Command: []string{fakeBridge, "-escapee", "-pidfile", pids}, Reaper: r, StopTimeout: 5 * time.Second})
	h.next(EventStarted)
	all := proctest.WaitPids(t, pids, 2)
	h.cancel()
	<-h.m.Done()
	if proctest.Running(all[1]) {
		t.Fatalf("the bridge's escaped grandchild %d outlived the monitor", all[1])
	}
	if ex := h.next(EventExited); len(ex.Exit.Escaped) != 1 || ex.Exit.Escaped[0].Pid != all[1] {
		t.Fatalf("escaped: %+v", ex.Exit.Escaped)
	}
}

func TestRestartCommand(t *testing.T) {
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}})
	first := h.next(EventStarted)
	if err := h.m.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ex := h.next(EventExited)
	second := h.next(EventStarted)
	if ex.Exit.Class != ClassRequested || second.Pid == first.Pid || second.Status.Restarts != 1 {
		t.Fatalf("restart: exit %+v, pids %d→%d, restarts %d", ex.Exit, first.Pid, second.Pid, second.Status.Restarts)
	}
	err := h.m.Start(ctxT(t))
	var se *StateError
	if !errors.As(err, &se) || se.Op != "start" || se.Pid != second.Pid || se.State != StateRunning ||
		err.Error() != fmt.Sprintf("the child is already running (pid %d)", second.Pid) {
		t.Fatalf("start while running: %v; want a *StateError naming pid %d", err, second.Pid)
	}
	if err := h.m.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	h.next(EventStopped)
	err = h.m.Signal(ctxT(t), syscall.SIGUSR1)
	if !errors.As(err, &se) || se.Op != "signal" || err.Error() != "the child is not running (state stopped)" {
		t.Fatalf("signal while stopped: %v; want a *StateError", err)
	}
}

func TestRecycleCountsAsAFailure(t *testing.T) {
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}, Backoff: fast, CrashloopAfter: 2, MaxRestarts: 3})
	// The second failure reaches CrashloopAfter: the longest delay.
	for i, want := range []int64{20, 160} {
		pid := h.next(EventStarted).Pid
		if err := h.m.Recycle(ctxT(t), pid, "hung"); err != nil {
			t.Fatal(err)
		}
		ex := h.next(EventExited)
		if ex.Pid != pid || ex.Exit.Class != ClassFailure || !ex.Exit.Requested || ex.Exit.Reason != "hung" ||
			!strings.Contains(ex.Exit.Describe(), "hung") {
			t.Fatalf("recycle %d: exit %+v (%s)", i+1, ex.Exit, ex.Exit.Describe())
		}
		bo := h.next(EventBackoff)
		if bo.DelayMS != want || bo.Status.ConsecutiveFailures != i+1 || bo.Reason != string(ClassFailure) {
			t.Fatalf("recycle %d: backoff %d ms, failures %d, reason %q", i+1, bo.DelayMS, bo.Status.ConsecutiveFailures, bo.Reason)
		}
		if i == 1 && (!bo.Status.Crashloop || !h.saw(EventCrashloop)) {
			t.Fatalf("two recycles with CrashloopAfter 2 did not raise crashloop: %v", h.kinds())
		}
	}
	pid := h.next(EventStarted).Pid
	if err := h.m.Recycle(ctxT(t), pid, "hung"); err != nil {
		t.Fatal(err)
	}
	h.next(EventGivenUp)
}

func TestRecycleIgnoresAReplacedChildAndYieldsToStop(t *testing.T) {
	// The child outlives the recycle's SIGTERM, so that the Stop surely
	// comes while the recycle is under way, not after its exit; it has
	// ignored SIGTERM once it has written its pid.
	pids := filepath.Join(t.TempDir(), "pids")
	h := start(t, Config{Command: []string{fakeBridge, "-ignore-term", "-pidfile", pids}, Backoff: fast, StopTimeout: 300 * time.Millisecond})
	pid := h.next(EventStarted).Pid
	proctest.WaitPids(t, pids, 1)
	if err := h.m.Recycle(ctxT(t), pid+100000, "stale"); err != nil {
		t.Fatal(err)
	}
	if st := h.m.Status(); st.State != StateRunning || st.Pid != pid {
		t.Fatalf("a recycle for another pid changed the child: %+v", st)
	}
	if err := h.m.Recycle(ctxT(t), pid, "hung"); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ex := h.next(EventExited)
	if ex.Exit.Class != ClassRequested || ex.Exit.Reason != "" {
		t.Fatalf("a stop during a recycle: exit %+v", ex.Exit)
	}
	h.nextUnless(EventStopped, EventBackoff, EventStarting)
	if st := h.m.Status(); st.ConsecutiveFailures != 0 {
		t.Fatalf("failures after a stop: %d", st.ConsecutiveFailures)
	}
}

func TestSignalForwarding(t *testing.T) {
	var mu sync.Mutex
	var out bytes.Buffer
	got := make(chan struct{}, 4)
	h := start(t, Config{Command: []string{fakeBridge, "-report-signals", "-say", "ready"}, Hooks: []Hook{LineFunc(func(l Line) {
		mu.Lock()
		defer mu.Unlock()
		out.Write(l.Text)
		out.WriteByte('\n')
		if strings.HasPrefix(string(l.Text), "got ") || string(l.Text) == "ready" {
			got <- struct{}{}
		}
	})}})
	h.next(EventStarted)
	<-got // the handler is installed before "ready" is printed
	for _, sig := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGUSR2} {
		if err := h.m.Signal(ctxT(t), sig); err != nil {
			t.Fatal(err)
		}
		h.next(EventSignal)
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Fatalf("bridge did not report %v", sig)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(out.String(), "got SIGUSR1\ngot SIGUSR2") {
		t.Fatalf("output: %q", out.String())
	}
}

func TestSpawnFailureIsRetried(t *testing.T) {
	h := start(t, Config{Command: []string{filepath.Join(t.TempDir(), "no-such-bridge")}, Backoff: fast})
	ev := h.next(EventSpawnFailed)
	if ev.Exit == nil || !strings.Contains(ev.Exit.Error, "no-such-bridge") || !strings.Contains(ev.Exit.Error, "check the path") || ev.Exit.Class != ClassFailure {
		t.Fatalf("spawn_failed: %+v", ev.Exit)
	}
	if bo := h.next(EventBackoff); bo.Status.ConsecutiveFailures != 1 {
		t.Fatalf("backoff after spawn failure: %+v", bo.Status)
	}
	h.next(EventSpawnFailed) // and it keeps trying
}

func TestNotExecutableSaysSo(t *testing.T) {
	f := filepath.Join(t.TempDir(), "bridge.js")
	os.WriteFile(f, []byte("console.log(1)\n"), 0o644)
	h := start(t, Config{Command: []string{f}, Backoff: fast})
	ev := h.next(EventSpawnFailed)
	if !strings.Contains(ev.Exit.Error, "executable") {
		t.Fatalf("error does not say what to do: %q", ev.Exit.Error)
	}
}

func TestEnvironmentAndWorkdir(t *testing.T) {
	t.Setenv("WHATSAPP_DM_POLICY", "allowlist with spaces=and equals")
	dir := t.TempDir()
	lines := make(chan string, 8)
	h := start(t, Config{Command: []string{fakeBridge, "-env", "WHATSAPP_DM_POLICY", "-pwd", "-hang"}, Dir: dir,
		Hooks: []Hook{LineFunc(func(l Line) { lines <- string(l.Text) })}})
	h.next(EventStarted)
	want := map[string]bool{"ENV=allowlist with spaces=and equals": true, "PWD=" + dir: true}
	for len(want) > 0 {
		select {
		case l := <-lines:
			delete(want, l)
		case <-time.After(10 * time.Second):
			t.Fatalf("missing lines %v", want)
		}
	}
}

func TestOutputIsDrainedAndLinesCapped(t *testing.T) {
	var n, bytesSeen, truncated atomic.Int64
	var lastLine atomic.Value
	h := start(t, Config{
		Command:      []string{fakeBridge, "-long-line", "200000", "-spew", "8388608", "-exit", "0"},
		MaxLineBytes: 64 << 10,
		Backoff:      Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 2},
		Hooks: []Hook{LineFunc(func(l Line) {
			n.Add(1)
			bytesSeen.Add(int64(len(l.Text)))
			if l.Truncated {
				truncated.Add(1)
				if len(l.Text) != 64<<10 {
					t.Errorf("truncated line has %d bytes", len(l.Text))
				}
			}
			lastLine.Store(string(l.Text))
		})},
	})
	ex := h.next(EventExited)
	if *ex.Exit.Code != 0 {
		t.Fatalf("exit: %+v", ex.Exit)
	}
	// 1 cut line + "after-long-line" + 8 MiB / 100 + "spew done".
	wantLines := int64(2 + (8388608+99)/100 + 1)
	if n.Load() != wantLines || truncated.Load() != 1 {
		t.Fatalf("lines %d (want %d), truncated %d", n.Load(), wantLines, truncated.Load())
	}
	if lastLine.Load() != "spew done 8388608" || ex.Exit.Tail[len(ex.Exit.Tail)-1] != "spew done 8388608" {
		t.Fatalf("last line %q, tail end %q", lastLine.Load(), ex.Exit.Tail[len(ex.Exit.Tail)-1])
	}
}

// TestOutputRawGetsEveryByte: a RawWriter sees the output unchanged (an
// overlong line whole, and an unterminated last line), while a LineWriter still
// gets the lines, cut as usual.
func TestOutputRawGetsEveryByte(t *testing.T) {
	var mu sync.Mutex
	var raw [2]bytes.Buffer
	var lines []string
	h := start(t, Config{
		Command:      []string{fakeBridge, "-long-line", "5000", "-say", "a|b", "-say-err", "e", "-exit", "0"},
		MaxLineBytes: 100,
		Backoff:      Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 2},
		Hooks: []Hook{RawFunc(func(s Stream, b []byte) {
			mu.Lock()
			defer mu.Unlock()
			if s == Stderr {
				raw[1].Write(b)
			} else {
				raw[0].Write(b)
			}
		}), LineFunc(func(l Line) {
			mu.Lock()
			defer mu.Unlock()
			lines = append(lines, string(l.Stream)+":"+string(l.Text))
		})},
	})
	h.next(EventExited)
	mu.Lock()
	defer mu.Unlock()
	if want := strings.Repeat("x", 5000) + "\nafter-long-line\na\nb\n"; raw[0].String() != want {
		t.Fatalf("raw stdout: %d bytes, want %d", raw[0].Len(), len(want))
	}
	if raw[1].String() != "e\n" {
		t.Fatalf("raw stderr = %q", raw[1].String())
	}
	// The two streams are read apart, so only each one's order is known.
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, "stdout:") {
			out = append(out, l)
		}
	}
	if len(lines) != 5 || len(out) != 4 || out[0] != "stdout:"+strings.Repeat("x", 100) || out[3] != "stdout:b" {
		t.Fatalf("lines = %.200q", lines)
	}
}

func TestSlowSubscriberIsDroppedOthersKeepUp(t *testing.T) {
	h := start(t, Config{Command: []string{fakeBridge, "-exit", "1"}, Backoff: Backoff{Multiplier: 1}, MaxRestarts: 30})
	slow, first := h.m.Subscribe(2)
	defer slow.Close()
	_ = first
	h.next(EventGivenUp)
	deadline := time.After(10 * time.Second)
	n := 0
	for range slow.C {
		n++
		select {
		case <-deadline:
			t.Fatal("slow subscription was never closed")
		default:
		}
	}
	if !errors.Is(slow.Err(), ErrOverflow) || n > 2 {
		t.Fatalf("slow subscriber: err %v after %d events", slow.Err(), n)
	}
}

func TestSubscribeResumesFromSnapshot(t *testing.T) {
	h := start(t, Config{Command: []string{fakeBridge, "-hang"}})
	h.next(EventStarted)
	sub, last := h.m.Subscribe(16)
	defer sub.Close()
	if last.Status.State != StateRunning || last.Seq == 0 {
		t.Fatalf("snapshot: %+v", last)
	}
	if err := h.m.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ev := <-sub.C
	if ev.Seq != last.Seq+1 || ev.Kind != EventStopping {
		t.Fatalf("first event after subscribe: seq %d kind %s (snapshot seq %d)", ev.Seq, ev.Kind, last.Seq)
	}
}

func TestManyCrashCyclesLeakNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("1 000 spawns")
	}
	// Ten rounds of 100 crash/respawn cycles on one monitor; each round
	// ends parked in given_up, where resource use is compared.
	h := start(t, Config{Command: []string{fakeBridge, "-exit", "1"}, Backoff: Backoff{Multiplier: 1}, MaxRestarts: 100})
	var fds, gor int
	for round := 0; round < 10; round++ {
		if round > 0 {
			if err := h.m.Start(ctxT(t)); err != nil {
				t.Fatal(err)
			}
		}
		h.next(EventGivenUp)
		if round == 0 {
			fds, gor = openFDs(), settleGoroutines(0)
		}
	}
	st := h.m.Status()
	if st.Restarts != 999 || st.LastExit == nil || *st.LastExit.Code != 1 {
		t.Fatalf("after 1000 cycles: restarts %d, last exit %+v", st.Restarts, st.LastExit)
	}
	if z := proctest.ZombieChildren(os.Getpid()); len(z) > 0 {
		t.Fatalf("zombies: %v", z)
	}
	if now := openFDs(); now > fds {
		t.Fatalf("fds grew from %d to %d over 900 cycles", fds, now)
	}
	if now := settleGoroutines(gor); now > gor {
		t.Fatalf("goroutines grew from %d to %d over 900 cycles", gor, now)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	bad := []Config{
		{},
		{Command: []string{""}},
		{Command: []string{"x"}, Backoff: Backoff{Initial: time.Second, Max: time.Millisecond, Multiplier: 2}},
		{Command: []string{"x"}, MaxRestarts: -1},
	}
	for _, c := range bad {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

// The monitor's log calls the child what the layer above names it, and
// nothing else: procmon knows nothing of bridges.
func TestLogNamesTheChildAsConfigured(t *testing.T) {
	for _, name := range []string{"", "widget"} {
		t.Run(cmp.Or(name, "default"), func(t *testing.T) {
			var log proctest.LockedBuffer
			h := start(t, Config{Name: name, Command: []string{fakeBridge, "-exit", "1"}, Logger: slog.New(slog.NewTextHandler(&log, nil))})
			h.next(EventExited)
			// Logged before the backoff event is emitted.
			h.next(EventBackoff)
			want := cmp.Or(name, "child")
			text := log.String()
			for _, msg := range []string{want + " started", want + " failed", "restarting the " + want + " after a delay"} {
				if !strings.Contains(text, "msg=\""+msg) {
					t.Errorf("the log lacks %q:\n%s", msg, text)
				}
			}
			if strings.Contains(text, "msg=\"bridge") || strings.Contains(text, "the bridge") {
				t.Errorf("the log speaks of a bridge:\n%s", text)
			}
		})
	}
}

func TestEveryRespawnedRunsExitCarriesItsOwnLastLines(t *testing.T) {
	// Each run writes its pid on both streams and exits at once; a respawn
	// uses pipes made while the run before it was still going. The exit
	// record must hold that run's lines, read to the end, and exited must
	// come before what follows from it.
	h := start(t, Config{Command: []string{"/bin/sh", "-c", "echo out-$$; echo err-$$ >&2; exit 1"},
		Backoff: Backoff{Multiplier: 1}, MaxRestarts: 5})
	for i := 0; i < 5; i++ {
		ev := h.next(EventExited)
		for _, want := range []string{fmt.Sprintf("out-%d", ev.Pid), fmt.Sprintf("err-%d", ev.Pid)} {
			if !slices.Contains(ev.Exit.Tail, want) {
				t.Fatalf("run %d (pid %d): tail %q lacks %q", i, ev.Pid, ev.Exit.Tail, want)
			}
		}
		if len(ev.Exit.Tail) != 2 {
			t.Fatalf("run %d (pid %d): tail %q holds lines of another run", i, ev.Pid, ev.Exit.Tail)
		}
		if i == 4 {
			h.next(EventGivenUp)
			break
		}
		h.nextUnless(EventBackoff, EventStarting, EventStarted)
		h.nextUnless(EventStarting, EventStarted)
		h.next(EventStarted)
	}
}

// enderLog records, per stream, the calls a hook with every output
// interface gets.
type enderLog struct {
	mu    sync.Mutex
	calls map[Stream][]string
}

func (e *enderLog) add(s Stream, what string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls[s] = append(e.calls[s], what)
}

func (e *enderLog) WriteRaw(s Stream, b []byte) { e.add(s, "raw") }
func (e *enderLog) WriteLine(l Line)            { e.add(l.Stream, "line:"+string(l.Text)) }
func (e *enderLog) FlushLines(s Stream)         { e.add(s, "flush") }
func (e *enderLog) EndOutput(s Stream)          { e.add(s, "end") }

// TestOutputEnderIsToldOfEachStreamsEnd: once per stream of each child,
// after the stream's last line (an unended one too) and its flush, and
// before the child's exit is reported.
func TestOutputEnderIsToldOfEachStreamsEnd(t *testing.T) {
	e := &enderLog{calls: map[Stream][]string{}}
	h := start(t, Config{
		Command:     []string{"/bin/sh", "-c", `printf 'a\nunended'; printf 'e\n' >&2; exit 1`},
		Hooks:       []Hook{e},
		MaxRestarts: 2,
	})
	for run := 1; run <= 2; run++ {
		h.next(EventExited)
		e.mu.Lock()
		for s, last := range map[Stream]string{Stdout: "line:unended", Stderr: "line:e"} {
			c := e.calls[s]
			ends := 0
			for _, what := range c {
				if what == "end" {
					ends++
				}
			}
			if ends != run || len(c) < 4 || c[len(c)-1] != "end" || c[len(c)-2] != "flush" || !slices.Contains(c[len(c)-4:], last) {
				e.mu.Unlock()
				t.Fatalf("run %d, %s: calls %q; want the line %q, a flush and one end per run, the end last, before the exit", run, s, c, last)
			}
		}
		e.mu.Unlock()
	}
}
