package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/bridge/session"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// StateNeedsPairing is where the bridge waits after WhatsApp logged it out:
// respawning cannot help until someone links the device again.
const StateNeedsPairing procmon.State = "needs_pairing"

// The events this package adds to the monitor's stream.
const (
	EventQR             procmon.Kind = "qr"              // a pairing QR code; the payload is in Private
	EventConnected      procmon.Kind = "connected"       // the bridge is connected to WhatsApp
	EventDisconnected   procmon.Kind = "disconnected"    // it lost the connection, or exited while connected
	EventPaired         procmon.Kind = "paired"          // it connected after showing a QR code: a new pairing
	EventUnresponsive   procmon.Kind = "unresponsive"    // alive, but /health failed too often; restarted
	EventFlapping       procmon.Kind = "flapping"        // too many connection flips in the window
	EventConnectTimeout procmon.Kind = "connect_timeout" // not connected within the grace period; not fatal
	EventCredsChanged   procmon.Kind = "creds_changed"   // creds.json changed while parked; resuming
	EventHealth         procmon.Kind = "health"          // the health details changed
)

// DetailsKey is the key of this package's part of the status details.
const DetailsKey = "whatsapp"

// Options tune the Hermes layer. Zero fields take the defaults in brackets.
type Options struct {
	// Port is the bridge's HTTP port. 0 switches health probing off; the
	// connection state then follows the bridge's output alone, and
	// readiness stays the monitor's own (ready once spawned).
	Port int
	// SessionDir holds creds.json; it is watched while the bridge waits in
	// needs_pairing. Empty: only a start command resumes it.
	SessionDir string

	HealthPeriod   time.Duration // between probes [10 s]
	HealthTimeout  time.Duration // for one probe [2 s]
	HealthFailures int           // failed probes in a row that make the bridge unresponsive [3]
	ConnectGrace   time.Duration // time to connect before connect_timeout [30 s]
	FlapLimit      int           // more flips than this in FlapWindow raise flapping [5]
	FlapWindow     time.Duration // [60 s]
	CredsPoll      time.Duration // how often creds.json is checked while parked [1 s]

	// Expect, if set, is what the gateway checks before it adopts the
	// bridge: readiness then means adoptable, and details.whatsapp carries
	// the verdict with its reasons.
	Expect *Expect

	// QRWriter, if set, receives each pairing QR code drawn for a person
	// to scan (the sidecar passes its terminal).
	QRWriter io.Writer
	Logger   *slog.Logger
}

// ProbeError is a setting of the /health probes that New cannot use:
// Field is "HealthTimeout" when the timeout is longer than the period (the
// probes would overlap), "HealthFailures" when fewer than one failure
// would count. The values are the Options given.
type ProbeError struct {
	Field           string
	Period, Timeout time.Duration
	Failures        int
}

func (e *ProbeError) Error() string {
	if e.Field == "HealthFailures" {
		return fmt.Sprintf("bridge: Options.HealthFailures must be at least 1 (got %d)", e.Failures)
	}
	return fmt.Sprintf("bridge: Options.HealthTimeout (%s) is longer than HealthPeriod (%s); the probes would overlap", e.Timeout, e.Period)
}

// CheckProbes returns a *ProbeError unless the /health probes can work
// with this period, timeout and count of failures: a timeout longer than
// the period would let probes overlap.
func CheckProbes(period, timeout time.Duration, failures int) error {
	switch {
	case timeout > period:
		return &ProbeError{Field: "HealthTimeout", Period: period, Timeout: timeout}
	case failures < 1:
		return &ProbeError{Field: "HealthFailures", Failures: failures}
	}
	return nil
}

