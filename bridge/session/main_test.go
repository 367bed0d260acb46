package session

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
	"github.com/wa-sidecar/wa-sidecar/procmon"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

// fakeBridge is the path of testdata/fakebridge, built once for the package.
var fakeBridge string

// helperEnv makes the test binary act as one of the helper processes below
// instead of running tests, so tests get real, separate processes that
// hold a port or a session lock.
const helperEnv = "SESSION_TEST_HELPER"

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(runHelper(h))
	}
	os.Exit(proctest.Main(m, &fakeBridge))
}

// runHelper is the body of a helper process. Each prints one line saying
// it is set up, then waits for its stdin to close (or, for "listen", for
// SIGKILL), reporting every signal it gets on stdout.
func runHelper(kind string) int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGCONT)
	switch kind {
	case "listen", "listen-ignore-term", "listen-keep":
		ln, err := net.Listen("tcp4", "127.0.0.1:"+os.Getenv("HELPER_PORT"))
		if err != nil {
			fmt.Println("error", err)
			return 3
		}
		go func() {
			// listen-keep: accepted connections stay open (and referenced,
			// or the collector would close them) until the process ends.
			kept := make(chan net.Conn, 64)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				if kind == "listen-keep" {
					kept <- c
					continue
				}
				c.Close()
			}
		}()
		fmt.Println("listening", ln.Addr().(*net.TCPAddr).Port)
		for s := range sigs {
			fmt.Println("got", s)
			if s == syscall.SIGTERM && kind == "listen" {
				signal.Reset(syscall.SIGTERM)
				syscall.Kill(os.Getpid(), syscall.SIGTERM)
			}
		}
	case "hold":
		// Asks Hold once, from wherever it runs (another PID namespace).
		port, _ := strconv.Atoi(os.Getenv("HELPER_PORT"))
		g, err := Open(Config{SessionDir: os.Getenv("HELPER_SESSION"), Port: port})
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		defer g.Close()
		if p := g.HoldSpawn(); p != nil {
			fmt.Println("held", p.Reason, p.Data["holder_pid"])
		} else {
			fmt.Println("free")
		}
	case "lock":
		g, err := Open(Config{SessionDir: os.Getenv("HELPER_SESSION")})
		if err != nil {
			fmt.Println("error", err)
			if _, held := err.(*HeldError); held {
				return 75
			}
			return 1
		}
		fmt.Println("locked")
		io.Copy(io.Discard, os.Stdin)
		g.Close()
	}
	return 0
}

// helper is a running helper process.
type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	first string
}

// startHelper starts a helper process and waits for its first line.
// leftoverBridge is a bridge an earlier sidecar left running on a paired
// session: a helper listening on a port, recorded in the session as the
// bridge, and a guard of that session and port.
func leftoverBridge(t *testing.T) (left *helper, g *Guard) {
	t.Helper()
	left = startHelper(t, "listen", "HELPER_PORT=0")
	port := left.port(t)
	id, err := signals.IdentityOf(left.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	dir := newSession(t, pairedCreds)
	g = openGuard(t, Config{SessionDir: dir, Port: port})
	writeRecord(t, dir, id)
	return left, g
}

func startHelper(t *testing.T, kind string, env ...string) *helper {
	t.Helper()
	return startHelperArgs(t, kind, nil, env...)
}

// startHelperArgs is startHelper with arguments on the helper's command
// line, for a helper that must look like a bridge (--session DIR).
func startHelperArgs(t *testing.T, kind string, args []string, env ...string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), helperEnv+"="+kind), env...)
	// Its own session, as a bridge left behind by a dead sidecar would be.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, stdin: stdin, lines: make(chan string, 64)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
	}()
	t.Cleanup(func() {
		h.cmd.Process.Kill()
		h.stdin.Close()
		h.cmd.Wait()
	})
	select {
	case h.first = <-h.lines:
	case <-time.After(20 * time.Second):
		t.Fatalf("helper %s printed nothing", kind)
	}
	return h
}

// port returns the port a listen helper bound.
func (h *helper) port(t *testing.T) int {
	t.Helper()
	f := strings.Fields(h.first)
	if len(f) != 2 || f[0] != "listening" {
		t.Fatalf("listen helper said %q", h.first)
	}
	p, _ := strconv.Atoi(f[1])
	return p
}

// wait returns the helper's exit status once it has ended.
func (h *helper) wait(t *testing.T) syscall.WaitStatus {
	t.Helper()
	h.stdin.Close()
	err := h.cmd.Wait()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return h.cmd.ProcessState.Sys().(syscall.WaitStatus)
}

// said collects what the helper printed after its first line, once it
// has exited.
func (h *helper) said() []string {
	var out []string
	for l := range h.lines {
		out = append(out, l)
	}
	return out
}

// emitted collects what a guard's BeforeSpawn emits, as the monitor
// would put it in its stream.
type emitted []procmon.Event

func (e *emitted) emit(ev procmon.Event) { *e = append(*e, ev) }

func (e *emitted) take() []procmon.Event {
	evs := *e
	*e = nil
	return evs
}

// harness runs a Monitor guarded by g and records its events.
type harness struct {
	t      *testing.T
	m      *procmon.Monitor
	sub    *procmon.Subscription
	cancel context.CancelFunc
	done   chan error
	guard  chan struct{}
	events proctest.Events[procmon.Event, procmon.Kind]
}

func startMonitor(t *testing.T, g *Guard, cfg procmon.Config) *harness {
	t.Helper()
	if cfg.Backoff == (procmon.Backoff{}) {
		cfg.Backoff = procmon.Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond, Multiplier: 2, Reset: time.Hour}
	}
	cfg.StopTimeout = 5 * time.Second
	if g != nil {
		cfg.Hooks = append(cfg.Hooks, g)
	}
	m, err := procmon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := m.Subscribe(4096)
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, m: m, sub: sub, cancel: cancel, done: make(chan error, 1), guard: make(chan struct{})}
	h.events = proctest.Events[procmon.Event, procmon.Kind]{C: sub.C, Err: sub.Err, Kind: func(e procmon.Event) procmon.Kind { return e.Kind }, Seq: func(e procmon.Event) uint64 { return e.Seq }}
	if g != nil {
		watch := g.Watch(m)
		go func() { watch.Run(ctx); close(h.guard) }()
	} else {
		close(h.guard)
	}
	go func() { h.done <- m.Run(ctx) }()
	t.Cleanup(h.shutdown)
	return h
}

func (h *harness) shutdown() {
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		h.t.Fatal("monitor did not stop within 30s")
	}
	<-h.guard
	h.sub.Close()
}

// next waits for the next event of one of kinds.
func (h *harness) next(kinds ...procmon.Kind) procmon.Event {
	h.t.Helper()
	return h.events.Next(h.t, kinds...)
}

// nextUnless is next, but fails if one of forbidden comes first.
func (h *harness) nextUnless(want procmon.Kind, forbidden ...procmon.Kind) procmon.Event {
	h.t.Helper()
	return h.events.NextUnless(h.t, want, forbidden...)
}

func (h *harness) kinds() []procmon.Kind { return h.events.Kinds() }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
