package sim

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestArgsRoundTrip(t *testing.T) {
	c := Defaults()
	c.SessionDir = "/tmp/s"
	c.Port = 3456
	c.PairJSON, c.HealthHang = true, true
	c.ScriptHashOf, c.RuntimeHashOf = "/srv/bridge.js", "/srv"
	c.PairAfter, c.FlipEvery, c.CrashAfter = time.Second, 2*time.Second, 3*time.Second
	c.Crashes = []Crash{CrashAbort, CrashLogout}
	got, err := Parse(c.Args(), io.Discard)
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Fatalf("Parse(Args()) = %+v, %v\nwant %+v", got, err, c)
	}
}

func TestParseErrorsNameTheFlag(t *testing.T) {
	for args, want := range map[string]string{
		"--port 3000":                       "--session",
		"--session s --port 0":              "--port",
		"--session s --mode group":          "--mode",
		"--session s --crash explode":       "--crash",
		"--session s --qr-every 0s":         "--qr-every",
		"--session s extra":                 "unexpected argument",
		"--session s --reconnect-after -1s": "--reconnect-after",
	} {
		_, err := Parse(strings.Fields(args), io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s): %v, want an error naming %s", args, err, want)
		}
	}
}

func TestHealthKeepsTheContract(t *testing.T) {
	b := &bridge{cfg: Defaults(), started: time.Now(), out: io.Discard, scriptHash: scriptHash}
	srv := httptest.NewServer(b.routes())
	defer srv.Close()

	get := func(path, host string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	code, body := get("/health", "")
	if code != 200 || body["status"] != "disconnected" || len(body["scriptHash"].(string)) != 16 {
		t.Fatalf("/health while disconnected: %d %v", code, body)
	}
	for _, k := range []string{"status", "queueLength", "uptime", "scriptHash", "sendReadReceipts"} {
		if _, ok := body[k]; !ok {
			t.Errorf("/health lacks %s", k)
		}
	}
	if code, _ := get("/messages", ""); code != http.StatusServiceUnavailable {
		t.Errorf("/messages while disconnected: %d, want 503", code)
	}
	for _, host := range []string{"evil.example", "10.0.0.1:3000", "localhost.evil.example"} {
		if code, _ := get("/health", host); code != http.StatusBadRequest {
			t.Errorf("Host %s: %d, want 400", host, code)
		}
	}
	for _, host := range []string{"localhost:3000", "127.0.0.1", "[::1]:3000"} {
		if code, _ := get("/health", host); code != 200 {
			t.Errorf("Host %s: %d, want 200", host, code)
		}
	}
	b.setConnected(true, "")
	if code, body := get("/health", ""); code != 200 || body["status"] != "connected" {
		t.Fatalf("/health while connected: %d %v", code, body)
	}
	if code, _ := get("/messages", ""); code != 200 {
		t.Errorf("/messages while connected: %d", code)
	}
}

func TestHealthReportsTheHashOfAGivenBridge(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "bridge.js")
	if err := os.WriteFile(script, []byte("// bridge.js\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("// bridge.js\n"))
	var errs strings.Builder
	if got := reportedHash(Config{ScriptHashOf: script}, &errs); got != hex.EncodeToString(sum[:])[:16] {
		t.Fatalf("scriptHash of %s = %q", script, got)
	}
	// Like the real bridge, an unreadable file means no hash at all.
	if got := reportedHash(Config{ScriptHashOf: filepath.Join(dir, "gone.js")}, &errs); got != "" || !strings.Contains(errs.String(), "gone.js") {
		t.Fatalf("hash of a missing file = %q (stderr %q)", got, errs.String())
	}
	// A folder without every runtime file has no runtime hash either.
	if got := reportedHash(Config{RuntimeHashOf: dir}, &errs); got != "" {
		t.Fatalf("runtime hash of an incomplete folder = %q", got)
	}
}

func TestReadReceiptsFollowTheVariableLikeTheRealBridge(t *testing.T) {
	for v, want := range map[string]bool{"": false, "false": false, "0": false, "no": false, "true": true, "1": true, "YES": true, "on": true, "maybe": false} {
		if got := truthy(v); got != want {
			t.Errorf("truthy(%q) = %v, want %v", v, got, want)
		}
	}
}
