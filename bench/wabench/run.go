package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// result holds one tool's figures; a nil or empty field was not measured.
type result struct {
	version string
	respawn []int64 // exit stamp to the next start stamp, ns
	notify  []int64 // exit stamp to the listener's note, ns
	// respawnGo and notifyGo are the Go floor's, beside the C floor's
	// (the floor tool's only).
	respawnGo, notifyGo []int64
	missed              int     // exits no note was matched to
	idle                *usage  // growth over the idle window; rss is the level
	output              []int64 // start stamp to the last line in the log, ns
	outputPeak          int64   // the supervisor's largest resident size, KiB
	fanout              []int64 // exit stamp to each client's note, ns
	fanClients          int
	// fanoutWS holds the websocket floors' figures (the floor tool's
	// only), by the number of events sent per exit.
	fanoutWS map[int][]int64
	// startExec and startHealthz run from the sidecar's exec to the
	// bridge's start stamp and to the first 200 from /healthz, ns.
	startExec    []int64
	startHealthz []int64
	errs         []string
}

func run(c *config, tools []*tool) map[string]*result {
	results := map[string]*result{}
	for _, t := range tools {
		r := &result{version: t.version()}
		results[t.name] = r
		logf("%s %s", t.name, r.version)
		fail := func(what string, err error) {
			logf("%s: %s: %v", t.name, what, err)
			r.errs = append(r.errs, what+": "+err.Error())
		}
		if c.only["respawn"] && !t.outputOnly && !t.idleOnly && !t.startOnly {
			if err := measureCycle(c, t, r); err != nil {
				fail("respawn", err)
			}
		}
		if c.only["start"] && (t.name == "wa-sidecar" || t.name == "stack-floor" || t.startOnly) && c.listenFlag != "" {
			if err := measureStart(c, t, r, c.startRuns); err != nil {
				fail("start", err)
			}
		}
		if c.only["idle"] && t.start != nil && !t.outputOnly && !t.startOnly {
			if err := measureIdle(c, t, r); err != nil {
				fail("idle", err)
			}
		}
		if c.only["output"] && !t.idleOnly && !t.startOnly && !t.noOutput {
			if err := measureOutput(c, t, r); err != nil {
				fail("output", err)
			}
		}
		if c.only["fanout"] && t.name == "wa-sidecar" && c.listenFlag != "" {
			if err := measureFanout(c, t, r); err != nil {
				fail("fanout", err)
			}
		}
		if c.only["fanout"] && t.name == "floor" {
			if err := measureFanoutFloor(c, r); err != nil {
				fail("fanout", err)
			}
			r.fanoutWS = map[int][]int64{}
			for _, n := range []int{1, len(sidecarEvents)} {
				lat, _, err := measureFanoutWSFloor(c, n)
				if err != nil {
					fail("fanout (websocket floor)", err)
					continue
				}
				r.fanoutWS[n] = lat
			}
		}
	}
	return results
}

func freshDir(c *config, name string) string {
	dir := filepath.Join(c.work, name)
	os.RemoveAll(dir)
	os.MkdirAll(dir, 0o755)
	return dir
}

func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}

// nthExit is the n-th exit stamp, counted from 1.
func nthExit(stamps []stamp, n int) stamp {
	for _, s := range stamps {
		if s.what == "exit" {
			if n--; n == 0 {
				return s
			}
		}
	}
	return stamp{}
}

func countExits(stamps []stamp) int {
	n := 0
	for _, s := range stamps {
		if s.what == "exit" {
			n++
		}
	}
	return n
}

