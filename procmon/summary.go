package procmon

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Summary reads a Status aloud in one line, such as "bridge ready (pid
// 812), up 3m12s, 4 restarts, last exit: SIGTERM (normal shutdown) 5m00s
// ago". It is the one wording of the child's state wherever a person reads
// it: systemd's STATUS=, the reason of a readiness check, a client's
// status. What the monitor cannot know comes in through its fields, so
// that the layer that knows it says it and the monitor names nothing above
// it. The zero value calls the child "child" and knows nothing more.
type Summary struct {
	// Name is what the child is called, such as "bridge".
	Name string
	// NotReady says why a running child that is not ready is not, from
	// what the layers above keep in Status.Details, or "" when it does not
	// know.
	NotReady func(Status) string
	// StartHint follows the line of a child stopped on request: how to
	// start it again, in the words of whoever can.
	StartHint string
	// Coarse shows durations to the minute and the next start as a time
	// of day, so that the line changes by itself at most once a minute:
	// right for a reader that is sent the line whenever it changes.
	Coarse bool
}

// Line is the status in one line.
func (s Summary) Line(st Status, now time.Time) string {
	return strings.Join(s.Parts(st, now), ", ")
}

// Parts is Line before its parts are joined with ", ". The first says the
// state, so a terminal can colour it.
func (s Summary) Parts(st Status, now time.Time) []string {
	parts, _ := s.render(st, now)
	return parts
}

// NextChange says how long until Line's text would change by itself, as
// the durations it shows grow, if it ever would.
func (s Summary) NextChange(st Status, now time.Time) (time.Duration, bool) {
	_, clocks := s.render(st, now)
	var next time.Duration
	for _, d := range clocks {
		step := durationStep(d, s.Coarse)
		// Coarse figures are cut, the others rounded: the text changes at
		// a whole step, or half-way to one.
		wait := step - d%step
		if !s.Coarse {
			if wait = step/2 - d%step; wait <= 0 {
				wait += step
			}
		}
		if next == 0 || wait < next {
			next = wait
		}
	}
	return next, next > 0
}

// render returns the parts and the durations they show, each as much as
// has passed since its start (never negative), for NextChange.
func (s Summary) render(st Status, now time.Time) (parts []string, clocks []time.Duration) {
	since := func(t time.Time) string {
		d := max(now.Sub(t), 0)
		clocks = append(clocks, d)
		return FormatDuration(d, s.Coarse)
	}
	name := s.Name
	if name == "" {
		name = "child"
	}
	pid := ""
	if st.Pid > 0 {
		pid = " (pid " + strconv.Itoa(st.Pid) + ")"
	}
	lastExit := st.LastExit != nil
	switch st.State {
	case StateRunning:
		why := ""
		if !st.Ready && s.NotReady != nil {
			why = s.NotReady(st)
		}
		if !st.Ready && why == "" {
			why = st.Message
		}
		switch {
		case st.Ready:
			parts = append(parts, name+" ready"+pid)
		case why != "":
			parts = append(parts, name+" running"+pid+", not ready: "+why)
		default:
			parts = append(parts, name+" running"+pid+", not ready yet")
		}
		if st.StartedAt != nil {
			parts = append(parts, "up "+since(*st.StartedAt))
		}
	case StateBackoff:
		head := name + " down"
		if st.Crashloop {
			head = name + " crash-looping"
		}
		if st.ConsecutiveFailures > 1 {
			head += fmt.Sprintf(" (%d failures in a row)", st.ConsecutiveFailures)
		}
		if st.LastExit != nil {
			head += " after " + st.LastExit.Describe()
			lastExit = false
		}
		if st.Message != "" {
			head += ": " + st.Message
		}
		parts = append(parts, head)
		if st.NextStartAt != nil {
			if s.Coarse {
				parts = append(parts, "next start at "+st.NextStartAt.Local().Format(time.TimeOnly))
			} else {
				// A countdown, not a clock: it is read once.
				parts = append(parts, "next start in "+FormatDuration(max(st.NextStartAt.Sub(now), 0), false))
			}
		}
	case StateStarting, StateStopping:
		parts = append(parts, name+" "+string(st.State)+pid)
	case StateStopped:
		parts = append(parts, name+" stopped on request")
	default:
		// given_up, and the states a layer above parks the child in
		// (needs_pairing, …), come with a message saying what to do.
		head := name + " " + strings.ReplaceAll(string(st.State), "_", " ") + pid
		if st.Message != "" {
			head += ": " + st.Message
		}
		parts = append(parts, head)
	}
	if st.State != StateRunning && st.State != StateBackoff && !st.Since.IsZero() {
		parts = append(parts, "for "+since(st.Since))
	}
	if st.Restarts > 0 {
		parts = append(parts, plural(st.Restarts, "restart"))
	}
	if lastExit {
		parts = append(parts, "last exit: "+st.LastExit.Describe()+" "+since(st.LastExit.At)+" ago")
	}
	if st.State == StateStopped && s.StartHint != "" {
		parts[len(parts)-1] += "; " + s.StartHint
	}
	return parts, clocks
}

// FormatDuration renders a duration the way a person says it: 850ms, 1.8s, 42s,
// 3m12s, 5h3m, 2d4h; or, coarse, to the minute: <1m, 12m, 2h5m, 2d2h.
func FormatDuration(d time.Duration, coarse bool) string {
	d = max(d, 0)
	if coarse {
		switch {
		case d < time.Minute:
			return "<1m"
		case d < time.Hour:
			return fmt.Sprintf("%dm", int(d/time.Minute))
		case d < 24*time.Hour:
			h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
			if m == 0 {
				return fmt.Sprintf("%dh", h)
			}
			return fmt.Sprintf("%dh%dm", h, m)
		}
		days, h := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour)
		if h == 0 {
			return fmt.Sprintf("%dd", days)
		}
		return fmt.Sprintf("%dd%dh", days, h)
	}
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	d = d.Round(time.Hour)
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// durationStep is how often FormatDuration's text of d changes as d
// grows: the unit of its last figure.
func durationStep(d time.Duration, coarse bool) time.Duration {
	switch {
	case coarse && d >= 24*time.Hour:
		return time.Hour
	case coarse:
		return time.Minute
	case d < time.Second:
		return time.Millisecond
	case d < 10*time.Second:
		return 100 * time.Millisecond
	case d < time.Hour:
		return time.Second
	case d < 48*time.Hour:
		return time.Minute
	}
	return time.Hour
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}