func (o *Options) applyDefaults() error {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.HealthPeriod, 10*time.Second)
	def(&o.HealthTimeout, 2*time.Second)
	def(&o.ConnectGrace, 30*time.Second)
	def(&o.FlapWindow, time.Minute)
	def(&o.CredsPoll, time.Second)
	if o.HealthFailures == 0 {
		o.HealthFailures = 3
	}
	if o.FlapLimit == 0 {
		o.FlapLimit = 5
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.Port != 0 && gateway.CheckPort(o.Port) != nil:
		return gateway.CheckPort(o.Port)
	case o.HealthPeriod < 0 || o.HealthTimeout < 0 || o.ConnectGrace < 0 || o.FlapWindow < 0 || o.CredsPoll < 0:
		return errors.New("health and pairing durations must be positive")
	case CheckProbes(o.HealthPeriod, o.HealthTimeout, o.HealthFailures) != nil:
		return CheckProbes(o.HealthPeriod, o.HealthTimeout, o.HealthFailures)
	case o.FlapLimit < 1:
		return fmt.Errorf("the flapping limit must be at least 1 (got %d)", o.FlapLimit)
	}
	return nil
}

// Hermes is the layer that knows the Hermes WhatsApp bridge. It reads the
// bridge's output, probes its /health, and turns what it learns into
// readiness, events and status details of a procmon.Monitor; it parks a
// logged-out bridge instead of respawning it.
//
// Use it in three steps: New; its Hook in the monitor's Config.Hooks (and
// ExternalReadiness in its Config) before procmon.New; then Watch the
// monitor and Run what Watch returns.
type Hermes struct {
	opts      Options
	lines     chan seenLine
	dropped   atomic.Int64
	loggedOut atomic.Int64 // pid of the child that said it was logged out
	// portTaken counts exits by EADDRINUSE since a bridge last answered
	// /health or the guard last yielded to another bridge.
	portTaken atomic.Int32
	// parkedCreds is creds.json as it was when the bridge was parked, taken
	// in ParkExit so that a change made right after the park is not missed.
	parkedCreds atomic.Pointer[fingerprint]
	prober      *prober
	// ended holds what the AfterExiter posted for each child whose
	// exit it handled, until the watcher takes it.
	ended endedChildren
}

type seenLine struct {
	pid  int
	line Line
}

// lineQueue bounds the lines waiting for Run. A full queue drops lines (and
// counts them) rather than stall the bridge's output pipe.
const lineQueue = 1024

// New checks opts and returns the layer.
func New(opts Options) (*Hermes, error) {
	if err := opts.applyDefaults(); err != nil {
		return nil, err
	}
	return &Hermes{opts: opts, lines: make(chan seenLine, lineQueue), prober: newProber()}, nil
}

// Hook returns the layer's procmon hook, to put in the monitor's
// Config.Hooks: it reads every output line, parks the bridge in
// needs_pairing when it exits logged out (or in yielded, once, when its
// port was taken as it started), ends what the layer said of a child when
// it exits, and keeps pairing codes out of exit records.
func (h *Hermes) Hook() procmon.Hook { return hook{h} }

// ExternalReadiness says whether the monitor's readiness must wait for
// this layer (procmon.Config.ExternalReadiness): with a port known, the
// bridge is ready once /health says connected.
func (h *Hermes) ExternalReadiness() bool { return h.opts.Port > 0 }

// hook is the Hermes layer as the monitor sees it, so that the hook
// methods stay off Hermes's own API.
type hook struct{ h *Hermes }

// WriteLine observes a line. It runs for every line a chatty bridge
// prints, so it rules out an ordinary line by its first byte before
// calling anything.
func (k hook) WriteLine(l procmon.Line) {
	if len(l.Text) > 0 && startBytes[l.Text[0]] {
		k.h.observe(l)
	}
}

// KeepInTail leaves the lines that carry a pairing code out of exit
// records.
func (k hook) KeepInTail(text []byte) bool {
	return len(text) == 0 || !pairingStart[text[0]] || !CarriesPairingCode(text)
}

// LineStarts makes the hook a procmon.LineSieve: it observes only the
// lines ParseLine may know. The monitor gets a copy of the set, so that
// nothing it holds can change what the package itself tests.
func (k hook) LineStarts() *[256]bool { t := startBytes; return &t }

// TailStarts makes the hook a procmon.TailSieve: only a line that starts
// as a pairing line may carry a code.
func (k hook) TailStarts() *[256]bool { t := pairingStart; return &t }

func (k hook) ParkExit(rec procmon.ExitRecord) *procmon.Park { return k.h.onExit(rec) }

