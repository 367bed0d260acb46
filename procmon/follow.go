package procmon

import (
	"context"
	"errors"
	"sync"
)

// ErrFinished is returned by Follower.Next once the monitor's Run has
// ended and every event it emitted has been returned.
var ErrFinished = errors.New("the monitor has finished")

// errFollowerClosed is returned by Follower.Next after Close.
var errFollowerClosed = errors.New("the follower was closed")

// A Follower is the way to follow a Monitor's events: it subscribes when
// it is made, so it misses nothing the monitor emits afterwards even if
// Run has not started yet, and when it falls behind it resubscribes by
// itself and says what it lost. Everything that follows a monitor takes
// one at construction and reads it in its Run:
//
//	f := m.Follow(256)
//	defer f.Close()
//	st := f.Last().Status // the snapshot to start from
//	for {
//		u, err := f.Next(ctx)
//		if err != nil {
//			return nil // ctx is done, or the monitor has finished
//		}
//		if u.Missed > 0 {
//			// Fell behind: u.Status is a fresh snapshot, and the events
//			// in between are gone.
//		}
//		st = u.Status
//	}
//
// Next and Last are for one goroutine; Close may be called from any.
type Follower struct {
	m      *Monitor
	buffer int

	mu     sync.Mutex
	sub    *Subscription
	last   Event
	closed bool
}

// An Update is one step of a Follower: the next event, or after the
// follower fell behind, the newest one when it resubscribed.
type Update struct {
	Event
	// Missed is how many events were lost right before this one because
	// the follower fell behind. 0 means Event follows the previous one
	// directly; otherwise Event is the newest at the time the follower
	// resubscribed, and its Status is the snapshot to resync from.
	Missed uint64
}

// Follow subscribes to m's events now and returns the follower. buffer
// bounds the events queued for it (at least 1); a follower that lets the
// queue fill loses events rather than slowing the monitor, and Next then
// reports how many. Close releases the subscription.
func (m *Monitor) Follow(buffer int) *Follower {
	sub, last := m.Subscribe(buffer)
	return &Follower{m: m, buffer: buffer, sub: sub, last: last}
}

// Last returns the newest event the follower has taken: at first the one
// before its first (Seq 0 before anything happened), whose Status is the
// snapshot to start from; after a Next, the event Next returned.
func (f *Follower) Last() Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// Next returns the next event, in order. It waits until there is one, or
// until ctx is done (ctx.Err()), or the monitor has finished, in which case
// it returns ErrFinished once every event the monitor emitted has been
// returned. After a resync the Update's Missed says how many events were
// lost.
func (f *Follower) Next(ctx context.Context) (Update, error) {
	if err := ctx.Err(); err != nil {
		return Update{}, err
	}
	f.mu.Lock()
	sub, closed := f.sub, f.closed
	f.mu.Unlock()
	if closed {
		return Update{}, errFollowerClosed
	}
	select {
	case ev, ok := <-sub.C:
		if !ok {
			return f.resync(sub)
		}
		f.mu.Lock()
		f.last = ev
		f.mu.Unlock()
		return Update{Event: ev}, nil
	case <-ctx.Done():
		return Update{}, ctx.Err()
	}
}

// resync follows the end of a subscription: one dropped for falling
// behind is replaced by a fresh one, whose starting event comes next. That
// event is never one already taken, since the broker records an event as
// its last before it finds the queue that cannot take it full.
func (f *Follower) resync(ended *Subscription) (Update, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return Update{}, errFollowerClosed
	case !errors.Is(ended.Err(), ErrOverflow):
		return Update{}, ErrFinished
	}
	sub, last := f.m.Subscribe(f.buffer)
	f.sub = sub
	missed := last.Seq - f.last.Seq - 1
	f.last = last
	return Update{Event: last, Missed: missed}, nil
}

// Close ends the subscription; a Next waiting then returns an error. It is
// safe to call more than once, and from any goroutine.
func (f *Follower) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.sub.Close()
}
