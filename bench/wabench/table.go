package main

import (
	"fmt"
	"runtime"
	"strings"
)

func ms(ns int64) string { return fmt.Sprintf("%.2f ms", float64(ns)/1e6) }

func median(v []int64) int64 { return percentile(sorted(v), 50) }

func p99(v []int64) int64 { return percentile(sorted(v), 99) }

// columns of the table after the floor's: wa-sidecar, then the peers.
var columns = []string{"wa-sidecar", "supervisord", "s6", "runit", "pm2", "tini"}

// row is one figure: a cell for the floor and for each column, the goal,
// and whether wa-sidecar meets it.
type row struct {
	figure, floor string
	cells         map[string]string
	goal, met     string
}

// table renders the results as Markdown: one row per figure, one column
// per tool, and for each goal whether it is met, all from this run.
func table(c *config, tools []*tool, res map[string]*result) string {
	get := func(name string) *result {
		if r := res[name]; r != nil {
			return r
		}
		return &result{}
	}
	floor, sc := get("floor"), get("wa-sidecar")
	var rows []row
	add := func(r row) { rows = append(rows, r) }

	// Crash → respawn.
	respawnFloor := dist(floor.respawn)
	if len(floor.respawnGo) > 0 {
		respawnFloor = labelled("C", respawnFloor) + "; " + labelled("Go", dist(floor.respawnGo))
	}
	r := row{figure: "crash → respawn, median (p99)", floor: respawnFloor, cells: map[string]string{}, goal: "≤ 1.3× floor"}
	for _, col := range columns {
		r.cells[col] = dist(get(col).respawn)
	}
	r.cells["tini"] = "no respawn"
	r.met = ratioGoal(sc.respawn, floor.respawn, 1.3)
	if g := floor.respawnGo; r.met != "" && len(g) > 0 && len(sc.respawn) > 0 {
		r.met += fmt.Sprintf(" (%.2f× the Go floor, %s)", float64(median(sc.respawn))/float64(median(g)), signedMs(median(sc.respawn)-median(g)))
	}
	add(r)

	// Exit → listener.
	notifyFloor := labelled("parent's waitpid", dist(floor.notify))
	if len(floor.notifyGo) > 0 {
		notifyFloor = labelled("C parent's waitpid", dist(floor.notify)) + "; " + labelled("Go parent's wait4", dist(floor.notifyGo))
	}
	r = row{figure: "exit → listener knows, median (p99)", floor: notifyFloor, cells: map[string]string{}, goal: "median ≤ floor + 0.5 ms, p99 ≤ floor's p99 + 2 ms"}
	listeners := map[string]string{"wa-sidecar": "websocket client", "supervisord": "event listener", "s6": "fifodir", "pm2": "bus", "tini": "its parent's wait4"}
	for _, col := range columns {
		t := findTool(tools, col)
		switch {
		case t != nil && t.noNotify != "":
			r.cells[col] = t.noNotify
		default:
			d := dist(get(col).notify)
			if m := get(col).missed; m > 0 && d != "–" {
				d += fmt.Sprintf(", %d missed", m)
			}
			r.cells[col] = labelled(listeners[col], d)
		}
	}
	if len(sc.notify) > 0 && len(floor.notify) > 0 {
		dm, dp := median(sc.notify)-median(floor.notify), p99(sc.notify)-p99(floor.notify)
		verdict := "met"
		if dm > 500_000 || dp > 2_000_000 || sc.missed > 0 {
			verdict = "**not met**"
		}
		r.met = fmt.Sprintf("%s: floor %s, p99 floor's %s", verdict, signedMs(dm), signedMs(dp))
	}
	add(r)

	// Idle.
	idle := func(u *usage, f func(*usage) string) string {
		if u == nil {
			return "–"
		}
		return f(u)
	}
	rss := func(u *usage) string { return fmt.Sprintf("%.1f MiB", float64(u.rssKiB)/1024) }
	cpu := func(u *usage) string { return fmt.Sprintf("%.1f ms", float64(u.cpuNS)/1e6) }
	wake := func(u *usage) string { return fmt.Sprintf("%d", u.wakeups) }
	for _, it := range []struct {
		what  string
		f     func(*usage) string
		goal  string
		limit func(*usage) bool
	}{
		{"RSS at the end", rss, "≤ 8 MiB", func(u *usage) bool { return u.rssKiB <= 8<<10 }},
		{"CPU", cpu, "≤ 2 ms", func(u *usage) bool { return u.cpuNS <= 2_000_000 }},
		{"wakeups (voluntary switches)", wake, "≤ 30", func(u *usage) bool { return u.wakeups <= 30 }},
	} {
		r = row{figure: fmt.Sprintf("idle %s: %s", c.idle, it.what), floor: labelled("stack-floor", idle(get("stack-floor").idle, it.f)), cells: map[string]string{}, goal: it.goal}
		for _, col := range columns {
			r.cells[col] = idle(get(col).idle, it.f)
		}
		if u := sc.idle; u != nil {
			r.met = verdict(it.limit(u))
		}
		add(r)
	}

	// Output.
	base := int64(0)
	if v := get("pipe-cat").output; len(v) > 0 {
		base = median(v)
	}
	outCell := func(v []int64) string {
		if len(v) == 0 {
			return "–"
		}
		m := median(v)
		if base == 0 {
			return fmt.Sprintf("%.3f s", float64(m)/1e9)
		}
		return fmt.Sprintf("%.3f s (%.2f×)", float64(m)/1e9, float64(m)/float64(base))
	}
	outFloor := labelled("pipe→cat", outCell(get("pipe-cat").output))
	if v := floor.output; len(v) > 0 {
		outFloor += "; to a file directly " + outCell(v)
	}
	// The floors of the same work from C: the ratio to them is the
	// sidecar's own cost.
	jsonFloor, rawFloor, hermesFloor := outFloor, outFloor, outFloor
	var fromC []string
	if v := get("pipe-json").output; len(v) > 0 {
		fromC = append(fromC, "one thread "+outCell(v))
	}
	if v := get("pipe-json2").output; len(v) > 0 {
		fromC = append(fromC, "two threads "+outCell(v))
	}
	if len(fromC) > 0 {
		jsonFloor += "; the same JSON records from C, " + strings.Join(fromC, ", ")
	}
	if v := get("pipe-raw").output; len(v) > 0 {
		rawFloor += "; cat that also finds each line, from C " + outCell(v)
	}
	if v := get("pipe-hermes").output; len(v) > 0 {
		hermesFloor += "; the records and bridge.log from C, three threads " + outCell(v)
	}
	// vsFloor is the sidecar's time over a C floor's, for the met column.
	vsFloor := func(v []int64, floor, what string) string {
		if f := get(floor).output; len(v) > 0 && len(f) > 0 {
			return fmt.Sprintf(" (%.2f× %s)", float64(median(v))/float64(median(f)), what)
		}
		return ""
	}
	outRatio := func(v []int64, limit float64) string {
		if len(v) == 0 || base == 0 {
			return ""
		}
		return fmt.Sprintf("%s: %.2f×", verdict(float64(median(v)) <= limit*float64(base)), float64(median(v))/float64(base))
	}
	what := fmt.Sprintf("%d MiB of 100-byte lines, until the last is in the file (median of %d)", c.outputBytes>>20, c.outputRuns)
	r = row{figure: what + ": default (`--bridge-output log`)", floor: jsonFloor, cells: map[string]string{}, goal: "≤ 1.2× pipe→cat"}
	for _, col := range columns {
		r.cells[col] = outCell(get(col).output)
	}
	r.cells["tini"] = "hands its stdout to the bridge"
	r.met = outRatio(sc.output, 1.2)
	if r.met != "" {
		r.met += vsFloor(sc.output, "pipe-json2", "the records from C on two threads")
	}
	add(r)
	raw := get("wa-sidecar-raw")
	r = row{figure: "the same, `--bridge-output raw`", floor: rawFloor, cells: map[string]string{"wa-sidecar": outCell(raw.output)}, goal: "≤ 0.8× pipe→cat", met: outRatio(raw.output, 0.8)}
	if r.met != "" {
		r.met += vsFloor(raw.output, "pipe-raw", "the same from C")
	}
	add(r)
	hermes := get("wa-sidecar-hermes")
	r = row{figure: "the same, Hermes default (bridge.log beside the session, and the log)", floor: hermesFloor,
		cells: map[string]string{"wa-sidecar": outCell(hermes.output), "supervisord": outCell(get("supervisord").output)}, goal: "≤ supervisord writing a file"}
	if sv := get("supervisord").output; len(hermes.output) > 0 && len(sv) > 0 {
		r.met = fmt.Sprintf("%s: %.2f× supervisord", verdict(median(hermes.output) <= median(sv)), float64(median(hermes.output))/float64(median(sv)))
		r.met += vsFloor(hermes.output, "pipe-hermes", "the same from C")
	}
	add(r)
	peak := func(r *result) string {
		if r.outputPeak == 0 {
			return "–"
		}
		return fmt.Sprintf("%.1f MiB", float64(r.outputPeak)/1024)
	}
	r = row{figure: "peak RSS while logging", floor: "–", cells: map[string]string{}}
	for _, col := range columns {
		r.cells[col] = peak(get(col))
	}
	r.cells["wa-sidecar"] = fmt.Sprintf("log %s, raw %s, Hermes %s", peak(sc), peak(raw), peak(hermes))
	r.cells["tini"] = "–"
	add(r)

	// Fan-out.
	fan := func(r *result) string {
		if len(r.fanout) == 0 {
			return "–"
		}
		return fmt.Sprintf("%s (median %s; %d clients, %d notes)", ms(p99(r.fanout)), ms(median(r.fanout)), r.fanClients, len(r.fanout))
	}
	fanFloor := labelled("bare TCP", fan(floor))
	for _, n := range []int{1, len(sidecarEvents)} {
		if v := floor.fanoutWS[n]; len(v) > 0 {
			fanFloor += fmt.Sprintf("; %s: %s (median %s)", wsFloorLabel(n), ms(p99(v)), ms(median(v)))
		}
	}
	r = row{figure: fmt.Sprintf("fan-out to %d websocket clients, p99", c.clients), floor: fanFloor, cells: map[string]string{"wa-sidecar": fan(sc)}, goal: "≤ 2× floor"}
	r.met = ratioGoalP99(sc.fanout, floor.fanout, 2)
	if v := floor.fanoutWS[len(sidecarEvents)]; r.met != "" && len(v) > 0 && len(sc.fanout) > 0 {
		r.met += fmt.Sprintf(" (%.2f× the same events through coder/websocket)", float64(p99(sc.fanout))/float64(p99(v)))
	}
	add(r)

	// Start.
	for _, v := range []struct {
		name, shape string
	}{{"wa-sidecar", "a command"}, {"wa-sidecar-hermes-start", "Hermes shape: a session directory"}} {
		s, sf := get(v.name), get("stack-floor")
		add(row{figure: "start (" + v.shape + "): exec → the bridge's first stamp, median (max)", floor: labelled("stack-floor", distMax(sf.startExec)),
			cells: map[string]string{"wa-sidecar": distMax(s.startExec)}, goal: "≤ 5 ms", met: absGoal(s.startExec, 5_000_000)})
		add(row{figure: "start (" + v.shape + "): exec → `/healthz` answers 200, median (max)", floor: labelled("stack-floor", distMax(sf.startHealthz)),
			cells: map[string]string{"wa-sidecar": distMax(s.startHealthz)}, goal: "≤ 10 ms", met: absGoal(s.startHealthz, 10_000_000)})
	}

	var b strings.Builder
	fmt.Fprintf(&b, "wabench on %s, %d CPUs (%s)\n\n", cpuModel(), runtime.NumCPU(), kernel())
	child := "the C child (bench/cchild)"
	if c.cchild == "" {
		child = "the Go fake bridge (no C child was built)"
	}
	fmt.Fprintf(&b, "Child: %s.\n\n", child)
	fmt.Fprintf(&b, "| figure | floor | %s | goal | met |\n", strings.Join(columns, " | "))
	fmt.Fprintf(&b, "|---|---|%s---|---|\n", strings.Repeat("---|", len(columns)))
	for _, r := range rows {
		cells := make([]string, len(columns))
		for i, col := range columns {
			cells[i] = r.cells[col]
			if cells[i] == "" {
				cells[i] = "–"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.figure, r.floor, strings.Join(cells, " | "), or(r.goal, "–"), or(r.met, "–"))
	}
	fmt.Fprintln(&b)
	for _, t := range tools {
		fmt.Fprintf(&b, "- %s: %s\n", t.name, get(t.name).version)
	}
	for _, t := range tools {
		for _, e := range get(t.name).errs {
			fmt.Fprintf(&b, "\n%s failed: %s\n", t.name, e)
		}
	}
	return b.String()
}

func findTool(tools []*tool, name string) *tool {
	for _, t := range tools {
		if t.name == name {
			return t
		}
	}
	return nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func labelled(label, cell string) string {
	if cell == "–" || label == "" {
		return cell
	}
	return label + ": " + cell
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func ratioGoal(v, floor []int64, limit float64) string {
	if len(v) == 0 || len(floor) == 0 {
		return ""
	}
	x := float64(median(v)) / float64(median(floor))
	return fmt.Sprintf("%s: %.2f× (%s)", verdict(x <= limit), x, signedMs(median(v)-median(floor)))
}

func ratioGoalP99(v, floor []int64, limit float64) string {
	if len(v) == 0 || len(floor) == 0 {
		return ""
	}
	x := float64(p99(v)) / float64(p99(floor))
	return fmt.Sprintf("%s: %.2f×", verdict(x <= limit), x)
}

func absGoal(v []int64, limit int64) string {
	if len(v) == 0 {
		return ""
	}
	return verdict(median(v) <= limit)
}

func dist(v []int64) string {
	if len(v) == 0 {
		return "–"
	}
	s := sorted(v)
	return fmt.Sprintf("%s (%s, n=%d)", ms(percentile(s, 50)), ms(percentile(s, 99)), len(v))
}

func distMax(v []int64) string {
	if len(v) == 0 {
		return "–"
	}
	s := sorted(v)
	return fmt.Sprintf("%s (%s, n=%d)", ms(percentile(s, 50)), ms(s[len(s)-1]), len(v))
}

func signedMs(ns int64) string {
	if ns < 0 {
		return "− " + ms(-ns)
	}
	return "+ " + ms(ns)
}
