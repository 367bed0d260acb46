package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Health is the bridge's answer to GET /health.
type Health struct {
	Status           Connection `json:"status"` // connected or disconnected
	QueueLength      int        `json:"queueLength"`
	Uptime           float64    `json:"uptime"` // seconds
	ScriptHash       string     `json:"scriptHash"`
	SendReadReceipts bool       `json:"sendReadReceipts"`
}

// maxHealthBody bounds what is read of a /health answer; the real one is
// about 120 bytes.
const maxHealthBody = 64 << 10

// prober asks a bridge for its health. One request at a time, each with
// its own deadline, over a fresh connection: the bridge is respawned on the
// same port, and a kept-alive connection to a dead one would only fail.
type prober struct {
	client *http.Client
}

func newProber() *prober {
	return &prober{client: &http.Client{
		Transport: &http.Transport{
			DisableKeepAlives: true,
			Proxy:             nil, // never send a localhost probe through HTTP_PROXY
			DialContext:       (&net.Dialer{}).DialContext,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// probe sends GET /health to 127.0.0.1:port with the Host header the
// bridge accepts, and reads the answer.
func (p *prober) probe(ctx context.Context, port int, timeout time.Duration) (Health, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/health"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Health{}, err
	}
	req.Host = "127.0.0.1"
	resp, err := p.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return Health{}, fmt.Errorf("GET /health on port %d did not answer within %s", port, timeout)
		}
		return Health{}, fmt.Errorf("GET /health on port %d: %w", port, unwrapURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHealthBody))
	if err != nil {
		return Health{}, fmt.Errorf("GET /health on port %d: reading the answer: %w", port, err)
	}
	if resp.StatusCode != http.StatusOK {
		return Health{}, fmt.Errorf("GET /health on port %d answered %s", port, resp.Status)
	}
	return parseHealth(body)
}

// parseHealth reads a /health body. The status must be one the bridge
// sends; other fields may be missing (older bridges lack some).
func parseHealth(body []byte) (Health, error) {
	var h Health
	if err := json.Unmarshal(body, &h); err != nil {
		return Health{}, fmt.Errorf("GET /health answered something that is not the bridge's JSON (%v); is another program on this port?", err)
	}
	if h.Status != ConnectionConnected && h.Status != ConnectionDisconnected {
		return Health{}, fmt.Errorf("GET /health answered status %q, want connected or disconnected; is another program on this port?", h.Status)
	}
	if len(h.ScriptHash) > 64 {
		h.ScriptHash = h.ScriptHash[:64]
	}
	return h, nil
}

// unwrapURLError drops net/http's `Get "http://…": ` prefix, which repeats
// what the message already says.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
