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
	"syscall"
	"time"

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
	case o.Port < 0 || o.Port > 65535:
		return fmt.Errorf("--port must be between 1 and 65535 (got %d)", o.Port)
	case o.HealthPeriod < 0 || o.HealthTimeout < 0 || o.ConnectGrace < 0 || o.FlapWindow < 0 || o.CredsPoll < 0:
		return errors.New("health and pairing durations must be positive")
	case o.HealthTimeout > o.HealthPeriod:
		return fmt.Errorf("--health-timeout (%s) is longer than --health-period (%s); probes would overlap: lower the timeout or raise the period", o.HealthTimeout, o.HealthPeriod)
	case o.HealthFailures < 1:
		return fmt.Errorf("--health-failures must be at least 1 (got %d)", o.HealthFailures)
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
// Use it in three steps: New, Configure on the monitor's Config before
// procmon.New, then Run with the monitor.
type Hermes struct {
	opts      Options
	lines     chan seenLine
	dropped   atomic.Int64
	loggedOut atomic.Int64 // pid of the child that said it was logged out
	// portTaken counts exits by EADDRINUSE since a bridge last answered
	// /health or the guard last yielded to another bridge.
	portTaken atomic.Int32
	// parkedCreds is creds.json as it was when the bridge was parked, taken
	// in OnExit so that a change made right after the park is not missed.
	parkedCreds atomic.Pointer[fingerprint]
	prober      *prober
	// ended holds what the AfterExit hook posted for each child whose
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

// Configure hooks the layer into a monitor's configuration: it reads every
// output line (before any Output already set), parks the bridge in
// needs_pairing when it exits logged out, and, when a port is known, makes
// readiness wait for /health to say connected.
func (h *Hermes) Configure(cfg *procmon.Config) {
	// Both hooks run for every line a chatty bridge prints, so each rules
	// out an ordinary line by its first byte before calling anything.
	prevOut := cfg.Output
	cfg.Output = func(l procmon.Line) {
		if len(l.Text) > 0 && startBytes[l.Text[0]] {
			h.observe(l)
		}
		if prevOut != nil {
			prevOut(l)
		}
	}
	prevExit := cfg.OnExit
	cfg.OnExit = func(rec procmon.ExitRecord) *procmon.Park {
		if p := h.onExit(rec); p != nil {
			return p
		}
		if prevExit != nil {
			return prevExit(rec)
		}
		return nil
	}
	cfg.AfterExit = append(cfg.AfterExit, h.exited)
	prevKeep := cfg.KeepInTail
	cfg.KeepInTail = func(text []byte) bool {
		if len(text) > 0 && pairingStart[text[0]] && CarriesPairingCode(text) {
			return false
		}
		return prevKeep == nil || prevKeep(text)
	}
	if h.opts.Port > 0 {
		cfg.ExternalReadiness = true
	}
}

// observe runs on the monitor's output readers, for each line whose first
// byte is in startBytes (the Output hook rules the others out): it must
// not block, so it parses and queues.
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

// onExit runs in the monitor's goroutine. The logged-out mark was stored
// by observe before the exit was reported: the monitor reads all of a
// child's output before it handles its exit.
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

// Run follows m until it is done: it must be called once, after procmon.New
// with the configuration Configure changed, and runs alongside m.Run.
func (h *Hermes) Run(m *procmon.Monitor) {
	w := newWatcher(h, m)
	w.loop()
}

// probeResult is one /health answer for one child.
type probeResult struct {
	pid    int
	health Health
	err    error
}

// Details is this package's part of the status (details.whatsapp).
type Details struct {
	// Connection is the bridge's WhatsApp connection: unknown (just
	// started), pairing (showing QR codes), connected, disconnected, or
	// down (the bridge is not running).
	Connection string `json:"connection"`
	// Health is ok, failing (the last probe failed), unknown (no probe
	// yet) or off (no port known).
	Health           string `json:"health"`
	HealthFailures   int    `json:"health_failures,omitempty"`
	HealthError      string `json:"health_error,omitempty"`
	QueueLength      *int   `json:"queue_length,omitempty"`
	ScriptHash       string `json:"script_hash,omitempty"`
	SendReadReceipts *bool  `json:"send_read_receipts,omitempty"`
	Flapping         bool   `json:"flapping"`
	QRCodes          int    `json:"qr_codes,omitempty"` // shown in this run of the bridge
	User             *User  `json:"user,omitempty"`
	Port             int    `json:"port,omitempty"`
	// Adoption is whether the gateway would use this bridge if it
	// connected now; absent when the gateway's checks are not known.
	Adoption *Adoption `json:"adoption,omitempty"`
	// BridgePid is the child these details are about, 0 when none: an
	// event's snapshot can come before this layer has heard of a new
	// child, and a client must not take an old child's connection for it.
	BridgePid int `json:"bridge_pid"`
}

// User is the WhatsApp account the bridge is connected as, when it says.
type User struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
}