// measureCycle runs a bridge that exits 1 after 100 ms, and measures how
// soon the tool respawns it and how soon its listener hears of the exit.
func measureCycle(c *config, t *tool, r *result) error {
	dir := freshDir(c, t.name+"-cycle")
	stamps := filepath.Join(dir, "stamps")
	argv := c.argv(cycleSpec, stamps)
	switch {
	case t.name == "floor" && c.cchild != "":
		if err := cFloorCycle(c, dir, r); err != nil {
			return err
		}
		// The same cycle from Go, as the sidecar forks: how much of the
		// respawn is Go's fork rather than the sidecar's own work.
		var g result
		if err := floorCycle(c, c.argv(cycleSpec, filepath.Join(dir, "go-stamps")), &g); err != nil {
			return err
		}
		r.respawnGo, r.notifyGo = g.respawn, g.notify
		return nil
	case t.name == "floor":
		return floorCycle(c, argv, r)
	case t.name == "tini":
		return tiniCycle(c, dir, r)
	}
	logf("%s: crash loop, %d exits", t.name, c.samples)
	s, err := t.start(c, dir, scCycle, argv)
	if err != nil {
		return err
	}
	ok := waitFor(time.Duration(c.samples)*3*time.Second+20*time.Second, func() bool {
		return countExits(readStamps(stamps)) > c.samples
	})
	// Exits in the last moments before the stop may have notes still on
	// the way; they are not counted as missed.
	settled := mono() - inFlight
	s.stop(stamps)
	st := readStamps(stamps)
	if !ok {
		return fmt.Errorf("only %d exits before the timeout; see %s", countExits(st), dir)
	}
	r.respawn = respawnTimes(st)
	if t.noNotify == "" && (!strings.HasPrefix(t.name, "wa-sidecar") || c.listenFlag != "") {
		r.notify, r.missed = notifyTimes(st, s.takeNotes(), settled)
	}
	return nil
}

// inFlight is how long before a stop an exit's note may still be on its
// way: longer than the slowest listener here (supervisord's, about 1 s).
const inFlight = int64(2500 * time.Millisecond)

// respawnTimes pairs each exit with the start that follows it.
func respawnTimes(st []stamp) []int64 {
	var out []int64
	for i := 1; i < len(st); i++ {
		if st[i].what == "start" && st[i-1].what == "exit" {
			out = append(out, st[i].ns-st[i-1].ns)
		}
	}
	return out
}

// notifyTimes pairs each note with its exit: by pid when the tool says
// which process exited, else with the latest exit before the note. An exit
// no note was paired with counts as missed if it happened by settled.
func notifyTimes(st []stamp, notes []note, settled int64) ([]int64, int) {
	exits := map[int]int64{}
	var order []stamp
	for _, s := range st {
		if s.what == "exit" {
			exits[s.pid] = s.ns
			order = append(order, s)
		}
	}
	var out []int64
	matched := map[int]bool{}
	for _, n := range notes {
		var at int64
		pid := n.pid
		if pid != 0 {
			at = exits[pid]
		} else {
			for _, e := range order {
				if e.ns <= n.ns {
					at, pid = e.ns, e.pid
				}
			}
		}
		if at == 0 || matched[pid] || n.ns < at {
			continue
		}
		matched[pid] = true
		out = append(out, n.ns-at)
	}
	missed := 0
	for _, e := range order {
		if !matched[e.pid] && e.ns <= settled {
			missed++
		}
	}
	return out, missed
}

// floorCycle is the least a Go supervisor can do: wait4 for the child and
// fork+exec it again at once, from one locked thread, with the process
// group and parent-death signal the sidecar gives its child. It is the
// floor when there is no C child, and set beside the C floor when there
// is one.
func floorCycle(c *config, argv []string, r *result) error {
	logf("floor: %d spawns from Go", c.samples)
	stamps := argv[len(argv)-1]
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	attr := &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{devnull.Fd(), devnull.Fd(), devnull.Fd()},
		Sys: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}}
	var notes []note
	for i := 0; i <= c.samples; i++ {
		pid, err := forkWait(argv[0], argv, attr)
		if err != nil {
			return err
		}
		notes = append(notes, note{mono(), pid})
	}
	st := readStamps(stamps)
	r.respawn = respawnTimes(st)
	r.notify, r.missed = notifyTimes(st, notes, mono())
	return nil
}

