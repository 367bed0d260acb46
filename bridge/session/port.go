package session

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/wa-sidecar/wa-sidecar/procmon"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

// PortBusyError says the bridge's port is taken by something the sidecar
// must leave alone. Its text is the message of the port_busy event, which
// clients read with no flag names added, so it says what to do in words
// that hold however the port was chosen.
type PortBusyError struct {
	Port    int
	Holders []signals.PortHolder // empty when /proc showed no one
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
		"stop that program, or give the bridge another port (retrying with backoff)", e.Port, who)
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
	return ReasonPortBusy, procmonHolder(e.Holders[0])
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

func procmonHolder(h signals.PortHolder) *procmon.Holder {
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

// portHolders finds the processes whose sockets keep the bridge off
// 127.0.0.1:port, the address it binds.
func portHolders(port int) ([]signals.PortHolder, error) {
	return signals.PortHolders(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port)
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
