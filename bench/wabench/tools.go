package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Scenarios the bridge is run in.
const (
	scCycle  = "cycle"  // lives 100 ms, exits 1, is respawned; repeat
	scIdle   = "idle"   // starts and hangs
	scOutput = "output" // prints the output volume, then hangs
	scFanout = "fanout" // like cycle, watched by many websocket clients
	scStart  = "start"  // starts and hangs; the sidecar's start is timed
)

// tool is one supervisor under test.
type tool struct {
	name    string
	version func() string
	// start runs argv under the tool in dir. A nil start means the tool is
	// measured by code of its own (the floor).
	start func(c *config, dir, scenario string, argv []string) (*session, error)
	// noNotify says why the tool has no exit notification to measure.
	noNotify string
	// outputOnly marks a baseline for the pass-through measurement alone,
	// idleOnly one for the idle measurement alone.
	outputOnly bool
	idleOnly   bool
	// startOnly marks a variant measured for its start alone, noOutput a
	// tool whose output measurement would be the floor's (tini hands its
	// stdout to the bridge).
	startOnly bool
	noOutput  bool
	// extra are flags for wa-sidecar run; hermes adds a session directory
	// (a session lock, creds.json checks, bridge.log beside it), as when
	// the sidecar runs the Hermes bridge.
	extra  []string
	hermes bool
}

// session is one running supervisor.
type session struct {
	cmd     *exec.Cmd
	roots   func() []int // the supervisor's own processes start here
	logFile string       // where the bridge's output ends up
	// countFile is where every line of the bridge's is, when logFile
	// (a rotated bridge.log) may have let old ones go.
	countFile string
	addr      string   // wa-sidecar's status server
	stopCmd   []string // asks the tool to stop, instead of SIGTERM

	mu    sync.Mutex
	notes []note // exit notifications the listener received
	done  []func()
}

// note is one exit notification: when it arrived, and for which pid if
// the tool says (0 when it does not).
type note struct {
	ns  int64
	pid int
}

// heard reports whether a note of pid's exit has come.
func (s *session) heard(pid int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.notes) - 1; i >= 0; i-- {
		if s.notes[i].pid == pid {
			return true
		}
	}
	return false
}

func (s *session) addNote(n note) {
	s.mu.Lock()
	s.notes = append(s.notes, n)
	s.mu.Unlock()
}

func (s *session) takeNotes() []note {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]note(nil), s.notes...)
}

// stop ends the tool, then anything its bridges left behind.
func (s *session) stop(stamps string) {
	for _, f := range s.done {
		f()
	}
	if len(s.stopCmd) > 0 {
		cmd := exec.Command(s.stopCmd[0], s.stopCmd[1:]...)
		cmd.Env = s.cmd.Env
		cmd.Run()
	} else if s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
	}
	exited := make(chan struct{})
	go func() { s.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	// A bridge that outlived its supervisor is one this program started
	// (its pid is in the stamp file) and still runs the fake bridge.
	for _, st := range readStamps(stamps) {
		if p, ok := readProc(st.pid); ok && isBridge(p.comm) && p.state != "Z" {
			syscall.Kill(st.pid, syscall.SIGKILL)
		}
	}
}

func startCmd(cmd *exec.Cmd, logFile string) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if logFile != "" {
		f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	return cmd.Start()
}

func command(name string, args ...string) func() string {
	return func() string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return "not installed"
		}
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
}

func debVersion(pkg string) func() string {
	return command("dpkg-query", "-W", "-f", "${Version}", pkg)
}

func writeFile(path, content string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), mode)
}