func measureIdle(c *config, t *tool, r *result) error {
	dir := freshDir(c, t.name+"-idle")
	stamps := filepath.Join(dir, "stamps")
	s, err := t.start(c, dir, scIdle, c.argv(idleSpec, stamps))
	if err != nil {
		return err
	}
	defer s.stop(stamps)
	if !waitFor(30*time.Second, func() bool { return len(readStamps(stamps)) > 0 }) {
		return fmt.Errorf("the bridge did not start; see %s", dir)
	}
	// Let start-up work (a Python import, a Node daemon's first ticks) end.
	time.Sleep(3 * time.Second)
	logf("%s: idle for %s", t.name, c.idle)
	pids := supervisorTree(s.roots()...)
	a := sample(pids)
	time.Sleep(c.idle)
	b := sample(pids)
	r.idle = &usage{rssKiB: b.rssKiB, cpuNS: b.cpuNS - a.cpuNS, wakeups: b.wakeups - a.wakeups, procs: len(pids)}
	return nil
}

// measureOutput times a bridge printing c.outputBytes of 100-byte lines:
// from its start until its last line is in the log file.
func measureOutput(c *config, t *tool, r *result) error {
	want := "spew done " + strconv.FormatInt(c.outputBytes, 10)
	for i := 0; i < c.outputRuns; i++ {
		dir := freshDir(c, t.name+"-output")
		stamps := filepath.Join(dir, "stamps")
		a := c.argv(spec{spew: c.outputBytes, exit: -1, hang: true}, stamps)
		var s *session
		var err error
		switch t.name {
		case "floor":
			s, err = startShell(dir, shellQuote(a)+" > "+filepath.Join(dir, "out"))
		case "pipe-cat":
			s, err = startShell(dir, shellQuote(a)+" | cat > "+filepath.Join(dir, "out"))
		case "pipe-json", "pipe-json2", "pipe-hermes", "pipe-raw":
			if c.cchild == "" {
				return fmt.Errorf("needs the C child (bench/cchild), which was not built")
			}
			mode := map[string][]string{
				"pipe-json":   {"-jsonlog"},
				"pipe-json2":  {"-jsonlog", "-threads"},
				"pipe-hermes": {"-jsonlog", "-copy", filepath.Join(dir, "bridge.log")},
				"pipe-raw":    {"-rawcopy"},
			}[t.name]
			s, err = startShell(dir, shellQuote(a)+" | "+shellQuote(append([]string{c.cchild}, mode...))+" > "+filepath.Join(dir, "out"))
			if err == nil && t.name == "pipe-hermes" {
				// Timed, as the sidecar's Hermes default is, until the
				// last line is in bridge.log; the log is counted too.
				s.countFile, s.logFile = s.logFile, filepath.Join(dir, "bridge.log")
			}
		default:
			s, err = t.start(c, dir, scOutput, a)
		}
		if err != nil {
			return err
		}
		end, peak, err := waitForLine(s, want, 5*time.Minute)
		s.stop(stamps)
		st := readStamps(stamps)
		if err == nil && (strings.HasPrefix(t.name, "wa-sidecar") || strings.HasPrefix(t.name, "pipe-") && t.name != "pipe-cat") {
			// A fast time means nothing if lines were lost on the way.
			lines := (c.outputBytes + 99) / 100
			file := cmp.Or(s.countFile, s.logFile)
			if got := countSpewLines(file); got != lines {
				err = fmt.Errorf("%s holds %d of the bridge's %d lines", filepath.Base(file), got, lines)
			}
		}
		os.RemoveAll(dir)
		if err != nil {
			return err
		}
		if len(st) == 0 {
			return fmt.Errorf("no start stamp")
		}
		r.output = append(r.output, end-st[0].ns)
		r.outputPeak = max(r.outputPeak, peak)
		logf("%s: output run %d: %.3f s, peak RSS %d MiB", t.name, i+1, float64(end-st[0].ns)/1e9, peak>>10)
	}
	return nil
}

