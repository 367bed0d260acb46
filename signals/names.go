// Package signals holds what a signal means to wa-sidecar and all of its
// Linux process plumbing: spawning with a parent-death signal, process
// groups, reaping, reading /proc (the one parser of /proc/PID/stat),
// checks that a pid is still the process the sidecar started, finding the
// processes a child left behind, and terminating processes the sidecar did
// not spawn through pidfds.
package signals

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Parse turns "TERM", "SIGTERM", "sigterm" or "15" into a signal. It refuses
// names it does not know and numbers outside the valid range, so a typo in a
// flag is reported instead of silently sending signal 0.
func Parse(s string) (syscall.Signal, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	if t == "" {
		return 0, fmt.Errorf("empty signal name; use a name such as TERM or a number such as 15")
	}
	if n, err := strconv.Atoi(t); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("signal number %d is out of range 1-64", n)
		}
		return syscall.Signal(n), nil
	}
	if !strings.HasPrefix(t, "SIG") {
		t = "SIG" + t
	}
	if sig := unix.SignalNum(t); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q; use a name such as TERM, INT, HUP or KILL", s)
}

// Name returns the conventional name of sig, such as "SIGTERM". Signals
// without a name (real-time signals) come back as "SIG38" and so on.
func Name(sig syscall.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return "SIG" + strconv.Itoa(int(sig))
}

// Set is a set of signals, such as the ones that count as a normal shutdown.
type Set map[syscall.Signal]bool

// ParseSet parses a comma-separated list like "TERM,INT,KILL".
func ParseSet(list string) (Set, error) {
	set := Set{}
	for _, part := range strings.Split(list, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		sig, err := Parse(part)
		if err != nil {
			return nil, err
		}
		set[sig] = true
	}
	return set, nil
}

// Has reports whether sig is in the set.
func (s Set) Has(sig syscall.Signal) bool { return s[sig] }

// String lists the set as comma-separated short names in numeric order.
func (s Set) String() string {
	sigs := make([]int, 0, len(s))
	for sig := range s {
		sigs = append(sigs, int(sig))
	}
	sort.Ints(sigs)
	names := make([]string, len(sigs))
	for i, sig := range sigs {
		names[i] = strings.TrimPrefix(Name(syscall.Signal(sig)), "SIG")
	}
	return strings.Join(names, ",")
}
