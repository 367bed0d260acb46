package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
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

// childName is the C child's binary name (bench/cchild/child.c), which
// bench/run.sh builds as bin/wabench-child.
const childName = "wabench-child"

// spec is what the bridge does in one run.
type spec struct {
	after  time.Duration // wait this long, then exit with exit (if ≥ 0)
	exit   int
	hang   bool
	spew   int64 // bytes of 100-byte lines to print first
	goFake bool  // the Go fake bridge even when the C child is there
}

// argv is the command line of a bridge that does s and stamps into stamps:
// the C child when there is one, else the Go fake bridge.
func (c *config) argv(s spec, stamps string) []string {
	if c.cchild != "" && !s.goFake {
		a := []string{c.cchild}
		if s.spew > 0 {
			a = append(a, "-spew", strconv.FormatInt(s.spew, 10), "-line", "100")
		}
		if s.after > 0 {
			a = append(a, "-after", strconv.FormatInt(s.after.Milliseconds(), 10))
		}
		if s.exit >= 0 {
			a = append(a, "-exit", strconv.Itoa(s.exit))
		}
		if s.hang {
			a = append(a, "-hang")
		}
		return append(a, "-stamp", stamps)
	}
	a := []string{c.fakebridge}
	if s.spew > 0 {
		a = append(a, "-spew", strconv.FormatInt(s.spew, 10), "-line", "100")
	}
	if s.after > 0 {
		a = append(a, "-after", s.after.String())
	}
	if s.exit >= 0 {
		a = append(a, "-exit", strconv.Itoa(s.exit))
	}
	if s.hang {
		a = append(a, "-hang")
	}
	return append(a, "-stamp", stamps)
}

var (
	cycleSpec  = spec{after: 100 * time.Millisecond, exit: 1}
	idleSpec   = spec{exit: -1, hang: true}
	fanoutSpec = spec{after: 300 * time.Millisecond, exit: 1}
)

// cFloorCycle is the floor with no runtime anywhere: the C program forks,
// execs and waitpids for the C child N+1 times in a row, and notes when
// each waitpid returned (the exit-to-parent floor).
func cFloorCycle(c *config, dir string, r *result) error {
	stamps := filepath.Join(dir, "stamps")
	notes := filepath.Join(dir, "notes")
	logf("floor: %d spawns by the C parent", c.samples)
	args := append([]string{"-floor", strconv.Itoa(c.samples), "-notes", notes, "--"}, c.argv(cycleSpec, stamps)...)
	if out, err := exec.Command(c.cchild, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s -floor: %v: %s", c.cchild, err, out)
	}
	st := readStamps(stamps)
	var ns []note
	for _, n := range readNotes(notes) {
		ns = append(ns, note{n.ns - rtOffset, n.pid})
	}
	r.respawn = respawnTimes(st)
	r.notify, r.missed = notifyTimes(st, ns, mono())
	return nil
}

// tiniCycle runs tini over a bridge that exits after 100 ms, N times: tini
// does not respawn, so what is measured is how soon its parent (this
// program, blocked in wait4 on one thread) learns that the bridge exited.
func tiniCycle(c *config, dir string, r *result) error {
	stamps := filepath.Join(dir, "stamps")
	logf("tini: %d runs", c.samples)
	path, err := exec.LookPath("tini")
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	attr := &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{devnull.Fd(), devnull.Fd(), devnull.Fd()}}
	argv := append([]string{"tini", "--"}, c.argv(cycleSpec, stamps)...)
	var notes []note
	for range c.samples {
		if _, err := forkWait(path, argv, attr); err != nil {
			return err
		}
		// Matched to the latest exit stamp: tini's only child's.
		notes = append(notes, note{mono(), 0})
	}
	st := readStamps(stamps)
	r.notify, r.missed = notifyTimes(st, notes, mono())
	return nil
}

// forkWait runs path with argv and waits for it, as a C parent would: no
// goroutine, no pipe, the least a supervisor can do. It returns the
// child's pid.
func forkWait(path string, argv []string, attr *syscall.ProcAttr) (pid int, err error) {
	pid, err = syscall.ForkExec(path, argv, attr)
	if err != nil {
		return 0, err
	}
	var ws syscall.WaitStatus
	for {
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != syscall.EINTR {
			return pid, nil
		}
	}
}

func startTini(c *config, dir, scenario string, argv []string) (*session, error) {
	s := &session{cmd: exec.Command("tini", append([]string{"--"}, argv...)...), logFile: filepath.Join(dir, "tini.log")}
	if err := startCmd(s.cmd, s.logFile); err != nil {
		return nil, err
	}
	pid := s.cmd.Process.Pid
	s.roots = func() []int { return []int{pid} }
	return s, nil
}

// fanoutFloorServer is run by measureFanoutFloor as "wabench fanout-floor
// CLIENTS ROUNDS -- ARGV...": it listens, prints its address, accepts
// CLIENTS connections, prints "ready", waits for a line on stdin, then
// ROUNDS times runs ARGV, waits for it and writes one 1100-byte message
// naming its pid to every connection, one write each from one goroutine:
// the least a supervisor can do to tell a thousand clients of an exit.
func fanoutFloorServer(args []string) error {
	if len(args) < 4 || args[2] != "--" {
		return fmt.Errorf("usage: wabench fanout-floor CLIENTS ROUNDS -- ARGV")
	}
	clients, _ := strconv.Atoi(args[0])
	rounds, _ := strconv.Atoi(args[1])
	argv := args[3:]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr())
	conns := make([]net.Conn, 0, clients)
	for len(conns) < clients {
		cn, err := ln.Accept()
		if err != nil {
			return err
		}
		conns = append(conns, cn)
	}
	attr, err := readyToGo()
	if err != nil {
		return err
	}
	msg := make([]byte, fanoutMsg)
	for range rounds {
		pid, err := forkWait(argv[0], argv, attr)
		if err != nil {
			return err
		}
		for i := range msg {
			msg[i] = ' '
		}
		copy(msg, strconv.Itoa(pid))
		for _, cn := range conns {
			if _, err := cn.Write(msg); err != nil {
				return err
			}
		}
	}
	for _, cn := range conns {
		cn.Close()
	}
	return nil
}