// waitForLine polls the log file's end for the bridge's last line, and
// notes the supervisor's peak memory on the way.
func waitForLine(s *session, want string, timeout time.Duration) (int64, int64, error) {
	deadline := time.Now().Add(timeout)
	var size int64 = -1
	buf := make([]byte, 512)
	for time.Now().Before(deadline) {
		st, err := os.Stat(s.logFile)
		if err == nil && st.Size() != size {
			size = st.Size()
			if f, err := os.Open(s.logFile); err == nil {
				n, _ := f.ReadAt(buf, max(0, size-int64(len(buf))))
				f.Close()
				if strings.Contains(string(buf[:n]), want) {
					now := mono()
					peak := int64(0)
					if s.roots != nil {
						peak = sample(supervisorTree(s.roots()...)).hwmKiB
					}
					return now, peak, nil
				}
			}
		}
		time.Sleep(time.Millisecond)
	}
	return 0, 0, fmt.Errorf("%q did not reach %s within %s", want, s.logFile, timeout)
}

// countSpewLines counts the whole lines of the bridge's -spew output in a
// log file, however the tool wrapped them.
func countSpewLines(file string) int64 {
	f, err := os.Open(file)
	if err != nil {
		return 0
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	spew := []byte(strings.Repeat("y", 99))
	var n int64
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			for err == bufio.ErrBufferFull {
				_, err = r.ReadSlice('\n')
			}
			continue
		}
		if err != nil {
			return n
		}
		if bytes.Contains(line, spew) {
			n++
		}
	}
}

func startShell(dir, script string) (*session, error) {
	s := &session{cmd: exec.Command("/bin/sh", "-c", "exec 2>&1; "+script), logFile: filepath.Join(dir, "out")}
	if err := startCmd(s.cmd, ""); err != nil {
		return nil, err
	}
	return s, nil
}

// measureFanout connects many clients to wa-sidecar's events and measures,
// for each exit, how long each client took to hear of it.
func measureFanout(c *config, t *tool, r *result) error {
	dir := freshDir(c, t.name+"-fanout")
	stamps := filepath.Join(dir, "stamps")
	// The bridge lives long enough for every client to take in one exit
	// before the next.
	s, err := t.start(c, dir, scFanout, c.argv(fanoutSpec, stamps))
	if err != nil {
		return err
	}
	// The clients hold the token: without it they may take only 768 of
	// the sidecar's 1024 places.
	tokenFile := filepath.Join(dir, "state", "token")
	var token string
	waitFor(20*time.Second, func() bool {
		b, err := os.ReadFile(tokenFile)
		token = strings.TrimSpace(string(b))
		return err == nil && token != ""
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	clients := make([]*session, c.clients)
	readyc := make(chan error, c.clients)
	for i := range clients {
		clients[i] = &session{}
		wg.Add(1)
		go func(cl *session) {
			defer wg.Done()
			followFeedAs(ctx, s.addr, token, cl.addNote, readyc)
		}(clients[i])
	}
	var errs int
	for range clients {
		if err := <-readyc; err != nil {
			errs++
		}
	}
	logf("wa-sidecar: %d clients connected (%d failed); waiting for 10 exits", c.clients-errs, errs)
	from := countExits(readStamps(stamps))
	ok := waitFor(60*time.Second, func() bool { return countExits(readStamps(stamps)) >= from+11 })
	// Let every client take in the last exit counted before hanging up,
	// or its late notes would be cut off and left out of the figures.
	if ok {
		last := nthExit(readStamps(stamps), from+11)
		waitFor(10*time.Second, func() bool {
			for _, cl := range clients {
				if !cl.heard(last.pid) {
					return false
				}
			}
			return true
		})
	}
	cancel()
	wg.Wait()
	s.stop(stamps)
	if !ok {
		return fmt.Errorf("fewer than 10 exits within 60 s; see %s", dir)
	}
	st := readStamps(stamps)
	// Only the ten exits waited for count: they happened once every client
	// was connected, and every client had its time to hear of each. A
	// later one, which some clients may not have heard of when they hung
	// up, would leave out the slowest of them.
	var late []stamp
	n := 0
	for _, x := range st {
		if x.what == "exit" {
			n++
			if n > from+1 && n <= from+11 {
				late = append(late, x)
			}
		}
	}
	for _, cl := range clients {
		lat, _ := notifyTimes(late, cl.takeNotes(), mono())
		r.fanout = append(r.fanout, lat...)
	}
	r.fanClients = c.clients - errs
	return nil
}
