package bridge

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// Expect is what the Hermes gateway checks, each time it connects, before
// it uses a bridge that is already running instead of killing it and
// starting its own.
type Expect struct {
	// Script is the bridge.js the gateway is configured with: the running
	// bridge's scriptHash must be that file's (or, for newer bridges, its
	// folder's runtime files'), and the folder's npm stamp must be fresh.
	// Empty skips both checks.
	Script string
	// SendReadReceipts is the gateway's send_read_receipts setting, which
	// newer gateways compare with the bridge's sendReadReceipts.
	SendReadReceipts bool
	// Port and SessionDir are the gateway's bridge_port and session, when
	// known: a bridge elsewhere is not the one it looks at, or fights its
	// own for the session. 0 and empty skip the checks.
	Port       int
	SessionDir string
}

// EventAdoption says the gateway would now adopt the bridge, or no longer
// would, with the reasons (details.whatsapp.adoption).
const EventAdoption procmon.Kind = "adoption"

// EventBridgeUpdated says the bridge's files changed on disk while it ran
// (a `hermes update`), so it is restarted to serve them.
const EventBridgeUpdated procmon.Kind = "bridge_updated"

// The reasons the gateway would not adopt the bridge.
const (
	ReasonNotRunning         = "not_running"
	ReasonNotConnected       = "not_connected"
	ReasonNoCreds            = "no_creds"
	ReasonScriptHashDiffers  = "script_hash_differs"
	ReasonReadReceiptsDiffer = "read_receipts_differ"
	ReasonPortDiffers        = "port_differs"
	ReasonSessionDiffers     = "session_differs"
	// ReasonNPMStampDiffers is a warning, not a reason: the gateway runs
	// npm install first, then adopts the bridge all the same.
	ReasonNPMStampDiffers = "npm_stamp_differs"
)

// Adoption is whether the gateway would use the running bridge if it
// connected now, and why not.
type Adoption struct {
	Adoptable bool           `json:"adoptable"`
	Reasons   []AdoptionNote `json:"reasons"`
	// Warnings do not stop the gateway adopting the bridge, but it would
	// do something first that a person should know of.
	Warnings []AdoptionNote `json:"warnings,omitempty"`
	// DiskHash is the hash the gateway would compute from the files.
	DiskHash string `json:"disk_hash,omitempty"`
}

// AdoptionNote is one reason, machine-readable and in words.
type AdoptionNote struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// equal says a and o are the same verdict. It must see every field (a
// test checks that it does): Details compares its Adoption by pointer,
// and relies on assess keeping the pointer of an equal verdict.
func (a *Adoption) equal(o *Adoption) bool {
	if a == nil || o == nil {
		return a == o
	}
	return a.Adoptable == o.Adoptable && a.DiskHash == o.DiskHash && slices.Equal(a.Reasons, o.Reasons) && slices.Equal(a.Warnings, o.Warnings)
}

func (a *Adoption) codes() string {
	c := make([]string, len(a.Reasons))
	for i, r := range a.Reasons {
		c[i] = r.Code
	}
	return strings.Join(c, ",")
}

// bridgeFiles remembers the bridge files' state, so that hashes are only
// computed again when a file changed.
type bridgeFiles struct {
	sig      string
	reported string // the scriptHash these results are for
	disk     string
	match    bool
	stamp    gateway.Stamp
}

// signature is cheap: a stat of each file the gateway hashes.
func signature(script string) string {
	dir := filepath.Dir(script)
	var b strings.Builder
	names := append([]string{filepath.Base(script)}, gateway.RuntimeInputs...)
	names = append(names, filepath.Join("node_modules", ".hermes-pkg-hash"))
	for i, n := range names {
		// bridge.js itself may be a link, which the gateway follows; the
		// other inputs must not be, so a link's own stat is what counts.
		stat := os.Lstat
		if i == 0 {
			stat = os.Stat
		}
		st, err := stat(filepath.Join(dir, n))
		if err != nil {
			b.WriteString("-;")
			continue
		}
		fmt.Fprintf(&b, "%d:%d:%d;", st.Size(), st.ModTime().UnixNano(), st.Mode())
	}
	return b.String()
}

