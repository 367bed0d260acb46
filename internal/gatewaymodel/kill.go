package gatewaymodel

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// This file is the gateway's view of other processes. It reads /proc itself,
// rather than sharing wa-sidecar's readers, so that the model keeps the
// gateway's own rules (and its quirks) and cannot inherit a bug it is meant
// to catch.

// killByPidfile is the gateway's clean-up of a bridge recorded by an earlier
// run: it SIGTERMs the pid in bridge.pid only while that pid still names the
// recorded process, then removes the file. It returns the pids it signalled.
func killByPidfile(session string, newer bool, logf func(string, ...any)) []int {
	path := filepath.Join(session, "bridge.pid")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	defer func() {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			logf("gateway: %v", err)
		}
	}()
	pf, ok := parsePidfile(b, newer)
	if !ok {
		return nil
	}
	if !pidIsBridge(pf, session) {
		if pidExists(pf.pid) {
			logf("gateway: pid %d in bridge.pid is some other process now; not signalling it", pf.pid)
		}
		return nil
	}
	if !signalable(pf.pid, logf) || unix.Kill(pf.pid, unix.SIGTERM) != nil {
		return nil
	}
	logf("gateway: SIGTERM to pid %d from bridge.pid", pf.pid)
	return []int{pf.pid}
}

// pidfile is bridge.pid's content: a pid and, unless it is a legacy
// one-line file, the process's start time.
type pidfile struct {
	pid      int
	start    int64
	hasStart bool
}

// parsePidfile reads bridge.pid as the gateway does: text with universal
// newlines, line 1 an integer pid, line 2 (when not blank) an integer start
// time. ok false is a file the gateway deletes without signalling anyone.
// The older gateway reads plain UTF-8, so a byte-order mark spoils line 1;
// the newer one drops it.
func parsePidfile(b []byte, newer bool) (pf pidfile, ok bool) {
	if !utf8.Valid(b) {
		return pf, false
	}
	if newer {
		b = bytes.TrimPrefix(b, []byte("\uFEFF"))
	}
	text := strings.ReplaceAll(strings.ReplaceAll(string(b), "\r\n", "\n"), "\r", "\n")
	lines := strings.Split(text, "\n")
	pid, ok := pyInt(lines[0])
	if !ok || pid != int64(int(pid)) {
		return pf, false
	}
	pf.pid = int(pid)
	if len(lines) > 1 && strings.TrimSpace(lines[1]) != "" {
		if pf.start, ok = pyInt(lines[1]); !ok {
			return pidfile{}, false
		}
		pf.hasStart = true
	}
	return pf, true
}

// pyInt parses an integer as Python's int() of a string does, for the
// forms a pid file could hold: surrounding white space, a sign, and
// underscores between digits.
func pyInt(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	sign := ""
	if s != "" && (s[0] == '+' || s[0] == '-') {
		sign, s = s[:1], s[1:]
	}
	if s == "" || s[0] == '_' || s[len(s)-1] == '_' || strings.Contains(s, "__") {
		return 0, false
	}
	digits := strings.ReplaceAll(s, "_", "")
	for _, r := range digits {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(sign+digits, 10, 64)
	return n, err == nil
}

// pidIsBridge is the gateway's identity check before signalling a recorded
// pid: the process must exist (a zombie does not) and have the recorded
// start time; a legacy file without one needs a command line that holds
// "node" and the session path.
func pidIsBridge(pf pidfile, session string) bool {
	if !pidExists(pf.pid) {
		return false
	}
	if pf.hasStart {
		st, ok := startTime(pf.pid)
		return ok && st == pf.start
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pf.pid) + "/cmdline")
	cmdline := strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
	if err != nil || cmdline == "" {
		return false
	}
	return strings.Contains(cmdline, "node") && strings.Contains(cmdline, pyPath(session))
}

// pidExists is the gateway's liveness test (psutil's): a process, not a
// thread of one, that is not a zombie.
func pidExists(pid int) bool {
	if pid <= 0 {
		return false
	}
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	defer f.Close()
	tgid, zombie := -1, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		v = strings.TrimSpace(v)
		switch k {
		case "State":
			zombie = strings.HasPrefix(v, "Z") || strings.HasPrefix(v, "X")
		case "Tgid":
			tgid, _ = strconv.Atoi(v)
		}
	}
	return tgid == pid && !zombie
}

// startTime is the gateway's reading of a process's start time: the 22nd
// white-space-separated word of /proc/PID/stat. It splits the whole line,
// so a command name with spaces in it shifts the word it takes; the gateway
// then records and compares that other field, and so does the model.
func startTime(pid int) (int64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 22 {
		return 0, false
	}
	n, err := strconv.ParseInt(f[21], 10, 64)
	return n, err == nil
}

