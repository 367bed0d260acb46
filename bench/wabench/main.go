// Command wabench measures wa-sidecar and its peers (supervisord,
// s6-supervise, runsv and pm2) side by side on the same fake bridge, and
// prints a table of medians and ratios. bench/run.sh installs the peers,
// builds the binaries and runs it; see docs/performance.md.
//
// Times are taken on CLOCK_MONOTONIC, which the fake bridge (-stamp), this
// program and the pm2 listener (Node's hrtime) all read, so an instant
// stamped in one process can be subtracted from one seen in another.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

type config struct {
	sidecar    string // wa-sidecar binary
	stackfloor string // bench/stackfloor binary
	fakebridge string // testdata/fakebridge binary
	self       string // this binary, run by supervisord as its event listener
	pm2Listen  string // bench/pm2-listen.js
	work       string // scratch directory, emptied per run
	listenFlag string // how wa-sidecar is told to serve /v1/events

	samples     int
	idle        time.Duration
	outputBytes int64
	outputRuns  int
	clients     int
	tools       map[string]bool
	only        map[string]bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "supervisord-listener" {
		// It returns only when supervisord goes away or fails.
		fmt.Fprintln(os.Stderr, "wabench supervisord-listener:", supervisordListener(os.Args[2:]))
		os.Exit(1)
	}
	var c config
	var tools, only string
	flag.StringVar(&c.sidecar, "sidecar", "bin/wa-sidecar", "wa-sidecar binary")
	flag.StringVar(&c.stackfloor, "stackfloor", "bin/stackfloor", "bench/stackfloor binary (wa-sidecar's libraries supervising nothing)")
	flag.StringVar(&c.fakebridge, "fakebridge", "bin/fakebridge", "fake bridge binary (testdata/fakebridge)")
	flag.StringVar(&c.pm2Listen, "pm2-listener", "bench/pm2-listen.js", "pm2 bus listener script")
	flag.StringVar(&c.work, "work", "", "scratch directory (default: a new temporary one)")
	flag.StringVar(&c.listenFlag, "listen-flag", "--listen", "wa-sidecar flag that takes the status server's address; empty runs it without one (no notification or fan-out figures)")
	flag.IntVar(&c.samples, "n", 30, "exits to sample for the latency measurements (supervisord, s6 and runit take about 1 s each)")
	flag.DurationVar(&c.idle, "idle", 30*time.Second, "idle window")
	flag.Int64Var(&c.outputBytes, "output-bytes", 256<<20, "bytes of 100-byte lines for the pass-through measurement")
	flag.IntVar(&c.outputRuns, "output-runs", 3, "runs of the pass-through measurement per tool")
	flag.IntVar(&c.clients, "clients", 1000, "websocket clients for the fan-out measurement")
	flag.StringVar(&tools, "tools", "floor,stack-floor,pipe-cat,wa-sidecar,wa-sidecar-raw,supervisord,s6,runit,pm2", "tools to measure")
	flag.StringVar(&only, "only", "respawn,idle,output,fanout", "measurements to run (respawn also gives exit-to-notification)")
	flag.Parse()

	var err error
	if c.self, err = os.Executable(); err != nil {
		fatal(err)
	}
	for _, p := range []*string{&c.sidecar, &c.stackfloor, &c.fakebridge, &c.pm2Listen} {
		if *p, err = filepath.Abs(*p); err != nil {
			fatal(err)
		}
		if _, err := os.Stat(*p); err != nil {
			fatal(fmt.Errorf("%w; build it first (bench/run.sh does)", err))
		}
	}
	if c.work == "" {
		if c.work, err = os.MkdirTemp("", "wabench"); err != nil {
			fatal(err)
		}
		defer os.RemoveAll(c.work)
	}
	c.tools = set(tools)
	c.only = set(only)
	raiseFileLimit()

	var all []*tool
	for _, t := range allTools(&c) {
		if c.tools[t.name] {
			all = append(all, t)
		}
	}
	results := run(&c, all)
	fmt.Println()
	fmt.Print(table(&c, all, results))
}

func set(list string) map[string]bool {
	m := map[string]bool{}
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			m[s] = true
		}
	}
	return m
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "wabench:", err)
	os.Exit(1)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "wabench: "+format+"\n", args...)
}
