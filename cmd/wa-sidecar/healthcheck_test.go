package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// probeServer is a stand-in for the sidecar's status server on 127.0.0.1
// that answers each probe from a script, and counts what it was asked.
type probeServer struct {
	*httptest.Server
	mu     sync.Mutex
	paths  []string
	answer func(n int) (int, map[string]any) // n counts from 1
}

func newProbeServer(t *testing.T, answer func(n int) (int, map[string]any)) *probeServer {
	t.Helper()
	p := &probeServer{answer: answer}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.paths = append(p.paths, r.URL.Path)
		n := len(p.paths)
		p.mu.Unlock()
		code, body := p.answer(n)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *probeServer) asked() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.paths...)
}

func (p *probeServer) addr() string { return strings.TrimPrefix(p.URL, "http://") }

func notReady(state, reason string) (int, map[string]any) {
	return http.StatusServiceUnavailable, map[string]any{"ready": false, "state": state, "reason": reason}
}

// hcEnv is a client environment that cannot find a real sidecar by
// accident: its own home and state directory.
func hcEnv(t *testing.T) (env []string, state string) {
	dir := t.TempDir()
	return []string{"PATH=/usr/bin:/bin", "HOME=" + dir}, dir
}

// freeAddr is a loopback address nothing listens on: one just freed.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestHealthcheckWaitUntilReady: a bridge that becomes adoptable after
// some refusals (another bridge holds the port, then it connects) is
// waited for; stdout, not a terminal, gets the final answer's body alone
// and stderr nothing at all.
func TestHealthcheckWaitUntilReady(t *testing.T) {
	bin, _ := binaries(t)
	srv := newProbeServer(t, func(n int) (int, map[string]any) {
		switch n {
		case 1:
			return notReady("yielded", "another bridge holds port 3000")
		case 2, 3:
			return notReady("running", "connecting to WhatsApp")
		}
		return http.StatusOK, map[string]any{"ready": true, "state": "running"}
	})
	env, state := hcEnv(t)
	out, stderr, code := cliRun(t, bin, env, "healthcheck", "--ready", "--wait", "2m", "--addr", srv.addr(), "--state-dir", state)
	if code != 0 {
		t.Fatalf("exit %d; stderr %q", code, stderr)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(out), &body); err != nil || body["healthy"] != true || body["check"] != "ready" || body["state"] != "running" {
		t.Errorf("stdout is not the ready answer: %q (%v)", out, err)
	}
	if stderr != "" {
		t.Errorf("stderr is not a terminal, yet got %q", stderr)
	}
	asked := srv.asked()
	if len(asked) != 4 {
		t.Errorf("asked %d times; want 4 (until the first 200): %q", len(asked), asked)
	}
	for _, p := range asked {
		if p != "/readyz" {
			t.Errorf("asked %s; --ready asks /readyz", p)
		}
	}
}

// TestHealthcheckWaitGivesUpAtOnce: needs_pairing and given_up never end
// by themselves, so the check says so after the first answer, however
// long --wait is.
func TestHealthcheckWaitGivesUpAtOnce(t *testing.T) {
	bin, _ := binaries(t)
	for _, tc := range []struct {
		state, reason, want string
	}{
		{"needs_pairing", "WhatsApp logged this device out; pair it again", "the bridge needs pairing"},
		{"given_up", "bridge given up: it failed 5 times in a row, the most allowed; a start command tries again", "the sidecar gave up on the bridge"},
	} {
		t.Run(tc.state, func(t *testing.T) {
			srv := newProbeServer(t, func(int) (int, map[string]any) { return notReady(tc.state, tc.reason) })
			env, state := hcEnv(t)
			out, stderr, code := cliRun(t, bin, env, "healthcheck", "--ready", "--wait", "1h", "--addr", srv.addr(), "--state-dir", state)
			if code != exitError {
				t.Fatalf("exit %d; want %d; stderr %q", code, exitError, stderr)
			}
			for _, want := range []string{tc.want, "waiting cannot", tc.reason} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q: %q", want, stderr)
				}
			}
			if strings.Count(stderr, "\n") != 1 {
				t.Errorf("want one line on stderr, got %q", stderr)
			}
			if n := len(srv.asked()); n != 1 {
				t.Errorf("asked %d times; want once", n)
			}
			var body map[string]any
			if json.Unmarshal([]byte(out), &body) != nil || body["state"] != tc.state {
				t.Errorf("stdout is not the answer: %q", out)
			}
		})
	}
}

