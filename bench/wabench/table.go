package main

import (
	"fmt"
	"runtime"
	"strings"
)

func ms(ns int64) string { return fmt.Sprintf("%.2f ms", float64(ns)/1e6) }

func median(v []int64) int64 { return percentile(sorted(v), 50) }

// table renders the results as Markdown: medians first, ratios after.
func table(c *config, tools []*tool, res map[string]*result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "wabench on %s, %d CPUs (%s)\n\n", cpuModel(), runtime.NumCPU(), kernel())
	fmt.Fprintf(&b, "| tool | version | crash → respawn (median, p99) | exit → listener knows (median, p99) | idle %s: RSS / CPU / wakeups | %d MiB of 100-byte lines (median of %d) | × pipe→cat | peak RSS while logging |\n", c.idle, c.outputBytes>>20, c.outputRuns)
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|---|")
	var base int64
	if r := res["pipe-cat"]; r != nil && len(r.output) > 0 {
		base = median(r.output)
	}
	for _, t := range tools {
		r := res[t.name]
		cells := []string{t.name, r.version}
		cells = append(cells, dist(r.respawn, len(r.respawn)))
		switch {
		case t.noNotify != "":
			cells = append(cells, t.noNotify)
		default:
			d := dist(r.notify, len(r.notify))
			if r.missed > 0 && len(r.notify) > 0 {
				d += fmt.Sprintf(", %d missed", r.missed)
			}
			cells = append(cells, d)
		}
		if u := r.idle; u != nil {
			cells = append(cells, fmt.Sprintf("%.1f MiB / %.1f ms / %d", float64(u.rssKiB)/1024, float64(u.cpuNS)/1e6, u.wakeups))
		} else {
			cells = append(cells, "–")
		}
		if len(r.output) > 0 {
			m := median(r.output)
			cells = append(cells, fmt.Sprintf("%.3f s", float64(m)/1e9))
			if base > 0 {
				cells = append(cells, fmt.Sprintf("%.2f×", float64(m)/float64(base)))
			} else {
				cells = append(cells, "–")
			}
			if r.outputPeak > 0 {
				cells = append(cells, fmt.Sprintf("%.1f MiB", float64(r.outputPeak)/1024))
			} else {
				cells = append(cells, "–")
			}
		} else {
			cells = append(cells, "–", "–", "–")
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
	}
	if r := res["wa-sidecar"]; r != nil && len(r.fanout) > 0 {
		s := sorted(r.fanout)
		fmt.Fprintf(&b, "\nFan-out: %d websocket clients on wa-sidecar's /v1/events, %d notes over 10 exits: median %s, p99 %s, max %s\n",
			r.fanClients, len(s), ms(percentile(s, 50)), ms(percentile(s, 99)), ms(s[len(s)-1]))
	}
	for _, t := range tools {
		for _, e := range res[t.name].errs {
			fmt.Fprintf(&b, "\n%s failed: %s\n", t.name, e)
		}
	}
	return b.String()
}

func dist(v []int64, n int) string {
	if n == 0 {
		return "–"
	}
	s := sorted(v)
	return fmt.Sprintf("%s, %s (n=%d)", ms(percentile(s, 50)), ms(percentile(s, 99)), n)
}
