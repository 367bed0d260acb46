package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// The lower layers' typed errors come out of cmd as the flag to change,
// with the words the CLI has always used; feed's own push backoff is not
// blamed on the restart flags.
func TestFlagErrorNamesTheFlag(t *testing.T) {
	b := func(initial, max time.Duration, jitter float64, reset time.Duration) error {
		return procmon.Backoff{Initial: initial, Max: max, Multiplier: 2, Jitter: jitter, Reset: reset}.Validate()
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{gateway.CheckPort(70000), "--port must be between 1 and 65535 (got 70000)"},
		{fmt.Errorf("discover: %w", gateway.CheckPort(0)), "--port must be between 1 and 65535 (got 0)"},
		{b(-time.Second, time.Second, 0, 0), "--backoff-initial must not be negative (got -1s)"},
		{b(5*time.Second, time.Second, 0, 0), "--backoff-max (1s) is shorter than --backoff-initial (5s); raise --backoff-max or lower --backoff-initial"},
		{b(time.Second, time.Second, 1.5, 0), "--backoff-jitter must be at least 0 and below 1 (got 1.5); 0.2 spreads delays by ±20 %"},
		{b(time.Second, time.Second, 0, -time.Second), "--backoff-reset must not be negative (got -1s)"},
		{&feed.PushBackoffError{Err: b(5*time.Second, time.Second, 0, 0)},
			"feed: Options.PushBackoff: backoff: the longest delay (1s) is shorter than the initial one (5s)"},
	} {
		if got := flagError(tc.err).Error(); got != tc.want {
			t.Errorf("flagError(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
