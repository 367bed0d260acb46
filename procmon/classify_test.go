package procmon

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/wa-sidecar/wa-sidecar/signals"
)

func exitStatus(code int) syscall.WaitStatus             { return syscall.WaitStatus(code << 8) }
func signalStatus(sig syscall.Signal) syscall.WaitStatus { return syscall.WaitStatus(sig) }

func TestClassify(t *testing.T) {
	normal, _ := signals.ParseSet("TERM,INT,KILL")
	cases := []struct {
		name      string
		ws        syscall.WaitStatus
		requested bool
		want      Class
	}{
		{"exit 1", exitStatus(1), false, ClassFailure},
		{"unrequested exit 0", exitStatus(0), false, ClassFailure},
		{"SIGTERM", signalStatus(syscall.SIGTERM), false, ClassShutdown},
		{"SIGINT", signalStatus(syscall.SIGINT), false, ClassShutdown},
		{"SIGKILL", signalStatus(syscall.SIGKILL), false, ClassShutdown},
		{"SIGSEGV", signalStatus(syscall.SIGSEGV), false, ClassFailure},
		{"SIGABRT with core", signalStatus(syscall.SIGABRT) | 0x80, false, ClassFailure},
		{"SIGHUP not in set", signalStatus(syscall.SIGHUP), false, ClassFailure},
		{"wrapper 143", exitStatus(143), false, ClassShutdown},
		{"wrapper 130", exitStatus(130), false, ClassShutdown},
		{"wrapper 137", exitStatus(137), false, ClassShutdown},
		{"wrapper 139 (SEGV)", exitStatus(139), false, ClassFailure},
		{"exit 128", exitStatus(128), false, ClassFailure},
		{"exit 255", exitStatus(255), false, ClassFailure},
		{"requested SIGKILL", signalStatus(syscall.SIGKILL), true, ClassRequested},
		{"requested exit 1", exitStatus(1), true, ClassRequested},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Classify(c.ws, normal, c.requested); got != c.want {
				t.Fatalf("Classify(%#x) = %s, want %s", uint32(c.ws), got, c.want)
			}
		})
	}
	// A custom set moves a signal from failure to shutdown and back.
	hup, _ := signals.ParseSet("HUP")
	if got := Classify(signalStatus(syscall.SIGHUP), hup, false); got != ClassShutdown {
		t.Fatalf("SIGHUP with set HUP = %s", got)
	}
	if got := Classify(signalStatus(syscall.SIGTERM), hup, false); got != ClassFailure {
		t.Fatalf("SIGTERM with set HUP = %s", got)
	}
}

func TestExitRecordFields(t *testing.T) {
	rec := newExitRecord(42, signalStatus(syscall.SIGTERM), ClassShutdown)
	if rec.Code != nil || rec.Signal == nil || *rec.Signal != "SIGTERM" || rec.ReturnCode != -15 {
		t.Fatalf("SIGTERM record: %+v", rec)
	}
	rec = newExitRecord(42, exitStatus(3), ClassFailure)
	if rec.Code == nil || *rec.Code != 3 || rec.Signal != nil || rec.ReturnCode != 3 {
		t.Fatalf("exit 3 record: %+v", rec)
	}
	if got := rec.Describe(); got != "exit 3 (failure)" {
		t.Fatalf("Describe = %q", got)
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: 100, Max: 1000, Multiplier: 2}
	want := []int64{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := b.Delay(i + 1); int64(got) != w {
			t.Errorf("Delay(%d) = %d, want %d", i+1, got, w)
		}
	}
	j := Backoff{Initial: 1000, Max: 100000, Multiplier: 2, Jitter: 0.2}
	for i := 0; i < 1000; i++ {
		d := j.Delay(1)
		if d < 800 || d > 1200 {
			t.Fatalf("jittered Delay(1) = %d, outside ±20%%", d)
		}
		if c := j.Capped(); c < 80000 || c > 100000 {
			t.Fatalf("Capped() = %d, outside [0.8 max, max]", c)
		}
	}
}

func TestBackoffValidate(t *testing.T) {
	bad := []struct {
		b     Backoff
		field string
	}{
		{Backoff{Initial: -1, Max: 10, Multiplier: 2}, "Initial"},
		{Backoff{Initial: 10, Max: 5, Multiplier: 2}, "Max"},
		{Backoff{Initial: 1, Max: 5, Multiplier: 0.5}, "Multiplier"},
		{Backoff{Initial: 1, Max: 5, Multiplier: 2, Jitter: 1}, "Jitter"},
		{Backoff{Initial: 1, Max: 5, Multiplier: 2, Reset: -1}, "Reset"},
	}
	for _, tc := range bad {
		var be *BackoffError
		if err := tc.b.Validate(); !errors.As(err, &be) || be.Field != tc.field || be.Backoff != tc.b {
			t.Errorf("Validate(%+v) = %v, want a *BackoffError for %s", tc.b, err, tc.field)
		} else if strings.Contains(err.Error(), "--") {
			t.Errorf("Validate(%+v) names a flag: %q", tc.b, err)
		}
	}
	if err := DefaultBackoff.Validate(); err != nil {
		t.Fatal(err)
	}
}
