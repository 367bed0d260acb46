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

// Validate reports settings that cannot work, naming the flag to change.
func (b Backoff) Validate() error {
	switch {
	case b.Initial < 0:
		return fmt.Errorf("--backoff-initial must not be negative (got %s)", b.Initial)
	case b.Max < b.Initial:
		return fmt.Errorf("--backoff-max (%s) is shorter than --backoff-initial (%s); raise --backoff-max or lower --backoff-initial", b.Max, b.Initial)
	case b.Multiplier < 1:
		return fmt.Errorf("backoff multiplier must be at least 1 (got %g)", b.Multiplier)
	case !(b.Jitter >= 0 && b.Jitter < 1): // NaN too
		return fmt.Errorf("--backoff-jitter must be at least 0 and below 1 (got %g); 0.2 spreads delays by ±20 %%", b.Jitter)
	case b.Reset < 0:
		return fmt.Errorf("--backoff-reset must not be negative (got %s)", b.Reset)
	}
	return nil
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