// check returns the script's hash comparison and npm stamp, computing them
// again only when a file changed or the bridge reports another hash.
func (f *bridgeFiles) check(script, reported string) (disk string, match bool, stamp gateway.Stamp) {
	sig := signature(script)
	if sig != f.sig || reported != f.reported {
		f.sig, f.reported = sig, reported
		f.disk, f.match = gateway.MatchScriptHash(reported, script)
		f.stamp = gateway.CheckStamp(filepath.Dir(script))
	}
	return f.disk, f.match, f.stamp
}

// assess works out whether the gateway would adopt the bridge now. It is
// nil without expectations.
func (w *watcher) assess() *Adoption {
	return w.h.assess(w.pid, w.cur.answered, w.state, &w.det, &w.files)
}

// assess works out whether the gateway would adopt the bridge pid (0 when
// none runs) in state, with det its details; answered says it has
// answered /health. files caches the hashes of the bridge files; it is
// only used for a bridge that runs and has answered. A verdict equal to
// det's is det's own, so that Details stay comparable with ==.
func (h *Hermes) assess(pid int, answered bool, state procmon.State, det *Details, files *bridgeFiles) *Adoption {
	ex := h.opts.Expect
	if ex == nil {
		return nil
	}
	a := &Adoption{Reasons: []AdoptionNote{}}
	add := func(code, format string, args ...any) {
		a.Reasons = append(a.Reasons, AdoptionNote{Code: code, Message: fmt.Sprintf(format, args...)})
	}
	running := pid != 0 && answered
	switch {
	case pid == 0:
		add(ReasonNotRunning, "the bridge is not running (state %s)", state)
	case det.Connection != ConnectionConnected:
		add(ReasonNotConnected, "the bridge is not connected to WhatsApp (%s); the gateway would stop it and start its own", det.Connection)
	}
	if ex.Port != 0 && h.opts.Port != ex.Port {
		add(ReasonPortDiffers, "the bridge listens on port %d, but the gateway looks on %d (its bridge_port): it would start a bridge of its own there", h.opts.Port, ex.Port)
	}
	if ex.SessionDir != "" && h.opts.SessionDir != "" && !sameSession(h.opts.SessionDir, ex.SessionDir) {
		add(ReasonSessionDiffers, "the bridge uses the session %s, but the gateway's is %s: the two would fight for the WhatsApp account", h.opts.SessionDir, ex.SessionDir)
	}
	if s := h.opts.SessionDir; s != "" {
		if _, err := os.Stat(filepath.Join(s, "creds.json")); err != nil {
			add(ReasonNoCreds, "there is no creds.json in %s: the gateway refuses to start WhatsApp until it is paired", s)
		}
	}
	if ex.Script != "" && running {
		disk, match, stamp := files.check(ex.Script, det.ScriptHash)
		a.DiskHash = disk
		if !match {
			reported := det.ScriptHash
			if reported == "" {
				reported = "none"
			}
			add(ReasonScriptHashDiffers, "the bridge reports scriptHash %s, but the gateway computes %s from %s: it would take the bridge for a stale one and replace it",
				reported, orNone(disk), ex.Script)
		}
		if !stamp.Fresh {
			a.Warnings = append(a.Warnings, AdoptionNote{Code: ReasonNPMStampDiffers, Message: fmt.Sprintf(
				"the npm stamp %s does not match package.json (%s): the gateway would run npm install in %s, under the running bridge, before it adopts it; wa-sidecar prepare-bridge %s writes the stamp",
				stamp.Path, orNone(stamp.Problem), filepath.Dir(ex.Script), filepath.Dir(ex.Script))})
		}
	}
	if running {
		rr := det.SendReadReceipts.Value
		if rr != ex.SendReadReceipts {
			add(ReasonReadReceiptsDiffer, "the bridge sends read receipts: %v, the gateway's send_read_receipts is %v; set WHATSAPP_SEND_READ_RECEIPTS to match, or change the setting",
				rr, ex.SendReadReceipts)
		}
	}
	a.Adoptable = len(a.Reasons) == 0
	if a.equal(det.Adoption) {
		return det.Adoption
	}
	return a
}

