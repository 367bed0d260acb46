package bridge

import "time"

// flapDetector counts the changes of the WhatsApp connection in a sliding
// window and says when they are too many (flapping) and when they have
// settled. It keeps no clock of its own: every call is told the time, so
// the watcher decides when things happen and a test can say exactly.
type flapDetector struct {
	limit    int           // more flips than this in the window are flapping
	window   time.Duration // how far back flips count
	flips    []time.Time   // oldest first, none older than window at the last call
	flapping bool
}

// flip records a change of the connection at now. It returns the flips in
// the window, and whether this one began flapping.
func (f *flapDetector) flip(now time.Time) (n int, began bool) {
	f.flips = append(f.flips, now)
	n = f.recent(now)
	if n > f.limit && !f.flapping {
		f.flapping = true
		return n, true
	}
	return n, false
}

// recent drops the flips older than the window at now and counts the rest.
func (f *flapDetector) recent(now time.Time) int {
	cut := 0
	for cut < len(f.flips) && now.Sub(f.flips[cut]) > f.window {
		cut++
	}
	f.flips = f.flips[cut:]
	return len(f.flips)
}

// settleIn is how long after now flapping may end, if no flip comes first:
// once no more than limit flips are in the window, that is when the flip
// limit+1 from the newest leaves it. ok is false when not flapping.
func (f *flapDetector) settleIn(now time.Time) (d time.Duration, ok bool) {
	if !f.flapping {
		return 0, false
	}
	if i := len(f.flips) - 1 - f.limit; i >= 0 {
		// A millisecond past the edge: at the edge itself, the flip is
		// still in the window.
		d = f.flips[i].Add(f.window).Sub(now) + time.Millisecond
	}
	return max(d, 0), true
}

// settle ends flapping at now when the window holds few enough flips, and
// says whether it did.
func (f *flapDetector) settle(now time.Time) bool {
	if !f.flapping || f.recent(now) > f.limit {
		return false
	}
	f.flapping = false
	return true
}
