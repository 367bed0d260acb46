package signals

import (
	"bufio"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	s, err := parseStat([]byte("123 (we ird) (name)) S 1 120 119 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 0 0"))
	if err != nil || s != (Stat{Pid: 123, PPid: 1, Pgrp: 120, StartTime: 987654}) {
		t.Fatalf("got %+v, %v", s, err)
	}
	rest := " S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10"
	if s, err := parseStat([]byte("4243 (a) (b c)" + rest)); err != nil || s != (Stat{Pid: 4243, PPid: 1, Pgrp: 4242, StartTime: 98765}) {
		t.Fatalf("a name with \") \" in it: %+v, %v", s, err)
	}
	for _, bad := range []string{"", "no paren", "1 (x) S 1", "4243 (sleep) S 1 4242",
		"x (y) S 1 2 3 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0",
		"4243 (x) S 1 pg 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}

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
	Terminate([]Identity{id}, 100*time.Millisecond, nil)
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
	Terminate([]Identity{{Pid: id.Pid, StartTime: id.StartTime + 1}}, 10*time.Millisecond,
		func() []Identity { return []Identity{{Pid: id.Pid, StartTime: id.StartTime - 1}} })
	select {
	case <-done:
		t.Fatalf("a process that was not the recorded one was signalled: %v", *ended)
	default:
	}
	if !id.Alive() {
		t.Fatal("not alive")
	}
}
