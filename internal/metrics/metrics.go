// Package metrics exposes the bridge's life in the Prometheus text format,
// for operators who run many gateways and want one dashboard and alerts
// rather than a websocket per sidecar.
//
// Everything is derived from the monitor's event stream: counters add up
// the exits and restarts the events report, and the gauges show the
// status carried by the latest event.
//
// The metrics are kept in a private github.com/VictoriaMetrics/metrics
// Set, with that library's go_* and process_* metrics after them. It was
// chosen over client_golang because it needs no protobuf, which keeps the
// sidecar's binary, and so its resident memory, smaller. The library
// writes # TYPE lines but cannot carry help text: its # HELP lines name
// the metric and say nothing more, so the handler fills them in from a
// table of its own (help.go). docs/deployment.md says what each
// wa_sidecar_* metric means.
package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// Path is where the sidecar serves the metrics.
const Path = "/metrics"

// contentType is the Prometheus text format, version 0.0.4.
const contentType = "text/plain; version=0.0.4; charset=utf-8"

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

// The metrics' names, as exported.
const (
	nameExits     = "wa_sidecar_bridge_exits_total"
	nameRestarts  = "wa_sidecar_bridge_restarts_total"
	nameState     = "wa_sidecar_bridge_state"
	nameReady     = "wa_sidecar_bridge_ready"
	nameUptime    = "wa_sidecar_bridge_uptime_seconds"
	nameLastExit  = "wa_sidecar_bridge_last_exit_code"
	nameFailures  = "wa_sidecar_bridge_consecutive_failures"
	nameCrashloop = "wa_sidecar_bridge_crashloop"
	nameClients   = "wa_sidecar_event_clients"
	nameBuildInfo = "wa_sidecar_build_info"
)

// Metrics follows one monitor and serves what it saw.
type Metrics struct {
	f   *procmon.Follower
	log *slog.Logger
	set *vm.Set

	// mu is held by the follower while it applies an event and by a scrape
	// while it writes the set, so that a scrape shows the figures after
	// one event, never half of them.
	mu        sync.Mutex
	states    map[procmon.State]*vm.Gauge // every state seen so far, each 0 or 1
	ready     *vm.Gauge
	failures  *vm.Gauge
	crashloop *vm.Gauge
	// lastExit is nil until a process that ran has ended (a spawn failure
	// has no return code), so that the metric is absent until then.
	lastExit *vm.Gauge
	// startedAt is when the running bridge process started; nil while
	// none runs. The uptime gauge reads it during a scrape.
	startedAt *time.Time

	// restartsSeen is the follower's own: the Restarts count it has
	// already turned into counter increments.
	restartsSeen int
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

// New follows m at once, so that no exit is missed when m.Run starts
// afterwards, and returns the metrics; call Run to apply the events.
func New(m *procmon.Monitor, opts Options) *Metrics {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// A setting of the whole library: write # HELP and # TYPE lines.
	vm.ExposeMetadata(true)
	set := vm.NewSet()
	x := &Metrics{
		log:       opts.Logger,
		set:       set,
		states:    map[procmon.State]*vm.Gauge{},
		ready:     set.NewGauge(nameReady, nil),
		failures:  set.NewGauge(nameFailures, nil),
		crashloop: set.NewGauge(nameCrashloop, nil),
	}
	for _, c := range classes {
		set.NewCounter(labelled(nameExits, "class", string(c)))
		set.NewCounter(labelled(nameRestarts, "class", string(c)))
	}
	for _, s := range knownStates {
		x.states[s] = set.NewGauge(labelled(nameState, "state", string(s)), nil)
	}
	set.NewGauge(nameUptime, func() float64 {
		// Called while a scrape holds x.mu.
		if x.startedAt == nil {
			return 0
		}
		return time.Since(*x.startedAt).Seconds()
	})
	set.NewGauge(labelled(nameBuildInfo, "version", opts.Version), nil).Set(1)
	if clients := opts.Clients; clients != nil {
		set.NewGauge(nameClients, func() float64 { return float64(clients()) })
	}

	x.f = m.Follow(1024)
	last := x.f.Last()
	x.restartsSeen = last.Status.Restarts
	x.setGauges(last.Status)
	return x
}

// Handler serves the metrics in the Prometheus text format.
func (x *Metrics) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var raw, buf bytes.Buffer
		x.mu.Lock()
		x.set.WritePrometheus(&raw)
		x.mu.Unlock()
		vm.WriteProcessMetrics(&raw)
		vm.WriteFDMetrics(&raw)
		helpText(&buf, raw.Bytes())
		w.Header().Set("Content-Type", contentType)
		buf.WriteTo(w)
	})
}

// Run applies the monitor's events until ctx is done or the monitor has
// finished, in which case every event it emitted has been applied. It
// releases the follower when it returns.
func (x *Metrics) Run(ctx context.Context) error {
	defer x.f.Close()
	for {
		u, err := x.f.Next(ctx)
		switch {
		case ctx.Err() != nil, errors.Is(err, procmon.ErrFinished):
			return nil
		case err != nil:
			return err
		case u.Missed > 0:
			// The gauges resync from the snapshot; the exits in between are
			// lost, which the warning admits.
			x.log.Warn("metrics fell behind the event stream; some exits were not counted", "missed_events", u.Missed)
			x.apply(procmon.Event{Status: u.Status})
		default:
			x.apply(u.Event)
		}
	}
}

// apply adds one event to the counters and sets the gauges to the status
// after it.
func (x *Metrics) apply(ev procmon.Event) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if (ev.Kind == procmon.EventExited || ev.Kind == procmon.EventSpawnFailed) && ev.Exit != nil {
		x.set.GetOrCreateCounter(labelled(nameExits, "class", string(ev.Exit.Class))).Inc()
		if ev.Exit.Error == "" {
			if x.lastExit == nil {
				x.lastExit = x.set.NewGauge(nameLastExit, nil)
			}
			x.lastExit.Set(float64(ev.Exit.ReturnCode))
		}
	}
	// Restarts only grows; taking the difference keeps the total right
	// even across a resync that skipped events.
	if d := ev.Status.Restarts - x.restartsSeen; d > 0 {
		class := "unknown"
		if ev.Status.LastExit != nil {
			class = string(ev.Status.LastExit.Class)
		}
		x.set.GetOrCreateCounter(labelled(nameRestarts, "class", class)).Add(d)
	}
	x.restartsSeen = ev.Status.Restarts
	x.setGauges(ev.Status)
}

// setGauges shows st in the gauges; the caller holds x.mu, or has not
// shared x yet.
func (x *Metrics) setGauges(st procmon.Status) {
	if x.states[st.State] == nil {
		x.states[st.State] = x.set.NewGauge(labelled(nameState, "state", string(st.State)), nil)
	}
	for s, g := range x.states {
		g.Set(b2f(s == st.State))
	}
	x.ready.Set(b2f(st.Ready && st.State == procmon.StateRunning))
	x.failures.Set(float64(st.ConsecutiveFailures))
	x.crashloop.Set(b2f(st.Crashloop))
	x.startedAt = st.StartedAt
}

// labelEscaper escapes a label value as the text format wants it.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// labelled returns name with one label, as the library names a series.
func labelled(name, label, value string) string {
	return name + "{" + label + `="` + labelEscaper.Replace(value) + `"}`
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
