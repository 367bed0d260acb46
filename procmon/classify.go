// Package procmon supervises one child process: it spawns it, classifies
// every exit, respawns it with backoff, and stops it cleanly. It knows
// nothing of WhatsApp or of how status is published; it emits an ordered
// stream of typed events and takes commands.
package procmon

import (
	"encoding/json"
	"strconv"
	"syscall"
	"time"

	"github.com/wa-sidecar/wa-sidecar/signals"
)

// Class says what an exit means for the supervisor.
type Class string

const (
	// ClassShutdown is a death by a signal in the normal-shutdown set (or
	// the 128+n exit code a shell or npm wrapper turns it into): someone
	// outside stopped the bridge, which is not a crash.
	ClassShutdown Class = "shutdown"
	// ClassFailure is every other exit the sidecar did not ask for,
	// including an unrequested exit 0.
	ClassFailure Class = "failure"
	// ClassRequested is an exit the sidecar itself asked for.
	ClassRequested Class = "requested"
)

// Classify decides the class of an exit from its raw wait status.
func Classify(ws syscall.WaitStatus, normal signals.Set, requested bool) Class {
	switch {
	case requested:
		return ClassRequested
	case ws.Signaled() && normal.Has(ws.Signal()):
		return ClassShutdown
	case ws.Exited() && ws.ExitStatus() > 128 && ws.ExitStatus() < 128+65 &&
		normal.Has(syscall.Signal(ws.ExitStatus()-128)):
		return ClassShutdown
	default:
		return ClassFailure
	}
}

// ExitRecord describes one end of the child.
type ExitRecord struct {
	Pid int `json:"pid"`
	// Code is the exit code, nil when the child died by a signal or never ran.
	Code *int `json:"code"`
	// Signal is the name of the signal that killed the child, or nil.
	Signal *string `json:"signal"`
	// ReturnCode is Python's subprocess convention, as the Hermes gateway
	// logs it: the exit code, or minus the signal number.
	ReturnCode int      `json:"returncode"`
	CoreDumped bool     `json:"core_dumped,omitempty"`
	Class      Class    `json:"class"`
	Requested  bool     `json:"requested"`
	UptimeMS   int64    `json:"uptime_ms"`
	Tail       []string `json:"tail"`
	Error      string   `json:"error,omitempty"` // set when the child could not be spawned
	// Reason says why the sidecar stopped a child whose exit still counts as
	// a failure (Monitor.Recycle); Requested is then true and Class failure.
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
	// Escaped lists the processes the child started outside its process
	// group (with setsid, say) that outlived it. EscapedStopped says the
	// monitor stops them, as it does when it reaps all (PID 1, a
	// subreaper): SIGTERM, then SIGKILL after StopTimeout. Otherwise they
	// are only reported, as far as they can be found: those that still
	// hold the child's output, and those it had started when it was
	// asked to stop.
	Escaped        []Escapee `json:"escaped,omitempty"`
	EscapedStopped bool      `json:"escaped_stopped,omitempty"`
}

// Escapee is a process a child left behind.
type Escapee struct {
	Pid  int    `json:"pid"`
	Name string `json:"name"`
}

// MarshalJSON writes returncode as null for a child that never ran
// (Error set), so that a failed spawn never reads as a clean exit 0.
func (r ExitRecord) MarshalJSON() ([]byte, error) {
	type plain ExitRecord // without this method
	if r.Error == "" {
		return json.Marshal(plain(r))
	}
	return json.Marshal(struct {
		plain
		ReturnCode *int `json:"returncode"`
	}{plain: plain(r)})
}

func newExitRecord(pid int, ws syscall.WaitStatus, class Class) ExitRecord {
	rec := ExitRecord{Pid: pid, Class: class, Requested: class == ClassRequested, Tail: []string{}}
	switch {
	case ws.Signaled():
		name := signals.Name(ws.Signal())
		rec.Signal = &name
		rec.ReturnCode = -int(ws.Signal())
		rec.CoreDumped = ws.CoreDump()
	default:
		code := ws.ExitStatus()
		rec.Code = &code
		rec.ReturnCode = code
	}
	return rec
}

// Describe is a short human reading of the exit, such as
// "SIGTERM (normal shutdown)" or "exit 1 (failure)".
func (r ExitRecord) Describe() string {
	var what string
	switch {
	case r.Error != "":
		what = "spawn failed: " + r.Error
	case r.Signal != nil:
		what = *r.Signal
	case r.Code != nil:
		what = "exit " + strconv.Itoa(*r.Code)
	}
	switch r.Class {
	case ClassShutdown:
		return what + " (normal shutdown)"
	case ClassRequested:
		return what + " (stopped by the sidecar)"
	}
	if r.Reason != "" {
		return what + " (failure: " + r.Reason + ")"
	}
	return what + " (failure)"
}
