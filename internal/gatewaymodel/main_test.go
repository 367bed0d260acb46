package gatewaymodel

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
)

// fakeEnv makes the test binary act as a fake bridge instead of running
// tests, so the model deals with real, separate processes.
const fakeEnv = "GATEWAYMODEL_FAKE"

func TestMain(m *testing.M) {
	if os.Getenv(fakeEnv) == "1" {
		os.Exit(fakeBridge(os.Args[1:]))
	}
	code := m.Run()
	if code == 0 {
		if err := proctest.CheckLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// fakeBridge serves what the gateway asks a bridge for: GET /health and GET
// /messages on 127.0.0.1. Like node, it has no SIGTERM handler, and it exits
// 1 with EADDRINUSE on stderr when the port is taken.
func fakeBridge(args []string) int {
	fs := flag.NewFlagSet("fake bridge", flag.ContinueOnError)
	port := fs.Int("port", 0, "port on 127.0.0.1")
	fs.String("session", "", "session dir; only there to be seen in the command line")
	fs.String("mode", "", "ignored")
	status := fs.String("status", "connected", "status in /health")
	connectAfter := fs.Duration("connect-after", 0, `report "disconnected" until this long after start`)
	listenAfter := fs.Duration("listen-after", 0, "wait this long before listening")
	hash := fs.String("hash", "", "scriptHash in /health; empty leaves it out")
	receipts := fs.String("receipts", "", `sendReadReceipts in /health: true, false, env (from WHATSAPP_SEND_READ_RECEIPTS), or empty to leave it out`)
	ignoreTerm := fs.Bool("ignore-term", false, "ignore SIGTERM")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *ignoreTerm {
		signal.Ignore(syscall.SIGTERM)
	}
	start := time.Now()
	time.Sleep(*listenAfter) // the fake's own behaviour: a bridge slow to serve HTTP
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)))
	if errors.Is(err, syscall.EADDRINUSE) {
		fmt.Fprintf(os.Stderr, "Error: listen EADDRINUSE: address already in use 127.0.0.1:%d\n", *port)
		return 1
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("fake bridge listening on port %d\n", *port)
	var polls atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		h := map[string]any{"status": *status, "queueLength": 0, "uptime": time.Since(start).Seconds(), "polls": polls.Load()}
		if *connectAfter > 0 {
			h["status"] = "disconnected"
			if time.Since(start) >= *connectAfter {
				h["status"] = "connected"
			}
		}
		if *hash != "" {
			h["scriptHash"] = *hash
		}
		switch *receipts {
		case "true", "false":
			h["sendReadReceipts"] = *receipts == "true"
		case "env":
			v := strings.ToLower(os.Getenv("WHATSAPP_SEND_READ_RECEIPTS"))
			h["sendReadReceipts"] = v == "1" || v == "true" || v == "yes" || v == "on"
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(h)
	})
	mux.HandleFunc("GET /messages", func(w http.ResponseWriter, _ *http.Request) {
		polls.Add(1)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = w.Write([]byte("[]"))
	})
	fmt.Fprintln(os.Stderr, http.Serve(ln, mux))
	return 1
}

// testBinary is this test binary, which runs as the fake bridge with fakeEnv.
func testBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.ToLower(exe), "node") {
		t.Skipf("the test binary's path %s contains \"node\"; the tests need one that does not", exe)
	}
	return exe
}

// nodeBinary is a link named node to the test binary: a fake bridge started
// through it has comm and argv[0] "node", as a real bridge has.
func nodeBinary(t *testing.T) string {
	t.Helper()
	link := filepath.Join(t.TempDir(), "node")
	if err := os.Symlink(testBinary(t), link); err != nil {
		t.Fatal(err)
	}
	return link
}

func fakeEnviron() []string { return append(os.Environ(), fakeEnv+"=1") }