func (k hook) AfterExit(rec procmon.ExitRecord, st procmon.Status) []procmon.Event {
	return k.h.exited(rec, st)
}

// observe runs on the monitor's output readers, for each line whose first
// byte is in startBytes (WriteLine rules the others out): it must not
// block, so it parses and queues.
func (h *Hermes) observe(l procmon.Line) {
	p := ParseLine(l.Text)
	if p.Kind == LineOther {
		return
	}
	if p.Kind == LineLoggedOut {
		h.loggedOut.Store(int64(l.Pid))
	}
	select {
	case h.lines <- seenLine{pid: l.Pid, line: p}:
	default:
		h.dropped.Add(1)
	}
}

// onExit is the hook's ParkExit, in the monitor's goroutine. The
// logged-out mark was stored by observe before the exit was reported: the
// monitor reads all of a child's output before it handles its exit.
func (h *Hermes) onExit(rec procmon.ExitRecord) *procmon.Park {
	if portTakenAtStart(rec) && h.portTaken.Add(1) == 1 {
		// Someone bound the port between the sidecar's check and the
		// bridge's listen: most likely the gateway's own bridge. Not a
		// crash: the session guard's Hold finds out who it is. Only once
		// in a row: without a guard to find the holder, or when the
		// holder is a stranger, the next one counts as the failure it is,
		// so a port conflict cannot respawn the bridge without end.
		return &procmon.Park{State: session.StateYielded, Reason: ReasonPortTaken, Recheck: portTakenRecheck,
			Message: "the bridge's port was taken as it started (EADDRINUSE); checking who holds it"}
	}
	if rec.Code == nil || *rec.Code != 1 || rec.Pid == 0 || h.loggedOut.Load() != int64(rec.Pid) {
		return nil
	}
	fp := credsFingerprint(h.opts.SessionDir)
	h.parkedCreds.Store(&fp)
	return &procmon.Park{State: StateNeedsPairing, Reason: ReasonLoggedOut, Message: needsPairingMessage(h.opts.SessionDir)}
}

// ReasonLoggedOut is the reason of needs_pairing: WhatsApp logged the
// device out.
const ReasonLoggedOut = "logged_out"

// ReasonPortTaken is the reason of an exit by EADDRINUSE at start.
const ReasonPortTaken = "port_taken_at_start"

// portTakenRecheck is how soon the port is looked at after such an exit.
const portTakenRecheck = 100 * time.Millisecond

// portTakenAtStart says the bridge died of EADDRINUSE, as Node does when
// its listen fails: exit 1 with the error in its last lines.
func portTakenAtStart(rec procmon.ExitRecord) bool {
	if rec.Code == nil || *rec.Code != 1 || rec.Pid == 0 {
		return false
	}
	for _, l := range rec.Tail {
		if strings.Contains(l, "EADDRINUSE") {
			return true
		}
	}
	return false
}

func needsPairingMessage(session string) string {
	if session == "" {
		return "WhatsApp logged this device out, so the bridge is not restarted. Pair it again " +
			"(delete its session directory, then send a start and scan the new QR code); " +
			"a start command (SIGHUP) resumes it."
	}
	return fmt.Sprintf("WhatsApp logged this device out, so the bridge is not restarted. Pair it again: "+
		"delete the session %s (or run 'hermes whatsapp'), then scan the new QR code. "+
		"The sidecar resumes by itself when creds.json changes, or on a start command (SIGHUP).", session)
}

// Watch follows m from now on, for the returned Watcher's Run. Call it
// once, with the monitor made with the layer's Hook, before m.Run, so that
// the layer sees every event of the bridge's life.
func (h *Hermes) Watch(m *procmon.Monitor) *Watcher {
	w := newWatcher(h, m)
	w.f = m.Follow(256)
	return &Watcher{w: w}
}

// A Watcher is the layer following one monitor: it turns the bridge's
// lines, its /health answers and the monitor's events into this layer's
// events, details and readiness.
type Watcher struct{ w *watcher }

// Run follows the monitor until ctx is done or the monitor has finished,
// and releases what it holds: probes in flight, timers, the follower. It
// runs alongside the monitor's Run and may be called once.
func (x *Watcher) Run(ctx context.Context) error {
	x.w.loop(ctx)
	return nil
}

