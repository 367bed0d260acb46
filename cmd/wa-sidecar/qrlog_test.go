package main

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/bridge/qrcode"
)

// pairingOutput is what a bridge prints while it waits for a scan: a drawn
// QR code between its header and the waiting line, and the same code as a
// --pair-json line, indented.
func pairingOutput() string {
	lines := append([]string{"📱 Scan this QR code with WhatsApp on your phone:"}, qrcode.Lines("2@pairing-secret,abc")...)
	return strings.Join(append(lines, "Waiting for scan...", `  {"event":"qr","qr":"2@json-secret,abc"}`, "after the code"), "|")
}

// Away from a terminal, in every format, the pairing code stays out of the
// sidecar's log and output: no row of it, no payload. One record says a
// code is waiting and how to see it, and the other lines are all there.
func TestPairingCodesStayOutOfLogs(t *testing.T) {
	out := filepath.Join(t.TempDir(), "output")
	if err := os.WriteFile(out, []byte(strings.ReplaceAll(pairingOutput(), "|", "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A bridge that prints it on both streams; runToFiles adds
	// "-done-file FILE -hang", so $2 is the file to create when done. (Not
	// the fake bridge's -say, which would put the code in the logged
	// command line.)
	bridge := []string{"sh", "-c", `cat "$0"; cat "$0" >&2; : > "$2"; exec sleep 600`, out}
	for _, mode := range [][]string{
		{"--log-format", "json"},
		{"--log-format", "text"},
		{"--log-format", "json", "--bridge-output", "raw"},
		{"--log-format", "text", "--bridge-output", "raw"},
	} {
		t.Run(strings.Join(mode, " "), func(t *testing.T) {
			args := append(append(append([]string{"run", "--bridge-log", "off"}, mode...), "--"), bridge...)
			stdout, stderr := runToFiles(t, args...)
			all := stdout + stderr
			for _, secret := range []string{"█", "▀", "▄", "pairing-secret", "json-secret"} {
				if strings.Contains(all, secret) {
					t.Fatalf("%q reached the output:\nstdout:\n%s\nstderr:\n%s", secret, stdout, stderr)
				}
			}
			if !strings.Contains(stderr, "run 'wa-sidecar pair' or 'wa-sidecar watch' on a terminal") {
				t.Fatalf("no record says how to see the code:\n%s", stderr)
			}
			for _, line := range []string{"Scan this QR code", "Waiting for scan...", "after the code"} {
				if !strings.Contains(all, line) {
					t.Fatalf("%q is missing:\nstdout:\n%s\nstderr:\n%s", line, stdout, stderr)
				}
			}
		})
	}
}

// Exit records, which /v1/status shows to any reader, keep no line that
// carries a pairing code, indented or not.
func TestStatusTailHasNoPairingCode(t *testing.T) {
	bin, _ := binaries(t)
	state := t.TempDir()
	script := `printf '  {"event":"qr","qr":"2@indented-secret"}\n\t{"event":"qr","qr":"2@tab-secret"}\n{"event":"qr","QR":"2@case-secret"}\nlast words\n'; exit 3`
	cmd := exec.Command(bin, "run", "--bridge-log", "off", "--backoff-initial", "1h", "--backoff-max", "1h", "--", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "WA_SIDECAR_LISTEN=127.0.0.1:0", "WA_SIDECAR_STATE_DIR="+state)
	p := startCmd(t, cmd)
	p.waitLog("bridge failed")
	resp, err := http.Get("http://" + listenOf(t, state) + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "last words") {
		t.Fatalf("no tail in the status: %s", body)
	}
	if strings.Contains(string(body), "secret") {
		t.Fatalf("a pairing code in the status anyone may read: %s", body)
	}
	p.stopOK()
}
