// Package metrics exposes the bridge's life in the Prometheus text format,
// for operators who run many gateways and want one dashboard and alerts
// rather than a websocket per sidecar.
//
// Everything is derived from the monitor's event stream: counters add up
// the exits and restarts the events report, and the gauges show the
// snapshot carried by the latest event.
package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// Path is where the sidecar serves the metrics.
const Path = "/metrics"

// Options configures the metrics. The zero value works.
type Options struct {
	// Version is reported in wa_sidecar_build_info.
	Version string
	// Clients returns the number of connected event clients; nil leaves
	// wa_sidecar_event_clients out.
	Clients func() int
	// Logger hears about a follower that fell behind; nil discards it.
	Logger *slog.Logger
}

// Metrics follows one monitor and serves what it saw.
type Metrics struct {
	mon      *procmon.Monitor
	sub      *procmon.Subscription
	log      *slog.Logger
	reg      *prometheus.Registry
	exits    *prometheus.CounterVec
	restarts *prometheus.CounterVec

	// snap is replaced whole by the follower and read by scrapes.
	snap atomic.Pointer[snapshot]
	// restartsSeen is the follower's own: the Restarts count it has
	// already turned into counter increments.
	restartsSeen int
}

// snapshot is what the gauges show; it is never modified once stored.
type snapshot struct {
	status procmon.Status
	states []procmon.State // every state seen so far, each exported as 0 or 1
	// lastCode is the returncode of the last exit of a process that ran
	// (a spawn failure has none); nil before the first.
	lastCode *int
}

// The classes the counters start at zero with, so that rate() works from
// the first scrape.
var classes = []procmon.Class{procmon.ClassFailure, procmon.ClassShutdown, procmon.ClassRequested}

// The monitor's own states; states parked in by a layer above are added
// the first time they are seen.
var knownStates = []procmon.State{
	procmon.StateStarting, procmon.StateRunning, procmon.StateBackoff,
	procmon.StateStopping, procmon.StateStopped, procmon.StateGivenUp,
}

// New subscribes to m at once, so that no exit is missed when m.Run starts
// afterwards, and returns the metrics; call Run to follow the events.
func New(m *procmon.Monitor, opts Options) *Metrics {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	x := &Metrics{
		mon: m,
		log: opts.Logger,
		reg: prometheus.NewRegistry(),
		exits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wa_sidecar_bridge_exits_total",
			Help: "Ends of the bridge, by class: failure (a crash, or a spawn that failed), shutdown (a normal-shutdown signal from outside), requested (stopped by the sidecar).",
		}, []string{"class"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wa_sidecar_bridge_restarts_total",
			Help: "Spawns of the bridge after the first, by the class of the exit that came before.",
		}, []string{"class"}),
	}
	for _, c := range classes {
		x.exits.WithLabelValues(string(c))
		x.restarts.WithLabelValues(string(c))
	}
	sub, last := m.Subscribe(1024)
	x.sub = sub
	x.restartsSeen = last.Status.Restarts
	x.snap.Store(&snapshot{status: last.Status, states: addState(knownStates, last.Status.State)})

	x.reg.MustRegister(
		x.exits, x.restarts, (*gauges)(x),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "wa_sidecar_build_info",
			Help:        "Always 1; the version label says which wa-sidecar this is.",
			ConstLabels: prometheus.Labels{"version": opts.Version},
		}, func() float64 { return 1 }),
	)
	if opts.Clients != nil {
		x.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wa_sidecar_event_clients",
			Help: "Clients connected to the event websocket.",
		}, func() float64 { return float64(opts.Clients()) }))
	}
	return x
}

