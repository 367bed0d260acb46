package bridge

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

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

// credsWatch polls creds.json while the bridge is parked in needs_pairing.
// Polling (one stat a second, only while parked) is used rather than
// inotify because the way out of a logout is to delete the session
// directory, and an inotify watch dies with the directory it watches; a
// stat does not care.
type credsWatch struct {
	dir  string
	poll time.Duration
	tick *time.Ticker // nil while not watching
	seen fingerprint  // creds.json when the watch began
}

// start begins watching for a change from seen.
func (c *credsWatch) start(seen fingerprint) {
	c.stop()
	c.seen = seen
	c.tick = time.NewTicker(c.poll)
}

func (c *credsWatch) stop() {
	if c.tick != nil {
		c.tick.Stop()
		c.tick = nil
	}
}

// C is when to check again, nil while not watching.
func (c *credsWatch) C() <-chan time.Time { return tickC(c.tick) }

// check says whether creds.json has changed since the watch began: new
// credentials from a pairing, or none at all after the session was
// deleted. A 0-byte file is a write in progress and is waited out.
func (c *credsWatch) check() (fingerprint, bool) {
	fp := credsFingerprint(c.dir)
	return fp, fp != c.seen && (!fp.exists || fp.size != 0)
}

// startCredsWatch watches creds.json from how it was when the bridge was
// parked, so that a change made right after the park is not missed.
func (w *watcher) startCredsWatch() {
	w.creds.stop()
	if w.creds.dir == "" {
		return
	}
	fp := w.h.parkedCreds.Load()
	if fp == nil {
		now := credsFingerprint(w.creds.dir)
		fp = &now
	}
	w.creds.start(*fp)
}

// checkCreds resumes the bridge once creds.json has changed.
func (w *watcher) checkCreds() {
	fp, changed := w.creds.check()
	if !changed {
		return
	}
	w.creds.stop()
	what := "creds.json was removed"
	if fp.exists {
		what = "creds.json changed"
	}
	w.log.Info(what+"; starting the bridge again", "session", w.creds.dir)
	w.post(procmon.Event{Kind: EventCredsChanged, Message: what + "; starting the bridge again", Data: map[string]any{"exists": fp.exists}})
	if err := w.m.Start(w.ctx); err != nil && !errors.Is(err, procmon.ErrNotRunning) {
		w.log.Warn("could not resume the bridge", "error", err)
	}
}