func shellQuote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func allTools(c *config) []*tool {
	floor := "C parent: fork, exec and waitpid; output to a file directly"
	if c.cchild == "" {
		floor = "fork+exec and wait4 from one Go thread; output to a file directly"
	}
	return []*tool{
		{name: "floor", version: func() string { return floor }},
		{name: "stack-floor", version: func() string {
			return "wa-sidecar's libraries starting the bridge and serving a websocket, supervising nothing"
		}, start: startStackFloor, idleOnly: true},
		{name: "pipe-cat", version: func() string { return "sh: bridge piped to cat, to a file" }, outputOnly: true},
		// The least a program can do to write the sidecar's default log: the
		// same JSON record for each line, from C, with no runtime.
		{name: "pipe-json", version: func() string {
			return "sh: bridge piped to the C child's -jsonlog (the sidecar's JSON record for each line), to a file"
		}, outputOnly: true},
		// The same work as the sidecar's three output modes, from C on
		// as many threads as the sidecar uses for it: the floors of those
		// modes.
		{name: "pipe-json2", version: func() string {
			return "sh: bridge piped to the C child's -jsonlog -threads (the same records, formatted on one thread and written on another), to a file"
		}, outputOnly: true},
		{name: "pipe-hermes", version: func() string {
			return "sh: bridge piped to the C child's -jsonlog -copy (the records formatted on one thread and written on a second, the bytes unchanged to bridge.log from a third), to a file"
		}, outputOnly: true},
		{name: "pipe-raw", version: func() string {
			return "sh: bridge piped to the C child's -rawcopy (cat that finds each line and looks at its first byte, as the raw mode's filter does), to a file"
		}, outputOnly: true},
		{name: "wa-sidecar", version: command(c.sidecar, "--version"), start: startSidecar},
		// The same sidecar passing the bridge's lines through unchanged,
		// as supervisord, s6-log and svlogd do, instead of a JSON record
		// per line.
		{name: "wa-sidecar-raw", version: command(c.sidecar, "--version"), start: sidecarWith("--bridge-output", "raw"), outputOnly: true, extra: []string{"--bridge-output", "raw"}},
		// The Hermes shape: a session directory, so bridge.log beside it
		// and the log too, and the session guard before each spawn.
		{name: "wa-sidecar-hermes", version: command(c.sidecar, "--version"), start: startSidecarHermes, outputOnly: true, hermes: true},
		{name: "wa-sidecar-hermes-start", version: command(c.sidecar, "--version"), start: startSidecarHermes, startOnly: true, hermes: true},
		{name: "supervisord", version: command("supervisord", "--version"), start: startSupervisord},
		{name: "s6", version: debVersion("s6"), start: startS6},
		{name: "runit", version: debVersion("runit"), start: startRunit, noNotify: "no push; poll sv status"},
		{name: "pm2", version: pm2Version, start: startPM2},
		{name: "tini", version: command("tini", "--version"), start: startTini, noOutput: true},
	}
}

func startSidecar(c *config, dir, scenario string, argv []string) (*session, error) {
	return sidecarWith()(c, dir, scenario, argv)
}

// sidecarWith starts wa-sidecar with extra flags for run.
func sidecarWith(extra ...string) func(c *config, dir, scenario string, argv []string) (*session, error) {
	return func(c *config, dir, scenario string, argv []string) (*session, error) {
		return startSidecarArgs(c, dir, scenario, argv, extra)
	}
}

func startSidecarHermes(c *config, dir, scenario string, argv []string) (*session, error) {
	s, err := startSidecarArgs(c, dir, scenario, argv, []string{"--session-dir", filepath.Join(dir, "session")})
	if err == nil {
		s.countFile, s.logFile = s.logFile, filepath.Join(dir, "bridge.log")
	}
	return s, err
}

func startSidecarArgs(c *config, dir, scenario string, argv, extra []string) (*session, error) {
	s, _, err := startSidecarAt(c, dir, scenario, argv, extra)
	return s, err
}

// startSidecarTimed starts wa-sidecar for the start measurement, and says
// when its exec happened: os/exec returns from Start once the exec has.
func startSidecarTimed(c *config, dir string, argv []string, t *tool) (*session, int64, error) {
	extra := t.extra
	if t.hermes {
		extra = append(extra, "--session-dir", filepath.Join(dir, "session"))
	}
	return startSidecarAt(c, dir, scStart, argv, extra)
}

func startSidecarAt(c *config, dir, scenario string, argv, extra []string) (*session, int64, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, 0, err
	}
	// Its own state directory: the machine's (or a real sidecar's) token
	// and lock are none of the benchmark's business.
	args := []string{"run", "--backoff-initial", "0", "--backoff-max", "0", "--log-format", "json",
		"--state-dir", filepath.Join(dir, "state")}
	args = append(args, extra...)
	if c.listenFlag == "" {
		addr = ""
	} else {
		args = append(args, c.listenFlag, addr)
	}
	args = append(args, "--")
	s := &session{cmd: exec.Command(c.sidecar, append(args, argv...)...), logFile: filepath.Join(dir, "sidecar.log"), addr: addr}
	s.cmd.Dir = dir
	if len(c.sidecarEnv) > 0 {
		s.cmd.Env = append(os.Environ(), c.sidecarEnv...)
	}
	if err := startCmd(s.cmd, s.logFile); err != nil {
		return nil, 0, err
	}
	t0 := mono()
	pid := s.cmd.Process.Pid
	s.roots = func() []int { return []int{pid} }
	if scenario == scCycle && addr != "" {
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan error, 1)
		go followFeed(ctx, addr, s.addNote, ready)
		s.done = append(s.done, cancel)
		if err := <-ready; err != nil {
			s.stop("")
			return nil, 0, err
		}
	}
	return s, t0, nil
}

