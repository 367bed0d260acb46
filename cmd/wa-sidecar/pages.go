package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

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
// stays. A bridge that never settles (one that keeps failing before it can
// connect) gets the release after wait all the same: twice the connect
// grace, so that the grace's own end settles a bridge that stays up.
type pageRelease struct {
	follow *procmon.Follower
	wait   time.Duration
	logger *slog.Logger
}

func (r *pageRelease) Run(ctx context.Context) error {
	if !r.settle(ctx) {
		return nil
	}
	kib, err := signals.ReleaseExecPages()
	if err != nil {
		r.logger.Debug("did not release the start's pages", "error", err)
		return nil
	}
	r.logger.Debug("released the start's pages", "KiB", kib)
	return nil
}

// settle follows the monitor until the bridge's start has settled, or wait
// has passed, and closes the follower. It reports false if the monitor
// finished or ctx ended first.
func (r *pageRelease) settle(ctx context.Context) bool {
	defer r.follow.Close()
	waitCtx, cancel := context.WithTimeout(ctx, r.wait)
	defer cancel()
	for {
		u, err := r.follow.Next(waitCtx)
		switch {
		case err == nil:
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			return true
		default:
			return false
		}
		// After a gap the event that settled the start may be among
		// those lost: the release comes now rather than never.
		if u.Missed > 0 || settled(u.Event) {
			return true
		}
	}
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
