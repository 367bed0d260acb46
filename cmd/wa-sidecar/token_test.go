package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
)

// recorder stands in for whatever answers at an address: it records the
// Authorization header of every request, answers the reads as a sidecar
// would, and turns websockets away as full (a client that sends a token
// has then sent it, which is what the tests look for; a 401 would be an
// invitation to send the token, to the sidecar it belongs to).
type recorder struct {
	addr string
	mu   sync.Mutex
	auth []string // "path auth", one per request
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return recordOn(t, ln, ln.Addr().String())
}

// recordOn is a recorder that serves ln, which a client reaches at addr.
func recordOn(t *testing.T, ln net.Listener, addr string) *recorder {
	r := &recorder{addr: addr}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.auth = append(r.auth, req.URL.Path+" "+req.Header.Get("Authorization"))
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch req.URL.Path {
		case "/healthz":
			w.Write([]byte(`{"ok":true,"pid":1}`))
		case "/readyz":
			w.Write([]byte(`{"ready":true,"state":"running","pid":2}`))
		case "/v1/status":
			w.Write([]byte(`{"state":"running","pid":2,"since":"2026-01-01T00:00:00Z","ready":true,"restarts":0,"consecutive_failures":0,"crashloop":false,"last_exit":null,"next_start_at":null}`))
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":"too many clients"}`))
		}
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-served })
	return r
}

// sent is every Authorization header that reached the recorder.
func (r *recorder) sent() (all []string, tokens []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.auth {
		if path, auth, _ := strings.Cut(a, " "); auth != "" {
			tokens = append(tokens, path+" "+auth)
		}
	}
	return append([]string(nil), r.auth...), tokens
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.auth = nil
	r.mu.Unlock()
}