func startStackFloor(c *config, dir, scenario string, argv []string) (*session, error) {
	s := &session{cmd: exec.Command(c.stackfloor, append([]string{"run", "--"}, argv...)...), logFile: filepath.Join(dir, "stackfloor.log")}
	s.cmd.Dir = dir
	if err := startCmd(s.cmd, s.logFile); err != nil {
		return nil, err
	}
	pid := s.cmd.Process.Pid
	s.roots = func() []int { return []int{pid} }
	return s, nil
}

func startSupervisord(c *config, dir, scenario string, argv []string) (*session, error) {
	log := filepath.Join(dir, "bridge.log")
	notes := filepath.Join(dir, "notes")
	conf := fmt.Sprintf(`[supervisord]
nodaemon=true
user=root
logfile=%[1]s/supervisord.log
pidfile=%[1]s/supervisord.pid
childlogdir=%[1]s

[program:bridge]
command=%[2]s
autorestart=true
startsecs=0
startretries=1000000
redirect_stderr=true
stdout_logfile=%[3]s
stdout_logfile_maxbytes=0
stopwaitsecs=5
`, dir, shellQuote(argv), log)
	if scenario == scCycle {
		conf += fmt.Sprintf(`
[eventlistener:listener]
command=%s supervisord-listener %s
events=PROCESS_STATE_EXITED
`, c.self, notes)
	}
	if err := writeFile(filepath.Join(dir, "supervisord.conf"), conf, 0o644); err != nil {
		return nil, err
	}
	s := &session{cmd: exec.Command("supervisord", "-n", "-c", filepath.Join(dir, "supervisord.conf")), logFile: log}
	if err := startCmd(s.cmd, filepath.Join(dir, "supervisord.out")); err != nil {
		return nil, err
	}
	pid := s.cmd.Process.Pid
	s.roots = func() []int { return []int{pid} }
	s.done = append(s.done, func() {
		for _, n := range readNotes(notes) {
			s.addNote(n)
		}
	})
	return s, nil
}

func startS6(c *config, dir, scenario string, argv []string) (*session, error) {
	svc := filepath.Join(dir, "scan", "bridge")
	if err := writeFile(filepath.Join(svc, "run"), "#!/bin/sh\nexec "+shellQuote(argv)+" 2>&1\n", 0o755); err != nil {
		return nil, err
	}
	s := &session{logFile: filepath.Join(dir, "bridge.log")}
	if scenario == scOutput {
		logdir := filepath.Join(dir, "s6log")
		s.logFile = filepath.Join(logdir, "current")
		if err := writeFile(filepath.Join(svc, "log", "run"), "#!/bin/sh\nexec s6-log -b n3 s16777215 "+logdir+"\n", 0o755); err != nil {
			return nil, err
		}
	}
	s.cmd = exec.Command("s6-svscan", filepath.Join(dir, "scan"))
	s.stopCmd = []string{"s6-svscanctl", "-t", filepath.Join(dir, "scan")}
	if err := startCmd(s.cmd, filepath.Join(dir, "bridge.log")); err != nil {
		return nil, err
	}
	pid := s.cmd.Process.Pid
	s.roots = func() []int { return []int{pid} }
	if scenario == scCycle {
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan error, 1)
		go followFifodir(ctx, filepath.Join(svc, "event"), s.addNote, ready)
		s.done = append(s.done, cancel)
		if err := <-ready; err != nil {
			s.stop("")
			return nil, err
		}
	}
	return s, nil
}

