package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

const (
	ansiReset  = "\x1b[0m"
	ansiBold   = "\x1b[1m"
	ansiDim    = "\x1b[2m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
)

func paint(on bool, colour, s string) string {
	if !on {
		return s
	}
	return colour + s + ansiReset
}

// stateColour is green for a bridge doing its job, yellow on its way
// somewhere, red where a person is needed.
func stateColour(st procmon.Status) string {
	switch {
	case st.State == procmon.StateRunning && st.Ready && !st.Crashloop:
		return ansiGreen
	case st.Crashloop, st.State == procmon.StateGivenUp:
		return ansiRed
	case st.State == procmon.StateRunning, st.State == procmon.StateStarting, st.State == procmon.StateBackoff,
		st.State == procmon.StateStopping, st.State == procmon.StateStopped:
		return ansiYellow
	}
	return ansiRed // a state a layer above parked it in, such as needs_pairing
}

// statusSummary is how wa-sidecar reads a status aloud, wherever it shows
// one line of it: systemd's STATUS=, /readyz's reason, and the clients.
func statusSummary() procmon.Summary {
	return bridge.Summary("'wa-sidecar start' starts it")
}

// statusLine is the status summary for a person, e.g. "bridge ready (pid
// 812), up 3m12s, 4 restarts, last exit: SIGTERM (normal shutdown) 5m00s
// ago", its state coloured on a terminal. Text from the wire is escaped.
func statusLine(st procmon.Status, now time.Time, colour bool) string {
	parts := statusSummary().Parts(st, now)
	for i := range parts {
		parts[i] = printable(parts[i])
	}
	parts[0] = paint(colour, ansiBold+stateColour(st), parts[0])
	return strings.Join(parts, ", ")
}

// adoption is details.whatsapp.adoption of a status read from the wire,
// or nil.
func adoption(st procmon.Status) map[string]any {
	w, _ := st.Details["whatsapp"].(map[string]any)
	a, _ := w["adoption"].(map[string]any)
	return a
}

// notAdoptable lists the reason codes the gateway would not adopt for.
func notAdoptable(st procmon.Status) string {
	reasons, _ := adoption(st)["reasons"].([]any)
	var codes []string
	for _, r := range reasons {
		if m, ok := r.(map[string]any); ok {
			if c, ok := m["code"].(string); ok {
				codes = append(codes, c)
			}
		}
	}
	return strings.Join(codes, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// ago is a duration as a person says it: 850ms, 42s, 3m12s, 5h3m, 2d4h.
func ago(d time.Duration) string { return procmon.FormatDuration(d, false) }

// eventLine is one event for watch: time, sequence, kind and what matters
// about it.
func eventLine(m feed.Message, colour bool) string {
	var b strings.Builder
	b.WriteString(paint(colour, ansiDim, m.At.Local().Format("15:04:05.000")+" #"+strconv.FormatUint(m.Seq, 10)) + " ")
	kind := string(m.Event)
	var tail string
	var pid int
	m.Field("pid", &pid)
	switch m.Event {
	case procmon.EventExited, procmon.EventSpawnFailed:
		x := m.Exit()
		c := ansiYellow
		if x.Class == procmon.ClassFailure {
			c = ansiRed
		}
		b.WriteString(paint(colour, c, kind))
		if pid > 0 {
			fmt.Fprintf(&b, " pid %d", pid)
		}
		fmt.Fprintf(&b, ": %s", x.Describe())
		if x.UptimeMS > 0 {
			b.WriteString(", up " + ago(time.Duration(x.UptimeMS)*time.Millisecond))
		}
		if n := len(x.Tail); n > 0 {
			tail = x.Tail[n-1]
		}
	case procmon.EventBackoff:
		var delay int64
		var attempt int
		m.Field("delay_ms", &delay)
		m.Field("attempt", &attempt)
		fmt.Fprintf(&b, "%s: next start in %s (attempt %d)", kind, ago(time.Duration(delay)*time.Millisecond), attempt)
	default:
		b.WriteString(kind)
		if pid > 0 {
			fmt.Fprintf(&b, " pid %d", pid)
		}
		for _, k := range []string{"signal", "reason", "message"} {
			var v string
			if m.Field(k, &v) && v != "" {
				b.WriteString(", " + printable(v))
			}
		}
		var ready bool
		if m.Field("ready", &ready) {
			fmt.Fprintf(&b, ", ready %v", ready)
		}
	}
	if m.Status != nil {
		b.WriteString(paint(colour, ansiDim, " → "+string(m.Status.State)))
	}
	// The bridge's last line goes below, after the new state, so that
	// nothing of the sidecar's reads as part of the bridge's output.
	if tail != "" {
		b.WriteString(paint(colour, ansiDim, "\n    │ "+printable(tail)))
	}
	return b.String()
}

// statusTable is status for a person: one field a line, as
// supervisorctl and systemctl status show them.
func statusTable(st procmon.Status, now time.Time, colour bool) string {
	var rows [][2]string
	add := func(k, v string) { rows = append(rows, [2]string{k, v}) }
	add("State", paint(colour, ansiBold+stateColour(st), string(st.State)))
	if st.Pid > 0 {
		add("PID", strconv.Itoa(st.Pid))
	} else {
		add("PID", "-")
	}
	switch {
	case st.State == procmon.StateRunning && st.StartedAt != nil:
		add("Uptime", ago(now.Sub(*st.StartedAt)))
	case st.State == procmon.StateBackoff && st.NextStartAt != nil:
		add("Uptime", "- (next start in "+ago(st.NextStartAt.Sub(now))+")")
	case !st.Since.IsZero():
		add("Uptime", "- ("+string(st.State)+" for "+ago(now.Sub(st.Since))+")")
	default:
		add("Uptime", "-")
	}
	r := strconv.Itoa(st.Restarts)
	if st.ConsecutiveFailures > 0 {
		r += " (" + plural(st.ConsecutiveFailures, "failure") + " in a row)"
	}
	if st.Crashloop {
		r += ", " + paint(colour, ansiRed, "crash-looping")
	}
	add("Restarts", r)
	add("WhatsApp", printable(connection(st)))
	add("Adoptable", adoptableText(st))
	if x := st.LastExit; x != nil {
		add("Last exit", printable(x.Describe())+", "+ago(now.Sub(x.At))+" ago")
	} else {
		add("Last exit", "-")
	}
	if why := reasonText(st); why != "" {
		add("Reason", printable(why))
	}
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "%-11s%s\n", r[0]+":", r[1])
	}
	return b.String()
}