// TestHealthcheckWaitNoSidecar: a closed port is "not yet" until the wait
// ends, and the last line says nothing answered.
func TestHealthcheckWaitNoSidecar(t *testing.T) {
	bin, _ := binaries(t)
	env, state := hcEnv(t)
	addr := freeAddr(t)
	out, stderr, code := cliRun(t, bin, env, "healthcheck", "--ready", "--wait", "1500ms", "--addr", addr, "--state-dir", state)
	if code != exitError {
		t.Fatalf("exit %d; want %d; stderr %q", code, exitError, stderr)
	}
	if !strings.Contains(stderr, "after 1.5s") || !strings.Contains(stderr, "no sidecar answered at "+addr) {
		t.Errorf("stderr does not say that nothing answered at %s during the wait: %q", addr, stderr)
	}
	if strings.Count(stderr, "\n") != 1 {
		t.Errorf("want one line on stderr, got %q", stderr)
	}
	// Stdout is not a terminal: the result in JSON, which says no answer came.
	var body map[string]any
	if err := json.Unmarshal([]byte(out), &body); err != nil || body["healthy"] != false || body["http_status"] != 0.0 ||
		!strings.Contains(fmt.Sprint(body["error"]), "no sidecar answered at "+addr) {
		t.Errorf("stdout is not a healthcheck result without an answer: %q (%v)", out, err)
	}
}

// TestHealthcheckWaitForTheSidecar: without --ready the wait is for the
// sidecar itself (/healthz).
func TestHealthcheckWaitForTheSidecar(t *testing.T) {
	bin, _ := binaries(t)
	srv := newProbeServer(t, func(int) (int, map[string]any) { return http.StatusOK, map[string]any{"ok": true} })
	env, state := hcEnv(t)
	if _, stderr, code := cliRun(t, bin, env, "healthcheck", "--wait", "1m", "--addr", srv.addr(), "--state-dir", state); code != 0 {
		t.Fatalf("exit %d; stderr %q", code, stderr)
	}
	if asked := srv.asked(); len(asked) != 1 || asked[0] != "/healthz" {
		t.Errorf("asked %q; want /healthz once", asked)
	}
}

func TestHealthcheckWaitUsage(t *testing.T) {
	bin, _ := binaries(t)
	env, state := hcEnv(t)
	for _, wait := range []string{"0", "0s", "-5s", "soon"} {
		_, stderr, code := cliRun(t, bin, env, "healthcheck", "--ready", "--wait", wait, "--addr", freeAddr(t), "--state-dir", state)
		if code != exitUsage || !strings.Contains(stderr, "wait") {
			t.Errorf("--wait %s: exit %d, want %d and a message naming --wait: %q", wait, code, exitUsage, stderr)
		}
	}
}

// TestHealthcheckWaitOnTerminal: on a terminal the wait shows what it is
// waiting for, and a sidecar that starts listening during the wait ends it.
func TestHealthcheckWaitOnTerminal(t *testing.T) {
	bin, _ := binaries(t)
	addr := freeAddr(t)
	p := startOnTerminal(t, bin, "healthcheck", "--wait", "2m", "--addr", addr)
	p.waitFor("waiting for the sidecar to answer: no sidecar answers at "+addr+" yet (", 0)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the freed port was taken meanwhile: %v", err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"ok":true}`))
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	p.waitFor("healthy", 0)
	if code := p.wait(); code != 0 {
		t.Fatalf("exit %d; the terminal showed:\n%s", code, p.plain())
	}
}

// healthcheck --json prints one result object whatever happened: a
// healthy answer, an unhealthy one with its state and reason, or none.
func TestHealthcheckJSON(t *testing.T) {
	bin, _ := binaries(t)
	env, state := hcEnv(t)
	ready := newProbeServer(t, func(int) (int, map[string]any) { return http.StatusOK, map[string]any{"ok": true, "pid": 41} })
	pairing := newProbeServer(t, func(int) (int, map[string]any) { return notReady("needs_pairing", "WhatsApp logged this device out") })
	for _, tc := range []struct {
		args []string
		code int
		want map[string]any
	}{
		{[]string{"--addr", ready.addr()}, 0, map[string]any{"healthy": true, "check": "alive", "http_status": 200.0, "pid": 41.0}},
		{[]string{"--ready", "--addr", pairing.addr()}, 1, map[string]any{"healthy": false, "check": "ready", "http_status": 503.0,
			"state": "needs_pairing", "reason": "WhatsApp logged this device out"}},
		{[]string{"--addr", freeAddr(t)}, 1, map[string]any{"healthy": false, "check": "alive", "http_status": 0.0}},
	} {
		out, stderr, code := cliRun(t, bin, env, append([]string{"healthcheck", "--json", "--state-dir", state}, tc.args...)...)
		var got map[string]any
		if code != tc.code || json.Unmarshal([]byte(out), &got) != nil {
			t.Errorf("%q: exit %d, %q %q", tc.args, code, out, stderr)
			continue
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("%q: %s = %v, want %v (%s)", tc.args, k, got[k], v, out)
			}
		}
		if got["addr"] != tc.args[len(tc.args)-1] {
			t.Errorf("%q: addr %v", tc.args, got["addr"])
		}
		if !got["healthy"].(bool) && got["http_status"] == 0.0 && !strings.Contains(fmt.Sprint(got["error"]), "no sidecar is running") {
			t.Errorf("%q: no error saying why no answer came: %s", tc.args, out)
		}
	}
}
