package main

import (
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMetricsOnTheStatusServer scrapes /metrics from the real binary, on
// the status server's own listener, while the bridge runs and after a
// crash.
func TestMetricsOnTheStatusServer(t *testing.T) {
	bin, fake := binaries(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := startSidecar(t, bin, "run", "--listen", addr, "--state-dir", t.TempDir(), "--backoff-initial", "10ms",
		"--", fake, "-report-signals", "-say", "armed")
	p.waitLog("armed")

	scrape := func() string {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /metrics: %s %v\n%s", resp.Status, err, b)
		}
		return string(b)
	}
	// The metrics follow the events on their own goroutine; scrape again
	// until they have caught up (or the deadline says they never will).
	has := func(lines ...string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			text, missing := scrape(), ""
			for _, l := range lines {
				if !strings.Contains(text, "\n"+l+"\n") {
					missing = l
					break
				}
			}
			if missing == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("/metrics lacks %q:\n%s", missing, text)
			}
			runtime.Gosched()
		}
	}
	has(
		`wa_sidecar_bridge_state{state="running"} 1`,
		`wa_sidecar_bridge_ready 1`,
		`wa_sidecar_event_clients 0`,
		`wa_sidecar_bridge_restarts_total{class="failure"} 0`,
	)

	// SIGHUP restarts the bridge: a requested exit (SIGTERM), then a respawn.
	p.signal(syscall.SIGHUP)
	p.waitLog("bridge started")
	p.waitLog("armed")
	has(
		`wa_sidecar_bridge_restarts_total{class="requested"} 1`,
		`wa_sidecar_bridge_exits_total{class="requested"} 1`,
		`wa_sidecar_bridge_last_exit_code -15`,
	)
	checkHelpAndType(t, scrape())
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d; log:\n%s", code, p.logText())
	}
}

// checkHelpAndType checks a scrape in the text format: every metric
// family has a # TYPE line and a # HELP line with a text, and every sample
// belongs to such a family.
func checkHelpAndType(t *testing.T, text string) {
	t.Helper()
	helps, types := map[string]string{}, map[string]bool{}
	var samples []string
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		switch {
		case strings.HasPrefix(line, "# HELP "):
			name, h, _ := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			helps[name] = h
		case strings.HasPrefix(line, "# TYPE "):
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "# TYPE "), " ")
			types[name] = true
		case line != "" && !strings.HasPrefix(line, "#"):
			samples = append(samples, strings.FieldsFunc(line, func(r rune) bool { return r == '{' || r == ' ' })[0])
		}
	}
	for name := range types {
		if helps[name] == "" {
			t.Errorf("%s has a # TYPE but no help text", name)
		}
	}
	for name := range helps {
		if !types[name] {
			t.Errorf("%s has a # HELP but no # TYPE", name)
		}
	}
	for _, s := range samples {
		family := s
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if f := strings.TrimSuffix(s, suffix); !types[family] && types[f] {
				family = f
			}
		}
		if !types[family] {
			t.Errorf("sample %s belongs to no family with a # TYPE", s)
		}
	}
	if len(types) < 40 {
		t.Errorf("only %d metric families in the scrape", len(types))
	}
}
