package signals

import (
	"bufio"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// startSh starts sh -c script, waits for it to print a line, and reaps
// it in the background: done is closed then, with the error in *ended.
func startSh(t *testing.T, script string) (id Identity, done <-chan struct{}, ended *error) {
	t.Helper()
	c := exec.Command("/bin/sh", "-c", script)
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{})
	ended = new(error)
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	go func() { *ended = c.Wait(); close(ch) }()
	t.Cleanup(func() { c.Process.Kill(); <-ch })
	id, err = IdentityOf(c.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return id, ch, ended
}

func TestTerminateKillsWhatIgnoresTerm(t *testing.T) {
	// The trap makes sh ignore TERM; the sleep keeps it alive until killed.
	id, done, ended := startSh(t, `trap '' TERM; echo ready; while :; do sleep 0.05; done`)
	if n, err := Terminate([]Identity{id}, 100*time.Millisecond, nil); n != 1 || err != nil {
		t.Fatalf("Terminate = %d, %v; want 1 ended", n, err)
	}
	select {
	case <-done:
		err := *ended
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("ended with %v, want SIGKILL", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("still running")
	}
}

func TestTerminateLeavesAReusedPidAlone(t *testing.T) {
	id, done, ended := startSh(t, `echo ready; while :; do sleep 0.05; done`)
	// Another start time: the pid belongs to another process now.
	n, err := Terminate([]Identity{{Pid: id.Pid, StartTime: id.StartTime + 1}}, 10*time.Millisecond,
		func() []Identity { return []Identity{{Pid: id.Pid, StartTime: id.StartTime - 1}} })
	if n != 0 || err != nil {
		t.Fatalf("Terminate = %d, %v; want nothing ended and no error", n, err)
	}
	select {
	case <-done:
		t.Fatalf("a process that was not the recorded one was signalled: %v", *ended)
	default:
	}
	if !id.Alive() {
		t.Fatal("not alive")
	}
}

// A stopped process that would end on SIGTERM gets SIGCONT with it, so it
// ends by the SIGTERM and not by the SIGKILL after grace.
func TestTerminateContinuesAStoppedProcess(t *testing.T) {
	id, done, ended := startSh(t, `trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done`)
	if err := id.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if n, err := Terminate([]Identity{id}, 20*time.Second, nil); n != 1 || err != nil {
		t.Fatalf("Terminate = %d, %v; want 1 ended", n, err)
	}
	select {
	case <-done:
		ee, ok := (*ended).(*exec.ExitError)
		if !ok || ee.ExitCode() != 7 {
			t.Fatalf("ended with %v, want exit 7 from its TERM trap", *ended)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("still running")
	}
}
