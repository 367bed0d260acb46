package metrics

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wa-sidecar/wa-sidecar/internal/proctest"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// fakeBridge is the path of testdata/fakebridge, built once for the package.
var fakeBridge string

func TestMain(m *testing.M) {
	os.Exit(proctest.Main(m, &fakeBridge))
}

// scrape fetches srv's metrics over HTTP and parses them with Prometheus's
// own text parser, so malformed output fails the test.
func scrape(t *testing.T, srv *httptest.Server) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(srv.URL + Path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", Path, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	return fams
}

// value returns the sample of name whose labels include want, and whether
// there is one.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

type expect struct {
	name   string
	labels []string
	want   float64
}

func check(t *testing.T, fams map[string]*dto.MetricFamily, when string, exps ...expect) {
	t.Helper()
	for _, e := range exps {
		got, ok := value(fams, e.name, e.labels...)
		if !ok {
			t.Errorf("%s: %s%v missing", when, e.name, e.labels)
			continue
		}
		if got != e.want {
			t.Errorf("%s: %s%v = %v; want %v", when, e.name, e.labels, got, e.want)
		}
	}
}

// drive applies x's events in the test goroutine until one satisfies
// done, so a scrape afterwards sees exactly that point of the stream.
func drive(t *testing.T, x *Metrics, done func(procmon.Event) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		u, err := x.f.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for the bridge: %v", err)
		}
		x.apply(u.Event)
		if done(u.Event) {
			return
		}
	}
}

func startedWith(restarts int) func(procmon.Event) bool {
	return func(ev procmon.Event) bool {
		return ev.Kind == procmon.EventStarted && ev.Status.Restarts == restarts
	}
}

