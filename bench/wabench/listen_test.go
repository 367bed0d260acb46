package main

import "testing"

// exitedPid takes the pid of an exited event and of nothing else: not of
// another event, nor of an exit record nested in a status.
func TestExitedPid(t *testing.T) {
	for _, c := range []struct {
		msg string
		pid int
		ok  bool
	}{
		{`{"type":"event","seq":42,"at":"2026-11-27T10:03:13.25Z","event":"exited","pid":901,"code":1}`, 901, true},
		{`{"type":"event","seq":18446744073709551615,"at":"2026-11-27T10:03:13.123456789Z","event":"exited","pid":4194304,"status":{}}`, 4194304, true},
		{`{"type":"event","seq":43,"at":"2026-11-27T10:03:13.25Z","event":"backoff","delay_ms":0,"status":{"last_exit":{"event":"exited","pid":901}}}`, 0, false},
		{`{"type":"hello","protocol":1,"status":{"event":"exited","pid":901}}`, 0, false},
		{`{"type":"event","seq":44,"at":"2026-11-27T10:03:13.25Z","event":"exited","code":1}`, 0, false},
		{`{"type":"event","seq":45,"at":"2026-11-27T10:03:13.25Z","event":"exited","pid":}`, 0, false},
	} {
		pid, ok := exitedPid([]byte(c.msg))
		if pid != c.pid || ok != c.ok {
			t.Errorf("exitedPid(%s) = %d, %v; want %d, %v", c.msg, pid, ok, c.pid, c.ok)
		}
	}
}
