package signals

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
)

// PortHolder is a process that has a socket keeping a listener off a TCP
// port.
type PortHolder struct {
	Identity        // zero when the socket's owner cannot be seen
	Name     string // command name from /proc/PID/comm
	UID      int    // owner of the socket
}

// String names the holder as a message to a person does: "pid 812
// (python3)".
func (h PortHolder) String() string {
	if h.Pid == 0 {
		return fmt.Sprintf("a process of uid %d that wa-sidecar cannot see", h.UID)
	}
	return fmt.Sprintf("pid %d (%s)", h.Pid, h.Name)
}

// PortHolders finds the processes with a socket that keeps a listener
// off ip:port, from /proc alone (lsof is often not installed in
// containers): one bound to ip itself or to the unspecified address, or
// to any address when ip is unspecified. A socket whose owner it cannot
// see (another user's, without privileges) is returned with Pid 0 and its
// uid. The holders are in order of pid, a process once however many
// sockets it holds.
func PortHolders(ip netip.Addr, port int) ([]PortHolder, error) {
	inodes := map[uint64]int{} // inode -> uid
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(file)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // no IPv6 in this kernel
			}
			return nil, fmt.Errorf("read %s: %w", file, err)
		}
		for _, e := range parseProcNet(data) {
			if e.Port == port && e.Inode != 0 && e.holdsPort() && e.blocks(ip) {
				inodes[e.Inode] = e.UID
			}
		}
	}
	if len(inodes) == 0 {
		return nil, nil
	}
	seen := map[uint64]bool{}
	var out []PortHolder
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fdDir := "/proc/" + p.Name() + "/fd"
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue // gone, or not ours to look into
		}
		added := false
		for _, fd := range fds {
			link, err := os.Readlink(fdDir + "/" + fd.Name())
			if err != nil {
				continue
			}
			ino, ok := socketInode(link)
			if !ok {
				continue
			}
			uid, hit := inodes[ino]
			if !hit {
				continue
			}
			// Every socket of the process counts as seen (it may hold an
			// IPv4 and an IPv6 one), but the process is one holder.
			seen[ino] = true
			if added {
				continue
			}
			id, err := IdentityOf(pid)
			if err != nil {
				break // it just exited
			}
			out = append(out, PortHolder{Identity: id, Name: ProcessName(pid), UID: uid})
			added = true
		}
	}
	for ino, uid := range inodes {
		if !seen[ino] {
			out = append(out, PortHolder{UID: uid})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pid < out[j].Pid })
	return out, nil
}

// socketEntry is one line of /proc/net/tcp or /proc/net/tcp6.
type socketEntry struct {
	Addr  netip.Addr
	Port  int
	State uint8
	UID   int
	Inode uint64
}

// The socket states that hold a port against a new listener: a listening
// socket, and one bound but not (yet) listening or connected. Connections,
// the accepted ones on the port included, do not: Go and Node both bind
// with SO_REUSEADDR.
const (
	tcpClose  = 0x07
	tcpListen = 0x0A
)

// holdsPort says whether a socket in this state keeps a new listener off
// its port.
func (e socketEntry) holdsPort() bool { return e.State == tcpListen || e.State == tcpClose }

// blocks says whether a socket bound to e.Addr keeps a listener off ip on
// the same port.
func (e socketEntry) blocks(ip netip.Addr) bool {
	a := e.Addr.Unmap()
	return a.IsUnspecified() || !ip.IsValid() || ip.Unmap().IsUnspecified() || a == ip.Unmap()
}

// parseProcNet reads /proc/net/tcp or tcp6. Lines it cannot read are
// skipped: a kernel that adds columns must not blind the port check.
func parseProcNet(data []byte) []socketEntry {
	var out []socketEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 512), 64<<10)
	first := true
	for sc.Scan() {
		if first { // the header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		addr, port, ok := parseHexAddr(f[1])
		if !ok {
			continue
		}
		st, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil {
			continue
		}
		uid, err := strconv.Atoi(f[7])
		if err != nil || uid < 0 {
			continue
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			continue
		}
		out = append(out, socketEntry{Addr: addr, Port: port, State: uint8(st), UID: uid, Inode: inode})
	}
	return out
}

// parseHexAddr reads "0100007F:0BB8": the address as the kernel's 32-bit
// words in host order (little-endian here), then the port.
func parseHexAddr(s string) (netip.Addr, int, bool) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.Addr{}, 0, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.Addr{}, 0, false
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.Addr{}, 0, false
	}
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(raw[i:], binary.LittleEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(raw)
	return addr, int(port), true
}

// socketInode reads the inode out of an fd link such as "socket:[40171]".
func socketInode(link string) (uint64, bool) {
	rest, ok := strings.CutPrefix(link, "socket:[")
	if !ok {
		return 0, false
	}
	n, ok := strings.CutSuffix(rest, "]")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(n, 10, 64)
	return ino, err == nil
}