// writePidfile records the gateway's own bridge: its pid and, when it can
// be read, its start time on a second line. Errors are ignored, as there.
func writePidfile(session string, pid int) {
	text := strconv.Itoa(pid)
	if st, ok := startTime(pid); ok {
		text += "\n" + strconv.FormatInt(st, 10)
	}
	_ = os.WriteFile(filepath.Join(session, "bridge.pid"), []byte(text), 0o666)
}

// pyPath is str(pathlib.Path(p)): repeated and trailing slashes and "."
// parts dropped, ".." kept. The gateway looks for it in a command line.
func pyPath(p string) string {
	if p == "" {
		return "."
	}
	lead := ""
	switch {
	case strings.HasPrefix(p, "//") && !strings.HasPrefix(p, "///"):
		lead = "//"
	case strings.HasPrefix(p, "/"):
		lead = "/"
	}
	var parts []string
	for _, part := range strings.Split(p, "/") {
		if part != "" && part != "." {
			parts = append(parts, part)
		}
	}
	out := lead + strings.Join(parts, "/")
	if out == "" {
		return "."
	}
	return out
}

// killListeners SIGTERMs every process listening on TCP port, on any
// address, as the gateway does with lsof or ss. The newer gateway spares
// those that do not look like node. It returns the pids it signalled.
func killListeners(port int, newer bool, logf func(string, ...any)) []int {
	var killed []int
	for _, pid := range listenerPIDs(port) {
		if newer && !looksLikeNode(pid) {
			logf("gateway: pid %d listens on port %d but is not node; not signalling it", pid, port)
			continue
		}
		if !signalable(pid, logf) || unix.Kill(pid, unix.SIGTERM) != nil {
			continue
		}
		logf("gateway: SIGTERM to pid %d listening on port %d", pid, port)
		killed = append(killed, pid)
	}
	return killed
}

// signalable keeps the model from signalling the process it runs in, which
// the gateway would do if it held its own bridge port.
func signalable(pid int, logf func(string, ...any)) bool {
	if pid <= 0 || pid == os.Getpid() {
		logf("gateway model: not signalling pid %d, this test process", pid)
		return false
	}
	return true
}

// looksLikeNode is the newer gateway's check before signalling a port
// listener: its name or its argv[0] (up to the first space) contains
// "node", in any case.
func looksLikeNode(pid int) bool {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return false
	}
	if i, j := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')'); i >= 0 && j > i &&
		strings.Contains(strings.ToLower(string(stat[i+1:j])), "node") {
		return true
	}
	cmdline, err := os.ReadFile(dir + "/cmdline")
	if err != nil {
		return false
	}
	argv := strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")
	argv0, _, _ := strings.Cut(argv, " ")
	return strings.Contains(strings.ToLower(argv0), "node")
}

// listenerPIDs lists, in order, the processes holding a TCP socket that
// listens on port (IPv4 or IPv6, any address): what `lsof -ti tcp:PORT
// -sTCP:LISTEN` or `ss -ltnHp 'sport = :PORT'` print. Like them, it sees only
// the processes whose fds this user may read. Clients are never listed.
func listenerPIDs(port int) []int {
	inodes := map[uint64]bool{}
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, ino := range listeningInodes(b, port) {
			inodes[ino] = true
		}
	}
	if len(inodes) == 0 {
		return nil
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		if holdsSocket(pid, inodes) {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

func holdsSocket(pid int, inodes map[uint64]bool) bool {
	fdDir := "/proc/" + strconv.Itoa(pid) + "/fd"
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		link, err := os.Readlink(fdDir + "/" + fd.Name())
		if err != nil {
			continue
		}
		s, ok := strings.CutPrefix(link, "socket:[")
		if !ok {
			continue
		}
		if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil && inodes[ino] {
			return true
		}
	}
	return false
}

// tcpListen is the state code of a listening socket in /proc/net/tcp.
const tcpListen = "0A"

// listeningInodes returns the inodes of the sockets in a /proc/net/tcp or
// tcp6 table that listen on port. Lines it cannot read are skipped.
func listeningInodes(table []byte, port int) []uint64 {
	var out []uint64
	for i, line := range strings.Split(string(table), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 10 || f[3] != tcpListen {
			continue
		}
		colon := strings.LastIndexByte(f[1], ':')
		if colon < 0 {
			continue
		}
		p, err := strconv.ParseUint(f[1][colon+1:], 16, 16)
		if err != nil || int(p) != port {
			continue
		}
		ino, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil || ino == 0 {
			continue
		}
		out = append(out, ino)
	}
	return out
}