// writeState leaves a token and, if listen is set, a sidecar.json naming
// listen and that token, as a sidecar of pid would.
func writeState(t *testing.T, dir, listen string, pid int) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(dir, feed.TokenFileName)
	if err := os.WriteFile(tok, []byte("the-state-dirs-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if listen != "" {
		if err := feed.WriteDiscovery(dir, feed.Discovery{Listen: listen, TokenFile: tok, Pid: pid, StartedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	return tok
}

// A token found in the state directory goes only to the sidecar whose
// sidecar.json names the address, and only for what needs it; reads and
// an address given with --addr get none.
func TestTheStateDirsTokenGoesOnlyToItsSidecar(t *testing.T) {
	bin, _ := binaries(t)
	stranger := newRecorder(t)
	owner := newRecorder(t)
	dir := t.TempDir()
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir}

	noDisc := filepath.Join(dir, "token-only")
	writeState(t, noDisc, "", 0)
	named := filepath.Join(dir, "named")
	writeState(t, named, owner.addr, os.Getpid())

	for _, state := range []string{noDisc, named} {
		for _, args := range [][]string{
			{"status"}, {"status", "--json"}, {"healthcheck"}, {"healthcheck", "--ready"},
			{"restart"}, {"stop"}, {"start"}, {"pair", "--wait", "5s"},
		} {
			args = append(args, "--state-dir", state, "--addr", stranger.addr)
			_, stderr, code := cliRun(t, bin, env, args...)
			if args[0] == "restart" || args[0] == "stop" || args[0] == "start" || args[0] == "pair" {
				if code != exitDenied || !strings.Contains(stderr, "no token may go there") {
					t.Errorf("%q: exit %d, want %d saying why no token went: %q", args, code, exitDenied, stderr)
				}
			} else if code != 0 {
				t.Errorf("%q: exit %d, %q", args, code, stderr)
			}
		}
	}
	// watch, piped, until the recorder refuses its websocket.
	cliRun(t, bin, env, "watch", "--state-dir", named, "--addr", stranger.addr)
	all, tokens := stranger.sent()
	if len(tokens) > 0 {
		t.Errorf("the state directory's token went to an address its sidecar.json does not name: %q", tokens)
	}
	if len(all) == 0 {
		t.Fatal("nothing reached the stranger")
	}

	// The sidecar the state directory names: reads still send none...
	for _, args := range [][]string{{"status"}, {"healthcheck"}, {"watch"}} {
		cliRun(t, bin, env, append(args, "--state-dir", named)...)
	}
	if _, tokens := owner.sent(); len(tokens) > 0 {
		t.Errorf("reads sent the token unasked: %q", tokens)
	}
	// ...a control op sends it there.
	owner.reset()
	if _, _, code := cliRun(t, bin, env, "restart", "--state-dir", named); code != exitError {
		t.Errorf("restart against the recorder: exit %d, want %d (it turns every websocket away)", code, exitError)
	}
	if _, tokens := owner.sent(); len(tokens) != 1 || tokens[0] != "/v1/events Bearer the-state-dirs-token" {
		t.Errorf("restart sent %q to the sidecar its sidecar.json names; want the token once", tokens)
	}
	// So does --addr naming that address, in another spelling of it.
	owner.reset()
	_, port, _ := net.SplitHostPort(owner.addr)
	writeState(t, named, "0.0.0.0:"+port, os.Getpid())
	cliRun(t, bin, env, "restart", "--state-dir", named, "--addr", "localhost:"+port)
	if _, tokens := owner.sent(); len(tokens) != 1 {
		t.Errorf("restart --addr localhost:%s to a sidecar on 0.0.0.0:%s sent %q; want the token once", port, port, tokens)
	}

	// A sidecar.json whose writer is gone is stale: whatever answers at
	// its address now gets no token.
	owner.reset()
	writeState(t, named, owner.addr, deadPid(t))
	_, stderr, code := cliRun(t, bin, env, "restart", "--state-dir", named, "--addr", owner.addr)
	if code != exitDenied || !strings.Contains(stderr, "no longer the sidecar that wrote it") {
		t.Errorf("restart with a stale sidecar.json: exit %d, %q", code, stderr)
	}
	if _, tokens := owner.sent(); len(tokens) > 0 {
		t.Errorf("a stale sidecar.json's token was sent: %q", tokens)
	}

	// A token given for the command goes where the command is sent.
	stranger.reset()
	given := filepath.Join(dir, "given")
	os.WriteFile(given, []byte("given-token\n"), 0o600)
	cliRun(t, bin, env, "restart", "--state-dir", noDisc, "--addr", stranger.addr, "--token-file", given)
	if _, tokens := stranger.sent(); len(tokens) != 1 || tokens[0] != "/v1/events Bearer given-token" {
		t.Errorf("restart --token-file sent %q", tokens)
	}
}

// A Unix socket is only a name in a directory: whoever can write the
// directory can move the sidecar's socket away and listen at its path
// while the sidecar runs, and the token went to them. It goes only to a
// socket on which the process that sidecar.json names listens.
func TestTheTokenGoesOnlyToTheSidecarsOwnSocket(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	path := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	impostor := recordOn(t, ln, "unix:"+path)
	// The sidecar that sidecar.json names runs, but this test listens.
	sidecar := exec.Command("sleep", "60")
	if err := sidecar.Start(); err != nil {
		t.Fatal(err)
	}
	defer sidecar.Wait()
	defer sidecar.Process.Kill()
	state := filepath.Join(dir, "state")
	writeState(t, state, impostor.addr, sidecar.Process.Pid)
	for _, args := range [][]string{{"restart"}, {"status"}, {"watch"}} {
		_, stderr, code := cliRun(t, bin, env, append(args, "--state-dir", state)...)
		if code != exitError || !strings.Contains(stderr, "not by the sidecar") {
			t.Errorf("%s at an impostor's socket: exit %d, %q", args[0], code, stderr)
		}
	}
	if all, _ := impostor.sent(); len(all) > 0 {
		t.Errorf("requests reached a socket the sidecar does not listen on: %q", all)
	}
	// Served by the process sidecar.json names, the same socket gets it.
	writeState(t, state, impostor.addr, os.Getpid())
	cliRun(t, bin, env, "restart", "--state-dir", state)
	if _, tokens := impostor.sent(); len(tokens) != 1 {
		t.Errorf("restart at the sidecar's own socket sent %q; want the token once", tokens)
	}
}

// deadPid is the pid of a process that has exited and been reaped.
func deadPid(t *testing.T) int {
	t.Helper()
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()
	return p.Pid
}

func TestSameAddr(t *testing.T) {
	for _, tc := range []struct {
		listen, dial string
		same         bool
	}{
		{"127.0.0.1:7390", "127.0.0.1:7390", true},
		{"127.0.0.1:7390", "127.0.0.1:7391", false},
		{"127.0.0.1:7390", "localhost:7390", false}, // localhost may be ::1, where another may listen
		{"[::]:7390", "127.0.0.1:7390", true},
		{"0.0.0.0:7390", "localhost:7390", true},
		{":7390", "[::1]:7390", true},
		{"0.0.0.0:7390", "10.0.0.5:7390", false},
		{"10.0.0.5:7390", "10.0.0.5:7390", true},
		{"[::1]:7390", "[0:0:0:0:0:0:0:1]:7390", true},
		{"unix:/run/a.sock", "unix:/run/a.sock", true},
		{"unix:/run/a.sock", "unix:/run/b.sock", false},
		{"unix:/run/a.sock", "127.0.0.1:7390", false},
	} {
		if got := sameAddr(tc.listen, tc.dial); got != tc.same {
			t.Errorf("sameAddr(%q, %q) = %v, want %v", tc.listen, tc.dial, got, tc.same)
		}
	}
}

// One address flag: the server takes --addr and $WA_SIDECAR_ADDR besides
// --listen, the clients --listen and $WA_SIDECAR_LISTEN besides --addr,
// so a container's healthcheck with the server's environment finds it.
func TestListenAndAddrAreOneFlag(t *testing.T) {
	bin, fake := binaries(t)
	dir := t.TempDir()
	clientEnv := []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	empty := filepath.Join(dir, "empty")

	addr := freeAddr(t)
	p := startSidecar(t, bin, "run", "--state-dir", filepath.Join(dir, "a"), "--addr", addr, "--", fake, "-hang")
	p.waitLog("bridge started")
	if got := listenOf(t, filepath.Join(dir, "a")); got != addr {
		t.Fatalf("run --addr %s listens on %s", addr, got)
	}
	for _, tc := range []struct {
		env  []string
		args []string
	}{
		{nil, []string{"--addr", addr}},
		{nil, []string{"--listen", addr}},
		{[]string{"WA_SIDECAR_ADDR=" + addr}, nil},
		{[]string{"WA_SIDECAR_LISTEN=" + addr}, nil},
	} {
		args := append([]string{"healthcheck", "--state-dir", empty}, tc.args...)
		if _, stderr, code := cliRun(t, bin, append(clientEnv, tc.env...), args...); code != 0 {
			t.Errorf("%v %q: exit %d, %q", tc.env, args, code, stderr)
		}
	}
	p.stopOK()

	// The server's environment, as a container's healthcheck inherits it.
	addr = freeAddr(t)
	cmd := exec.Command(bin, "run", "--state-dir", filepath.Join(dir, "b"), "--", fake, "-hang")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WA_SIDECAR_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "WA_SIDECAR_ADDR="+addr)
	q := startCmd(t, cmd)
	q.waitLog("bridge started")
	if got := listenOf(t, filepath.Join(dir, "b")); got != addr {
		t.Fatalf("run with $WA_SIDECAR_ADDR=%s listens on %s", addr, got)
	}
	q.stopOK()
}

// A server told to take any free port leaves the port it took in
// sidecar.json; a client with the same environment looks there.
func TestClientIgnoresAnyFreePort(t *testing.T) {
	bin, fake := binaries(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	p := startSidecar(t, bin, "run", "--state-dir", state, "--listen", "127.0.0.1:0", "--", fake, "-hang")
	p.waitLog("bridge started")
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "WA_SIDECAR_LISTEN=127.0.0.1:0"}
	out, stderr, code := cliRun(t, bin, env, "healthcheck", "--state-dir", state)
	var r map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r["addr"] != listenOf(t, state) {
		t.Errorf("healthcheck with $WA_SIDECAR_LISTEN=127.0.0.1:0: exit %d, %q %q", code, out, stderr)
	}
	p.stopOK()
}
