package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/signals"
)

// mono is now on CLOCK_MONOTONIC, in nanoseconds.
func mono() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// rtOffset is CLOCK_REALTIME minus CLOCK_MONOTONIC, read once: the C
// child stamps on CLOCK_REALTIME, and its stamps are moved onto the
// monotonic clock everything else here reads.
var rtOffset = func() int64 {
	best := int64(-1)
	var off int64
	for range 5 {
		a := mono()
		var ts unix.Timespec
		unix.ClockGettime(unix.CLOCK_REALTIME, &ts)
		b := mono()
		if best < 0 || b-a < best {
			best, off = b-a, ts.Nano()-(a+b)/2
		}
	}
	return off
}()

// stamp is one line the fake bridge or the C child wrote with -stamp:
// "start|exit NS PID", with a fourth field "realtime" when NS was read on
// CLOCK_REALTIME (the C child) instead of CLOCK_MONOTONIC (the fake bridge).
type stamp struct {
	what string // start or exit
	ns   int64
	pid  int
}

func readStamps(file string) []stamp {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var out []stamp
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 && !(len(f) == 4 && f[3] == "realtime") {
			continue
		}
		ns, err1 := strconv.ParseInt(f[1], 10, 64)
		pid, err2 := strconv.Atoi(f[2])
		if len(f) == 4 {
			ns -= rtOffset
		}
		if err1 == nil && err2 == nil {
			out = append(out, stamp{f[0], ns, pid})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ns < out[j].ns })
	return out
}

// procInfo is what /proc tells of one process.
type procInfo struct {
	pid, ppid int
	comm      string
	state     string
}

func readProc(pid int) (procInfo, bool) {
	s, err := signals.ReadStat(pid)
	if err != nil {
		return procInfo{}, false
	}
	return procInfo{pid: pid, ppid: s.PPid, comm: s.Comm, state: s.State}, true
}

func allProcs() []procInfo {
	ents, _ := os.ReadDir("/proc")
	var out []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// supervisorTree lists the processes under the given roots (roots
// included) that belong to the supervisor: the bridge and the benchmark's
// own listeners are left out.
func supervisorTree(roots ...int) []int {
	procs := allProcs()
	children := map[int][]procInfo{}
	byPid := map[int]procInfo{}
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p)
		byPid[p.pid] = p
	}
	var out []int
	seen := map[int]bool{}
	var walk func(p procInfo)
	walk = func(p procInfo) {
		if seen[p.pid] {
			return
		}
		seen[p.pid] = true
		if !isBridge(p.comm) && p.comm != "wabench" && p.comm != "sh" && p.comm != "cat" {
			out = append(out, p.pid)
		}
		for _, c := range children[p.pid] {
			walk(c)
		}
	}
	for _, r := range roots {
		if p, ok := byPid[r]; ok {
			walk(p)
		}
	}
	return out
}

// isBridge says whether a process name is one of the benchmark's bridges.
func isBridge(comm string) bool { return comm == "fakebridge" || comm == childName }

// usage is a sample of what a set of processes has consumed.
type usage struct {
	rssKiB   int64 // resident now
	hwmKiB   int64 // resident at peak
	cpuNS    int64 // time on a CPU, all threads
	wakeups  int64 // voluntary context switches, all threads
	procs    int
	sampleAt time.Time
}

func sample(pids []int) usage {
	u := usage{sampleAt: time.Now(), procs: len(pids)}
	for _, pid := range pids {
		u.rssKiB += statusField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
		u.hwmKiB += statusField(fmt.Sprintf("/proc/%d/status", pid), "VmHWM:")
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
		for _, t := range tasks {
			u.wakeups += statusField(t+"/status", "voluntary_ctxt_switches:")
			if b, err := os.ReadFile(t + "/schedstat"); err == nil {
				if f := strings.Fields(string(b)); len(f) > 0 {
					ns, _ := strconv.ParseInt(f[0], 10, 64)
					u.cpuNS += ns
				}
			}
		}
	}
	return u
}

func statusField(file, name string) int64 {
	f, err := os.Open(file)
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), name); ok {
			n, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return n
		}
	}
	return 0
}

// raiseFileLimit lets this program hold a thousand websocket clients.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// percentile of sorted durations in nanoseconds, nearest rank.
func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p/100*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

func sorted(v []int64) []int64 {
	s := append([]int64(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return "Linux " + strings.TrimSpace(string(b))
}
