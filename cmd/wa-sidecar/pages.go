package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/session"
	"github.com/wa-sidecar/wa-sidecar/procmon"
	"github.com/wa-sidecar/wa-sidecar/signals"
)

// pageRelease gives back, once the bridge's first start has settled, the
// pages of the sidecar's binary that its own start and the bridge's have
// read (see signals.ReleaseExecPages). Until then the sidecar is busy
// starting and watching the bridge come up, and would only map them again;
// after it, what it still uses comes back from the page cache once and
// stays.
type pageRelease struct {
	follow *procmon.Follower
	logger *slog.Logger
}

func (r *pageRelease) Run(ctx context.Context) error {
	defer r.follow.Close()
	for {
		u, err := r.follow.Next(ctx)
		if errors.Is(err, procmon.ErrFinished) {
			return nil
		} else if err != nil {
			return err
		}
		if settled(u.Event) {
			break
		}
	}
	kib, err := signals.ReleaseExecPages()
	if err != nil {
		r.logger.Debug("could not release the start's pages", "error", err)
		return nil
	}
	r.logger.Debug("released the start's pages", "KiB", kib)
	return nil
}

// settled says whether ev ends the bridge's start: it has connected to
// WhatsApp, the sidecar has stopped waiting for it to (it goes on trying),
// or it is parked until it is paired again or started by hand, or waits
// while the gateway's own bridge holds the port. (A stop is left out: the
// sidecar's own shutdown ends with one.)
func settled(ev procmon.Event) bool {
	switch ev.Kind {
	case bridge.EventConnected, bridge.EventConnectTimeout, procmon.EventGivenUp:
		return true
	}
	switch ev.Status.State {
	case bridge.StateNeedsPairing, session.StateYielded:
		return true
	}
	return false
}
