package procmon

import (
	"context"
	"errors"
	"testing"
	"time"
)

// running is a monitor whose Run the test starts itself (after making its
// followers) and ends with stop, which waits for Run to return.
type running struct {
	t      *testing.T
	m      *Monitor
	cancel context.CancelFunc
	done   chan error
}

func newMonitor(t *testing.T, cfg Config) *running {
	t.Helper()
	r := &running{t: t, m: newTestMonitor(t, cfg), done: make(chan error, 1)}
	t.Cleanup(func() {
		if r.cancel != nil {
			r.stop()
		}
	})
	return r
}

func (r *running) run() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.m.Run(ctx) }()
}

func (r *running) stop() {
	r.t.Helper()
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		r.t.Fatal("monitor did not stop within 30s")
	}
}

// upTo takes updates from f until one of kind, checking that each follows
// the one before it, counting what it says was missed.
func upTo(t *testing.T, f *Follower, kind Kind) []Update {
	t.Helper()
	var got []Update
	for {
		prev := f.Last().Seq
		u, err := f.Next(ctxT(t))
		if err != nil {
			t.Fatalf("Next after seq %d, waiting for %s: %v", prev, kind, err)
		}
		if u.Seq != prev+1+u.Missed {
			t.Fatalf("update seq %d after %d with %d missed", u.Seq, prev, u.Missed)
		}
		got = append(got, u)
		if u.Kind == kind {
			return got
		}
	}
}

// rest takes updates from f until the monitor's stream ends, checking
// that each follows the one before it.
// runUntilGivenUp runs the monitor and returns once it has given up on
// its crashing bridge, watched by a subscription of its own.
func runUntilGivenUp(r *running) {
	watch, _ := r.m.Subscribe(4096)
	defer watch.Close()
	r.run()
	for ev := range watch.C {
		if ev.Kind == EventGivenUp {
			return
		}
	}
}

func rest(t *testing.T, f *Follower) []Update {
	t.Helper()
	var got []Update
	for {
		prev := f.Last().Seq
		u, err := f.Next(ctxT(t))
		if errors.Is(err, ErrFinished) {
			return got
		}
		if err != nil {
			t.Fatalf("Next after seq %d: %v", prev, err)
		}
		if u.Seq != prev+1+u.Missed {
			t.Fatalf("update seq %d after %d with %d missed", u.Seq, prev, u.Missed)
		}
		got = append(got, u)
	}
}

func TestFollowMissesNothingFromConstructionToTheEnd(t *testing.T) {
	r := newMonitor(t, Config{Command: []string{fakeBridge, "-exit", "1"}, MaxRestarts: 3})
	// Made before Run, and read only once the monitor has finished: the
	// follower still sees the whole life, each event once and in order.
	f := r.m.Follow(256)
	defer f.Close()
	if last := f.Last(); last.Seq != 0 || last.Status.State != StateStarting {
		t.Fatalf("follower starts after seq %d in %s, want 0 in starting", last.Seq, last.Status.State)
	}
	runUntilGivenUp(r)
	r.stop()

	var kinds []Kind
	for _, u := range rest(t, f) {
		if u.Missed != 0 {
			t.Fatalf("seq %d: %d missed", u.Seq, u.Missed)
		}
		kinds = append(kinds, u.Kind)
	}
	_, final := r.m.Subscribe(1)
	if f.Last().Seq != final.Seq || f.Last().Seq != uint64(len(kinds)) {
		t.Fatalf("follower ended at seq %d after %d events; the monitor's last was %d", f.Last().Seq, len(kinds), final.Seq)
	}
	if kinds[0] != EventStarting || count(kinds, EventExited) != 3 || count(kinds, EventGivenUp) != 1 {
		t.Fatalf("events %v: want the first start, three exits and given_up", kinds)
	}
	// The stream stays ended.
	if _, err := f.Next(ctxT(t)); !errors.Is(err, ErrFinished) {
		t.Fatalf("Next after the end: %v, want ErrFinished", err)
	}
}

func TestFollowResyncsAfterFallingBehind(t *testing.T) {
	r := newMonitor(t, Config{Command: []string{fakeBridge, "-exit", "1"}, Backoff: Backoff{Multiplier: 1}, MaxRestarts: 30})
	f := r.m.Follow(1)
	defer f.Close()
	// The follower reads nothing while thirty crash cycles go by.
	runUntilGivenUp(r)
	got := upTo(t, f, EventGivenUp)
	// The one event queued comes first; the resync then hands over the
	// newest event, given_up, with everything in between counted missed.
	if len(got) != 2 || got[0].Seq != 1 || got[0].Missed != 0 || got[1].Missed == 0 {
		t.Fatalf("updates: %d, first seq %d missed %d, last missed %d; want the queued event, then a resync",
			len(got), got[0].Seq, got[0].Missed, got[len(got)-1].Missed)
	}
	if last := got[1]; last.Status.State != StateGivenUp || last.Missed != last.Seq-2 {
		t.Fatalf("resync to seq %d in %s with %d missed", last.Seq, last.Status.State, last.Missed)
	}

	// Followed again from the fresh subscription, nothing more is lost.
	if err := r.m.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, u := range upTo(t, f, EventStarted) {
		if u.Missed != 0 {
			t.Fatalf("seq %d: %d missed after the resync", u.Seq, u.Missed)
		}
	}
}

func TestFollowNextEndsWithItsContext(t *testing.T) {
	r := newMonitor(t, Config{Command: []string{fakeBridge, "-hang"}})
	f := r.m.Follow(16)
	defer f.Close()
	r.run()
	upTo(t, f, EventStarted)

	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Next(done); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with a cancelled context: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := f.Next(ctx)
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Next cancelled while waiting: %v", err)
	}
	// Nothing was taken meanwhile: the next event still comes.
	if err := r.m.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if u, err := f.Next(ctxT(t)); err != nil || u.Kind != EventStopping || u.Missed != 0 {
		t.Fatalf("after the cancelled waits: %s, %v", u.Kind, err)
	}
}

func TestFollowCloseEndsAWaitingNext(t *testing.T) {
	r := newMonitor(t, Config{Command: []string{fakeBridge, "-hang"}})
	f := r.m.Follow(16)
	r.run()
	upTo(t, f, EventStarted)
	errc := make(chan error, 1)
	go func() {
		_, err := f.Next(context.Background())
		errc <- err
	}()
	f.Close()
	err := <-errc
	if err == nil || errors.Is(err, ErrFinished) || errors.Is(err, context.Canceled) {
		t.Fatalf("Next ended by Close: %v, want the follower's own closed error", err)
	}
	f.Close()
	if _, err := f.Next(context.Background()); !errors.Is(err, errFollowerClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
}

func TestFollowAfterTheEndStartsFromTheLastEvent(t *testing.T) {
	r := newMonitor(t, Config{Command: []string{fakeBridge, "-hang"}})
	early := r.m.Follow(64)
	defer early.Close()
	r.run()
	upTo(t, early, EventStarted)
	r.stop()
	rest(t, early)

	late := r.m.Follow(1)
	defer late.Close()
	if got, want := late.Last(), early.Last(); got.Seq != want.Seq || got.Status.State != want.Status.State {
		t.Fatalf("a follower made after the end starts after seq %d (%s), want %d (%s)", got.Seq, got.Status.State, want.Seq, want.Status.State)
	}
	if _, err := late.Next(ctxT(t)); !errors.Is(err, ErrFinished) {
		t.Fatalf("Next: %v, want ErrFinished", err)
	}
}