// fake is a fake bridge the test started and reaps.
type fake struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startFake starts a fake bridge from exe on port with args, and waits for
// it to answer /health unless it was told to wait before listening.
func startFake(t *testing.T, exe string, port int, args ...string) *fake {
	t.Helper()
	args = append([]string{"--port", strconv.Itoa(port)}, args...)
	cmd := exec.Command(exe, args...)
	cmd.Env = fakeEnviron()
	out, err := os.CreateTemp(t.TempDir(), "fake-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &fake{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(f.done)
	}()
	t.Cleanup(func() {
		if f.alive() {
			_ = cmd.Process.Kill()
		}
		<-f.done
		if t.Failed() {
			b, _ := os.ReadFile(out.Name())
			t.Logf("fake bridge %d (%s) wrote:\n%s", f.pid(), strings.Join(args, " "), b)
		}
	})
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--listen-after") }) {
		waitFor(t, fmt.Sprintf("fake bridge on port %d to answer", port), func() bool {
			return f.alive() && health(port) != nil
		})
	}
	return f
}

func (f *fake) pid() int { return f.cmd.Process.Pid }

func (f *fake) alive() bool {
	select {
	case <-f.done:
		return false
	default:
		return true
	}
}

// exitStatus waits for the fake to end and returns how it ended.
func (f *fake) exitStatus(t *testing.T) syscall.WaitStatus {
	t.Helper()
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("fake bridge %d still runs", f.pid())
	}
	return f.cmd.ProcessState.Sys().(syscall.WaitStatus)
}

func requireTerminated(t *testing.T, f *fake) {
	t.Helper()
	if ws := f.exitStatus(t); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("fake bridge %d ended with %v, want death by SIGTERM", f.pid(), ws)
	}
}

// health is the /health answer on port, or nil.
func health(port int) map[string]any {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+"/health", nil)
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var h map[string]any
	if json.NewDecoder(resp.Body).Decode(&h) != nil {
		return nil
	}
	return h
}

// polls is how many GET /messages the bridge on port has answered.
func polls(port int) float64 {
	n, _ := health(port)["polls"].(float64)
	return n
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// requireOurs fails the test unless every listener on port is a child of
// this test, so the model can never signal a stranger.
func requireOurs(t *testing.T, port int) {
	t.Helper()
	for _, pid := range listenerPIDs(port) {
		if _, ppid, _ := proctest.State(pid); ppid != os.Getpid() {
			t.Fatalf("port %d is held by pid %d, which this test did not start", port, pid)
		}
	}
}

// setup is a gateway's world: a bridge script, a paired session, a port.
type setup struct {
	script, session, hash string
	port                  int
}

func newSetup(t *testing.T) *setup {
	t.Helper()
	dir := t.TempDir()
	s := &setup{
		script:  filepath.Join(dir, "bridge", "bridge.js"),
		session: filepath.Join(dir, "platforms", "whatsapp", "session"),
		port:    proctest.FreePort(t),
	}
	for _, d := range []string{filepath.Dir(s.script), s.session} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	write(t, s.script, "console.log('bridge')\n")
	write(t, filepath.Join(s.session, "creds.json"), "{}")
	s.hash = ContentHash(s.script)
	return s
}

// config is a gateway whose own bridge is a fake started with args, with
// waits short enough for tests.
func (s *setup) config(t *testing.T, args ...string) Config {
	return Config{
		Script:         s.script,
		SessionDir:     s.session,
		Port:           s.port,
		Spawn:          append([]string{testBinary(t), "--port", strconv.Itoa(s.port), "--session", s.session}, args...),
		Env:            fakeEnviron(),
		KillWait:       50 * time.Millisecond,
		StartTimeout:   5 * time.Second,
		ConnectTimeout: 5 * time.Second,
		PollEvery:      20 * time.Millisecond,
		Logf:           t.Logf,
	}
}

func (s *setup) pidfile() string { return filepath.Join(s.session, "bridge.pid") }

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// connect runs one attempt of a gateway that the test closes at its end.
func connect(t *testing.T, cfg Config) (*Gateway, Result) {
	t.Helper()
	g := New(cfg)
	t.Cleanup(g.Close)
	res := g.Connect(context.Background())
	t.Logf("result: %+v", res)
	return g, res
}