// watcher owns everything the layer knows about the bridge; it lives in
// Run's goroutine alone.
type watcher struct {
	h   *Hermes
	m   *procmon.Monitor
	log *slog.Logger
	sub *procmon.Subscription

	ctx     context.Context // cancelled when Run ends, for probes in flight
	cancel  context.CancelFunc
	probes  sync.WaitGroup
	results chan probeResult

	state  procmon.State
	pid    int
	ended  []int // recent children, whose late lines are ignored
	det    Details
	posted Details

	inFlight, probeAgain bool
	restarted            bool // unresponsive restart already asked for this child
	answered             bool // this child has answered /health at least once
	began                time.Time
	qrRows               []string
	collecting           bool
	messageSet           bool
	closeReason          string // the last reason the bridge printed for a drop
	qrShown              bool   // a QR code was shown since this child last connected: the next connect is a pairing
	flips                []time.Time
	flapClear            *time.Timer // when flapping may have passed

	tick    *time.Ticker
	connect *time.Timer
	creds   *time.Ticker
	credsFP fingerprint

	files      bridgeFiles
	ready      bool      // readiness as last set for this child
	matched    bool      // this child's scriptHash has matched the files
	updating   bool      // a restart for changed files was asked for
	staleSince time.Time // when the files were first seen changed under it
}

func newWatcher(h *Hermes, m *procmon.Monitor) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{h: h, m: m, log: h.opts.Logger, ctx: ctx, cancel: cancel, results: make(chan probeResult, 1)}
	w.det = Details{Connection: "down", Health: "off", Port: h.opts.Port}
	if h.opts.Port > 0 {
		w.det.Health = "unknown"
	}
	w.posted = w.det
	return w
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

func (w *watcher) loop() {
	defer func() {
		w.cancel()
		w.probes.Wait()
		w.stopTimers()
		w.stopCredsWatch()
		if w.flapClear != nil {
			w.flapClear.Stop()
		}
	}()
	w.subscribe()
	w.post(procmon.Event{Kind: EventHealth})
	for {
		select {
		case ev, ok := <-w.sub.C:
			if !ok {
				if errors.Is(w.sub.Err(), procmon.ErrOverflow) {
					w.log.Warn("bridge layer fell behind the event stream; resyncing")
					w.subscribe()
					continue
				}
				return
			}
			w.drainLines()
			if n := w.h.dropped.Swap(0); n > 0 {
				w.log.Warn("the bridge printed faster than it could be read; lines were not examined", "lines", n)
			}
			w.event(ev)
		case sl := <-w.h.lines:
			w.line(sl)
		case r := <-w.results:
			w.inFlight = false
			w.result(r)
			if w.probeAgain {
				w.probeAgain = false
				w.probe()
			}
		case <-tickC(w.tick):
			w.probe()
		case <-timeC(w.connect):
			w.connect = nil
			w.connectTimeout()
		case <-tickC(w.creds):
			w.checkCreds()
		case <-timeC(w.flapClear):
			w.flapClear = nil
			w.settle()
		}
	}
}

