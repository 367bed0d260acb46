// Package notify tells systemd how the sidecar is doing, through the
// sd_notify protocol of a Type=notify unit: READY=1 once the sidecar serves
// its status and has written the files clients find it by, STATUS= with
// the bridge's state as `systemctl status` shows it, WATCHDOG=1 while the
// monitor still answers, and STOPPING=1 when the sidecar begins to shut
// down.
//
// Outside systemd (no NOTIFY_SOCKET) every method is a no-op, so the
// sidecar wires it in unconditionally.
package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// Notifier sends the sidecar's state to systemd. Its zero value is not
// usable; call New.
type Notifier struct {
	m        *procmon.Monitor
	f        *procmon.Follower // nil when systemd does not listen
	log      *slog.Logger
	socket   string // NOTIFY_SOCKET
	enabled  bool
	watchdog time.Duration // WATCHDOG_USEC; 0 when systemd does not watch
	summary  procmon.Summary

	readyOnce, stoppingOnce sync.Once
	failOnce                sync.Once
}

// New reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from the
// environment and, when systemd listens, follows m at once, so that Run
// reports every state from the first even if m.Run starts before it. A
// malformed watchdog setting is an error, because running without the
// pings systemd expects would get the sidecar killed. STATUS= is
// summary's line, made coarse: it is sent again whenever its text
// changes, and a clock to the second would send it every second.
func New(m *procmon.Monitor, logger *slog.Logger, summary procmon.Summary) (*Notifier, error) {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	summary.Coarse = true
	n := &Notifier{m: m, log: logger, socket: os.Getenv("NOTIFY_SOCKET"), summary: summary}
	n.enabled = n.socket != ""
	if !n.enabled {
		return n, nil
	}
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return nil, fmt.Errorf("systemd watchdog settings: %w (check WatchdogSec= in the unit)", err)
	}
	n.watchdog = wd
	n.f = m.Follow(256)
	return n, nil
}

// Enabled reports whether systemd listens, that is whether NOTIFY_SOCKET is set.
func (n *Notifier) Enabled() bool { return n.enabled }

// Watchdog is the interval systemd expects pings within, or 0.
func (n *Notifier) Watchdog() time.Duration { return n.watchdog }

// Ready tells systemd the sidecar is up. Only the first call sends.
func (n *Notifier) Ready() {
	n.readyOnce.Do(func() { n.send(daemon.SdNotifyReady) })
}

// Stopping tells systemd the sidecar is shutting down, so `systemctl
// status` shows "deactivating" rather than a hung service while the bridge
// is given its stop timeout. Only the first call sends.
func (n *Notifier) Stopping() {
	n.stoppingOnce.Do(func() {
		n.send(daemon.SdNotifyStopping + "\nSTATUS=stopping: bringing the bridge down")
	})
}

// writeTimeout bounds one write to the notify socket. systemd reads it in
// its main loop, so a healthy one takes a datagram at once; one that does
// not (a stalled or wedged manager, a socket nobody reads) must never hold
// up the sidecar, least of all its shutdown.
const writeTimeout = 250 * time.Millisecond

func (n *Notifier) send(state string) {
	if !n.enabled {
		return
	}
	if err := n.write(state); err != nil {
		// A vanished or stalled socket stays so; one warning says all
		// there is.
		n.failOnce.Do(func() {
			n.log.Warn("cannot reach systemd's notify socket", "socket", n.socket, "error", err)
		})
	}
}

// write sends one datagram, as sd_notify(3) does, but gives up after
// writeTimeout: a datagram socket's write blocks while the receiver's
// queue is full, and daemon.SdNotify sets no deadline. A name starting
// with '@' is an abstract socket, which net handles.
func (n *Notifier) write(state string) error {
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	_, err = conn.Write([]byte(state))
	return err
}

// Run follows the monitor's events and keeps systemd's STATUS= in step
// with them, and feeds the watchdog for as long as the monitor goroutine
// answers a Ping: a stuck monitor stops the pings and lets systemd restart
// the sidecar. Run returns when ctx is done or the monitor has finished,
// and releases the follower. Without NOTIFY_SOCKET it returns at once.
func (n *Notifier) Run(ctx context.Context) error {
	if !n.enabled {
		return nil
	}
	defer n.f.Close()
	if n.watchdog > 0 {
		wctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.feedWatchdog(wctx)
		}()
		defer wg.Wait()
		defer stop()
	}

	st := n.f.Last().Status
	sent := ""
	for {
		now := time.Now()
		if text := n.summary.Line(st, now); text != sent {
			sent = text
			n.send("STATUS=" + text)
		}
		// Waiting at most until the text would change by itself (the
		// uptime it shows) keeps it current between events.
		wait, cancel := ctx, context.CancelFunc(func() {})
		if d, ok := n.summary.NextChange(st, now); ok {
			wait, cancel = context.WithTimeout(ctx, d)
		}
		u, err := n.f.Next(wait)
		cancel()
		switch {
		case ctx.Err() != nil, errors.Is(err, procmon.ErrFinished):
			return nil
		case errors.Is(err, context.DeadlineExceeded):
		case err != nil:
			return err
		default:
			// Only the latest snapshot matters here, so a resync loses
			// nothing.
			st = u.Status
		}
	}
}

// feedWatchdog pings the monitor every half watchdog interval, as
// sd_watchdog_enabled(3) advises, which leaves room for one late ping,
// and tells systemd each time it answered, until ctx is done.
func (n *Notifier) feedWatchdog(ctx context.Context) {
	t := time.NewTicker(n.watchdog / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.ping(ctx)
		}
	}
}

func (n *Notifier) ping(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, n.watchdog/2)
	defer cancel()
	err := n.m.Ping(pctx)
	switch {
	case err == nil:
		n.send(daemon.SdNotifyWatchdog)
	case ctx.Err() != nil, errors.Is(err, procmon.ErrNotRunning):
		// Shutting down: systemd knows from STOPPING=1.
	default:
		n.log.Error("the monitor did not answer; withholding the systemd watchdog ping", "error", err, "watchdog", n.watchdog.String())
	}
}
