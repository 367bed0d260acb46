package main

import (
	"context"
	"log/slog"

	"github.com/wa-sidecar/wa-sidecar/bridge/feed"
	"github.com/wa-sidecar/wa-sidecar/internal/metrics"
	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// serveMetrics mounts /metrics on the status server. It subscribes to m at
// once, so call it before the monitor runs and no exit goes uncounted.
// stop returns after the follower has applied the monitor's last event.
func serveMetrics(srv *feed.Server, m *procmon.Monitor, logger *slog.Logger) (stop func()) {
	x := metrics.New(m, metrics.Options{Version: sidecarVersion(), Clients: srv.Clients, Logger: logger})
	srv.Handle("GET "+metrics.Path, x.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		x.Run(ctx)
	}()
	return func() {
		select {
		case <-m.Done():
			// Let the follower drain what the monitor emitted last.
			<-done
		default:
		}
		cancel()
		<-done
	}
}