func (w *watcher) subscribe() {
	sub, last := w.m.Subscribe(256)
	w.sub = sub
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
		w.stopCredsWatch()
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

// begin starts following a new child, from its started event or from its
// first line, whichever comes first.
func (w *watcher) begin(pid int) {
	if pid == w.pid {
		return
	}
	if w.pid != 0 {
		w.end("the bridge was replaced", false)
	}
	w.pid = pid
	w.det.BridgePid = pid
	w.restarted, w.collecting, w.qrRows, w.messageSet, w.closeReason, w.qrShown = false, false, nil, false, "", false
	w.answered, w.began = false, time.Now()
	w.ready, w.matched, w.updating, w.staleSince = false, false, false, time.Time{}
	w.det.Connection, w.det.QRCodes, w.det.User = "unknown", 0, nil
	w.det.HealthFailures, w.det.HealthError = 0, ""
	if w.h.opts.Port > 0 {
		w.det.Health = "unknown"
		w.tick = time.NewTicker(w.h.opts.HealthPeriod)
	}
	w.connect = time.NewTimer(w.h.opts.ConnectGrace)
}

// end stops following the current child. requested says the sidecar
// stopped it, which is not counted as a flip of the connection.
func (w *watcher) end(why string, requested bool) {
	pid := w.pid
	w.ended = append(w.ended, pid)
	if len(w.ended) > 8 {
		w.ended = w.ended[1:]
	}
	w.pid = 0
	w.stopTimers()
	if e, ok := w.h.ended.take(pid); ok {
		// The monitor's AfterExit hook has ended it already, in order:
		// take on what it posted, unless something posted since (a late
		// probe result) has to be set right.
		w.det = e.det
		if cur, ok := w.m.Status().Details[DetailsKey].(Details); ok && !cur.equal(e.det) {
			w.posted = cur
			w.postIfChanged()
		} else {
			w.posted = e.det
		}
		if e.connected && !requested {
			w.flip()
		}
		return
	}
	wasConnected := w.det.Connection == "connected"
	w.det = w.h.down(w.det)
	prev := w.det.Adoption
	w.det.Adoption = w.assess()
	if wasConnected {
		// The event's own pid is the monitor's current child, by now not
		// this one ("pid" is reserved on the wire).
		w.post(procmon.Event{Kind: EventDisconnected, Reason: why, Data: map[string]any{"bridge_pid": pid}})
		if !requested {
			w.flip()
		}
	} else {
		w.postIfChanged()
	}
	w.announceAdoption(prev, w.det.Adoption)
}

// down is det once its child has gone: no connection, no health.
func (h *Hermes) down(det Details) Details {
	det.BridgePid = 0
	det.Connection = "down"
	if h.opts.Port > 0 {
		det.Health = "unknown"
	}
	det.HealthFailures, det.HealthError = 0, ""
	return det
}

// exited is the monitor's AfterExit hook. It ends what this layer said of
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
	connected := d.Connection == "connected"
	det := h.down(d)
	det.Adoption = h.assess(0, false, st.State, &det, nil)
	details := map[string]any{DetailsKey: det}
	var evs []procmon.Event
	switch {
	case connected:
		// The event's own pid is the monitor's current child, by now not
		// this one ("pid" is reserved on the wire).
		evs = append(evs, procmon.Event{Kind: EventDisconnected, Reason: "the bridge exited", Data: map[string]any{"bridge_pid": rec.Pid}})
	case !det.equal(d):
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

// endedChild is what the AfterExit hook posted for one child.
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

func (w *watcher) stopTimers() {
	if w.tick != nil {
		w.tick.Stop()
		w.tick = nil
	}
	if w.connect != nil {
		w.connect.Stop()
		w.connect = nil
	}
}

func (w *watcher) isEnded(pid int) bool {
	for _, p := range w.ended {
		if p == pid {
			return true
		}
	}
	return false
}

func (w *watcher) line(sl seenLine) {
	if sl.pid != w.pid {
		if sl.pid == 0 || w.isEnded(sl.pid) {
			return
		}
		w.begin(sl.pid)
	}
	l := sl.line
	if w.collecting && l.Kind != LineQRRow && l.Kind != LineQRHeader {
		w.finishQR()
	}
	switch l.Kind {
	case LineListening:
		w.probe()
	case LineQRHeader:
		w.collecting, w.qrRows = true, nil
	case LineQRRow:
		if len(w.qrRows) < 200 {
			w.collecting = true
			w.qrRows = append(w.qrRows, l.Row)
		}
	case LineQR:
		w.showQR("pair-json", map[string]any{"qr": l.QR}, l.QR, nil)
	case LineConnected:
		if l.UserID != "" || l.UserName != "" {
			w.det.User = &User{ID: l.UserID, Name: l.UserName}
		}
		w.heard(true, "")
	case LineDisconnected:
		w.heard(false, l.Reason)
	case LineRestartRequested:
		w.probe()
	}
}

// heard handles a connection change the bridge printed. With a port, the
// /health answer decides (asked at once), so the two sources never
// disagree; without one, the line decides.
func (w *watcher) heard(connected bool, reason string) {
	if !connected {
		w.closeReason = reason
	}
	if w.h.opts.Port > 0 {
		w.probe()
		return
	}
	w.setConnection(connected, reason)
}

func (w *watcher) finishQR() {
	w.collecting = false
	rows := w.qrRows
	w.qrRows = nil
	if len(rows) == 0 {
		return
	}
	w.showQR("terminal", map[string]any{"qr_rows": rows}, "", rows)
}

// showQR posts a qr event. The code itself goes only into Private: whoever
// can see it can link their phone to this account.
func (w *watcher) showQR(source string, private map[string]any, payload string, rows []string) {
	w.det.QRCodes++
	w.qrShown = true
	if w.det.Connection != "connected" {
		w.det.Connection = "pairing"
	}
	w.messageSet = true
	w.post(procmon.Event{
		Kind:    EventQR,
		Message: "waiting for a QR scan: on your phone open WhatsApp → Settings → Linked devices → Link a device",
		Data:    map[string]any{"source": source, "count": w.det.QRCodes},
		Private: private,
	})
	w.drawQR(payload, rows)
}

// setConnection records the WhatsApp connection state of the current
// child, with readiness and the connected, paired and disconnected events.
func (w *watcher) setConnection(connected bool, reason string) {
	was := w.det.Connection == "connected"
	if connected == was && (connected || w.det.Connection == "disconnected") {
		return
	}
	if !connected && w.det.Connection == "pairing" {
		return // still waiting for the scan; nothing changed
	}
	if !connected {
		w.det.Connection = "disconnected"
		if !was {
			w.postIfChanged()
			return
		}
		w.post(procmon.Event{Kind: EventDisconnected, Reason: reason})
		w.flip()
		return
	}
	w.det.Connection = "connected"
	if w.connect != nil {
		w.connect.Stop()
		w.connect = nil
	}
	ev := procmon.Event{Kind: EventConnected}
	if w.messageSet {
		ev.Message = "connected to WhatsApp"
		w.messageSet = false
	}
	if w.det.User != nil {
		ev.Data = map[string]any{"user": *w.det.User}
	}
	w.post(ev)
	if w.qrShown {
		// Once per pairing: later reconnects of the same session are not.
		w.qrShown = false
		w.post(procmon.Event{Kind: EventPaired, Data: ev.Data})
	}
	w.flip()
}

// flip records a change of the connection, after its event has been
// posted, and raises flapping when there were too many in the window.
func (w *watcher) flip() {
	w.flips = append(w.flips, time.Now())
	n := w.recentFlips()
	if n > w.h.opts.FlapLimit && !w.det.Flapping {
		w.det.Flapping = true
		w.messageSet = true
		w.post(procmon.Event{
			Kind:    EventFlapping,
			Message: fmt.Sprintf("the WhatsApp connection changed %d times in %s; check the network, and that no other device or copy of this session uses the same account", n, w.h.opts.FlapWindow),
			Data:    map[string]any{"flips": n, "window_s": w.h.opts.FlapWindow.Seconds()},
		})
	}
	if w.det.Flapping {
		w.settleLater()
	}
}

// recentFlips drops the flips older than the window and counts the rest.
func (w *watcher) recentFlips() int {
	now := time.Now()
	cut := 0
	for cut < len(w.flips) && now.Sub(w.flips[cut]) > w.h.opts.FlapWindow {
		cut++
	}
	w.flips = w.flips[cut:]
	return len(w.flips)
}

// settleLater sets the timer for when enough flips will have left the
// window to clear flapping, unless another flip comes first.
func (w *watcher) settleLater() {
	if w.flapClear != nil {
		w.flapClear.Stop()
	}
	// Flapping ends once no more than FlapLimit flips are in the window:
	// when the flip FlapLimit+1 from the newest leaves it.
	d := time.Duration(0)
	if i := len(w.flips) - 1 - w.h.opts.FlapLimit; i >= 0 {
		d = time.Until(w.flips[i].Add(w.h.opts.FlapWindow)) + time.Millisecond
	}
	w.flapClear = time.NewTimer(max(d, 0))
}

// settle clears flapping once the window holds few enough flips, so it
// ends by itself while the connection stays up (or the bridge stays down).
func (w *watcher) settle() {
	if !w.det.Flapping {
		return
	}
	if n := w.recentFlips(); n > w.h.opts.FlapLimit {
		w.settleLater()
		return
	}
	w.det.Flapping = false
	w.post(procmon.Event{Kind: EventHealth, Message: fmt.Sprintf("the WhatsApp connection has settled: at most %d changes in the last %s", w.h.opts.FlapLimit, w.h.opts.FlapWindow)})
}

func (w *watcher) connectTimeout() {
	if w.pid == 0 || w.det.Connection == "connected" || w.state != procmon.StateRunning {
		return
	}
	msg := fmt.Sprintf("the bridge has not connected to WhatsApp within %s; it keeps trying. Check the network and the bridge's output", w.h.opts.ConnectGrace)
	if w.det.Connection == "pairing" {
		msg = fmt.Sprintf("the bridge has waited %s for a QR scan: on your phone open WhatsApp → Settings → Linked devices → Link a device, and scan the code", w.h.opts.ConnectGrace)
	}
	w.messageSet = true
	w.post(procmon.Event{Kind: EventConnectTimeout, Message: msg, Data: map[string]any{"grace_s": w.h.opts.ConnectGrace.Seconds()}})
}

// probe asks the current child for its health, unless a probe is in
// flight, in which case one more follows it.
func (w *watcher) probe() {
	if w.h.opts.Port == 0 || w.pid == 0 || w.state != procmon.StateRunning {
		return
	}
	if w.inFlight {
		w.probeAgain = true
		return
	}
	w.inFlight = true
	pid, port, timeout := w.pid, w.h.opts.Port, w.h.opts.HealthTimeout
	w.probes.Add(1)
	go func() {
		defer w.probes.Done()
		h, err := w.h.prober.probe(w.ctx, port, timeout)
		select {
		case w.results <- probeResult{pid: pid, health: h, err: err}:
		case <-w.ctx.Done():
		}
	}()
}

func (w *watcher) result(r probeResult) {
	if r.pid != w.pid || w.state != procmon.StateRunning {
		return
	}
	if r.err != nil {
		if !w.answered && errors.Is(r.err, syscall.ECONNREFUSED) && time.Since(w.began) < w.h.opts.ConnectGrace {
			// Not listening yet: Node can take seconds to load the bridge.
			// A bridge that accepts and then hangs is not excused.
			return
		}
		w.det.Health = "failing"
		w.det.HealthFailures++
		w.det.HealthError = r.err.Error()
		if w.det.HealthFailures >= w.h.opts.HealthFailures && !w.restarted {
			w.unresponsive()
			return
		}
		w.postIfChanged()
		return
	}
	w.answered = true
	w.h.portTaken.Store(0)
	q, rr := r.health.QueueLength, r.health.SendReadReceipts
	w.det.Health, w.det.HealthFailures, w.det.HealthError = "ok", 0, ""
	w.det.QueueLength, w.det.ScriptHash, w.det.SendReadReceipts = &q, r.health.ScriptHash, &rr
	reason := w.closeReason
	if reason == "" {
		reason = "GET /health says disconnected"
	}
	w.setConnection(r.health.Status == "connected", reason)
	w.reassess()
	w.postIfChanged()
}

// unresponsive restarts a child that is alive but no longer answers. Its
// exit counts as a failure, so a bridge that hangs again and again backs
// off, raises crashloop and meets --max-restarts like one that crashes.
func (w *watcher) unresponsive() {
	w.restarted = true
	n, last := w.det.HealthFailures, w.det.HealthError
	w.log.Warn("the bridge is alive but does not answer /health; restarting it", "pid", w.pid, "failures", n, "error", last)
	w.messageSet = true
	// The event's pid is the current child, this one.
	w.post(procmon.Event{
		Kind:    EventUnresponsive,
		Reason:  last,
		Message: fmt.Sprintf("the bridge (pid %d) stopped answering GET /health (%d failures in a row); restarting it", w.pid, n),
		Data:    map[string]any{"failures": n},
	})
	reason := fmt.Sprintf("unresponsive: GET /health failed %d times in a row", n)
	if err := w.m.Recycle(w.ctx, w.pid, reason); err != nil && !errors.Is(err, procmon.ErrNotRunning) {
		w.log.Warn("could not restart the unresponsive bridge", "error", err)
	}
}

// post adds ev to the stream with the current details.
func (w *watcher) post(ev procmon.Event) {
	ev.Status.Details = map[string]any{DetailsKey: w.det}
	w.posted = w.det
	w.logEvent(ev)
	if err := w.m.Post(w.ctx, ev); err != nil && !errors.Is(err, procmon.ErrNotRunning) {
		w.log.Warn("could not post a bridge event", "event", ev.Kind, "error", err)
	}
}

// postIfChanged posts a health event when the details changed without
// anything else to say.
func (w *watcher) postIfChanged() {
	if !w.det.equal(w.posted) {
		w.post(procmon.Event{Kind: EventHealth})
	}
}

func (d Details) equal(o Details) bool {
	intEq := func(a, b *int) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
	boolEq := func(a, b *bool) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
	userEq := (d.User == nil) == (o.User == nil) && (d.User == nil || *d.User == *o.User)
	return d.Connection == o.Connection && d.Health == o.Health && d.HealthFailures == o.HealthFailures &&
		d.HealthError == o.HealthError && intEq(d.QueueLength, o.QueueLength) && d.ScriptHash == o.ScriptHash &&
		boolEq(d.SendReadReceipts, o.SendReadReceipts) && d.Flapping == o.Flapping && d.QRCodes == o.QRCodes &&
		userEq && d.Port == o.Port && d.Adoption.equal(o.Adoption) && d.BridgePid == o.BridgePid
}

// logEvent tells the person watching the sidecar's log what the bridge
// layer saw; the same events reach the status feed.
func (w *watcher) logEvent(ev procmon.Event) { w.h.logEvent(ev, w.pid, w.det) }

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
		log.Debug("bridge health", append(attrs, "connection", det.Connection, "health", det.Health)...)
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