// tickC and timeC let a select wait on a ticker or timer that may be off.
func tickC(t *time.Ticker) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

func timeC(t *time.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

func (w *watcher) loop(ctx context.Context) {
	defer func() {
		w.cancel()
		w.probes.stop()
		w.stopTimers()
		w.creds.stop()
		if w.flapClear != nil {
			w.flapClear.Stop()
		}
	}()
	events, stop := w.follow(ctx)
	defer stop()
	w.resync(w.f.Last())
	w.post(procmon.Event{Kind: EventHealth})
	for {
		select {
		case u, ok := <-events:
			if !ok {
				return
			}
			if u.Missed > 0 {
				w.log.Warn("bridge layer fell behind the event stream; resyncing", "missed_events", u.Missed)
				w.resync(u.Event)
				continue
			}
			w.drainLines()
			if n := w.h.dropped.Swap(0); n > 0 {
				w.log.Warn("the bridge printed faster than it could be read; lines were not examined", "lines", n)
			}
			w.event(u.Event)
		case sl := <-w.h.lines:
			w.line(sl)
		case r := <-w.probes.results:
			again := w.probes.landed()
			w.result(r)
			if again {
				w.probe()
			}
		case <-w.probes.tickC():
			w.probe()
		case <-timeC(w.connect):
			w.connect = nil
			w.connectTimeout()
		case <-w.creds.C():
			w.checkCreds()
		case <-timeC(w.flapClear):
			w.flapClear = nil
			w.settle()
		}
	}
}

// follow hands the follower's updates over on a channel, for the loop's
// select, until ctx is done or the monitor has finished; then it closes the
// channel. stop ends it and releases the follower. A child's lines are
// still queued before its exit reaches the loop: they are queued before
// the monitor emits the exit.
func (w *watcher) follow(ctx context.Context) (<-chan procmon.Update, func()) {
	ctx, cancel := context.WithCancel(ctx)
	c := make(chan procmon.Update)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(c)
		for {
			u, err := w.f.Next(ctx)
			if err != nil {
				return
			}
			select {
			case c <- u:
			case <-ctx.Done():
				return
			}
		}
	}()
	return c, func() {
		cancel()
		<-done
		w.f.Close()
	}
}

// resync takes the state and the child from a snapshot: the one the
// follower starts from, or a fresh one after it fell behind.
func (w *watcher) resync(last procmon.Event) {
	w.state = last.Status.State
	if pid := last.Status.Pid; pid != 0 && pid != w.pid {
		w.begin(pid)
	}
}

// drainLines handles the lines already queued before an event: a child's
// lines are all queued before its exit is reported, so its exit is seen
// after them.
func (w *watcher) drainLines() {
	for {
		select {
		case sl := <-w.h.lines:
			w.line(sl)
		default:
			return
		}
	}
}

func (w *watcher) event(ev procmon.Event) {
	w.state = ev.Status.State
	switch ev.Kind {
	case procmon.EventStarting:
		w.creds.stop()
	case procmon.EventStarted:
		w.begin(ev.Pid)
	case procmon.EventExited:
		if ev.Pid == w.pid {
			// A stop the sidecar asked for is no flip of the connection.
			w.end("the bridge exited", ev.Exit != nil && ev.Exit.Requested)
		}
	case procmon.EventStopping:
		w.stopTimers()
	case procmon.Kind(StateNeedsPairing):
		w.startCredsWatch()
	case procmon.Kind(session.StateYielded):
		if ev.Reason == session.ReasonPortHeldByBridge {
			w.h.portTaken.Store(0) // the next lost race is a new one
		}
	}
}

// down is det once its child has gone: no connection, no health.
func (h *Hermes) down(det Details) Details {
	det.BridgePid = 0
	det.Connection = ConnectionDown
	if h.opts.Port > 0 {
		det.Health = HealthUnknown
	}
	det.HealthFailures, det.HealthError = 0, ""
	return det
}

