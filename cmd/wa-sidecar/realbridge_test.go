package main

import (
	"bufio"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
)

// realBridgeEnv names a folder holding the real Hermes bridge (bridge.js
// and its node_modules, e.g. from `wa-sidecar prepare-bridge --from
// <hermes-agent>/scripts/whatsapp-bridge DIR`). The benchmark below runs
// it only then, since neither the bridge nor Node.js is part of this repo.
const realBridgeEnv = "WA_SIDECAR_REAL_BRIDGE"

// BenchmarkRealBridge runs the real bridge.js under the sidecar (WhatsApp
// itself is out of reach, so it stays disconnected) and reports what the
// gateway's race for the port depends on:
//
//   - node-alone-ms: the floor, measured in the same run: node running
//     bridge.js by itself, from exec to answering GET /health;
//
//   - start-ms: sidecar exec to the bridge answering GET /health;
//
//   - respawn-ms: the bridge SIGTERMed from outside (as the gateway frees
//     the port) to the new bridge answering /health. The gateway spawns
//     its own bridge 1 s after its SIGTERM, and that one needs as long to
//     listen, so the sidecar keeps the port when this is below 1000 plus
//     the node start time;
//
//   - node-rss-MiB: the bridge's resident memory once listening;
//
//   - stop-ms: SIGTERM to the sidecar until it has exited, bridge reaped.
//
//     WA_SIDECAR_REAL_BRIDGE=/path/to/whatsapp-bridge go test ./cmd/wa-sidecar -run '^$' -bench RealBridge -benchtime 3x
func BenchmarkRealBridge(b *testing.B) {
	dir := os.Getenv(realBridgeEnv)
	if dir == "" {
		b.Skip("set " + realBridgeEnv + " to a folder with the real bridge.js and its node_modules")
	}
	script := filepath.Join(dir, "bridge.js")
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		b.Fatalf("%s has no node_modules: run wa-sidecar prepare-bridge %s first", dir, dir)
	}
	if _, err := exec.LookPath("node"); err != nil {
		b.Skip("node is not installed")
	}
	bin, _ := binaries(&testing.T{})
	node, _ := exec.LookPath("node")
	var floor, start, respawn, stop, rss float64
	for i := 0; i < b.N; i++ {
		// The floor, in the same run: node alone, from exec to /health.
		fport := proctest.FreePort(b)
		alone := exec.Command(node, script, "--port", strconv.Itoa(fport), "--session", b.TempDir())
		tf := time.Now()
		if err := alone.Start(); err != nil {
			b.Fatal(err)
		}
		waitHealth(b, fport, 0)
		floor += float64(time.Since(tf).Microseconds()) / 1000
		alone.Process.Kill()
		alone.Wait()

		home := b.TempDir()
		port := proctest.FreePort(b)
		listen := "127.0.0.1:" + strconv.Itoa(proctest.FreePort(b))
		cmd := exec.Command(bin, "run", "--bridge-script", script, "--port", strconv.Itoa(port), "--listen", listen,
			"--state-dir", b.TempDir(), "--bridge-output", "off", "--log-format", "json")
		cmd.Env = append(os.Environ(), "HERMES_HOME="+home)
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		first := waitHealth(b, port, 0)
		start += float64(time.Since(t0).Microseconds()) / 1000
		rss += vmRSS(first) / 1024

		t1 := time.Now()
		if err := syscall.Kill(first, syscall.SIGTERM); err != nil {
			b.Fatal(err)
		}
		waitHealth(b, port, first)
		respawn += float64(time.Since(t1).Microseconds()) / 1000

		t2 := time.Now()
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			b.Fatalf("sidecar: %v", err)
		}
		stop += float64(time.Since(t2).Microseconds()) / 1000
	}
	n := float64(b.N)
	b.ReportMetric(floor/n, "node-alone-ms")
	b.ReportMetric(start/n, "start-ms")
	b.ReportMetric(respawn/n, "respawn-ms")
	b.ReportMetric(rss/n, "node-rss-MiB")
	b.ReportMetric(stop/n, "stop-ms")
}

// waitHealth waits until a bridge other than not answers GET /health on
// port, and returns its pid (the process listening there).
func waitHealth(b *testing.B, port, not int) int {
	deadline := time.Now().Add(60 * time.Second)
	c := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/health")
		if err == nil {
			resp.Body.Close()
			if pid := listenerPid(port); pid != 0 && pid != not {
				return pid
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.Fatalf("no bridge answered on port %d within 60 s", port)
	return 0
}

// listenerPid finds the node process with port on its command line.
func listenerPid(port int) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		for i, a := range args {
			if a == "--port" && i+1 < len(args) && args[i+1] == strconv.Itoa(port) && strings.HasSuffix(args[0], "node") {
				return pid
			}
		}
	}
	return 0
}

// vmRSS is a process's resident memory in KiB.
func vmRSS(pid int) float64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
			return kb
		}
	}
	return 0
}
