package feed

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
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
			if s.session(ws, nil, newClient(s.opts.QueueLen, true, s.now()), "gateway") {
				return
			}
			if time.Since(began) >= b.Reset {
				failures = 0
			}
		}
		failures++
		delay := b.Delay(failures)
		if err != nil {
			s.log.Warn("could not connect to the gateway; retrying", "url", url, "error", redactDialError(err, s.opts.GatewayURL), "retry_in", delay.Round(time.Millisecond).String())
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

// redactDialError says why dialing the gateway failed without the secrets
// its URL may carry. A *url.Error quotes the whole URL, query included, so
// only its cause is kept: the network error (which names just host and
// port) or the root error. Whatever else an error says, the URL's user
// info and query are cut out of it.
func redactDialError(err error, rawURL string) string {
	msg := err.Error()
	var ue *url.Error
	if errors.As(err, &ue) {
		var op *net.OpError
		if errors.As(ue.Err, &op) {
			msg = op.Error()
		} else {
			msg = rootCause(ue.Err).Error()
		}
	}
	u, perr := url.Parse(rawURL)
	if perr != nil {
		return msg
	}
	secrets := []string{u.RawQuery, u.Query().Encode()}
	if u.User != nil {
		pw, _ := u.User.Password()
		secrets = append(secrets, u.User.String(), u.User.Username(), pw)
	}
	for _, sec := range secrets {
		if sec != "" {
			msg = strings.ReplaceAll(msg, sec, "…")
		}
	}
	return msg
}
