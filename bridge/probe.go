package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// probeResult is one /health answer for one child.
type probeResult struct {
	pid    int
	health Health
	err    error
}

// probeScheduler decides when the bridge's /health is asked: once a
// period while a child runs, and whenever the watcher asks, but never two
// at once: a probe asked for while one is in flight follows it. Answers
// arrive on results, in the watcher's goroutine, which owns the scheduler.
type probeScheduler struct {
	ctx     context.Context // ends the probes in flight
	client  *prober
	port    int
	timeout time.Duration
	period  time.Duration

	results  chan probeResult
	inFlight sync.WaitGroup
	busy     bool // a probe is in flight
	again    bool // and another was asked for meanwhile
	tick     *time.Ticker
}

func newProbeScheduler(ctx context.Context, client *prober, opts Options) *probeScheduler {
	return &probeScheduler{ctx: ctx, client: client, port: opts.Port, timeout: opts.HealthTimeout, period: opts.HealthPeriod,
		results: make(chan probeResult, 1)}
}

// ask probes pid now, or after the probe in flight.
func (s *probeScheduler) ask(pid int) {
	if s.busy {
		s.again = true
		return
	}
	s.busy = true
	ctx, client, port, timeout := s.ctx, s.client, s.port, s.timeout
	s.inFlight.Add(1)
	go func() {
		defer s.inFlight.Done()
		h, err := client.probe(ctx, port, timeout)
		select {
		case s.results <- probeResult{pid: pid, health: h, err: err}:
		case <-ctx.Done():
		}
	}()
}

// landed takes note that the probe in flight has answered, and says
// whether another was asked for meanwhile.
func (s *probeScheduler) landed() (again bool) {
	again = s.again
	s.busy, s.again = false, false
	return again
}

// startTicking begins the periodic probes of a new child.
func (s *probeScheduler) startTicking() {
	s.stopTicking()
	s.tick = time.NewTicker(s.period)
}

func (s *probeScheduler) stopTicking() {
	if s.tick != nil {
		s.tick.Stop()
		s.tick = nil
	}
}

// tickC is the periodic probes' channel, nil while they are off.
func (s *probeScheduler) tickC() <-chan time.Time { return tickC(s.tick) }

// stop ends the periodic probes and waits for those in flight, which end
// with the context.
func (s *probeScheduler) stop() {
	s.stopTicking()
	s.inFlight.Wait()
}

// probe asks the current child for its health.
func (w *watcher) probe() {
	if w.h.opts.Port == 0 || w.pid == 0 || w.state != procmon.StateRunning {
		return
	}
	w.probes.ask(w.pid)
}

// result takes in one /health answer: its health details, its connection,
// and, for a child that failed too many in a row, a restart.
func (w *watcher) result(r probeResult) {
	if r.pid != w.pid || w.state != procmon.StateRunning {
		return
	}
	if r.err != nil {
		if !w.cur.answered && errors.Is(r.err, syscall.ECONNREFUSED) && time.Since(w.cur.began) < w.h.opts.ConnectGrace {
			// Not listening yet: Node can take seconds to load the bridge.
			// A bridge that accepts and then hangs is not excused.
			return
		}
		w.det.Health = HealthFailing
		w.det.HealthFailures++
		w.det.HealthError = r.err.Error()
		if w.det.HealthFailures >= w.h.opts.HealthFailures && !w.cur.restarted {
			w.unresponsive()
			return
		}
		w.postIfChanged()
		return
	}
	w.cur.answered = true
	w.h.portTaken.Store(0)
	w.det.Health, w.det.HealthFailures, w.det.HealthError = HealthOK, 0, ""
	w.det.QueueLength, w.det.ScriptHash = reported(r.health.QueueLength), r.health.ScriptHash
	w.det.SendReadReceipts = reported(r.health.SendReadReceipts)
	reason := w.cur.closeReason
	if reason == "" {
		reason = "GET /health says disconnected"
	}
	w.setConnection(r.health.Status == ConnectionConnected, reason)
	w.reassess()
	w.postIfChanged()
}

// unresponsive restarts a child that is alive but no longer answers. Its
// exit counts as a failure, so a bridge that hangs again and again backs
// off, raises crashloop and meets --max-restarts like one that crashes.
func (w *watcher) unresponsive() {
	w.cur.restarted = true
	n, last := w.det.HealthFailures, w.det.HealthError
	w.log.Warn("the bridge is alive but does not answer /health; restarting it", "pid", w.pid, "failures", n, "error", last)
	w.cur.messageSet = true
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