// connection is details.whatsapp's connection of the bridge now running,
// with the account or the QR codes shown.
func connection(st procmon.Status) string {
	w, _ := st.Details["whatsapp"].(map[string]any)
	c, _ := w["connection"].(string)
	if c == "" {
		return "unknown"
	}
	// An event's snapshot can come before the layer has heard of a new
	// child: an old child's connection is not this one's.
	if pid, ok := w["bridge_pid"].(float64); ok && st.Pid > 0 && int(pid) != st.Pid {
		return "unknown"
	}
	switch c {
	case "connected":
		if u, ok := w["user"].(map[string]any); ok {
			name, _ := u["name"].(string)
			id, _ := u["id"].(string)
			switch {
			case name != "" && id != "":
				return c + " as " + name + " (" + id + ")"
			case name+id != "":
				return c + " as " + name + id
			}
		}
	case "pairing":
		if n, ok := w["qr_codes"].(float64); ok && n > 0 {
			return c + " (" + plural(int(n), "QR code") + " shown; 'wa-sidecar pair' draws the current one)"
		}
	}
	return c
}

func adoptableText(st procmon.Status) string {
	a := adoption(st)
	switch {
	case a == nil:
		return "unknown (the gateway's checks are not known)"
	case a["adoptable"] == true:
		return "yes"
	}
	if why := notAdoptable(st); why != "" {
		return "no (" + why + ")"
	}
	return "no"
}

// reasonText is why the bridge is in its state: the snapshot's
// machine-readable reason, the process it waits on, and its message.
func reasonText(st procmon.Status) string {
	code := st.Reason
	if h := st.Holder; h != nil {
		who := "a process wa-sidecar cannot see"
		if h.Pid > 0 {
			who = fmt.Sprintf("pid %d (%s)", h.Pid, h.Name)
		}
		code = strings.TrimSpace(code + " (held by " + who + ")")
	}
	msg := st.Message
	if st.Reason == procmon.ReasonMaxRestarts && msg != "" {
		msg += " ('wa-sidecar start' or a SIGHUP is one; --max-restarts sets the most)"
	}
	switch {
	case code != "" && msg != "":
		return code + ": " + msg
	case code != "":
		return code
	}
	return msg
}

// printable escapes the control characters of text from the wire (a
// bridge's output reaches it), so it cannot move the cursor, retitle the
// terminal or forge lines. Tabs stay; newlines become \n.
func printable(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) && r != '\t' }) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) && r != '\t' {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