func startRunit(c *config, dir, scenario string, argv []string) (*session, error) {
	svc := filepath.Join(dir, "sv", "bridge")
	if err := writeFile(filepath.Join(svc, "run"), "#!/bin/sh\nexec "+shellQuote(argv)+" 2>&1\n", 0o755); err != nil {
		return nil, err
	}
	s := &session{logFile: filepath.Join(dir, "bridge.log")}
	if scenario == scOutput {
		logdir := filepath.Join(dir, "svlog")
		s.logFile = filepath.Join(logdir, "current")
		if err := writeFile(filepath.Join(logdir, "config"), "s16777215\nn3\n", 0o644); err != nil {
			return nil, err
		}
		if err := writeFile(filepath.Join(svc, "log", "run"), "#!/bin/sh\nexec svlogd "+logdir+"\n", 0o755); err != nil {
			return nil, err
		}
	}
	s.cmd = exec.Command("runsv", svc)
	if err := startCmd(s.cmd, filepath.Join(dir, "bridge.log")); err != nil {
		return nil, err
	}
	pid := s.cmd.Process.Pid
	s.roots = func() []int { return []int{pid} }
	return s, nil
}

func startPM2(c *config, dir, scenario string, argv []string) (*session, error) {
	home := filepath.Join(dir, "pm2")
	log := filepath.Join(dir, "bridge.log")
	args := make([]string, len(argv)-1)
	for i, a := range argv[1:] {
		args[i] = strconv.Quote(a)
	}
	eco := fmt.Sprintf(`module.exports = { apps: [{
  name: "bridge", script: %q, args: [%s], interpreter: "none",
  autorestart: true, restart_delay: 0, min_uptime: 0, max_restarts: 1000000,
  out_file: %q, error_file: %q, merge_logs: true,
}] };
`, argv[0], strings.Join(args, ", "), log, log)
	if err := writeFile(filepath.Join(dir, "ecosystem.config.js"), eco, 0o644); err != nil {
		return nil, err
	}
	env := append(os.Environ(), "PM2_HOME="+home)
	s := &session{logFile: log}
	s.cmd = exec.Command("pm2", "start", filepath.Join(dir, "ecosystem.config.js"))
	s.cmd.Env = env
	s.stopCmd = []string{"pm2", "kill"}
	if scenario == scCycle {
		if err := s.followPM2(c, env); err != nil {
			return nil, err
		}
	}
	out, err := s.cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("pm2 start: %v: %s", err, out)
	}
	s.roots = func() []int {
		b, _ := os.ReadFile(filepath.Join(home, "pm2.pid"))
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return []int{pid}
	}
	// stop waits on cmd, which has already finished: give it a process
	// that has, too.
	s.cmd = exec.Command("true")
	s.cmd.Env = env
	s.cmd.Start()
	return s, nil
}

// followPM2 runs the bus listener; the bus needs the daemon, which the
// listener starts on its own if it is not up yet.
func (s *session) followPM2(c *config, env []string) error {
	root, err := exec.Command("npm", "root", "-g").Output()
	if err != nil {
		return fmt.Errorf("npm root -g: %w", err)
	}
	l := exec.Command("node", c.pm2Listen)
	l.Env = append(env, "NODE_PATH="+strings.TrimSpace(string(root)))
	l.Stderr = os.Stderr
	out, err := l.StdoutPipe()
	if err != nil {
		return err
	}
	if err := l.Start(); err != nil {
		return err
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 1 && f[0] == "ready":
				close(ready)
			case len(f) == 3 && f[0] == "exit":
				ns, _ := strconv.ParseInt(f[1], 10, 64)
				pid, _ := strconv.Atoi(f[2])
				s.addNote(note{ns, pid})
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		l.Process.Kill()
		l.Wait()
		return errors.New("the pm2 bus listener did not connect within 30 s")
	}
	s.done = append(s.done, func() { l.Process.Kill(); l.Wait() })
	return nil
}

// pm2Version reads pm2's package.json: pm2 --version would start a daemon.
func pm2Version() string {
	root, err := exec.Command("npm", "root", "-g").Output()
	if err != nil {
		return "not installed"
	}
	b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(root)), "pm2", "package.json"))
	if err != nil {
		return "not installed"
	}
	var pkg struct{ Version string }
	json.Unmarshal(b, &pkg)
	return pkg.Version
}

func readNotes(file string) []note {
	var out []note
	b, _ := os.ReadFile(file)
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		ns, _ := strconv.ParseInt(f[0], 10, 64)
		pid, _ := strconv.Atoi(f[1])
		out = append(out, note{ns, pid})
	}
	return out
}