// sameSession compares two session paths, symlinks resolved.
func sameSession(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	ra, errA := filepath.EvalSymlinks(a)
	rb, errB := filepath.EvalSymlinks(b)
	return errA == nil && errB == nil && ra == rb
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// reassess updates the adoption details and readiness, posts an adoption
// event when the verdict or its reasons changed, and restarts a bridge
// whose files were updated under it.
func (w *watcher) reassess() {
	a := w.assess()
	if a == nil {
		w.setReady(w.det.Connection == ConnectionConnected)
		return
	}
	prev := w.det.Adoption
	w.det.Adoption = a
	// The verdict first, then what follows from it: readiness, a restart.
	w.announceAdoption(prev, a)
	w.setReady(w.det.Connection == ConnectionConnected && a.Adoptable)
	w.restartIfUpdated(a)
}

// announceAdoption posts an adoption event when the verdict or its reasons
// changed from prev to a (already in the details).
func (w *watcher) announceAdoption(prev, a *Adoption) {
	if ev := adoptionEvent(prev, a); ev != nil {
		w.post(*ev)
	}
}

// adoptionEvent is the adoption event for a change of verdict from prev
// to a, or nil when neither the verdict nor its reasons changed.
func adoptionEvent(prev, a *Adoption) *procmon.Event {
	if a == nil || prev != nil && prev.Adoptable == a.Adoptable && prev.codes() == a.codes() {
		return nil
	}
	ev := procmon.Event{Kind: EventAdoption, Reason: a.codes(), Data: map[string]any{"adoptable": a.Adoptable}}
	if a.Adoptable {
		ev.Message = "the gateway would use this bridge as it is"
	} else if prev != nil && prev.Adoptable {
		ev.Message = "the gateway would no longer use this bridge: " + a.Reasons[0].Message
	}
	return &ev
}

// restartIfUpdated restarts the bridge when its files changed under it,
// once the verdict a says it is due.
func (w *watcher) restartIfUpdated(a *Adoption) {
	if !w.cur.stale.due(time.Now(), a, &w.det, w.state == procmon.StateRunning) {
		return
	}
	msg := fmt.Sprintf("the bridge's files changed on disk (hermes update?): it serves %s, the files hash to %s; restarting it so that they agree again",
		w.det.ScriptHash, orNone(a.DiskHash))
	w.cur.messageSet = true
	w.post(procmon.Event{Kind: EventBridgeUpdated, Message: msg, Data: map[string]any{"running_hash": w.det.ScriptHash, "disk_hash": a.DiskHash}})
	if err := w.m.Restart(w.ctx); err != nil && w.ctx.Err() == nil {
		w.log.Warn("could not restart the updated bridge", "error", err)
	}
}

// staleFiles decides when one child is restarted because its files
// changed on disk after it had matched them (a `hermes update` under a
// running bridge): once, at a moment when no message waits in its queue,
// so the gateway can adopt it again. A bridge that never matched is left
// alone: restarting could not help it, and would never end.
type staleFiles struct {
	matched  bool      // its scriptHash has matched the files
	updating bool      // the restart is due already
	since    time.Time // when the files were first seen changed under it
}

// due takes in the verdict a on the child with details det at now, and
// says whether it is time to restart it; running says it runs.
func (s *staleFiles) due(now time.Time, a *Adoption, det *Details, running bool) bool {
	hashOK := true
	for _, r := range a.Reasons {
		if r.Code == ReasonScriptHashDiffers {
			hashOK = false
		}
	}
	if hashOK {
		if det.ScriptHash != "" {
			s.matched = true
		}
		s.since = time.Time{}
		return false
	}
	if !s.matched || s.updating || !running || det.Connection == ConnectionPairing {
		return false // a pairing in progress would have to start again
	}
	if s.since.IsZero() {
		s.since = now
	}
	if det.QueueLength.Value > 0 && now.Sub(s.since) < staleQueueWait {
		return false // messages wait for the gateway; try again at the next probe
	}
	s.updating = true
	return true
}

// staleQueueWait is how long a restart for changed files waits for the
// bridge's queue to empty: with the gateway away, nobody takes the
// messages, and a stale bridge would only be killed by it later, queue and
// all.
const staleQueueWait = time.Minute

// setReady keeps the monitor's readiness in line with what the gateway
// needs: connected, and adoptable when the gateway's checks are known.
func (w *watcher) setReady(ready bool) {
	if w.h.opts.Port == 0 || w.pid == 0 || ready == w.cur.ready {
		return
	}
	w.cur.ready = ready
	if err := w.m.SetReady(w.ctx, w.pid, ready); err != nil && w.ctx.Err() == nil && !errors.Is(err, procmon.ErrNotRunning) {
		w.log.Warn("could not set readiness", "error", err)
	}
}