// TestMetricsFollowTheBridge runs a real bridge through two failures, a
// SIGTERM from outside and a stop, and checks every metric at each step.
// One Metrics is stepped by the test for exact mid-run figures; another
// follows on its own through Run and must end with the same totals.
func TestMetricsFollowTheBridge(t *testing.T) {
	count := filepath.Join(t.TempDir(), "count")
	m, err := procmon.New(procmon.Config{
		Command: []string{fakeBridge, "-count-file", count, "-fail-times", "2"},
		Backoff: procmon.Backoff{Initial: time.Millisecond, Max: time.Millisecond, Multiplier: 2, Reset: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	clients := func() int { return 7 }
	stepped := New(m, Options{Version: "test", Clients: clients})
	following := New(m, Options{Version: "test", Clients: clients})
	steppedSrv := httptest.NewServer(stepped.Handler())
	defer steppedSrv.Close()
	followingSrv := httptest.NewServer(following.Handler())
	defer followingSrv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	monDone := make(chan error, 1)
	folDone := make(chan error, 1)
	go func() { folDone <- following.Run(context.Background()) }()
	go func() { monDone <- m.Run(ctx) }()

	drive(t, stepped, startedWith(2))
	fams := scrape(t, steppedSrv)
	check(t, fams, "after two failures",
		expect{"wa_sidecar_bridge_state", []string{"state", "running"}, 1},
		expect{"wa_sidecar_bridge_state", []string{"state", "backoff"}, 0},
		expect{"wa_sidecar_bridge_ready", nil, 1},
		expect{"wa_sidecar_bridge_exits_total", []string{"class", "failure"}, 2},
		expect{"wa_sidecar_bridge_exits_total", []string{"class", "shutdown"}, 0},
		expect{"wa_sidecar_bridge_restarts_total", []string{"class", "failure"}, 2},
		expect{"wa_sidecar_bridge_last_exit_code", nil, 1},
		expect{"wa_sidecar_bridge_consecutive_failures", nil, 2},
		expect{"wa_sidecar_bridge_crashloop", nil, 0},
		expect{"wa_sidecar_event_clients", nil, 7},
		expect{"wa_sidecar_build_info", []string{"version", "test"}, 1},
	)
	if up, _ := value(fams, "wa_sidecar_bridge_uptime_seconds"); up <= 0 {
		t.Errorf("uptime %v while the bridge runs; want > 0", up)
	}
	if _, ok := value(fams, "process_resident_memory_bytes"); !ok {
		t.Error("process metrics missing")
	}

	if err := m.Signal(ctx, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	drive(t, stepped, startedWith(3))
	check(t, scrape(t, steppedSrv), "after a SIGTERM from outside",
		expect{"wa_sidecar_bridge_exits_total", []string{"class", "shutdown"}, 1},
		expect{"wa_sidecar_bridge_restarts_total", []string{"class", "shutdown"}, 1},
		expect{"wa_sidecar_bridge_restarts_total", []string{"class", "failure"}, 2},
		expect{"wa_sidecar_bridge_last_exit_code", nil, -15},
		// A normal shutdown is not a failure.
		expect{"wa_sidecar_bridge_consecutive_failures", nil, 2},
	)

	cancel()
	if err := <-monDone; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-folDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the monitor finished")
	}
	stepped.f.Close()
	check(t, scrape(t, followingSrv), "after the sidecar stopped the bridge",
		expect{"wa_sidecar_bridge_state", []string{"state", "stopped"}, 1},
		expect{"wa_sidecar_bridge_state", []string{"state", "running"}, 0},
		expect{"wa_sidecar_bridge_ready", nil, 0},
		expect{"wa_sidecar_bridge_uptime_seconds", nil, 0},
		expect{"wa_sidecar_bridge_exits_total", []string{"class", "failure"}, 2},
		expect{"wa_sidecar_bridge_exits_total", []string{"class", "shutdown"}, 1},
		expect{"wa_sidecar_bridge_exits_total", []string{"class", "requested"}, 1},
		expect{"wa_sidecar_bridge_restarts_total", []string{"class", "failure"}, 2},
		expect{"wa_sidecar_bridge_restarts_total", []string{"class", "shutdown"}, 1},
		expect{"wa_sidecar_bridge_restarts_total", []string{"class", "requested"}, 0},
		expect{"wa_sidecar_bridge_last_exit_code", nil, -15},
	)
}

// TestParkedStatesAndSpawnFailures feeds events a monitor would emit for a
// state a layer above parks the bridge in, and for a spawn that failed.
func TestParkedStatesAndSpawnFailures(t *testing.T) {
	x, srv := unstarted(t)

	fams := scrape(t, srv)
	if _, ok := value(fams, "wa_sidecar_bridge_last_exit_code"); ok {
		t.Error("last exit code reported before any exit")
	}
	if _, ok := value(fams, "wa_sidecar_event_clients"); ok {
		t.Error("event clients reported without a Clients function")
	}

	code := 1
	x.apply(procmon.Event{Kind: procmon.EventExited, Exit: &procmon.ExitRecord{Code: &code, ReturnCode: 1, Class: procmon.ClassFailure},
		Status: procmon.Status{State: procmon.StateBackoff, ConsecutiveFailures: 1}})
	x.apply(procmon.Event{Kind: procmon.EventSpawnFailed, Exit: &procmon.ExitRecord{Error: "not found", Class: procmon.ClassFailure},
		Status: procmon.Status{State: procmon.StateBackoff, ConsecutiveFailures: 2, Restarts: 1,
			LastExit: &procmon.ExitRecord{Error: "not found", Class: procmon.ClassFailure}}})
	x.apply(procmon.Event{Kind: "needs_pairing", Status: procmon.Status{State: "needs_pairing", ConsecutiveFailures: 2, Restarts: 1}})
	check(t, scrape(t, srv), "parked",
		expect{"wa_sidecar_bridge_state", []string{"state", "needs_pairing"}, 1},
		expect{"wa_sidecar_bridge_state", []string{"state", "backoff"}, 0},
		expect{"wa_sidecar_bridge_exits_total", []string{"class", "failure"}, 2},
		expect{"wa_sidecar_bridge_restarts_total", []string{"class", "failure"}, 1},
		// A spawn failure has no exit code; the last one stays.
		expect{"wa_sidecar_bridge_last_exit_code", nil, 1},
	)
}

// TestTypesAndFormat checks what a scraper relies on beyond the values:
// the content type, the # TYPE of every metric of ours, a label value
// that needs escaping, and the process and Go runtime metrics.
func TestTypesAndFormat(t *testing.T) {
	m, err := procmon.New(procmon.Config{Command: []string{fakeBridge}})
	if err != nil {
		t.Fatal(err)
	}
	version := `v1.2 "dirty" \ build`
	x := New(m, Options{Version: version, Clients: func() int { return 0 }})
	defer x.f.Close()
	srv := httptest.NewServer(x.Handler())
	defer srv.Close()

	resp, err := http.Get(srv.URL + Path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q; want the Prometheus text format, version 0.0.4", ct)
	}

	fams := scrape(t, srv)
	for name, want := range map[string]dto.MetricType{
		"wa_sidecar_bridge_state":                dto.MetricType_GAUGE,
		"wa_sidecar_bridge_ready":                dto.MetricType_GAUGE,
		"wa_sidecar_bridge_uptime_seconds":       dto.MetricType_GAUGE,
		"wa_sidecar_bridge_exits_total":          dto.MetricType_COUNTER,
		"wa_sidecar_bridge_restarts_total":       dto.MetricType_COUNTER,
		"wa_sidecar_bridge_consecutive_failures": dto.MetricType_GAUGE,
		"wa_sidecar_bridge_crashloop":            dto.MetricType_GAUGE,
		"wa_sidecar_event_clients":               dto.MetricType_GAUGE,
		"wa_sidecar_build_info":                  dto.MetricType_GAUGE,
	} {
		f := fams[name]
		if f == nil {
			t.Errorf("%s missing", name)
			continue
		}
		if f.GetType() != want {
			t.Errorf("%s is a %v; want a %v", name, f.GetType(), want)
		}
	}
	check(t, fams, "at start",
		expect{"wa_sidecar_build_info", []string{"version", version}, 1},
		// A monitor that has not run yet is starting.
		expect{"wa_sidecar_bridge_state", []string{"state", "starting"}, 1},
		expect{"wa_sidecar_bridge_state", []string{"state", "stopped"}, 0},
		expect{"wa_sidecar_bridge_exits_total", []string{"class", "requested"}, 0},
		expect{"wa_sidecar_bridge_restarts_total", []string{"class", "shutdown"}, 0},
	)
	for _, name := range []string{
		"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
		"process_max_fds", "process_start_time_seconds", "go_goroutines", "go_memstats_heap_inuse_bytes",
	} {
		if _, ok := value(fams, name); !ok {
			t.Errorf("%s missing", name)
		}
	}
}

// Every metric family served, the sidecar's and the library's, has a
// # TYPE and a # HELP line with a text of its own, which Prometheus shows
// beside the metric; a family the table does not know (a newer library
// or Go) fails here so that it gets one.
func TestEveryMetricHasHelpAndType(t *testing.T) {
	m, err := procmon.New(procmon.Config{Command: []string{fakeBridge}})
	if err != nil {
		t.Fatal(err)
	}
	x := New(m, Options{Version: "v1", Clients: func() int { return 0 }})
	defer x.f.Close()
	code := 1
	x.apply(procmon.Event{Kind: procmon.EventExited, Exit: &procmon.ExitRecord{Pid: 1, Code: &code, ReturnCode: 1, Class: procmon.ClassFailure}})
	srv := httptest.NewServer(x.Handler())
	defer srv.Close()

	fams := scrape(t, srv)
	for _, name := range []string{nameExits, nameRestarts, nameState, nameReady, nameUptime, nameLastExit, nameFailures, nameCrashloop, nameClients, nameBuildInfo} {
		if fams[name] == nil {
			t.Errorf("%s missing from the scrape", name)
		}
	}
	for name, f := range fams {
		if f.GetType() == dto.MetricType_UNTYPED {
			t.Errorf("%s has no # TYPE line", name)
		}
		if f.GetHelp() == "" {
			t.Errorf("%s has no help text", name)
		} else if help[name] == "" {
			t.Errorf("%s has only the fallback help text %q; add one to the help table", name, f.GetHelp())
		}
	}
	if len(fams) < 40 {
		t.Errorf("only %d metric families; the process and Go metrics are missing", len(fams))
	}
}

func TestHelpTextIsEscapedAndFallsBack(t *testing.T) {
	var out bytes.Buffer
	helpText(&out, []byte("# HELP wa_sidecar_bridge_ready\n# TYPE wa_sidecar_bridge_ready gauge\nwa_sidecar_bridge_ready 1\n# HELP go_new_thing\n# HELP process_new_thing\n# HELP already has text\n"))
	want := "# HELP wa_sidecar_bridge_ready " + help[nameReady] + "\n# TYPE wa_sidecar_bridge_ready gauge\nwa_sidecar_bridge_ready 1\n" +
		"# HELP go_new_thing " + fallbackHelp("go_new_thing") + "\n# HELP process_new_thing " + fallbackHelp("process_new_thing") + "\n# HELP already has text\n"
	if out.String() != want {
		t.Fatalf("helpText gave\n%s\nwant\n%s", out.String(), want)
	}
	if got := helpEscaper.Replace("a\\b\nc"); got != `a\\b\nc` {
		t.Fatalf("escaped %q", got)
	}
}

// TestResyncCountsSkippedRestarts feeds the bare status a follower resyncs
// from after falling behind: the restarts it skipped are still counted,
// under the class of the last exit.
func TestResyncCountsSkippedRestarts(t *testing.T) {
	x, srv := unstarted(t)

	now := time.Now().Add(-time.Minute)
	x.apply(procmon.Event{Status: procmon.Status{State: procmon.StateRunning, Ready: true, Restarts: 3, ConsecutiveFailures: 3,
		Crashloop: true, StartedAt: &now, LastExit: &procmon.ExitRecord{Class: procmon.ClassFailure}}})
	fams := scrape(t, srv)
	check(t, fams, "after a resync",
		expect{"wa_sidecar_bridge_restarts_total", []string{"class", "failure"}, 3},
		// Exits between are lost; the counters do not invent them.
		expect{"wa_sidecar_bridge_exits_total", []string{"class", "failure"}, 0},
		expect{"wa_sidecar_bridge_state", []string{"state", "running"}, 1},
		expect{"wa_sidecar_bridge_state", []string{"state", "stopped"}, 0},
		expect{"wa_sidecar_bridge_ready", nil, 1},
		expect{"wa_sidecar_bridge_consecutive_failures", nil, 3},
		expect{"wa_sidecar_bridge_crashloop", nil, 1},
	)
	if up, _ := value(fams, "wa_sidecar_bridge_uptime_seconds"); up < 60 {
		t.Errorf("uptime %v; want at least 60", up)
	}

	// The same status again adds nothing; a restart with no last exit is
	// counted as unknown.
	x.apply(procmon.Event{Status: procmon.Status{State: procmon.StateRunning, Restarts: 3}})
	x.apply(procmon.Event{Status: procmon.Status{State: procmon.StateRunning, Restarts: 4}})
	check(t, scrape(t, srv), "after a restart without a last exit",
		expect{"wa_sidecar_bridge_restarts_total", []string{"class", "failure"}, 3},
		expect{"wa_sidecar_bridge_restarts_total", []string{"class", "unknown"}, 1},
	)
}

func TestRunReturnsWhenCancelled(t *testing.T) {
	m, err := procmon.New(procmon.Config{Command: []string{fakeBridge}})
	if err != nil {
		t.Fatal(err)
	}
	x := New(m, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := x.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// unstarted returns metrics over a monitor that never runs, to be fed
// events by hand, and a server for scraping them.
func unstarted(t *testing.T) (*Metrics, *httptest.Server) {
	t.Helper()
	m, err := procmon.New(procmon.Config{Command: []string{fakeBridge}})
	if err != nil {
		t.Fatal(err)
	}
	x := New(m, Options{})
	t.Cleanup(func() { x.f.Close() })
	srv := httptest.NewServer(x.Handler())
	t.Cleanup(srv.Close)
	return x, srv
}
