package bridge

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/qrcode"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// drawQR shows a pairing code to the person at the sidecar's terminal, in
// one write so the log lines around it cannot split it. A payload is drawn
// anew; rows the bridge drew are shown as they are.
func (w *watcher) drawQR(payload string, rows []string) {
	out := w.h.opts.QRWriter
	if out == nil {
		return
	}
	if payload != "" {
		rows = qrcode.Lines(payload)
	}
	if len(rows) == 0 {
		return
	}
	var sb strings.Builder
	sb.WriteString("\nScan this QR code: WhatsApp on your phone → Settings → Linked devices → Link a device\n\n")
	for _, r := range rows {
		sb.WriteString(r)
		sb.WriteByte('\n')
	}
	sb.WriteByte('\n')
	out.Write([]byte(sb.String()))
}

// fingerprint tells one state of creds.json from another without reading
// it: a new pairing writes a new file (new inode or size or mtime), and
// deleting the session removes it.
type fingerprint struct {
	exists bool
	ino    uint64
	size   int64
	mtime  time.Time
}

func credsFingerprint(session string) fingerprint {
	st, err := os.Stat(filepath.Join(session, "creds.json"))
	if err != nil {
		return fingerprint{}
	}
	fp := fingerprint{exists: true, size: st.Size(), mtime: st.ModTime()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		fp.ino = sys.Ino
	}
	return fp
}

// startCredsWatch begins polling creds.json while the bridge is parked in
// needs_pairing. Polling (one stat a second, only while parked) is used
// rather than inotify because the way out of a logout is to delete the
// session directory, and an inotify watch dies with the directory it
// watches; a stat does not care.
func (w *watcher) startCredsWatch() {
	w.stopCredsWatch()
	if w.h.opts.SessionDir == "" {
		return
	}
	w.credsFP = credsFingerprint(w.h.opts.SessionDir)
	if fp := w.h.parkedCreds.Load(); fp != nil {
		w.credsFP = *fp
	}
	w.creds = time.NewTicker(w.h.opts.CredsPoll)
}

func (w *watcher) stopCredsWatch() {
	if w.creds != nil {
		w.creds.Stop()
		w.creds = nil
	}
}

// checkCreds resumes the bridge once creds.json has changed: new
// credentials from a pairing, or none at all after the session was deleted
// (the bridge then shows a QR code). A 0-byte file is a write in progress
// and is waited out.
func (w *watcher) checkCreds() {
	fp := credsFingerprint(w.h.opts.SessionDir)
	if fp == w.credsFP || (fp.exists && fp.size == 0) {
		return
	}
	w.stopCredsWatch()
	what := "creds.json was removed"
	if fp.exists {
		what = "creds.json changed"
	}
	w.log.Info(what+"; starting the bridge again", "session", w.h.opts.SessionDir)
	w.post(procmon.Event{Kind: EventCredsChanged, Message: what + "; starting the bridge again", Data: map[string]any{"exists": fp.exists}})
	if err := w.m.Start(w.ctx); err != nil && !errors.Is(err, procmon.ErrNotRunning) {
		w.log.Warn("could not resume the bridge", "error", err)
	}
}
