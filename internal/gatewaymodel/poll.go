package gatewaymodel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// pollTimeout is the gateway's total timeout for one GET /messages.
const pollTimeout = 30 * time.Second

// BridgeExitError is why Poll stopped when the gateway's own bridge exited,
// the retryable error the gateway reports then.
type BridgeExitError struct {
	Code int // Python's returncode: the exit status, or minus the signal
}

func (e *BridgeExitError) Error() string {
	return fmt.Sprintf("WhatsApp bridge process exited unexpectedly (code %d)", e.Code)
}

type pollRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Poll is the gateway's message loop, run after a successful Connect: GET
// /messages on a kept-alive connection, then sleep every (zero means the
// gateway's 1 s). A failed request (no connection, a timeout, a 200 whose
// body is not a JSON list) is a poll error: onErr gets it, if not nil, and
// the loop sleeps 5×every more before going on, so an adopted bridge that
// restarts on the port is picked up again. Any other answer is success. Poll
// never signals anything.
//
// It returns nil when ctx ends or Disconnect or Close stops it, and a
// *BridgeExitError as soon as it finds that the gateway's own bridge (the
// one it holds when Poll starts) has exited. Only one Poll runs at a time,
// and onErr must not call Disconnect or Close.
func (g *Gateway) Poll(ctx context.Context, every time.Duration, onErr func(error)) error {
	if every <= 0 {
		every = time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	run := &pollRun{cancel: cancel, done: make(chan struct{})}
	g.mu.Lock()
	if g.poll != nil {
		g.mu.Unlock()
		return errors.New("gatewaymodel: Poll is already running")
	}
	g.poll = run
	own := g.own
	g.mu.Unlock()
	defer func() {
		g.polls.CloseIdleConnections()
		g.mu.Lock()
		g.poll = nil
		g.mu.Unlock()
		close(run.done)
	}()

	exited := func() error {
		if own != nil && own.exited() {
			return &BridgeExitError{Code: own.exitCode()}
		}
		return nil
	}
	for ctx.Err() == nil {
		if err := exited(); err != nil {
			return err
		}
		if err := g.fetchMessages(ctx); err != nil && ctx.Err() == nil {
			if err := exited(); err != nil {
				return err
			}
			g.cfg.Logf("gateway: poll error: %v", err)
			if onErr != nil {
				onErr(err)
			}
			if sleep(ctx, 5*every) != nil {
				break
			}
		}
		if sleep(ctx, every) != nil {
			break
		}
	}
	return nil
}

// stopPoll ends a running Poll and waits for it to return.
func (g *Gateway) stopPoll() {
	g.mu.Lock()
	run := g.poll
	g.mu.Unlock()
	if run != nil {
		run.cancel()
		<-run.done
	}
}

// fetchMessages is one GET /messages. The messages are read and dropped.
func (g *Gateway) fetchMessages(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	resp, err := g.get(ctx, g.polls, "/messages")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	v, err := decodeJSON(resp)
	if err != nil {
		return err
	}
	if _, ok := v.([]any); !ok {
		return fmt.Errorf("%w: /messages is not a list", errNotJSON)
	}
	return nil
}