// readyToGo is how a fan-out floor server starts its rounds: it says
// "ready", waits for a line on stdin, and locks its thread; the attributes
// it returns run the child on /dev/null.
func readyToGo() (*syscall.ProcAttr, error) {
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{devnull.Fd(), devnull.Fd(), devnull.Fd()}}, nil
}

// fanoutMsg is the size of an exited event and the backoff event after it.
const fanoutMsg = 1100

// measureFanoutFloor times fanoutFloorServer's messages at c.clients bare
// TCP clients in this process, the same clients' side as wa-sidecar's
// fan-out figure.
func measureFanoutFloor(c *config, r *result) error {
	dir := freshDir(c, "floor-fanout")
	stamps := filepath.Join(dir, "stamps")
	const rounds = 10
	srv := exec.Command(c.self, append([]string{"fanout-floor", strconv.Itoa(c.clients), strconv.Itoa(rounds), "--"}, c.argv(fanoutSpec, stamps)...)...)
	srv.Stderr = os.Stderr
	in, err := srv.StdinPipe()
	if err != nil {
		return err
	}
	out, err := srv.StdoutPipe()
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	defer srv.Wait()
	defer in.Close()
	lines := bufio.NewScanner(out)
	if !lines.Scan() {
		return fmt.Errorf("the fan-out floor server printed no address")
	}
	addr := lines.Text()
	logf("floor: %d bare TCP clients, %d exits", c.clients, rounds)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	sessions := make([]*session, c.clients)
	for i := range sessions {
		cn, err := net.Dial("tcp", addr)
		if err != nil {
			srv.Process.Kill()
			return err
		}
		s := &session{}
		sessions[i] = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cn.Close()
			go func() { <-ctx.Done(); cn.Close() }()
			buf := make([]byte, fanoutMsg)
			for {
				if _, err := io.ReadFull(cn, buf); err != nil {
					return
				}
				now := mono()
				pid, _ := strconv.Atoi(strings.TrimSpace(string(buf[:16])))
				s.addNote(note{now, pid})
			}
		}()
	}
	if !lines.Scan() || lines.Text() != "ready" {
		srv.Process.Kill()
		return fmt.Errorf("the fan-out floor server did not take every client")
	}
	fmt.Fprintln(in, "go")
	wg.Wait()
	st := readStamps(stamps)
	for _, s := range sessions {
		lat, _ := notifyTimes(st, s.takeNotes(), mono())
		r.fanout = append(r.fanout, lat...)
	}
	r.fanClients = c.clients
	return nil
}

// measureStart times wa-sidecar's start: from its exec to the bridge's
// first stamp, and to the first 200 from /healthz.
func measureStart(c *config, t *tool, r *result, runs int) error {
	for i := range runs {
		dir := freshDir(c, t.name+"-start")
		stamps := filepath.Join(dir, "stamps")
		var s *session
		var t0 int64
		var err error
		if t.name == "stack-floor" {
			s, t0, err = startStackFloorTimed(c, dir, c.argv(idleSpec, stamps))
		} else {
			s, t0, err = startSidecarTimed(c, dir, c.argv(idleSpec, stamps), t)
		}
		if err != nil {
			return err
		}
		t1, err := firstHealthy(s.addr, 10*time.Second)
		var t2 int64
		if err == nil && waitFor(10*time.Second, func() bool { return len(readStamps(stamps)) > 0 }) {
			t2 = readStamps(stamps)[0].ns
		}
		s.stop(stamps)
		if err != nil {
			return err
		}
		if t2 == 0 {
			return fmt.Errorf("the bridge did not start; see %s", dir)
		}
		r.startExec = append(r.startExec, t2-t0)
		r.startHealthz = append(r.startHealthz, t1-t0)
		if i == 0 {
			logf("%s: start: bridge %s, /healthz %s after exec", t.name, ms(t2-t0), ms(t1-t0))
		}
	}
	return nil
}

// firstHealthy asks GET /healthz over and over until one answers 200, and
// says when it did.
func firstHealthy(addr string, timeout time.Duration) (int64, error) {
	req := []byte("GET /healthz HTTP/1.1\r\nHost: " + addr + "\r\nConnection: close\r\n\r\n")
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 12)
	for time.Now().Before(deadline) {
		cn, err := net.Dial("tcp", addr)
		if err == nil {
			cn.Write(req)
			_, err = io.ReadFull(cn, buf)
			now := mono()
			cn.Close()
			if err == nil && string(buf[9:12]) == "200" {
				return now, nil
			}
		}
		time.Sleep(250 * time.Microsecond)
	}
	return 0, fmt.Errorf("/healthz at %s did not answer 200 within %s", addr, timeout)
}

// startStackFloorTimed starts the stack floor for the start measurement:
// the least wa-sidecar's libraries can do before they start the bridge
// and answer /healthz.
func startStackFloorTimed(c *config, dir string, argv []string) (*session, int64, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, 0, err
	}
	s := &session{cmd: exec.Command(c.stackfloor, append([]string{"run", "--listen", addr, "--"}, argv...)...), logFile: filepath.Join(dir, "stackfloor.log"), addr: addr}
	s.cmd.Dir = dir
	if err := startCmd(s.cmd, s.logFile); err != nil {
		return nil, 0, err
	}
	return s, mono(), nil
}
