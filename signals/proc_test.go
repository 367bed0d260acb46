package signals

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// statTail is fields 3 to 24 of a stat line: state S, ppid 1, pgrp 4242,
// starttime 98765.
const statTail = " S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10"

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Stat
	}{
		{"123 (we ird) (name)) S 1 120 119 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 0 0",
			Stat{Pid: 123, Comm: "we ird) (name)", State: "S", PPid: 1, Pgrp: 120, StartTime: 987654}},
		{"4243 (a) b)" + statTail, Stat{Pid: 4243, Comm: "a) b", State: "S", PPid: 1, Pgrp: 4242, StartTime: 98765}},
		{"4243 (a) (b c)" + statTail, Stat{Pid: 4243, Comm: "a) (b c", State: "S", PPid: 1, Pgrp: 4242, StartTime: 98765}},
		{"7 (two\nlines)" + statTail, Stat{Pid: 7, Comm: "two\nlines", State: "S", PPid: 1, Pgrp: 4242, StartTime: 98765}},
		{"7 (ends ) 1 2 3)" + statTail, Stat{Pid: 7, Comm: "ends ) 1 2 3", State: "S", PPid: 1, Pgrp: 4242, StartTime: 98765}},
		{"8 ()" + statTail, Stat{Pid: 8, Comm: "", State: "S", PPid: 1, Pgrp: 4242, StartTime: 98765}},
		{"9 (z) Z 1 9 9 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 5 0 0\n",
			Stat{Pid: 9, Comm: "z", State: "Z", PPid: 1, Pgrp: 9, StartTime: 5}},
	} {
		got, err := ParseStat([]byte(tc.line))
		if err != nil || got != tc.want {
			t.Errorf("ParseStat(%q) = %+v, %v; want %+v", tc.line, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "no paren", "1 (x) S 1", "4243 (sleep) S 1 4242",
		"(x)" + statTail, "4243(x)" + statTail, ") 4243 (x" + statTail,
		"x (y) S 1 2 3 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0",
		"4243 (x) S 1 pg 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765"} {
		if s, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("ParseStat(%q) accepted: %+v", bad, s)
		}
	}
}

func TestReadStatOfSelf(t *testing.T) {
	s, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.Pid != os.Getpid() || s.PPid != os.Getppid() || s.State == "" || s.StartTime == 0 {
		t.Fatalf("own stat: %+v", s)
	}
	if comm := ProcessName(os.Getpid()); s.Comm != comm {
		t.Fatalf("comm %q, /proc/self/comm says %q", s.Comm, comm)
	}
}

// FuzzParseStat checks that whatever a program names itself, the fields
// after its name are read as the kernel wrote them.
func FuzzParseStat(f *testing.F) {
	for _, c := range []string{"sleep", "a) b", "two\nlines", "(", ")", ") S 2 3 4", "", " "} {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, comm string) {
		line := "4243 (" + comm + ")" + statTail
		s, err := ParseStat([]byte(line))
		if err != nil {
			t.Fatalf("ParseStat(%q): %v", line, err)
		}
		want := Stat{Pid: 4243, Comm: comm, State: "S", PPid: 1, Pgrp: 4242, StartTime: 98765}
		if s != want {
			t.Fatalf("ParseStat(%q) = %+v, want %+v", line, s, want)
		}
	})
}

// Right after a spawn, under load, the child's command line can still be
// empty for a moment; CmdlineOfSpawned waits for it.
func TestCmdlineOfSpawnedRightAfterTheSpawn(t *testing.T) {
	r := NewReaper(ReaperOptions{})
	defer r.Close()
	for range 2 { // the load under which the race shows: busy processes
		hog := exec.Command("/bin/sh", "-c", "while :; do :; done")
		if err := hog.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { hog.Process.Kill(); hog.Wait() }()
	}
	for i := range 300 {
		c, err := r.Spawn(SpawnAttr{Path: "/bin/sleep", Args: []string{"/bin/sleep", "10"}})
		if err != nil {
			t.Fatal(err)
		}
		args, err := CmdlineOfSpawned(c.Pid)
		c.Signal(syscall.SIGKILL)
		<-c.Done()
		if err != nil || len(args) != 2 || args[0] != "/bin/sleep" {
			t.Fatalf("spawn %d: CmdlineOfSpawned = %q, %v", i, args, err)
		}
	}
}