// exited is the hook's AfterExit. It ends what this layer said of
// the child that exited (details.whatsapp as last posted, in st) from the
// monitor's own goroutine, so that its disconnected event, and a changed
// adoption verdict, come right after the exit: before the monitor's
// stopped or backoff, and before the next bridge's started. The watcher
// takes on the result when it sees the exit (end).
func (h *Hermes) exited(rec procmon.ExitRecord, st procmon.Status) []procmon.Event {
	d, ok := st.Details[DetailsKey].(Details)
	if !ok || d.BridgePid != rec.Pid {
		return nil // nothing was said of this child yet
	}
	connected := d.Connection == ConnectionConnected
	det := h.down(d)
	det.Adoption = h.assess(0, false, st.State, &det, nil)
	details := map[string]any{DetailsKey: det}
	var evs []procmon.Event
	switch {
	case connected:
		// The event's own pid is the monitor's current child, by now not
		// this one ("pid" is reserved on the wire).
		evs = append(evs, procmon.Event{Kind: EventDisconnected, Reason: "the bridge exited", Data: map[string]any{"bridge_pid": rec.Pid}})
	case det != d:
		evs = append(evs, procmon.Event{Kind: EventHealth})
	}
	if ev := adoptionEvent(d.Adoption, det.Adoption); ev != nil {
		evs = append(evs, *ev)
	}
	for i := range evs {
		evs[i].Status.Details = details
		h.logEvent(evs[i], rec.Pid, det)
		// A bridge parked by this exit has a message of its own in the
		// snapshot, what to do (pair again, start it), which pair and
		// status show; the verdict, posted after it, would replace it.
		if evs[i].Kind == EventAdoption && (st.State == StateNeedsPairing || st.State == procmon.StateGivenUp) {
			evs[i].Message = ""
		}
	}
	h.ended.put(rec.Pid, endedChild{det: det, connected: connected})
	return evs
}

// endedChild is what the AfterExiter posted for one child.
type endedChild struct {
	det       Details
	connected bool // it was connected when it exited
}

// endedChildren passes endedChild values from the monitor's goroutine to
// the watcher's. The watcher takes each one when it sees the exit; a few
// are kept in case it resynchronised past some.
type endedChildren struct {
	mu sync.Mutex
	m  map[int]endedChild
}

func (e *endedChildren) put(pid int, c endedChild) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil || len(e.m) >= 16 {
		e.m = map[int]endedChild{}
	}
	e.m[pid] = c
}

func (e *endedChildren) take(pid int) (endedChild, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.m[pid]
	delete(e.m, pid)
	return c, ok
}

// logEvent logs ev, an event of this layer about pid with det the
// details it carries.
func (h *Hermes) logEvent(ev procmon.Event, pid int, det Details) {
	log := h.opts.Logger
	attrs := []any{"event", string(ev.Kind), "pid", pid}
	if ev.Reason != "" {
		attrs = append(attrs, "reason", ev.Reason)
	}
	msg := ev.Message
	switch ev.Kind {
	case EventHealth:
		if msg != "" {
			log.Info(msg, attrs...)
			return
		}
		log.Debug("bridge health", append(attrs, "connection", string(det.Connection), "health", string(det.Health))...)
		return
	case EventUnresponsive, EventFlapping, EventConnectTimeout:
		log.Warn(msg, attrs...)
		return
	case EventQR:
		msg = fmt.Sprintf("pairing QR code #%d (%s)", det.QRCodes, ev.Data["source"])
		if h.opts.QRWriter == nil {
			// The code itself stays out of the log, where whoever reads
			// it could link a phone; this record stands for it.
			msg += ": waiting for a scan; to see the code, run 'wa-sidecar pair' or 'wa-sidecar watch' on a terminal"
		}
	case EventConnected:
		msg = "WhatsApp connected"
	case EventPaired:
		msg = "WhatsApp paired: this device is now linked"
	case EventDisconnected:
		msg = "WhatsApp disconnected"
	case EventAdoption:
		if a := det.Adoption; msg == "" && a != nil && len(a.Reasons) > 0 {
			msg = "the gateway would not use this bridge yet: " + a.Reasons[0].Message
		}
	}
	log.Info(msg, attrs...)
}
