package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// Connection is the bridge's WhatsApp connection, as details.whatsapp
// tells it and GET /health reports it.
type Connection string

// The connections a bridge can be in. GET /health only ever says
// connected or disconnected; the others are what the sidecar knows besides.
const (
	ConnectionUnknown      Connection = "unknown"      // the bridge has just started
	ConnectionPairing      Connection = "pairing"      // it shows QR codes and waits for a scan
	ConnectionConnected    Connection = "connected"    // it is connected to WhatsApp
	ConnectionDisconnected Connection = "disconnected" // it lost the connection, or has not made one
	ConnectionDown         Connection = "down"         // the bridge is not running
)

// HealthState is what the /health probes say of the bridge.
type HealthState string

// The states of the /health probes.
const (
	HealthOK      HealthState = "ok"      // the last probe was answered
	HealthFailing HealthState = "failing" // the last probe failed
	HealthUnknown HealthState = "unknown" // no answer yet from the running bridge, or none runs
	HealthOff     HealthState = "off"     // no port is known, so there are no probes
)

// Details is this package's part of the status (details.whatsapp). It is
// comparable, so a change of any field, one added later included, is seen
// by ==; Adoption is compared by pointer, which is right because a verdict
// is never changed once made and an equal new one keeps the old pointer.
type Details struct {
	Connection       Connection     `json:"connection"`
	Health           HealthState    `json:"health"`
	HealthFailures   int            `json:"health_failures,omitempty"`
	HealthError      string         `json:"health_error,omitempty"`
	QueueLength      Reported[int]  `json:"queue_length,omitzero"`
	ScriptHash       string         `json:"script_hash,omitempty"`
	SendReadReceipts Reported[bool] `json:"send_read_receipts,omitzero"`
	Flapping         bool           `json:"flapping"`
	QRCodes          int            `json:"qr_codes,omitempty"` // shown in this run of the bridge
	User             User           `json:"user,omitzero"`
	Port             int            `json:"port,omitempty"`
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

// Reported is a value the bridge reports in its /health answer, absent
// until it has. Unlike a pointer, it compares by value with ==; in JSON it
// is the value alone, and a field tagged omitzero is left out until known.
type Reported[T comparable] struct {
	Value T
	Known bool
}

// reported is v, as the bridge reported it.
func reported[T comparable](v T) Reported[T] { return Reported[T]{Value: v, Known: true} }

// IsZero says the value is not known, for omitzero.
func (r Reported[T]) IsZero() bool { return !r.Known }

// MarshalJSON writes the value, or null when it is not known.
func (r Reported[T]) MarshalJSON() ([]byte, error) {
	if !r.Known {
		return []byte("null"), nil
	}
	return json.Marshal(r.Value)
}

// UnmarshalJSON reads a value, or null for one not known, so that a
// client can decode details.whatsapp into Details.
func (r *Reported[T]) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*r = Reported[T]{}
		return nil
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = reported(v)
	return nil
}

// watcher owns everything the layer knows about the bridge; it lives in
// Run's goroutine alone. It is the connection machine: the monitor's
// events, the bridge's lines and the probes' answers come in, and
// details.whatsapp, readiness and this layer's events go out. The parts
// with a life of their own are fields: the probe scheduler, the flap
// detector, the creds watch; what concerns one child is in cur.
type watcher struct {
	h   *Hermes
	m   *procmon.Monitor
	log *slog.Logger
	f   *procmon.Follower

	ctx    context.Context // cancelled when Run ends, for probes in flight
	cancel context.CancelFunc

	state  procmon.State
	pid    int   // the current child, 0 between children
	cur    child // what is known of the current (or last) child
	ended  []int // recent children, whose late lines are ignored
	det    Details
	posted Details

	probes    *probeScheduler
	connect   *time.Timer // the current child's grace to connect
	flaps     flapDetector
	flapClear *time.Timer // when flapping may have passed
	creds     credsWatch
	files     bridgeFiles
}

// child is what the watcher knows of one bridge process. begin replaces it
// whole, so that nothing of one child is left over for the next.
type child struct {
	began       time.Time
	answered    bool   // it has answered /health at least once
	restarted   bool   // an unresponsive restart was asked for
	messageSet  bool   // the status message is one of this layer's, which connecting replaces
	closeReason string // the last reason it printed for a drop
	qrShown     bool   // a QR code was shown since it last connected: the next connect is a pairing
	qr          qrCollector
	ready       bool // readiness as last set for it
	stale       staleFiles
}

func newWatcher(h *Hermes, m *procmon.Monitor) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	o := h.opts
	w := &watcher{h: h, m: m, log: o.Logger, ctx: ctx, cancel: cancel,
		probes: newProbeScheduler(ctx, h.prober, o),
		flaps:  flapDetector{limit: o.FlapLimit, window: o.FlapWindow},
		creds:  credsWatch{dir: o.SessionDir, poll: o.CredsPoll},
	}
	w.det = Details{Connection: ConnectionDown, Health: HealthOff, Port: o.Port}
	if o.Port > 0 {
		w.det.Health = HealthUnknown
	}
	w.posted = w.det
	return w
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
	w.cur = child{began: time.Now()}
	w.det.BridgePid = pid
	w.det.Connection, w.det.QRCodes, w.det.User = ConnectionUnknown, 0, User{}
	w.det.HealthFailures, w.det.HealthError = 0, ""
	if w.h.opts.Port > 0 {
		w.det.Health = HealthUnknown
		w.probes.startTicking()
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
		if snap, ok := w.m.Status().Details[DetailsKey].(Details); ok && snap != e.det {
			w.posted = snap
			w.postIfChanged()
		} else {
			w.posted = e.det
		}
		if e.connected && !requested {
			w.flip()
		}
		return
	}
	wasConnected := w.det.Connection == ConnectionConnected
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

