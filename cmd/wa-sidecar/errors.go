package main

import (
	"errors"
	"fmt"

	"github.com/wa-sidecar/wa-sidecar/bridge"
	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/bridge/gateway"
	"github.com/wa-sidecar/wa-sidecar/bridge/session"
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
		setting *bridge.SettingError
		inUse   *feed.AddrInUseError
		listen  *feed.ListenError
		probe   *bridge.ProbeError
		blog    *session.BridgeLogError
		held    *session.HeldError
		dir     *session.DirError
		state   *feed.StateDirHeldError
		noState *feed.StateDirError
		origin  *feed.OriginError
		gwURL   *feed.GatewayURLError
	)
	switch {
	case errors.As(err, &state):
		return fmt.Errorf("%w; to run a second sidecar, pass it a different --state-dir (and --listen)", state)
	case errors.As(err, &noState) && noState.Dir == "":
		return fmt.Errorf("%w; pass --state-dir", noState)
	case errors.As(err, &noState):
		return fmt.Errorf("%w; pass --state-dir to choose another", noState)
	case errors.As(err, &held):
		return fmt.Errorf("%w. Stop the other sidecar first, or give this one its own --session-dir", held)
	case errors.As(err, &dir):
		return fmt.Errorf("%w; point --session-dir at a directory you can write", dir)
	case errors.As(err, &blog):
		return fmt.Errorf("%w; choose another place with --bridge-log PATH, or --bridge-log off", blog)
	case errors.As(err, &probe) && probe.Field == "HealthFailures":
		return fmt.Errorf("--health-failures must be at least 1 (got %d)", probe.Failures)
	case errors.As(err, &probe):
		return fmt.Errorf("--health-timeout (%s) is longer than --health-period (%s); probes would overlap: lower the timeout or raise the period", probe.Timeout, probe.Period)
	case errors.As(err, &setting):
		return settingFlagError(setting)
	case errors.As(err, &inUse):
		return fmt.Errorf("--listen %s is already in use%s (is another wa-sidecar running? 'wa-sidecar status --addr %s' tells); pass --listen to choose another address",
			inUse.Addr, inUse.By(), inUse.Addr)
	case errors.As(err, &origin):
		return fmt.Errorf("--allow-origin %q %w", origin.Pattern, origin.Err)
	case errors.As(err, &gwURL):
		return fmt.Errorf("--gateway-url %q: %w", gwURL.URL, gwURL.Err)
	case errors.As(err, &listen):
		return fmt.Errorf("--listen %w", listen)
	case errors.As(err, &port):
		return fmt.Errorf("--port must be between 1 and %d (got %d)", gateway.MaxPort, port.Port)
	case errors.As(err, &push):
		return err // no flag sets it
	case errors.As(err, &backoff):
		return backoffFlagError(backoff)
	}
	return err
}

// settingFlagError words a bridge setting that Discover cannot use or
// cannot find as the flag that sets it, with the other ways there are.
func settingFlagError(e *bridge.SettingError) error {
	switch {
	case e.Field == "Mode":
		return fmt.Errorf("--mode must be self-chat or bot (got %q)", e.Value)
	case e.Field == "Home":
		return fmt.Errorf("%w; set HERMES_HOME or pass --hermes-home", e)
	case e.Field == "SessionDir":
		return fmt.Errorf("%w: pass --session-dir", e)
	case e.Field == "Script" && e.Value != "":
		return fmt.Errorf("--bridge-script %s: %v; give the path of bridge.js", e.Value, e.Err)
	case e.Field == "Script":
		return fmt.Errorf("%w\ninstall the Hermes agent, set HERMES_HOME, pass --bridge-script PATH, "+
			"put your own bridge command after --, or try --demo", e)
	case e.Field == "Node" && e.Value != "":
		return fmt.Errorf("--node %s: %v; give the path of the node binary", e.Value, e.Err)
	case e.Field == "Node":
		return fmt.Errorf("%w, or pass --node PATH", e)
	}
	return e
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
