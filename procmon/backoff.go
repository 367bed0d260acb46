package procmon

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Backoff is the respawn delay policy after failures.
type Backoff struct {
	Initial    time.Duration // delay after the first failure, and after an unrequested shutdown
	Max        time.Duration // no delay is longer than this
	Multiplier float64       // growth per consecutive failure
	Jitter     float64       // fraction, 0.2 spreads each delay over ±20 %
	// Reset is how long the child must stay up before earlier failures are
	// forgiven and the delay starts again from Initial.
	Reset time.Duration
}

// DefaultBackoff is 1 s doubling to 60 s, ±20 %, forgiven after 2 min up.
var DefaultBackoff = Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 2, Jitter: 0.2, Reset: 2 * time.Minute}

// BackoffError says a Backoff setting cannot work. Field names the
// Backoff field at fault; a program that takes the settings from its
// user tells them which of its own settings that is.
type BackoffError struct {
	Field   string // "Initial", "Max", "Multiplier", "Jitter" or "Reset"
	Backoff Backoff
}

func (e *BackoffError) Error() string {
	b := e.Backoff
	switch e.Field {
	case "Initial":
		return fmt.Sprintf("backoff: the initial delay must not be negative (got %s)", b.Initial)
	case "Max":
		return fmt.Sprintf("backoff: the longest delay (%s) is shorter than the initial one (%s)", b.Max, b.Initial)
	case "Multiplier":
		return fmt.Sprintf("backoff: the multiplier must be at least 1 (got %g)", b.Multiplier)
	case "Jitter":
		return fmt.Sprintf("backoff: the jitter must be at least 0 and below 1 (got %g); 0.2 spreads delays by ±20 %%", b.Jitter)
	case "Reset":
		return fmt.Sprintf("backoff: the reset time must not be negative (got %s)", b.Reset)
	}
	return "backoff: bad " + e.Field
}

// Validate returns a *BackoffError for settings that cannot work.
func (b Backoff) Validate() error {
	field := ""
	switch {
	case b.Initial < 0:
		field = "Initial"
	case b.Max < b.Initial:
		field = "Max"
	case b.Multiplier < 1:
		field = "Multiplier"
	case !(b.Jitter >= 0 && b.Jitter < 1): // NaN too
		field = "Jitter"
	case b.Reset < 0:
		field = "Reset"
	default:
		return nil
	}
	return &BackoffError{Field: field, Backoff: b}
}

// Delay is the wait before the next spawn after the given number of
// consecutive failures (1 for the first). Jitter is applied before the cap,
// so Max is never exceeded.
func (b Backoff) Delay(failures int) time.Duration {
	d := float64(b.Initial)
	for i := 1; i < failures && d < float64(b.Max); i++ {
		d *= b.Multiplier
	}
	return b.jitter(d)
}

// Capped is the delay used once the child is in a crash loop.
func (b Backoff) Capped() time.Duration { return b.jitter(float64(b.Max)) }

func (b Backoff) jitter(d float64) time.Duration {
	if b.Jitter > 0 {
		d *= 1 + b.Jitter*(2*rand.Float64()-1)
	}
	if d > float64(b.Max) {
		d = float64(b.Max)
	}
	return time.Duration(d)
}
