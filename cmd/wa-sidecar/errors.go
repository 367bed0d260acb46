package main

import (
	"errors"
	"fmt"

	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// flagError says which flag to change for an error of a lower layer,
// which knows its settings only by their own names: the flags are named
// here alone. An error that no flag can fix comes back as it was.
func flagError(err error) error {
	var (
		port    *gateway.PortError
		push    *feed.PushBackoffError
		backoff *procmon.BackoffError
	)
	switch {
	case errors.As(err, &port):
		return fmt.Errorf("--port must be between 1 and %d (got %d)", gateway.MaxPort, port.Port)
	case errors.As(err, &push):
		return err // no flag sets it
	case errors.As(err, &backoff):
		return backoffFlagError(backoff)
	}
	return err
}

// backoffFlagError words a bad restart backoff as the --backoff-* flag to
// change.
func backoffFlagError(e *procmon.BackoffError) error {
	b := e.Backoff
	switch e.Field {
	case "Initial":
		return fmt.Errorf("--backoff-initial must not be negative (got %s)", b.Initial)
	case "Max":
		return fmt.Errorf("--backoff-max (%s) is shorter than --backoff-initial (%s); raise --backoff-max or lower --backoff-initial", b.Max, b.Initial)
	case "Jitter":
		return fmt.Errorf("--backoff-jitter must be at least 0 and below 1 (got %g); 0.2 spreads delays by ±20 %%", b.Jitter)
	case "Reset":
		return fmt.Errorf("--backoff-reset must not be negative (got %s)", b.Reset)
	}
	return e // the multiplier has no flag
}
