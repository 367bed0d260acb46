package procmon

import (
	"testing"
	"time"
)

func TestSummaryLine(t *testing.T) {
	now := time.Date(2025, 5, 1, 12, 0, 0, 0, time.Local)
	ago := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	code := func(c int) *int { return &c }
	sig := "SIGTERM"
	next := now.Add(1800 * time.Millisecond)
	failed := &ExitRecord{Code: code(1), Class: ClassFailure, At: *ago(2 * time.Second)}
	termed := &ExitRecord{Signal: &sig, ReturnCode: -15, Class: ClassShutdown, At: *ago(5 * time.Minute)}
	notReady := func(st Status) string {
		if st.Details["why"] == nil {
			return ""
		}
		return st.Details["why"].(string)
	}
	tests := []struct {
		name           string
		st             Status
		precise, brief string
	}{
		{"ready", Status{State: StateRunning, Pid: 812, Ready: true, StartedAt: ago(3*time.Minute + 12*time.Second), Restarts: 4, LastExit: termed},
			"bridge ready (pid 812), up 3m12s, 4 restarts, last exit: SIGTERM (normal shutdown) 5m00s ago",
			"bridge ready (pid 812), up 3m, 4 restarts, last exit: SIGTERM (normal shutdown) 5m ago"},
		{"not ready", Status{State: StateRunning, Pid: 812, StartedAt: ago(10 * time.Second)},
			"bridge running (pid 812), not ready yet, up 10s",
			"bridge running (pid 812), not ready yet, up <1m"},
		{"not ready, and a layer says why", Status{State: StateRunning, Pid: 812, StartedAt: ago(10 * time.Second), Details: map[string]any{"why": "not connected"}},
			"bridge running (pid 812), not ready: not connected, up 10s",
			"bridge running (pid 812), not ready: not connected, up <1m"},
		{"hours", Status{State: StateRunning, Pid: 9, Ready: true, StartedAt: ago(2*time.Hour + 5*time.Minute)},
			"bridge ready (pid 9), up 2h5m", "bridge ready (pid 9), up 2h5m"},
		{"days", Status{State: StateRunning, Pid: 9, Ready: true, StartedAt: ago(50 * time.Hour)},
			"bridge ready (pid 9), up 2d2h", "bridge ready (pid 9), up 2d2h"},
		{"whole days", Status{State: StateRunning, Pid: 9, Ready: true, StartedAt: ago(48*time.Hour + 59*time.Minute)},
			"bridge ready (pid 9), up 2d1h", "bridge ready (pid 9), up 2d"},
		{"starting", Status{State: StateStarting, Since: now}, "bridge starting, for 0s", "bridge starting, for <1m"},
		{"backoff", Status{State: StateBackoff, Since: now, Restarts: 2, ConsecutiveFailures: 1, NextStartAt: &next, LastExit: failed},
			"bridge down after exit 1 (failure), next start in 1.8s, 2 restarts",
			"bridge down after exit 1 (failure), next start at " + next.Format(time.TimeOnly) + ", 2 restarts"},
		{"refused", Status{State: StateBackoff, Since: now, Reason: "port_busy", Message: "port 3000 is in use by pid 77 (python3)"},
			"bridge down: port 3000 is in use by pid 77 (python3)", "bridge down: port 3000 is in use by pid 77 (python3)"},
		{"crashloop", Status{State: StateBackoff, Crashloop: true, ConsecutiveFailures: 6, LastExit: failed},
			"bridge crash-looping (6 failures in a row) after exit 1 (failure)",
			"bridge crash-looping (6 failures in a row) after exit 1 (failure)"},
		{"stopping", Status{State: StateStopping, Pid: 812}, "bridge stopping (pid 812)", "bridge stopping (pid 812)"},
		{"stopped", Status{State: StateStopped, Since: *ago(42 * time.Second), Restarts: 1, LastExit: termed},
			"bridge stopped on request, for 42s, 1 restart, last exit: SIGTERM (normal shutdown) 5m00s ago; 'x start' starts it",
			"bridge stopped on request, for <1m, 1 restart, last exit: SIGTERM (normal shutdown) 5m ago; 'x start' starts it"},
		{"given up", Status{State: StateGivenUp, Message: "it failed 4 times in a row, the most allowed"},
			"bridge given up: it failed 4 times in a row, the most allowed", "bridge given up: it failed 4 times in a row, the most allowed"},
		{"parked by a layer above", Status{State: "needs_pairing", Message: "run x pair"},
			"bridge needs pairing: run x pair", "bridge needs pairing: run x pair"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Summary{Name: "bridge", NotReady: notReady, StartHint: "'x start' starts it"}
			if got := s.Line(tt.st, now); got != tt.precise {
				t.Errorf("Line = %q; want %q", got, tt.precise)
			}
			s.Coarse = true
			if got := s.Line(tt.st, now); got != tt.brief {
				t.Errorf("coarse Line = %q; want %q", got, tt.brief)
			}
		})
	}
	if got, want := (Summary{}).Line(Status{State: StateStopped}, now), "child stopped on request"; got != want {
		t.Errorf("zero Summary: %q; want %q", got, want)
	}
}

func TestSummaryNextChange(t *testing.T) {
	now := time.Now()
	at := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	tests := []struct {
		up     time.Duration
		coarse bool
		want   time.Duration
	}{
		{10 * time.Second, true, 50 * time.Second},
		{61 * time.Second, true, 59 * time.Second},
		{25*time.Hour + time.Minute, true, 59 * time.Minute},
		{10*time.Second + 200*time.Millisecond, false, 300 * time.Millisecond},
		{10*time.Second + 700*time.Millisecond, false, 800 * time.Millisecond},
	}
	for _, tt := range tests {
		s := Summary{Coarse: tt.coarse}
		st := Status{State: StateRunning, StartedAt: at(tt.up)}
		got, ok := s.NextChange(st, now)
		if !ok || got != tt.want {
			t.Errorf("NextChange(up %s, coarse %v) = %s, %v; want %s", tt.up, tt.coarse, got, ok, tt.want)
		}
		// The text must really change at that moment, or the timer is wasted.
		if s.Line(st, now.Add(got-time.Nanosecond)) == s.Line(st, now.Add(got)) {
			t.Errorf("up %s: text does not change after %s", tt.up, got)
		}
	}
	if _, ok := (Summary{Coarse: true}).NextChange(Status{State: StateBackoff}, now); ok {
		t.Error("NextChange in backoff: want no timer")
	}
}
