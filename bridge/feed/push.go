package feed

import (
	"context"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// push keeps a connection to the gateway in push mode: it dials
// GatewayURL, runs the same session a client of /v1/events gets (hello,
// events, ops), and on any loss dials again with backoff, until the event
// stream ends. The gateway was chosen by whoever started the sidecar, so
// it is trusted: it gets private fields and may send control ops.
func (s *Server) push(ctx context.Context) {
	b := s.opts.PushBackoff
	url := redactURL(s.opts.GatewayURL)
	failures := 0
	for {
		began := time.Now()
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ws, _, err := websocket.Dial(dctx, s.opts.GatewayURL, &websocket.DialOptions{
			HTTPHeader: http.Header{"User-Agent": {"wa-sidecar/" + s.opts.Version}},
		})
		cancel()
		if err == nil {
			s.log.Info("connected to the gateway", "url", url)
			if s.session(ws, true, "gateway") {
				return
			}
			if time.Since(began) >= b.Reset {
				failures = 0
			}
		}
		failures++
		delay := b.Delay(failures)
		if err != nil {
			s.log.Warn("could not connect to the gateway; retrying", "url", url, "error", err, "retry_in", delay.Round(time.Millisecond).String())
		} else {
			s.log.Warn("lost the connection to the gateway; reconnecting", "url", url, "retry_in", delay.Round(time.Millisecond).String())
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.hub.done:
			t.Stop()
			return
		}
	}
}
