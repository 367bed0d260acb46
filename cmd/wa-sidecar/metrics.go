package main

import (
	"log/slog"

	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/internal/metrics"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// serveMetrics mounts /metrics on the status server and returns the
// metrics, to run beside the monitor. They follow m from now on, so call
// it before the monitor runs and no exit goes uncounted.
func serveMetrics(srv *feed.Server, m *procmon.Monitor, logger *slog.Logger) *metrics.Metrics {
	x := metrics.New(m, metrics.Options{Version: sidecarVersion(), Clients: srv.Clients, Logger: logger})
	srv.Handle("GET "+metrics.Path, x.Handler())
	return x
}