// Handler serves the metrics in the Prometheus text format (or OpenMetrics,
// when the scraper asks for it).
func (x *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(x.reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

// Run applies the monitor's events until ctx is done or the monitor has
// finished, in which case every event it emitted has been applied.
func (x *Metrics) Run(ctx context.Context) error {
	defer func() { x.sub.Close() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-x.sub.C:
			if ok {
				x.apply(ev)
				continue
			}
			if !errors.Is(x.sub.Err(), procmon.ErrOverflow) {
				return nil
			}
			// The gauges resync from the snapshot; the exits in between are
			// lost, which the warning admits.
			x.log.Warn("metrics fell behind the event stream; some exits were not counted")
			var last procmon.Event
			x.sub, last = x.mon.Subscribe(1024)
			x.apply(procmon.Event{Status: last.Status})
		}
	}
}

// apply adds one event to the counters and stores the snapshot after it.
func (x *Metrics) apply(ev procmon.Event) {
	old := x.snap.Load()
	next := &snapshot{status: ev.Status, states: addState(old.states, ev.Status.State), lastCode: old.lastCode}
	if (ev.Kind == procmon.EventExited || ev.Kind == procmon.EventSpawnFailed) && ev.Exit != nil {
		x.exits.WithLabelValues(string(ev.Exit.Class)).Inc()
		if ev.Exit.Error == "" {
			code := ev.Exit.ReturnCode
			next.lastCode = &code
		}
	}
	// Restarts only grows; taking the difference keeps the total right
	// even across a resync that skipped events.
	if d := ev.Status.Restarts - x.restartsSeen; d > 0 {
		class := "unknown"
		if ev.Status.LastExit != nil {
			class = string(ev.Status.LastExit.Class)
		}
		x.restarts.WithLabelValues(class).Add(float64(d))
	}
	x.restartsSeen = ev.Status.Restarts
	x.snap.Store(next)
}

func addState(states []procmon.State, s procmon.State) []procmon.State {
	for _, have := range states {
		if have == s {
			return states
		}
	}
	out := append(append([]procmon.State(nil), states...), s)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// gauges is the collector for the values read from the latest snapshot.
type gauges Metrics

var (
	descState = prometheus.NewDesc("wa_sidecar_bridge_state",
		"1 for the state the bridge is in (starting, running, backoff, stopping, stopped, given_up, or one a layer above parks it in, such as needs_pairing), 0 for the others.",
		[]string{"state"}, nil)
	descReady = prometheus.NewDesc("wa_sidecar_bridge_ready",
		"1 while the bridge runs and is ready.", nil, nil)
	descUptime = prometheus.NewDesc("wa_sidecar_bridge_uptime_seconds",
		"How long the current bridge process has run; 0 while none runs.", nil, nil)
	descLastExit = prometheus.NewDesc("wa_sidecar_bridge_last_exit_code",
		"Return code of the last bridge process to end, as the Hermes gateway logs it: the exit code, or minus the number of the signal that killed it. Absent until one has ended.",
		nil, nil)
	descFailures = prometheus.NewDesc("wa_sidecar_bridge_consecutive_failures",
		"Failures since the bridge last stayed up long enough to be forgiven.", nil, nil)
	descCrashloop = prometheus.NewDesc("wa_sidecar_bridge_crashloop",
		"1 while the bridge is crash-looping (restarts continue at the longest delay).", nil, nil)
)

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descReady, descUptime, descLastExit, descFailures, descCrashloop} {
		ch <- d
	}
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	s := g.snap.Load()
	st := s.status
	for _, state := range s.states {
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, b2f(st.State == state), string(state))
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, b2f(st.Ready && st.State == procmon.StateRunning))
	up := 0.0
	if st.StartedAt != nil {
		up = time.Since(*st.StartedAt).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(descUptime, prometheus.GaugeValue, up)
	if s.lastCode != nil {
		ch <- prometheus.MustNewConstMetric(descLastExit, prometheus.GaugeValue, float64(*s.lastCode))
	}
	ch <- prometheus.MustNewConstMetric(descFailures, prometheus.GaugeValue, float64(st.ConsecutiveFailures))
	ch <- prometheus.MustNewConstMetric(descCrashloop, prometheus.GaugeValue, b2f(st.Crashloop))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
