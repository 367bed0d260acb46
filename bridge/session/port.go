package session

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/procmon"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

// Holder is a process that has a socket on the bridge's port.
type Holder struct {
	signals.Identity
	Name string // command name from /proc/PID/comm
	UID  int    // owner of the socket
}

func (h Holder) String() string {
	if h.Pid == 0 {
		return fmt.Sprintf("a process of uid %d that wa-sidecar cannot see", h.UID)
	}
	return fmt.Sprintf("pid %d (%s)", h.Pid, h.Name)
}

// PortBusyError says the bridge's port is taken by something the sidecar
// must leave alone.
type PortBusyError struct {
	Port    int
	Holders []Holder // empty when /proc showed no one
}

func (e *PortBusyError) Error() string {
	who := "a process wa-sidecar could not find in /proc"
	if len(e.Holders) > 0 {
		names := make([]string, len(e.Holders))
		for i, h := range e.Holders {
			names[i] = h.String()
		}
		who = strings.Join(names, ", ")
	}
	return fmt.Sprintf("port %d on 127.0.0.1 is in use by %s, which wa-sidecar did not start and will not signal; "+
		"stop that program or choose another port with --port (retrying with backoff)", e.Port, who)
}

// ReasonPortBusy is the status reason while the bridge's port is held by
// a process the sidecar must leave alone.
const ReasonPortBusy = "port_busy"

// Refusal gives the monitor the reason of the refused spawn and the first
// holder of the port, for its status.
func (e *PortBusyError) Refusal() (string, *procmon.Holder) {
	if len(e.Holders) == 0 {
		return ReasonPortBusy, nil
	}
	return ReasonPortBusy, e.Holders[0].procmonHolder()
}

// CauseEvent is the port_busy event, which the monitor emits before the
// spawn_failed this error causes.
func (e *PortBusyError) CauseEvent() procmon.Event {
	list := make([]map[string]any, len(e.Holders))
	for i, h := range e.Holders {
		list[i] = map[string]any{"pid": h.Pid, "name": h.Name, "uid": h.UID}
	}
	data := map[string]any{"port": e.Port, "holders": list}
	if len(e.Holders) > 0 {
		// Not "pid": that is the event's own field, and the feed drops a
		// layer's field of that name.
		data["holder_pid"], data["holder_name"] = e.Holders[0].Pid, e.Holders[0].Name
	}
	return procmon.Event{Kind: EventPortBusy, Message: e.Error(), Data: data}
}

func (h Holder) procmonHolder() *procmon.Holder {
	return &procmon.Holder{Pid: h.Pid, Name: h.Name}
}

// portFree tries the bind the bridge is about to do. Go sets SO_REUSEADDR
// on listeners just as Node does, so a port only held by connections in
// TIME_WAIT counts as free here exactly when it is free for the bridge.
func portFree(port int) (bool, error) {
	ln, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err == nil {
		ln.Close()
		return true, nil
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return false, nil
	}
	return false, fmt.Errorf("check port %d: %w", port, err)
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
// the accepted ones on the port included, do not: Node binds with
// SO_REUSEADDR, as Go does.
const (
	tcpClose  = 0x07
	tcpListen = 0x0A
)

// holdsPort says whether a socket in this state keeps a new listener off
// its port.
func (e socketEntry) holdsPort() bool { return e.State == tcpListen || e.State == tcpClose }

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

// blocksLoopback reports whether a socket bound to e.Addr keeps the bridge
// from binding 127.0.0.1 on the same port.
func (e socketEntry) blocksLoopback() bool {
	a := e.Addr.Unmap()
	return a == netip.AddrFrom4([4]byte{127, 0, 0, 1}) || a.IsUnspecified()
}

// PortHolders finds the processes with a socket that blocks 127.0.0.1:port,
// from /proc alone (lsof is often not installed in containers). A socket
// whose owner it cannot see (another user's, without privileges) is
// returned with Pid 0 and its uid.
func PortHolders(port int) ([]Holder, error) {
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
			if e.Port == port && e.Inode != 0 && e.holdsPort() && e.blocksLoopback() {
				inodes[e.Inode] = e.UID
			}
		}
	}
	if len(inodes) == 0 {
		return nil, nil
	}
	seen := map[uint64]bool{}
	var out []Holder
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
			id, err := signals.IdentityOf(pid)
			if err != nil {
				break // it just exited
			}
			out = append(out, Holder{Identity: id, Name: signals.ProcessName(pid), UID: uid})
			added = true
		}
	}
	for ino, uid := range inodes {
		if !seen[ino] {
			out = append(out, Holder{UID: uid})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pid < out[j].Pid })
	return out, nil
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

// leftoverGroup lists what is left of the process group the recorded
// bridge led: the bridge itself if it still runs, and every process whose
// process group is the bridge's pid and that started no earlier than it.
// The bridge was spawned as the leader of its own group, so its children
// (node under npm or sh) are in that group and outlive it when only the
// bridge got the parent-death signal. Linux never hands out a pid while a
// process group of that number exists, so as long as any member is left
// the group is the old one; once the pid itself is another process's, the
// group number may be that one's and nothing is returned.
func leftoverGroup(leader signals.Identity) []signals.Identity {
	if leader.Pid <= 1 {
		return nil
	}
	// Cheap check first: a group with no members left is the common case.
	if err := unix.Kill(-leader.Pid, 0); err != nil {
		if leader.Alive() {
			return []signals.Identity{leader}
		}
		return nil
	}
	if st, err := signals.StartTime(leader.Pid); err == nil && st != leader.StartTime {
		return nil // the pid is another process's now, and so may be the group
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		if leader.Alive() {
			return []signals.Identity{leader}
		}
		return nil
	}
	var out []signals.Identity
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		st, err := signals.ReadStat(pid)
		if err != nil {
			continue
		}
		pgrp, start := st.Pgrp, st.StartTime
		if pgrp != leader.Pid || start < leader.StartTime || (pid == leader.Pid && start != leader.StartTime) {
			continue
		}
		id := signals.Identity{Pid: pid, StartTime: start}
		if pid == leader.Pid {
			out = append([]signals.Identity{id}, out...) // the bridge first
			continue
		}
		out = append(out, id)
	}
	return out
}
