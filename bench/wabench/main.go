// Command wabench measures wa-sidecar and its peers (supervisord,
// s6-supervise, runsv, pm2 and tini) side by side on the same child, and
// prints one table: a row per figure, a column per tool, the floor each
// figure is measured against in the same run, and whether each goal is
// met. bench/run.sh installs the peers, builds the binaries and runs it;
// see docs/performance.md.
//
// The child is the C child (bench/cchild), which has no runtime of its
// own, except in the Hermes-shaped output row, which runs the Go fake
// bridge. Times are taken on CLOCK_MONOTONIC, which the fake bridge
// (-stamp), this program and the pm2 listener (Node's hrtime) all read;
// the C child stamps CLOCK_REALTIME, moved onto the same clock, so an
// instant stamped in one process can be subtracted from one seen in
// another.
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
	cchild     string // bench/cchild's binary; empty: none was built
	self       string // this binary, run by supervisord as its event listener
	pm2Listen  string // bench/pm2-listen.js
	work       string // scratch directory, emptied per run
	listenFlag string // how wa-sidecar is told to serve /v1/events
	sidecarEnv []string

	samples     int
	startRuns   int
	idle        time.Duration
	outputBytes int64
	outputRuns  int
	clients     int
	tools       map[string]bool
	only        map[string]bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "fanout-floor" {
		if err := fanoutFloorServer(os.Args[2:]); err != nil {
			fatal(err)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "fanout-ws-floor" {
		if err := wsFanoutFloorServer(os.Args[2:]); err != nil {
			fatal(err)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "supervisord-listener" {
		// It returns only when supervisord goes away or fails.
		fmt.Fprintln(os.Stderr, "wabench supervisord-listener:", supervisordListener(os.Args[2:]))
		os.Exit(1)
	}
	var c config
	var tools, only, sidecarEnv string
	flag.StringVar(&c.sidecar, "sidecar", "bin/wa-sidecar", "wa-sidecar binary")
	flag.StringVar(&c.stackfloor, "stackfloor", "bin/stackfloor", "bench/stackfloor binary (wa-sidecar's libraries supervising nothing)")
	flag.StringVar(&c.fakebridge, "fakebridge", "bin/fakebridge", "fake bridge binary (testdata/fakebridge)")
	flag.StringVar(&c.cchild, "child", "bin/"+childName, "the C child (bench/cchild), used as the bridge except in Hermes-shaped runs; empty or missing: the fake bridge everywhere")
	flag.StringVar(&c.pm2Listen, "pm2-listener", "bench/pm2-listen.js", "pm2 bus listener script")
	flag.StringVar(&c.work, "work", "", "scratch directory (default: a new temporary one)")
	flag.StringVar(&c.listenFlag, "listen-flag", "--listen", "wa-sidecar flag that takes the status server's address; empty runs it without one (no notification or fan-out figures)")
	flag.IntVar(&c.samples, "n", 30, "exits to sample for the latency measurements (supervisord, s6 and runit take about 1 s each)")
	flag.IntVar(&c.startRuns, "start-runs", 10, "starts of wa-sidecar to time")
	flag.DurationVar(&c.idle, "idle", 30*time.Second, "idle window")
	flag.Int64Var(&c.outputBytes, "output-bytes", 256<<20, "bytes of 100-byte lines for the pass-through measurement")
	flag.IntVar(&c.outputRuns, "output-runs", 3, "runs of the pass-through measurement per tool")
	flag.IntVar(&c.clients, "clients", 1000, "websocket clients for the fan-out measurement")
	flag.StringVar(&tools, "tools", "floor,stack-floor,pipe-cat,pipe-json,pipe-json2,pipe-hermes,pipe-raw,wa-sidecar,wa-sidecar-raw,wa-sidecar-hermes,wa-sidecar-hermes-start,supervisord,s6,runit,pm2,tini", "tools to measure")
	flag.StringVar(&only, "only", "respawn,idle,output,fanout,start", "measurements to run (respawn also gives exit-to-notification)")
	flag.StringVar(&sidecarEnv, "sidecar-env", "", "comma-separated NAME=VALUE settings for wa-sidecar's environment alone, e.g. GOMAXPROCS=1")
	flag.Parse()
	if sidecarEnv != "" {
		c.sidecarEnv = strings.Split(sidecarEnv, ",")
	}

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
	if c.cchild != "" {
		if c.cchild, err = filepath.Abs(c.cchild); err != nil {
			fatal(err)
		}
		if _, err := os.Stat(c.cchild); err != nil {
			logf("no C child (%v): the fake bridge is the child everywhere, and the floor is Go's", err)
			c.cchild = ""
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