func (w *watcher) stopTimers() {
	w.probes.stopTicking()
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
	if rows := w.cur.qr.feed(l); rows != nil {
		w.showQR("terminal", map[string]any{"qr_rows": rows}, "", rows)
	}
	switch l.Kind {
	case LineListening:
		w.probe()
	case LineQR:
		w.showQR("pair-json", map[string]any{"qr": l.QR}, l.QR, nil)
	case LineConnected:
		if l.UserID != "" || l.UserName != "" {
			w.det.User = User{ID: l.UserID, Name: l.UserName}
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
		w.cur.closeReason = reason
	}
	if w.h.opts.Port > 0 {
		w.probe()
		return
	}
	w.setConnection(connected, reason)
}

// showQR posts a qr event. The code itself goes only into Private: whoever
// can see it can link their phone to this account.
func (w *watcher) showQR(source string, private map[string]any, payload string, rows []string) {
	w.det.QRCodes++
	w.cur.qrShown = true
	if w.det.Connection != ConnectionConnected {
		w.det.Connection = ConnectionPairing
	}
	w.cur.messageSet = true
	w.post(procmon.Event{
		Kind:    EventQR,
		Message: "waiting for a QR scan: on your phone open WhatsApp → Settings → Linked devices → Link a device",
		Data:    map[string]any{"source": source, "count": w.det.QRCodes},
		Private: private,
	})
	w.drawQR(payload, rows)
}

// drawQR shows a pairing code to the person at the sidecar's terminal, in
// one write so the log lines around it cannot split it.
func (w *watcher) drawQR(payload string, rows []string) {
	out := w.h.opts.QRWriter
	if out == nil {
		return
	}
	if text := QRText(payload, rows); text != "" {
		out.Write([]byte(text))
	}
}

// setConnection records the WhatsApp connection state of the current
// child, with readiness and the connected, paired and disconnected events.
func (w *watcher) setConnection(connected bool, reason string) {
	was := w.det.Connection == ConnectionConnected
	if connected == was && (connected || w.det.Connection == ConnectionDisconnected) {
		return
	}
	if !connected && w.det.Connection == ConnectionPairing {
		return // still waiting for the scan; nothing changed
	}
	if !connected {
		w.det.Connection = ConnectionDisconnected
		if !was {
			w.postIfChanged()
			return
		}
		w.post(procmon.Event{Kind: EventDisconnected, Reason: reason})
		w.flip()
		return
	}
	w.det.Connection = ConnectionConnected
	if w.connect != nil {
		w.connect.Stop()
		w.connect = nil
	}
	ev := procmon.Event{Kind: EventConnected}
	if w.cur.messageSet {
		ev.Message = "connected to WhatsApp"
		w.cur.messageSet = false
	}
	if w.det.User != (User{}) {
		ev.Data = map[string]any{"user": w.det.User}
	}
	w.post(ev)
	if w.cur.qrShown {
		// Once per pairing: later reconnects of the same session are not.
		w.cur.qrShown = false
		w.post(procmon.Event{Kind: EventPaired, Data: ev.Data})
	}
	w.flip()
}

// flip records a change of the connection, after its event has been
// posted, and raises flapping when there were too many in the window.
func (w *watcher) flip() {
	n, began := w.flaps.flip(time.Now())
	if began {
		w.det.Flapping = true
		w.cur.messageSet = true
		w.post(procmon.Event{
			Kind:    EventFlapping,
			Message: fmt.Sprintf("the WhatsApp connection changed %d times in %s; check the network, and that no other device or copy of this session uses the same account", n, w.h.opts.FlapWindow),
			Data:    map[string]any{"flips": n, "window_s": w.h.opts.FlapWindow.Seconds()},
		})
	}
	w.settleLater()
}

// settleLater sets the timer for when flapping may have passed, unless
// another flip comes first.
func (w *watcher) settleLater() {
	d, ok := w.flaps.settleIn(time.Now())
	if !ok {
		return
	}
	if w.flapClear != nil {
		w.flapClear.Stop()
	}
	w.flapClear = time.NewTimer(d)
}

// settle clears flapping once the window holds few enough flips, so it
// ends by itself while the connection stays up (or the bridge stays down).
func (w *watcher) settle() {
	if !w.flaps.settle(time.Now()) {
		w.settleLater()
		return
	}
	w.det.Flapping = false
	w.post(procmon.Event{Kind: EventHealth, Message: fmt.Sprintf("the WhatsApp connection has settled: at most %d changes in the last %s", w.h.opts.FlapLimit, w.h.opts.FlapWindow)})
}

func (w *watcher) connectTimeout() {
	if w.pid == 0 || w.det.Connection == ConnectionConnected || w.state != procmon.StateRunning {
		return
	}
	msg := fmt.Sprintf("the bridge has not connected to WhatsApp within %s; it keeps trying. Check the network and the bridge's output", w.h.opts.ConnectGrace)
	if w.det.Connection == ConnectionPairing {
		msg = fmt.Sprintf("the bridge has waited %s for a QR scan: on your phone open WhatsApp → Settings → Linked devices → Link a device, and scan the code", w.h.opts.ConnectGrace)
	}
	w.cur.messageSet = true
	w.post(procmon.Event{Kind: EventConnectTimeout, Message: msg, Data: map[string]any{"grace_s": w.h.opts.ConnectGrace.Seconds()}})
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
	if w.det != w.posted {
		w.post(procmon.Event{Kind: EventHealth})
	}
}

// logEvent tells the person watching the sidecar's log what the bridge
// layer saw; the same events reach the status feed.
func (w *watcher) logEvent(ev procmon.Event) { w.h.logEvent(ev, w.pid, w.det) }
