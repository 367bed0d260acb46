package gatewaymodel

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
)

func TestKillByPidfile(t *testing.T) {
	for _, tc := range []struct {
		name     string
		node     bool   // the target runs as "node"
		session  string // the --session in its command line; empty is the gateway's
		content  string // bridge.pid, with %[1]d the pid and %[2]d the start time
		newer    bool
		wantKill bool
	}{
		{name: "pid and start time", content: "%[1]d\n%[2]d", wantKill: true},
		{name: "start time differs", content: "%[1]d\n%[2]d1"},
		{name: "CRLF lines", content: "%[1]d\r\n%[2]d\r\n", wantKill: true},
		{name: "blank second line is legacy", node: true, content: "%[1]d\n  \n", wantKill: true},
		{name: "legacy, bridge with the session", node: true, content: "%[1]d", wantKill: true},
		{name: "legacy, another program", content: "%[1]d"},
		{name: "legacy, bridge with another session", node: true, session: "/elsewhere", content: "%[1]d"},
		{name: "start time not a number", content: "%[1]d\nsoon"},
		{name: "byte-order mark, older", content: "\uFEFF%[1]d\n%[2]d"},
		{name: "byte-order mark, newer", content: "\uFEFF%[1]d\n%[2]d", newer: true, wantKill: true},
		{name: "garbage", content: "bridge"},
		{name: "pid 0", content: "0\n%[2]d"},
		{name: "negative pid", content: "-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t)
			exe := testBinary(t)
			if tc.node {
				exe = nodeBinary(t)
			}
			session := tc.session
			if session == "" {
				session = s.session
			}
			f := startFake(t, exe, proctest.FreePort(t), "--session", session)
			if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", f.pid())); !tc.node && bytes.Contains(cmdline, []byte("node")) {
				t.Fatalf("the target's command line %q holds \"node\"; the test needs one that does not", cmdline)
			}
			st, ok := startTime(f.pid())
			if !ok {
				t.Fatal("no start time for the fake bridge")
			}
			write(t, s.pidfile(), fmt.Sprintf(tc.content, f.pid(), st))

			killed := killByPidfile(s.session, tc.newer, t.Logf)
			if _, err := os.Stat(s.pidfile()); !os.IsNotExist(err) {
				t.Fatalf("bridge.pid still there (%v); the gateway always removes it", err)
			}
			if !tc.wantKill {
				if killed != nil || !f.alive() {
					t.Fatalf("killed %v, alive %v: want the process spared", killed, f.alive())
				}
				return
			}
			if !slices.Equal(killed, []int{f.pid()}) {
				t.Fatalf("killed %v, want [%d]", killed, f.pid())
			}
			requireTerminated(t, f)
		})
	}
}

// A zombie is not a process to the gateway, whatever its start time.
func TestKillByPidfileSparesZombie(t *testing.T) {
	s := newSetup(t)
	cmd := exec.Command("/bin/true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	pid := cmd.Process.Pid
	waitFor(t, "a zombie", func() bool { st, _, _ := proctest.State(pid); return st == "Z" })
	writePidfile(s.session, pid)
	if killed := killByPidfile(s.session, false, t.Logf); killed != nil {
		t.Fatalf("killed %v, want nothing", killed)
	}
}

func TestListenerPIDs(t *testing.T) {
	port := proctest.FreePort(t)
	f := startFake(t, testBinary(t), port)
	// A client of the port is not a listener.
	conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := listenerPIDs(port); !slices.Equal(got, []int{f.pid()}) {
		t.Fatalf("listenerPIDs = %v, want [%d]", got, f.pid())
	}
}

// The model never signals the process it runs in, even as a listener.
func TestKillListenersSparesThisProcess(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	if got := listenerPIDs(port); !slices.Equal(got, []int{os.Getpid()}) {
		t.Fatalf("listenerPIDs = %v, want this process %d, on IPv6", got, os.Getpid())
	}
	if killed := killListeners(port, false, t.Logf); killed != nil {
		t.Fatalf("killed %v", killed)
	}
}

const procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0BB8 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0BB9 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
   3: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 0 1 0000000000000000 100 0 0 10 0
   4: garbage
`

const procNetTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 5151 1 0000000000000000 100 0 0 10 0
`

func TestListeningInodes(t *testing.T) {
	for _, tc := range []struct {
		table string
		port  int
		want  []uint64
	}{
		{procNetTCP, 3000, []uint64{4242}}, // not the established socket, nor inode 0
		{procNetTCP, 3001, []uint64{4444}},
		{procNetTCP, 3002, nil},
		{procNetTCP6, 3000, []uint64{5151}},
		{"", 3000, nil},
	} {
		if got := listeningInodes([]byte(tc.table), tc.port); !slices.Equal(got, tc.want) {
			t.Errorf("port %d: got %v, want %v", tc.port, got, tc.want)
		}
	}
}

func TestParsePidfile(t *testing.T) {
	for _, tc := range []struct {
		in    string
		newer bool
		want  pidfile
		ok    bool
	}{
		{"123\n456", false, pidfile{123, 456, true}, true},
		{" 123 \n 456 \n", false, pidfile{123, 456, true}, true},
		{"123", false, pidfile{pid: 123}, true},
		{"123\n", false, pidfile{pid: 123}, true},
		{"123\r456", false, pidfile{123, 456, true}, true},
		{"+1_23\n4_5_6", false, pidfile{123, 456, true}, true},
		{"1__23", false, pidfile{}, false},
		{"_123", false, pidfile{}, false},
		{"", false, pidfile{}, false},
		{"12 3", false, pidfile{}, false},
		{"123\nx", false, pidfile{}, false},
		{"\uFEFF123", false, pidfile{}, false},
		{"\uFEFF123", true, pidfile{pid: 123}, true},
		{"\xff123", true, pidfile{}, false},
		{"99999999999999999999", false, pidfile{}, false},
	} {
		got, ok := parsePidfile([]byte(tc.in), tc.newer)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parsePidfile(%q, newer=%v) = %+v, %v; want %+v, %v", tc.in, tc.newer, got, ok, tc.want, tc.ok)
		}
	}
}

func TestPyPath(t *testing.T) {
	for in, want := range map[string]string{
		"/a/b":      "/a/b",
		"/a/b/":     "/a/b",
		"/a//b/./c": "/a/b/c",
		"/a/../b":   "/a/../b",
		"//a":       "//a",
		"///a":      "/a",
		"a/b":       "a/b",
		"./a":       "a",
		"":          ".",
		"/":         "/",
	} {
		if got := pyPath(in); got != want {
			t.Errorf("pyPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParsePidfile(f *testing.F) {
	for _, s := range []string{"123\n456", "123", "\uFEFF1\r\n2", "+1_0\n-3", ""} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, b []byte, newer bool) {
		pf, ok := parsePidfile(b, newer)
		if !ok {
			return
		}
		text := strconv.Itoa(pf.pid)
		if pf.hasStart {
			text += "\n" + strconv.FormatInt(pf.start, 10)
		}
		if again, ok := parsePidfile([]byte(text), newer); !ok || again != pf {
			t.Fatalf("%q parsed as %+v, which written as %q parses as %+v, %v", b, pf, text, again, ok)
		}
	})
}

func FuzzListeningInodes(f *testing.F) {
	f.Add([]byte(procNetTCP), 3000)
	f.Add([]byte(procNetTCP6), 3000)
	f.Fuzz(func(t *testing.T, table []byte, port int) {
		listeningInodes(table, port)
	})
}
